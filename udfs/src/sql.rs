//! The SQL text OmenDB accepts: DataFusion's generic dialect plus pgvector's distance operators.
//!
//! `a <-> b` (l2), `a <=> b` (cosine) and `a <#> b` (negative inner product) have pgvector's
//! meaning when either side is a vector, so `ORDER BY vector <=> $1 LIMIT 10` is the same search
//! as `ORDER BY cosine_distance(vector, $1) LIMIT 10`. On two scalars `<=>` keeps its generic
//! meaning (null-safe equality). Every front end parses through [`statements`] and
//! [`logical_plan`], so the server, the CLI and the Python package accept the same text.

use std::any::TypeId;
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, ScalarUDF};
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, FunctionArg, FunctionArgExpr, Ident, ObjectName,
    ObjectNamePart, TableFactor, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect, Precedence};
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

mod vectors;

pub use vectors::lift_vectors;

use crate::distance::distance_udfs;
use crate::files::READERS;

/// pgvector's `<#>`: the parser has no operator of its own for it.
const NEGATIVE_INNER_PRODUCT: &str = "<#>";

/// The statements of `sql`, in order.
pub fn statements(state: &SessionState, sql: &str) -> Result<VecDeque<Statement>> {
    let recursion_limit = state.config().options().sql_parser.recursion_limit.get();
    let mut parsed = DFParserBuilder::new(sql)
        .with_dialect(&OmenDialect)
        .with_recursion_limit(recursion_limit)
        .build()?
        .parse_statements()?;
    for statement in &mut parsed {
        read_files_as_tables(statement)?;
    }
    Ok(parsed)
}

/// Rewrites `read_parquet('path')` (and the other readers) in `statement` to the table
/// `'path'`, which the session reads as a file (see `crate::files`).
fn read_files_as_tables(statement: &mut Statement) -> Result<()> {
    let mut readers = FileReaders;
    let flow = match statement {
        Statement::Statement(s) => s.visit(&mut readers),
        Statement::Explain(e) => return read_files_as_tables(&mut e.statement),
        _ => ControlFlow::Continue(()),
    };
    match flow {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct FileReaders;

impl VisitorMut for FileReaders {
    type Break = DataFusionError;

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<Self::Break> {
        let TableFactor::Table { name, args, .. } = factor else {
            return ControlFlow::Continue(());
        };
        let function = match (name.0.as_slice(), &args) {
            ([part], Some(_)) => part
                .as_ident()
                .map(|i| i.value.to_ascii_lowercase())
                .unwrap_or_default(),
            _ => return ControlFlow::Continue(()),
        };
        let Some((_, extensions)) = READERS.iter().find(|(f, _)| *f == function) else {
            return ControlFlow::Continue(());
        };
        let path = match args.as_ref().map(|a| a.args.as_slice()) {
            Some([FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v)))]) => {
                match &v.value {
                    Value::SingleQuotedString(s) => Some(s.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(path) = path else {
            return ControlFlow::Break(DataFusionError::Plan(format!(
                "{function}() takes one argument, the file's absolute path in quotes: \
                 {function}('/data/file.{}')",
                extensions[0]
            )));
        };
        let plain = path.trim_end_matches('/');
        let extension = plain.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        let is_dir = plain
            .rsplit('/')
            .next()
            .is_some_and(|last| !last.contains('.'));
        if !is_dir && !extension.is_some_and(|e| extensions.contains(&e.as_str())) {
            return ControlFlow::Break(DataFusionError::Plan(format!(
                "{function}('{path}'): the format follows the file's extension, which must be \
                 .{} (or name a directory of such files)",
                extensions[0]
            )));
        }
        *name = ObjectName(vec![ObjectNamePart::Identifier(Ident::with_quote(
            '\'', path,
        ))]);
        *args = None;
        ControlFlow::Continue(())
    }
}

/// The logical plan of `sql`, which must hold exactly one statement.
pub async fn logical_plan(state: &SessionState, sql: &str) -> Result<LogicalPlan> {
    let mut parsed = statements(state, sql)?;
    let (Some(statement), None) = (parsed.pop_front(), parsed.front()) else {
        return Err(DataFusionError::Plan(format!(
            "expected one SQL statement, got {} (send each statement on its own)",
            parsed.len() + usize::from(!parsed.is_empty())
        )));
    };
    state.statement_to_plan(statement).await
}

/// DataFusion's generic dialect with `<->` and `<#>` parsed as binary operators (the generic
/// tokenizer reads them as `<` followed by `->` or `#>`, which nothing else accepts).
#[derive(Debug, Default)]
pub struct OmenDialect;

impl OmenDialect {
    /// The operator at the parser's position, if it is `<->` or `<#>`.
    fn vector_operator(parser: &Parser) -> Option<BinaryOperator> {
        let (first, second) = (parser.peek_nth_token_ref(0), parser.peek_nth_token_ref(1));
        if first.token != Token::Lt || first.span.end != second.span.start {
            return None;
        }
        match second.token {
            Token::Arrow => Some(BinaryOperator::LtDashGt),
            Token::HashArrow => Some(BinaryOperator::Custom(NEGATIVE_INNER_PRODUCT.into())),
            _ => None,
        }
    }
}

impl Dialect for OmenDialect {
    // The parser's dialect checks (`dialect_of!`) see the generic dialect.
    fn dialect(&self) -> TypeId {
        TypeId::of::<GenericDialect>()
    }

    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        // PostgreSQL's "any other operator": above comparisons, below + and -.
        Self::vector_operator(parser).map(|_| Ok(self.prec_value(Precedence::Pipe)))
    }

    fn parse_infix(
        &self,
        parser: &mut Parser,
        expr: &SqlExpr,
        precedence: u8,
    ) -> Option<Result<SqlExpr, ParserError>> {
        let op = Self::vector_operator(parser)?;
        parser.advance_token();
        parser.advance_token();
        Some(
            parser
                .parse_subexpr(precedence)
                .map(|right| SqlExpr::BinaryOp {
                    left: Box::new(expr.clone()),
                    op,
                    right: Box::new(right),
                }),
        )
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_delimited_identifier_start(ch)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        GenericDialect.is_identifier_part(ch)
    }

    fn supports_unicode_string_literal(&self) -> bool {
        GenericDialect.supports_unicode_string_literal()
    }

    fn supports_partition_by_after_order_by(&self) -> bool {
        GenericDialect.supports_partition_by_after_order_by()
    }

    fn supports_array_join_syntax(&self) -> bool {
        GenericDialect.supports_array_join_syntax()
    }

    fn supports_group_by_expr(&self) -> bool {
        GenericDialect.supports_group_by_expr()
    }

    fn supports_group_by_with_modifier(&self) -> bool {
        GenericDialect.supports_group_by_with_modifier()
    }

    fn supports_left_associative_joins_without_parens(&self) -> bool {
        GenericDialect.supports_left_associative_joins_without_parens()
    }

    fn supports_connect_by(&self) -> bool {
        GenericDialect.supports_connect_by()
    }

    fn supports_match_recognize(&self) -> bool {
        GenericDialect.supports_match_recognize()
    }

    fn supports_pipe_operator(&self) -> bool {
        GenericDialect.supports_pipe_operator()
    }

    fn supports_start_transaction_modifier(&self) -> bool {
        GenericDialect.supports_start_transaction_modifier()
    }

    fn supports_window_function_null_treatment_arg(&self) -> bool {
        GenericDialect.supports_window_function_null_treatment_arg()
    }

    fn supports_dictionary_syntax(&self) -> bool {
        GenericDialect.supports_dictionary_syntax()
    }

    fn supports_window_clause_named_window_reference(&self) -> bool {
        GenericDialect.supports_window_clause_named_window_reference()
    }

    fn supports_parenthesized_set_variables(&self) -> bool {
        GenericDialect.supports_parenthesized_set_variables()
    }

    fn supports_select_wildcard_except(&self) -> bool {
        GenericDialect.supports_select_wildcard_except()
    }

    fn support_map_literal_syntax(&self) -> bool {
        GenericDialect.support_map_literal_syntax()
    }

    fn allow_extract_custom(&self) -> bool {
        GenericDialect.allow_extract_custom()
    }

    fn allow_extract_single_quotes(&self) -> bool {
        GenericDialect.allow_extract_single_quotes()
    }

    fn supports_extract_comma_syntax(&self) -> bool {
        GenericDialect.supports_extract_comma_syntax()
    }

    fn supports_create_view_comment_syntax(&self) -> bool {
        GenericDialect.supports_create_view_comment_syntax()
    }

    fn supports_parens_around_table_factor(&self) -> bool {
        GenericDialect.supports_parens_around_table_factor()
    }

    fn supports_values_as_table_factor(&self) -> bool {
        GenericDialect.supports_values_as_table_factor()
    }

    fn supports_create_index_with_clause(&self) -> bool {
        GenericDialect.supports_create_index_with_clause()
    }

    fn supports_explain_with_utility_options(&self) -> bool {
        GenericDialect.supports_explain_with_utility_options()
    }

    fn supports_limit_comma(&self) -> bool {
        GenericDialect.supports_limit_comma()
    }

    fn supports_update_order_by(&self) -> bool {
        GenericDialect.supports_update_order_by()
    }

    fn supports_from_first_select(&self) -> bool {
        GenericDialect.supports_from_first_select()
    }

    fn supports_projection_trailing_commas(&self) -> bool {
        GenericDialect.supports_projection_trailing_commas()
    }

    fn supports_asc_desc_in_column_definition(&self) -> bool {
        GenericDialect.supports_asc_desc_in_column_definition()
    }

    fn supports_try_convert(&self) -> bool {
        GenericDialect.supports_try_convert()
    }

    fn supports_bitwise_shift_operators(&self) -> bool {
        GenericDialect.supports_bitwise_shift_operators()
    }

    fn supports_comment_on(&self) -> bool {
        GenericDialect.supports_comment_on()
    }

    fn supports_load_extension(&self) -> bool {
        GenericDialect.supports_load_extension()
    }

    fn supports_named_fn_args_with_assignment_operator(&self) -> bool {
        GenericDialect.supports_named_fn_args_with_assignment_operator()
    }

    fn supports_struct_literal(&self) -> bool {
        GenericDialect.supports_struct_literal()
    }

    fn supports_empty_projections(&self) -> bool {
        GenericDialect.supports_empty_projections()
    }

    fn supports_nested_comments(&self) -> bool {
        GenericDialect.supports_nested_comments()
    }

    fn supports_multiline_comment_hints(&self) -> bool {
        GenericDialect.supports_multiline_comment_hints()
    }

    fn supports_user_host_grantee(&self) -> bool {
        GenericDialect.supports_user_host_grantee()
    }

    fn supports_string_escape_constant(&self) -> bool {
        GenericDialect.supports_string_escape_constant()
    }

    fn supports_array_typedef_with_brackets(&self) -> bool {
        GenericDialect.supports_array_typedef_with_brackets()
    }

    fn supports_match_against(&self) -> bool {
        GenericDialect.supports_match_against()
    }

    fn supports_set_names(&self) -> bool {
        GenericDialect.supports_set_names()
    }

    fn supports_comma_separated_set_assignments(&self) -> bool {
        GenericDialect.supports_comma_separated_set_assignments()
    }

    fn supports_filter_during_aggregation(&self) -> bool {
        GenericDialect.supports_filter_during_aggregation()
    }

    fn supports_select_wildcard_exclude(&self) -> bool {
        GenericDialect.supports_select_wildcard_exclude()
    }

    fn supports_data_type_signed_suffix(&self) -> bool {
        GenericDialect.supports_data_type_signed_suffix()
    }

    fn supports_interval_options(&self) -> bool {
        GenericDialect.supports_interval_options()
    }

    fn supports_quote_delimited_string(&self) -> bool {
        GenericDialect.supports_quote_delimited_string()
    }

    fn supports_select_wildcard_replace(&self) -> bool {
        GenericDialect.supports_select_wildcard_replace()
    }

    fn supports_select_wildcard_ilike(&self) -> bool {
        GenericDialect.supports_select_wildcard_ilike()
    }

    fn supports_select_wildcard_rename(&self) -> bool {
        GenericDialect.supports_select_wildcard_rename()
    }

    fn supports_optimize_table(&self) -> bool {
        GenericDialect.supports_optimize_table()
    }

    fn supports_install(&self) -> bool {
        GenericDialect.supports_install()
    }

    fn supports_detach(&self) -> bool {
        GenericDialect.supports_detach()
    }

    fn supports_prewhere(&self) -> bool {
        GenericDialect.supports_prewhere()
    }

    fn supports_with_fill(&self) -> bool {
        GenericDialect.supports_with_fill()
    }

    fn supports_limit_by(&self) -> bool {
        GenericDialect.supports_limit_by()
    }

    fn supports_interpolate(&self) -> bool {
        GenericDialect.supports_interpolate()
    }

    fn supports_settings(&self) -> bool {
        GenericDialect.supports_settings()
    }

    fn supports_select_format(&self) -> bool {
        GenericDialect.supports_select_format()
    }

    fn supports_comment_optimizer_hint(&self) -> bool {
        GenericDialect.supports_comment_optimizer_hint()
    }

    fn supports_constraint_keyword_without_name(&self) -> bool {
        GenericDialect.supports_constraint_keyword_without_name()
    }

    fn supports_key_column_option(&self) -> bool {
        GenericDialect.supports_key_column_option()
    }

    fn supports_comma_separated_trim(&self) -> bool {
        GenericDialect.supports_comma_separated_trim()
    }

    fn supports_cte_without_as(&self) -> bool {
        GenericDialect.supports_cte_without_as()
    }

    fn supports_select_item_multi_column_alias(&self) -> bool {
        GenericDialect.supports_select_item_multi_column_alias()
    }

    fn supports_xml_expressions(&self) -> bool {
        GenericDialect.supports_xml_expressions()
    }
}

/// Plans pgvector's operators on vectors as the distance functions.
#[derive(Debug)]
pub struct VectorOperators {
    cosine: Arc<ScalarUDF>,
    l2: Arc<ScalarUDF>,
    negative_inner_product: Arc<ScalarUDF>,
}

impl Default for VectorOperators {
    fn default() -> Self {
        let all = distance_udfs();
        let udf = |name: &str| {
            let found = all.iter().find(|f| f.name() == name);
            Arc::new(found.expect("a distance function of this name").clone())
        };
        VectorOperators {
            cosine: udf("cosine_distance"),
            l2: udf("l2_distance"),
            negative_inner_product: udf("negative_inner_product"),
        }
    }
}

fn is_vector(expr: &Expr, schema: &DFSchema) -> bool {
    matches!(
        expr.get_type(schema),
        Ok(DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..))
    )
}

impl ExprPlanner for VectorOperators {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let func = match &expr.op {
            BinaryOperator::LtDashGt => &self.l2,
            BinaryOperator::Custom(op) if op == NEGATIVE_INNER_PRODUCT => {
                &self.negative_inner_product
            }
            // Null-safe equality unless a side is a vector.
            BinaryOperator::Spaceship
                if is_vector(&expr.left, schema) || is_vector(&expr.right, schema) =>
            {
                &self.cosine
            }
            _ => return Ok(PlannerResult::Original(expr)),
        };
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(func.clone(), vec![expr.left, expr.right]),
        )))
    }
}
