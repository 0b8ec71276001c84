//! Maintenance actions (`compact`, `alter`, `stats`, `wait`, `verify`, `backup`) as the Flight actions
//! and the `omendb` commands run them: one implementation, one JSON reply. Blocking: call
//! from a blocking thread.
//!
//! Bodies: `compact`, `stats`, `wait` and `verify` take a collection's name, or nothing for every
//! collection; `alter` the name, then `key=value` settings; `backup` the destination
//! directory or object storage URL on the first line and, optionally, a collection's name on the second.

use std::sync::Arc;

use omendb::{Collection, Database, Error};
use serde_json::{json, Value};

use super::{ALTER, BACKUP, COMPACT, GC, STATS, VERIFY, WAIT};

/// The actions this module runs.
pub(crate) const ACTIONS: [&str; 7] = [COMPACT, ALTER, STATS, WAIT, VERIFY, GC, BACKUP];

/// Runs maintenance action `kind` with `body` (see the module docs). `progress` hears
/// `(label, bytes done, bytes in all)` while files are checked.
pub fn run(
    db: &Database,
    kind: &str,
    body: &str,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> omendb::Result<Value> {
    if kind == BACKUP {
        let mut lines = body.lines();
        let dest = lines.next().map(str::trim).unwrap_or_default();
        if dest.is_empty() {
            return Err(Error::InvalidInput(
                "backup: name the destination directory or URL".into(),
            ));
        }
        let only = lines.next().map(str::trim).filter(|n| !n.is_empty());
        let copied = if omendb_object::is_url(dest) {
            // The destination's client reads the standard environment variables only.
            let root = omendb_object::ObjectRoot::open(dest, &[], &Default::default())?;
            db.backup_to(&root, only)?
        } else {
            db.backup(std::path::Path::new(dest), only)?
        };
        return Ok(json!({ "destination": dest, "collections": copied }));
    }
    let mut words = body.split_whitespace().peekable();
    // A first word that is a key=value pair is an argument (of every collection), not a name.
    let name = words.next_if(|w| !w.contains('='));
    let args: Vec<String> = words.map(str::to_string).collect();
    let one = |c: &Arc<Collection>, progress: &mut dyn FnMut(&str, u64, u64)| match kind {
        COMPACT => compact(c),
        ALTER => alter(c, &args),
        STATS => stats(c),
        WAIT => {
            c.wait_for_indexing();
            stats(c)
        }
        GC => {
            let retain = retain_of(&args)?;
            let (files, bytes) = c.collect_garbage(retain)?;
            Ok(json!({
                "collection": c.name(), "removed_files": files, "removed_bytes": bytes,
                "retain_s": retain.as_secs_f64(), "ok": true,
            }))
        }
        VERIFY => {
            let label = format!("verify {}", c.name());
            let (files, bytes) = c.verify_with(&mut |done, all| progress(&label, done, all))?;
            Ok(json!({ "collection": c.name(), "files": files, "bytes": bytes, "ok": true }))
        }
        other => Err(Error::InvalidInput(format!(
            "unknown action '{other}' (expected one of {ACTIONS:?})"
        ))),
    };
    match name {
        Some(name) => one(&db.collection(name)?, progress),
        None if kind == ALTER => Err(Error::InvalidInput(format!(
            "alter: name the collection, then key=value settings ({})",
            omendb::setting_keys()
        ))),
        None => {
            // Every collection: a damaged one is reported in its entry, not as the error.
            let mut all = Vec::new();
            let mut ok = true;
            for name in db.list_collections()? {
                match db.collection(&name).and_then(|c| one(&c, progress)) {
                    Ok(v) => all.push(v),
                    Err(e) => {
                        ok = false;
                        all.push(
                            json!({ "collection": name, "ok": false, "error": e.to_string() }),
                        );
                    }
                }
            }
            Ok(json!({ "collections": all, "ok": ok }))
        }
    }
}

fn stats(c: &Collection) -> omendb::Result<Value> {
    serde_json::to_value(c.stats()?)
        .map_err(|e| Error::Internal(format!("stats do not serialize: {e}")))
}

/// Merges `c`'s segments (see `Collection::compact`); the reply names the merges and what is
/// left.
pub(crate) fn compact(c: &Collection) -> omendb::Result<Value> {
    let merges = c.compact()?;
    let stats = c.stats()?;
    Ok(json!({
        "collection": c.name(),
        "merges": merges,
        "segments": stats.segments,
        "rows": stats.rows,
    }))
}

/// Changes `c`'s settings from `key=value` words (see `Collection::alter`); the reply holds
/// the new settings.
pub(crate) fn alter(c: &Collection, args: &[String]) -> omendb::Result<Value> {
    if args.is_empty() {
        return Err(Error::InvalidInput(format!(
            "alter: name at least one setting after the collection ({})",
            omendb::setting_keys()
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
    Ok(json!({ "collection": c.name(), "settings": settings }))
}

/// How long replaced versions stay readable, from a `gc` action's `retain=SECONDS` (default
/// [`DEFAULT_RETAIN`]).
fn retain_of(args: &[String]) -> omendb::Result<std::time::Duration> {
    let mut retain = DEFAULT_RETAIN;
    for arg in args {
        match arg.split_once('=') {
            Some(("retain", v)) => {
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "gc: retain must be a number of seconds, got '{v}'"
                        ))
                    })?;
                retain = std::time::Duration::from_secs_f64(secs);
            }
            _ => {
                return Err(Error::InvalidInput(format!(
                    "gc: unknown argument '{arg}' (expected retain=SECONDS)"
                )))
            }
        }
    }
    Ok(retain)
}

/// How long `gc` keeps replaced versions readable by default: an hour.
pub const DEFAULT_RETAIN: std::time::Duration = std::time::Duration::from_secs(3600);
