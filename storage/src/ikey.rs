//! Keys of the message index. An entry is found by a keyed 128-bit SipHash of (account,
//! kind, normalised value): the first 64 bits lead the key, the other 64 bits are kept in the
//! entry and compared on every read, so two different keys are confused only if all 128 bits
//! agree. The hash key is random per database (kept in `meta`), so a sender cannot choose
//! values that collide. A key of three integers (hash, received time, message id) is
//! compared without decoding strings and keeps the B-tree's branches wide: the cost of a
//! question grows as little as possible with an account's history.

use std::hash::Hasher;

use siphasher::sip128::{Hasher128, SipHasher24};

/// The hash key of one database's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexKeyer {
    k0: u64,
    k1: u64,
}

/// Where an index key's entries are: the leading hash and the check stored beside each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) hash: u64,
    pub(crate) check: u64,
}

impl IndexKeyer {
    /// The keyer with hash key (`k0`, `k1`).
    pub(crate) fn new(k0: u64, k1: u64) -> IndexKeyer {
        IndexKeyer { k0, k1 }
    }

    /// A fresh random hash key (from the operating system's randomness, through std's
    /// randomly keyed hasher).
    pub(crate) fn random() -> IndexKeyer {
        use std::hash::BuildHasher;
        let s = std::collections::hash_map::RandomState::new();
        let mut a = s.build_hasher();
        a.write_u64(std::process::id().into());
        let mut b = s.build_hasher();
        b.write_u64(!u64::from(std::process::id()));
        IndexKeyer {
            k0: a.finish(),
            k1: b.finish(),
        }
    }

    /// The hash key, to store.
    pub(crate) fn parts(self) -> (u64, u64) {
        (self.k0, self.k1)
    }

    /// The slot of (`account`, `kind`, `value`); `value` is already normalised.
    pub(crate) fn slot(self, account: &str, kind: u8, value: &str) -> Slot {
        let mut h = SipHasher24::new_with_keys(self.k0, self.k1);
        // Lengths first: ("ab", "c") and ("a", "bc") must differ.
        h.write_u64(account.len() as u64);
        h.write(account.as_bytes());
        h.write_u8(kind);
        h.write(value.as_bytes());
        let r = h.finish128();
        Slot {
            hash: r.h1,
            check: r.h2,
        }
    }
}

/// The index key of a message received at `received` with id `id` under `hash`. The time is
/// stored with its sign bit flipped, so the integers sort as the times do.
pub(crate) fn key(hash: u64, received: i64, id: u64) -> (u64, u64, u64) {
    (hash, (received as u64) ^ (1 << 63), id)
}

/// The range of keys under `hash` received from `since` (inclusive) to `until` (exclusive).
pub(crate) fn range(hash: u64, since: i64, until: Option<i64>) -> std::ops::Range<(u64, u64, u64)> {
    let end = match until {
        Some(u) => key(hash, u, 0),
        None => (hash, u64::MAX, u64::MAX),
    };
    key(hash, since, 0)..end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_as_keys() {
        let ts = [i64::MIN, -5, -1, 0, 1, 1_700_000_000, i64::MAX];
        for w in ts.windows(2) {
            assert!(key(7, w[0], 0) < key(7, w[1], 0), "{w:?}");
        }
        assert!(range(7, -1, Some(1)).contains(&key(7, 0, 99)));
        assert!(!range(7, -1, Some(1)).contains(&key(7, 1, 0)));
        assert!(range(7, 5, None).contains(&key(7, i64::MAX, u64::MAX - 1)));
    }

    #[test]
    fn slots_differ_by_account_kind_value_and_key() {
        let k = IndexKeyer::new(1, 2);
        let a = k.slot("ab", 1, "c");
        assert_ne!(a, k.slot("a", 1, "bc"));
        assert_ne!(a, k.slot("ab", 2, "c"));
        assert_eq!(a, k.slot("ab", 1, "c"));
        assert_ne!(a, IndexKeyer::new(1, 3).slot("ab", 1, "c"));
        assert_ne!(IndexKeyer::random(), IndexKeyer::random());
    }
}
