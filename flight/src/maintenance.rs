//! Collection maintenance as the `compact` and `alter` Flight actions and the `omendb compact`
//! and `omendb alter` commands run it: one implementation, one JSON reply. Blocking: call from
//! a blocking thread.

use omendb::{Collection, Error};

/// Merges `c`'s segments (see `Collection::compact`); the reply names the merges and what is
/// left.
pub fn compact(c: &Collection) -> omendb::Result<serde_json::Value> {
    let merges = c.compact()?;
    let stats = c.stats()?;
    Ok(serde_json::json!({
        "collection": c.name(),
        "merges": merges,
        "segments": stats.segments,
        "rows": stats.rows,
    }))
}

/// Changes `c`'s settings from `key=value` words (see `Collection::alter`); the reply holds
/// the new settings.
pub fn alter(c: &Collection, args: &[String]) -> omendb::Result<serde_json::Value> {
    if args.is_empty() {
        return Err(Error::InvalidInput(format!(
            "alter: name at least one setting after the collection ({})",
            omendb::SETTING_KEYS
        )));
    }
    let pairs = args
        .iter()
        .map(|a| {
            a.split_once('=').ok_or_else(|| {
                Error::InvalidInput(format!(
                    "alter: '{a}' is not key=value (settings follow the collection's name)"
                ))
            })
        })
        .collect::<omendb::Result<Vec<_>>>()?;
    let settings = c.alter(&pairs)?;
    Ok(serde_json::json!({ "collection": c.name(), "settings": settings }))
}
