//! The daemon's memory budget (`[limits] memory_mb`): the loader reserves a
//! study's estimated peak before it reads the study's pixels and waits while
//! the study on the GPU worker holds too much for both to fit (the two run
//! one after the other then); the reservation travels with the study and is
//! given back once the main loop has recorded the study's end.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Bytes reserved by the studies in flight, against a limit.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// A study's share of the budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Budget {
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(Budget { limit, used: Mutex::new(0), freed: Condvar::new() })
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    fn used(&self) -> MutexGuard<'_, u64> {
        // A poisoned lock still holds a valid count (a plain integer).
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes reserved now.
    pub(crate) fn in_use(&self) -> u64 {
        *self.used()
    }

    /// Reserves `bytes` now if they fit beside what is reserved.
    pub(crate) fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut used = self.used();
        (used.saturating_add(bytes) <= self.limit).then(|| {
            *used += bytes;
            Reservation { budget: Arc::clone(self), bytes }
        })
    }

    /// Reserves `bytes` (at most the limit), waiting until they fit beside
    /// what is reserved.
    pub(crate) fn reserve(self: &Arc<Self>, bytes: u64) -> Reservation {
        let bytes = bytes.min(self.limit);
        let mut used = self.used();
        while used.saturating_add(bytes) > self.limit {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += bytes;
        Reservation { budget: Arc::clone(self), bytes }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut used = self.budget.used();
        *used = used.saturating_sub(self.bytes);
        drop(used);
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_add_up_and_come_back_when_dropped() {
        let b = Budget::new(100);
        let a = b.try_reserve(60).expect("fits");
        assert_eq!(b.in_use(), 60);
        assert!(b.try_reserve(41).is_none(), "60 + 41 > 100");
        let c = b.try_reserve(40).expect("60 + 40 fits");
        drop(a);
        assert_eq!(b.in_use(), 40);
        drop(c);
        assert_eq!(b.in_use(), 0);
    }

    /// A reservation that does not fit waits for the other one's release.
    #[test]
    fn reserve_waits_for_a_release() {
        let b = Budget::new(100);
        let first = b.reserve(70);
        let b2 = Arc::clone(&b);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let r = b2.reserve(70);
            tx.send(()).expect("send");
            drop(r);
        });
        // Not granted while the first holds 70 (checked, then released).
        assert!(rx.try_recv().is_err());
        assert_eq!(b.in_use(), 70);
        drop(first);
        rx.recv().expect("granted after the release");
        waiter.join().expect("joins");
        assert_eq!(b.in_use(), 0);
        // More than the limit is capped to it: granted when nothing else is held.
        let r = b.reserve(500);
        assert_eq!(b.in_use(), 100);
        drop(r);
    }
}
