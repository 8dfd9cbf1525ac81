//! Deadlines as a table, not futures.
//!
//! A machine keeps one [`TimerTable`] keyed by its own timer enum. It sets and stops deadlines
//! as it changes state and reports the earliest one, and which timer it is, in
//! `Output::Idle { deadline, timer }` ([`TimerTable::next`]). Drivers
//! call `handle(now, Input::Timeout)` when `now >= deadline`; an early call is a no-op because
//! the machine only acts on timers whose deadline has passed ([`TimerTable::expired`]).

use std::time::Instant;

/// A small table of named deadlines.
#[derive(Debug, Clone)]
pub struct TimerTable<T: Copy + Eq> {
    slots: Vec<(T, Instant)>,
}

impl<T: Copy + Eq> Default for TimerTable<T> {
    fn default() -> Self {
        TimerTable { slots: Vec::new() }
    }
}

impl<T: Copy + Eq> TimerTable<T> {
    /// Sets (or moves) timer `t` to fire at `at`.
    pub fn set(&mut self, t: T, at: Instant) {
        match self.slots.iter_mut().find(|(k, _)| *k == t) {
            Some(slot) => slot.1 = at,
            None => self.slots.push((t, at)),
        }
    }

    /// Stops timer `t`; stopping a timer that is not set does nothing.
    pub fn stop(&mut self, t: T) {
        self.slots.retain(|(k, _)| *k != t);
    }

    /// Stops every timer.
    pub fn clear(&mut self) {
        self.slots.clear();
    }

    /// The deadline of timer `t`, if set.
    pub fn deadline(&self, t: T) -> Option<Instant> {
        self.slots.iter().find(|(k, _)| *k == t).map(|(_, at)| *at)
    }

    /// The earliest deadline of all timers.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.next().map(|(_, at)| at)
    }

    /// The timer that fires first, with its deadline.
    pub fn next(&self) -> Option<(T, Instant)> {
        self.slots.iter().copied().min_by_key(|(_, at)| *at)
    }

    /// Removes and returns the earliest timer whose deadline is at or before `now`.
    pub fn expired(&mut self, now: Instant) -> Option<T> {
        let (i, _) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, (_, at))| *at <= now)
            .min_by_key(|(_, (_, at))| *at)?;
        Some(self.slots.swap_remove(i).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum T {
        A,
        B,
    }

    #[test]
    fn earliest_and_expiry() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut tt = TimerTable::default();
        tt.set(T::A, t0 + Duration::from_secs(10));
        tt.set(T::B, t0 + Duration::from_secs(5));
        assert_eq!(tt.next_timeout(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(tt.next(), Some((T::B, t0 + Duration::from_secs(5))));
        assert_eq!(
            tt.expired(t0 + Duration::from_secs(4)),
            None,
            "early is a no-op"
        );
        assert_eq!(tt.expired(t0 + Duration::from_secs(11)), Some(T::B));
        assert_eq!(tt.expired(t0 + Duration::from_secs(11)), Some(T::A));
        assert_eq!(tt.expired(t0 + Duration::from_secs(11)), None);
        tt.set(T::A, t0);
        tt.set(T::A, t0 + Duration::from_secs(1));
        tt.stop(T::B);
        assert_eq!(tt.next_timeout(), Some(t0 + Duration::from_secs(1)));
    }
}
