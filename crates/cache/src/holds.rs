//! Which records are in use: every [`Hold`] on an id keeps that record from being
//! removed, and a record being removed cannot be held again (so a build that finds a
//! cached result while a prune removes it gets a cache miss, never a result that goes
//! away under it).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    counts: HashMap<String, usize>,
    removing: HashSet<String>,
}

/// The holds on records, by id.
#[derive(Debug, Default)]
pub struct Holds {
    state: Mutex<State>,
}

/// A record in use; released when dropped.
#[derive(Debug)]
pub struct Hold {
    id: String,
    holds: Arc<Holds>,
}

impl Hold {
    /// The record's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut state = self.holds.lock();
        if let Some(n) = state.counts.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                state.counts.remove(&self.id);
            }
        }
    }
}

/// The right to remove a record: nothing holds it, and nothing can until this is
/// dropped.
#[derive(Debug)]
pub(crate) struct Claim {
    id: String,
    holds: Arc<Holds>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.holds.lock().removing.remove(&self.id);
    }
}

impl Holds {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds record `id`; `None` while it is being removed.
    pub fn hold(self: &Arc<Self>, id: &str) -> Option<Hold> {
        let mut state = self.lock();
        if state.removing.contains(id) {
            return None;
        }
        *state.counts.entry(id.to_string()).or_default() += 1;
        Some(Hold {
            id: id.to_string(),
            holds: self.clone(),
        })
    }

    /// Whether anything holds `id`.
    pub fn is_held(&self, id: &str) -> bool {
        self.lock().counts.contains_key(id)
    }

    /// Claims `id` for removal, unless something holds it (or another removal has it).
    pub(crate) fn claim(self: &Arc<Self>, id: &str) -> Option<Claim> {
        let mut state = self.lock();
        if state.counts.contains_key(id) || !state.removing.insert(id.to_string()) {
            return None;
        }
        Some(Claim {
            id: id.to_string(),
            holds: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_and_claims_exclude_each_other() {
        let h = Arc::new(Holds::default());
        let a = h.hold("a").unwrap();
        let a2 = h.hold("a").unwrap();
        assert!(h.is_held("a"));
        assert!(h.claim("a").is_none(), "held: cannot be removed");
        drop(a);
        assert!(h.is_held("a"), "one hold left");
        drop(a2);
        assert!(!h.is_held("a"));
        let c = h.claim("a").unwrap();
        assert!(h.hold("a").is_none(), "being removed: cannot be held");
        assert!(h.claim("a").is_none(), "one removal at a time");
        drop(c);
        assert!(h.hold("a").is_some(), "the removal gave up: usable again");
    }
}
