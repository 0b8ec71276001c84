//! Searches of one snapshot that arrive while another runs wait for it, then run as one
//! many-query search: its exact scans (the unindexed tail) read each row once for all of them,
//! where separate searches would each stream the whole tail from memory. Under a burst of
//! concurrent readers that is what bounds their throughput; alone, a search runs at once.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

use super::{Hit, SearchRequest, SegmentPlan};
use crate::error::lock;
use crate::snapshot::Snapshot;
use crate::Result;

/// The searches waiting on one snapshot, and whether a group of them is running.
#[derive(Debug, Default)]
pub(crate) struct Together {
    state: Mutex<State>,
    ran: Condvar,
}

#[derive(Debug, Default)]
struct State {
    running: bool,
    next: u64,
    waiting: Vec<Waiting>,
    /// Answers not yet taken, by search; `None`: its group failed, it runs alone.
    answers: HashMap<u64, Option<Answer>>,
}

type Answer = (Vec<Hit>, Vec<SegmentPlan>);

/// One search's query and the parameters a group must share.
#[derive(Debug)]
struct Waiting {
    id: u64,
    query: Vec<f32>,
    key: Key,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    k: usize,
    ef: Option<usize>,
    nprobe: Option<usize>,
    exact: bool,
    fast: bool,
}

/// Clears `running` and wakes the waiting if the group's search panicked, so one of them
/// runs it again rather than all waiting for ever.
struct Running<'a>(&'a Together);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).running = false;
        self.0.ran.notify_all();
    }
}

impl Snapshot {
    /// As [`Snapshot::search_traced`]. Single-query searches without a filter made while
    /// another runs wait for it, then run together as one many-query search (a request with
    /// a filter or several queries runs alone, at once).
    pub fn search_together(
        &self,
        req: &SearchRequest<'_>,
    ) -> Result<(Vec<Vec<Hit>>, Vec<SegmentPlan>)> {
        if req.filter.is_some() || req.queries.len() != self.dim() {
            return self.search_traced(req);
        }
        let key = Key {
            k: req.k,
            ef: req.ef,
            nprobe: req.nprobe,
            exact: req.exact,
            fast: req.fast,
        };
        let together = &self.together;
        let mut state = lock(&together.state);
        let id = state.next;
        state.next += 1;
        state.waiting.push(Waiting {
            id,
            query: req.queries.to_vec(),
            key,
        });
        loop {
            if let Some(answer) = state.answers.remove(&id) {
                drop(state);
                return match answer {
                    Some((hits, trace)) => Ok((vec![hits], trace)),
                    None => self.search_traced(req),
                };
            }
            if state.running {
                state = together.ran.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead: run everything waiting, this search with it.
            state.running = true;
            let group = std::mem::take(&mut state.waiting);
            drop(state);
            let running = Running(together);
            let answers = self.run_group(group);
            state = lock(&together.state);
            state.answers.extend(answers);
            drop(state);
            drop(running);
            state = lock(&together.state);
        }
    }

    /// Runs `group` as one search per set of shared parameters; each search's answer.
    fn run_group(&self, mut group: Vec<Waiting>) -> Vec<(u64, Option<Answer>)> {
        let mut answers = Vec::with_capacity(group.len());
        while let Some(first) = group.first() {
            let key = first.key;
            let (same, rest): (Vec<Waiting>, Vec<Waiting>) =
                group.into_iter().partition(|w| w.key == key);
            group = rest;
            let queries: Vec<f32> = same.iter().flat_map(|w| w.query.iter().copied()).collect();
            let req = SearchRequest::new(&queries, key.k)
                .ef(key.ef)
                .nprobe(key.nprobe)
                .exact(key.exact)
                .fast(key.fast);
            match self.search_traced(&req) {
                Ok((hits, trace)) => answers.extend(
                    same.iter()
                        .zip(hits)
                        .map(|(w, hits)| (w.id, Some((hits, trace.clone())))),
                ),
                // Each runs alone and meets its own error.
                Err(_) => answers.extend(same.iter().map(|w| (w.id, None))),
            }
        }
        answers
    }
}
