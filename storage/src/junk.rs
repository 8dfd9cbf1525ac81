//! The junk filter's counts: per account, how many trained ham and spam messages hold
//! each token, and which stored messages are trained as what.
//!
//! Training a stored message records it in `junk_trained` with the token grams it was
//! tokenized with, so that untraining (reclassified by the user, expunged, or too old)
//! subtracts exactly what was added, from the message's own bytes. Every change is one
//! transaction: the counts and the trained state never disagree.

use std::collections::BTreeSet;

use redb::ReadableTable;
use rmox_core::junk::{self, Counts, Params};

use crate::error::StoreError;
use crate::model::MessageId;
use crate::store::Store;
use crate::tables::*;
use rmox_core::UnixTime;

/// Bit of a `junk_trained` value: trained as spam (else ham).
pub(crate) const TRAINED_SPAM: u8 = 1;
const ONEGRAMS: u8 = 2;
const TWOGRAMS: u8 = 4;

/// The token under which an account's message totals are kept.
const TOTALS: &str = "";

/// A message's training state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trained {
    /// Trained as spam (else ham).
    pub spam: bool,
    /// The message's received time (part of the key).
    pub received: UnixTime,
}

fn bits(spam: bool, p: &Params) -> u8 {
    (if spam { TRAINED_SPAM } else { 0 })
        | (if p.onegrams { ONEGRAMS } else { 0 })
        | (if p.twograms { TWOGRAMS } else { 0 })
}

fn params_of(bits: u8) -> Params {
    Params {
        onegrams: bits & ONEGRAMS != 0,
        twograms: bits & TWOGRAMS != 0,
        ..Params::default()
    }
}

/// Adds (`sign` 1) or subtracts (-1) one message of class `spam` with `tokens`.
fn apply(
    t: &mut redb::Table<'_, (&'static str, &'static str), (u32, u32)>,
    account: &str,
    tokens: &BTreeSet<String>,
    spam: bool,
    add: bool,
) -> Result<(), StoreError> {
    let bump = |(h, s): (u32, u32)| {
        let f = |n: u32| {
            if add {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            }
        };
        if spam {
            (h, f(s))
        } else {
            (f(h), s)
        }
    };
    for w in tokens.iter().map(String::as_str).chain([TOTALS]) {
        let old = t.get((account, w))?.map_or((0, 0), |g| g.value());
        let new = bump(old);
        if new == (0, 0) {
            t.remove((account, w))?;
        } else {
            t.insert((account, w), new)?;
        }
    }
    Ok(())
}

impl Store {
    /// The numbers of ham and spam messages trained for `account`, and the counts of each
    /// of `tokens` (in order; zero for tokens never seen). One read transaction.
    pub fn junk_counts(
        &self,
        account: &str,
        tokens: &[String],
    ) -> Result<(u32, u32, Vec<Counts>), StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(JUNK_WORDS)?;
        let (hams, spams) = t.get((account, TOTALS))?.map_or((0, 0), |g| g.value());
        let mut v = Vec::with_capacity(tokens.len());
        for w in tokens {
            let (ham, spam) = if w.is_empty() {
                (0, 0)
            } else {
                t.get((account, w.as_str()))?.map_or((0, 0), |g| g.value())
            };
            v.push(Counts { ham, spam });
        }
        Ok((hams, spams, v))
    }

    /// Trains `account`'s filter with messages that are not stored here (a corpus import):
    /// each token set counts as one ham or spam message. One transaction for all of them.
    pub fn junk_train_tokens(
        &self,
        account: &str,
        messages: Vec<(bool, BTreeSet<String>)>,
    ) -> Result<(), StoreError> {
        let account = account.to_string();
        self.write(vec![], vec![], move |txn| {
            let mut t = txn.open_table(JUNK_WORDS)?;
            for (spam, tokens) in &messages {
                apply(&mut t, &account, tokens, *spam, true)?;
            }
            Ok(())
        })
    }

    /// How a stored message is trained, `None` when it is not.
    pub fn junk_trained(&self, id: MessageId) -> Result<Option<Trained>, StoreError> {
        let Some(rec) = self.message(id)? else {
            return Ok(None);
        };
        let rtx = self.read()?;
        let t = rtx.open_table(JUNK_TRAINED)?;
        let v = t.get((rec.account.as_str(), rec.received.0, id.0))?;
        Ok(v.map(|g| Trained {
            spam: g.value() & TRAINED_SPAM != 0,
            received: rec.received,
        }))
    }

    /// Trains a stored message as `class` (`Some(true)` spam, `Some(false)` ham, `None`
    /// untrained), tokenized with `params`: what it was trained as before is subtracted
    /// first, in the same transaction. Returns whether anything changed. An expunged
    /// message can only be untrained (from the record of what it was trained with, when its
    /// bytes are still readable, else only its message total).
    pub fn junk_set_class(
        &self,
        id: MessageId,
        class: Option<bool>,
        params: &Params,
    ) -> Result<bool, StoreError> {
        let Some(rec) = self.message(id)? else {
            return Err(StoreError::NoMessage(id));
        };
        let before = {
            let rtx = self.read()?;
            let t = rtx.open_table(JUNK_TRAINED)?;
            let v = t.get((rec.account.as_str(), rec.received.0, id.0))?;
            v.map(|g| g.value())
        };
        let want = if rec.expunged { None } else { class };
        if before.map(|b| (b & TRAINED_SPAM != 0, b)) == want.map(|s| (s, bits(s, params))) {
            return Ok(false);
        }
        if before.is_none() && want.is_none() {
            return Ok(false);
        }
        let bytes = self.body(id).ok();
        let old_tokens = match (before, &bytes) {
            (Some(b), Some(m)) => Some(junk::tokenize(&params_of(b), m)),
            _ => None,
        };
        let new_tokens = match (want, &bytes) {
            (Some(_), Some(m)) => Some(junk::tokenize(params, m)),
            (Some(_), None) => return Err(StoreError::NoMessage(id)),
            _ => None,
        };
        let (account, received) = (rec.account.clone(), rec.received.0);
        let want_bits = want.map(|s| bits(s, params));
        self.write(vec![], vec![], move |txn| {
            let mut trained = txn.open_table(JUNK_TRAINED)?;
            let now = trained
                .get((account.as_str(), received, id.0))?
                .map(|g| g.value());
            if now != before {
                // Changed meanwhile by another writer: its change stands.
                return Ok(false);
            }
            let mut words = txn.open_table(JUNK_WORDS)?;
            if let Some(b) = before {
                let empty = BTreeSet::new();
                let tokens = old_tokens.as_ref().unwrap_or(&empty);
                apply(&mut words, &account, tokens, b & TRAINED_SPAM != 0, false)?;
                trained.remove((account.as_str(), received, id.0))?;
            }
            if let (Some(b), Some(tokens)) = (want_bits, &new_tokens) {
                apply(&mut words, &account, tokens, b & TRAINED_SPAM != 0, true)?;
                trained.insert((account.as_str(), received, id.0), b)?;
            }
            Ok(true)
        })
    }

    /// Messages of `account` trained and received before `before` (oldest first, at most
    /// `limit`): what an age limit untrains.
    pub fn junk_trained_before(
        &self,
        account: &str,
        before: UnixTime,
        limit: usize,
    ) -> Result<Vec<MessageId>, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(JUNK_TRAINED)?;
        let mut v = Vec::new();
        for r in t.range((account, i64::MIN, 0)..(account, before.0, 0))? {
            let (k, _) = r?;
            v.push(MessageId(k.value().2));
            if v.len() >= limit {
                break;
            }
        }
        Ok(v)
    }

    /// Forgets everything `account`'s filter learned (counts and trained messages).
    pub fn junk_reset(&self, account: &str) -> Result<(), StoreError> {
        let account = account.to_string();
        self.write(vec![], vec![], move |txn| {
            let mut words = txn.open_table(JUNK_WORDS)?;
            let keys: Vec<String> = words
                .range((account.as_str(), "")..)?
                .map_while(|r| {
                    r.ok().and_then(|(k, _)| {
                        let (a, w) = k.value();
                        (a == account).then(|| w.to_string())
                    })
                })
                .collect();
            for w in keys {
                words.remove((account.as_str(), w.as_str()))?;
            }
            let mut trained = txn.open_table(JUNK_TRAINED)?;
            let keys: Vec<(i64, u64)> = trained
                .range((account.as_str(), i64::MIN, 0)..)?
                .map_while(|r| {
                    r.ok().and_then(|(k, _)| {
                        let (a, t, id) = k.value();
                        (a == account).then_some((t, id))
                    })
                })
                .collect();
            for (t, id) in keys {
                trained.remove((account.as_str(), t, id))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Delivery, Flags, MessageInfo};

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.account_add("a", "example.org").unwrap();
        (d, s)
    }

    fn deliver(s: &Store, body: &str, received: i64) -> MessageId {
        let m = format!("Subject: test\r\n\r\n{body}\r\n");
        s.deliver(Delivery {
            account: "a".into(),
            mailbox: "Inbox".into(),
            head: b"",
            message: m.as_bytes(),
            received: UnixTime(received),
            flags: Flags::default(),
            info: MessageInfo::default(),
        })
        .unwrap()
    }

    fn counts(s: &Store, words: &[&str]) -> (u32, u32, Vec<(u32, u32)>) {
        let w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        let (h, sp, c) = s.junk_counts("a", &w).unwrap();
        (h, sp, c.into_iter().map(|c| (c.ham, c.spam)).collect())
    }

    /// Train, reclassify, untrain: the counts follow exactly and nothing is left.
    #[test]
    fn train_reclassify_untrain() {
        let (_d, s) = store();
        let p = Params::default();
        let m = deliver(&s, "cheap pills cheap", 100);
        assert!(s.junk_set_class(m, Some(true), &p).unwrap());
        assert!(!s.junk_set_class(m, Some(true), &p).unwrap(), "idempotent");
        assert_eq!(
            counts(&s, &["cheap", "pills", "cheap pills", "other"]),
            (0, 1, vec![(0, 1), (0, 1), (0, 1), (0, 0)])
        );
        assert_eq!(s.junk_trained(m).unwrap().map(|t| t.spam), Some(true));
        assert!(s.junk_set_class(m, Some(false), &p).unwrap());
        assert_eq!(counts(&s, &["cheap"]), (1, 0, vec![(1, 0)]));
        assert_eq!(
            s.junk_trained_before("a", UnixTime(101), 10).unwrap(),
            vec![m]
        );
        assert!(s
            .junk_trained_before("a", UnixTime(100), 10)
            .unwrap()
            .is_empty());
        assert!(s.junk_set_class(m, None, &p).unwrap());
        assert_eq!(counts(&s, &["cheap"]), (0, 0, vec![(0, 0)]));
        let rtx = s.read().unwrap();
        assert_eq!(
            redb::ReadableTableMetadata::len(&rtx.open_table(JUNK_WORDS).unwrap()).unwrap(),
            0,
            "no zero rows left"
        );
    }

    /// Untraining uses the grams the message was trained with, even when the params
    /// changed since.
    #[test]
    fn untrain_with_the_grams_trained_with() {
        let (_d, s) = store();
        let m = deliver(&s, "alpha beta", 100);
        let pairs_only = Params {
            onegrams: false,
            ..Params::default()
        };
        s.junk_set_class(m, Some(true), &pairs_only).unwrap();
        assert_eq!(counts(&s, &["alpha", "alpha beta"]).2, vec![(0, 0), (0, 1)]);
        s.junk_set_class(m, None, &Params::default()).unwrap();
        assert_eq!(counts(&s, &["alpha beta"]), (0, 0, vec![(0, 0)]));
    }

    /// Corpus training counts messages without records; reset forgets all.
    #[test]
    fn corpus_and_reset() {
        let (_d, s) = store();
        let toks = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        s.junk_train_tokens(
            "a",
            vec![
                (true, toks(&["x", "y"])),
                (false, toks(&["y"])),
                (false, toks(&["z"])),
            ],
        )
        .unwrap();
        assert_eq!(
            counts(&s, &["x", "y", "z"]),
            (2, 1, vec![(0, 1), (1, 1), (1, 0)])
        );
        let m = deliver(&s, "words here", 5);
        s.junk_set_class(m, Some(false), &Params::default())
            .unwrap();
        s.junk_reset("a").unwrap();
        assert_eq!(counts(&s, &["x", "y", "words"]).0, 0);
        assert!(s.junk_trained(m).unwrap().is_none());
    }

    /// An expunged message can be untrained (its counts go) but not trained.
    #[test]
    fn expunged_messages() {
        let (_d, s) = store();
        let p = Params::default();
        let m = deliver(&s, "gone soon", 100);
        s.junk_set_class(m, Some(true), &p).unwrap();
        s.expunge(m).unwrap();
        assert!(s.junk_trained(m).unwrap().is_none(), "expunge untrains");
        assert_eq!(counts(&s, &["gone"]), (0, 0, vec![(0, 0)]));
        assert!(!s.junk_set_class(m, Some(true), &p).unwrap());
    }
}
