//! The handle table: every live object behind a handle, in a slot with a generation.

use std::sync::{Arc, Mutex};

use crate::error::{Failure, Outcome};
use crate::objects::{CollectionRef, Found, OpenDb};
use crate::omendb_status::*;
use crate::{omendb_collection, omendb_db, omendb_result};

pub(crate) enum Object {
    Db(Arc<OpenDb>),
    Collection(Arc<CollectionRef>),
    Result(Arc<Found>),
}

struct Slot {
    generation: u32,
    object: Option<Object>,
}

/// The live objects. Handles are `(slot + 1) << 32 | generation`.
static HANDLES: Mutex<Vec<Slot>> = Mutex::new(Vec::new());

fn slots() -> std::sync::MutexGuard<'static, Vec<Slot>> {
    HANDLES.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn insert(object: Object) -> u64 {
    let mut slots = slots();
    let index = match slots.iter().position(|s| s.object.is_none()) {
        Some(i) => i,
        None => {
            slots.push(Slot {
                generation: 0,
                object: None,
            });
            slots.len() - 1
        }
    };
    let slot = &mut slots[index];
    slot.generation = slot.generation.wrapping_add(1);
    slot.object = Some(object);
    ((index as u64 + 1) << 32) | u64::from(slot.generation)
}

fn stale(what: &str, id: u64) -> Failure {
    Failure(
        OMENDB_ERR_STALE_HANDLE,
        format!("stale handle: {id:#x} is not a live {what} (closed, freed or never issued)"),
    )
}

/// The slot index of handle `id` if it is live; `f` picks the object it must hold.
pub(crate) fn lookup<T>(id: u64, what: &str, f: impl FnOnce(&Object) -> Option<T>) -> Outcome<T> {
    let index = (id >> 32).checked_sub(1).ok_or_else(|| stale(what, id))? as usize;
    let slots = slots();
    slots
        .get(index)
        .filter(|s| u64::from(s.generation) == id & 0xffff_ffff)
        .and_then(|s| s.object.as_ref())
        .and_then(f)
        .ok_or_else(|| stale(what, id))
}

/// Empties handle `id`'s slot if it holds an object `f` accepts; returns the object.
pub(crate) fn remove(id: u64, what: &str, f: impl Fn(&Object) -> bool) -> Outcome<Object> {
    let index = (id >> 32).checked_sub(1).ok_or_else(|| stale(what, id))? as usize;
    let mut slots = slots();
    let slot = slots
        .get_mut(index)
        .filter(|s| u64::from(s.generation) == id & 0xffff_ffff)
        .filter(|s| s.object.as_ref().is_some_and(&f))
        .ok_or_else(|| stale(what, id))?;
    slot.generation = slot.generation.wrapping_add(1);
    Ok(slot.object.take().expect("checked above"))
}

pub(crate) fn db_of(h: omendb_db) -> Outcome<Arc<OpenDb>> {
    lookup(h.id, "database", |o| match o {
        Object::Db(d) => Some(d.clone()),
        _ => None,
    })
}

pub(crate) fn collection_of(h: omendb_collection) -> Outcome<Arc<CollectionRef>> {
    lookup(h.id, "collection", |o| match o {
        Object::Collection(c) => Some(c.clone()),
        _ => None,
    })
}

pub(crate) fn result_of(h: omendb_result) -> Outcome<Arc<Found>> {
    lookup(h.id, "result", |o| match o {
        Object::Result(r) => Some(r.clone()),
        _ => None,
    })
}
