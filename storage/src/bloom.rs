//! A Bloom filter over the keys of the message index (account, kind, value), kept in
//! memory: a history question about a key that no message was ever indexed under (a
//! first-time sender's address, domain, network...) is answered "none" without reading
//! the index, so its cost does not grow with the account's history. Built from the index
//! when the store opens; every index entry a delivery writes is added before its commit
//! (so a reader that sees the commit also sees the key). Entries are never removed (an
//! expunged message's mailbox entry stays a harmless false positive). False positives only
//! cost the index read the filter would have saved; there are no false negatives.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ikey::Slot;

/// Bits at least (1 MiB), and per key at the size chosen when the store opens.
const MIN_BITS: usize = 1 << 23;
const BITS_PER_KEY: usize = 16;
/// At most 128 MiB of filter.
const MAX_BITS: usize = 1 << 30;
/// Bit positions per key, all in one 64-bit word (a blocked filter: one memory access per
/// question, which matters once the filter is larger than the CPU's caches).
const K: u32 = 3;

/// The filter.
pub(crate) struct IndexBloom {
    words: Vec<AtomicU64>,
    /// Mask of a word index.
    mask: u64,
}

impl IndexBloom {
    /// A filter for about `keys` keys (and room to grow).
    pub(crate) fn with_capacity(keys: usize) -> IndexBloom {
        let bits = keys
            .saturating_mul(BITS_PER_KEY)
            .saturating_mul(2)
            .next_power_of_two()
            .clamp(MIN_BITS, MAX_BITS);
        IndexBloom {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: (bits / 64) as u64 - 1,
        }
    }

    /// The key's word and the bits it sets there: the word from the slot's hash, the bits
    /// from its check (independent halves of one 128-bit keyed hash).
    fn word_bits(&self, slot: Slot) -> (usize, u64) {
        let mut bits = 0u64;
        for i in 0..K {
            bits |= 1 << ((slot.check >> (i * 6)) & 63);
        }
        ((slot.hash & self.mask) as usize, bits)
    }

    /// Adds a key.
    pub(crate) fn insert(&self, slot: Slot) {
        let (w, bits) = self.word_bits(slot);
        self.words[w].fetch_or(bits, Ordering::Release);
    }

    /// Whether the key may have been added (`false`: it never was).
    pub(crate) fn may_contain(&self, slot: Slot) -> bool {
        let (w, bits) = self.word_bits(slot);
        self.words[w].load(Ordering::Acquire) & bits == bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ikey::IndexKeyer;

    #[test]
    fn no_false_negatives_few_false_positives() {
        let b = IndexBloom::with_capacity(10_000);
        let k = IndexKeyer::new(3, 4);
        let slot = |a: &str, kind: u8, v: &str| k.slot(a, kind, v);
        for i in 0..10_000 {
            b.insert(slot("a", 3, &format!("v{i}")));
        }
        for i in 0..10_000 {
            assert!(b.may_contain(slot("a", 3, &format!("v{i}"))));
        }
        let fp = (0..10_000)
            .filter(|i| {
                b.may_contain(slot("a", 3, &format!("w{i}")))
                    || b.may_contain(slot("b", 3, &format!("v{i}")))
            })
            .count();
        assert!(fp < 100, "{fp} false positives in 20000");
        assert!(!b.may_contain(slot("a", 4, "v1")) || !b.may_contain(slot("a", 4, "v2")));
    }
}
