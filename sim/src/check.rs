//! The invariants checked after every run.
//!
//! * Every recipient our server answered `250` for is delivered (to our mailbox, durably, or
//!   to the remote host) or a failure DSN naming it reached the sender (or failed for good
//!   itself, a double bounce, counted: the sender's server was unreachable for the whole
//!   retry period).
//! * Nothing is delivered that was not committed durably, and what is delivered is
//!   byte-for-byte what the client sent (behind the Received fields).
//! * No duplicate beyond the documented window: a recipient is delivered at most once per
//!   durable commit, plus once per outgoing window event (the remote accepted the message
//!   and we lost that fact: the connection broke after the final dot, or we crashed before
//!   the outcome was synced). Incoming duplicates (committed, the client never saw the
//!   `250` and sent again) are separate commits and are counted, not forbidden.
//! * Limits held (recipients per transaction, message size, queue concurrency and batch
//!   size), checked while running; memory stayed bounded (bytes buffered per connection).
//! * The run drained: no queue entry, session, connection or unsynced write left, every
//!   client message finished; no panic (caught in [`crate::run`]).

use std::collections::BTreeMap;

use crate::world::{client_message, ClientMsg, Delivered, Key, World, LOCAL_DOMAIN};

/// The attempt's client message for a tag `m<id>.<attempt>`.
fn client_msg<'a>(w: &'a World, tag: &str) -> Option<(&'a ClientMsg, u32)> {
    let rest = tag.strip_prefix('m')?;
    let (id, attempt) = rest.split_once('.')?;
    let id: u64 = id.parse().ok()?;
    let attempt: u32 = attempt.parse().ok()?;
    w.client_msgs().find(|m| m.id == id).map(|m| (m, attempt))
}

/// Whether a delivered DSN reports `rcpt` of message `tag` as failed.
fn dsn_reports(d: &Delivered, tag: &str, rcpt: &str) -> bool {
    if !d.mail_from.is_empty() {
        return false;
    }
    let text = String::from_utf8_lossy(&d.bytes);
    let has_tag = text.split("\r\n").any(|l| {
        l.strip_prefix("X-Sim-Id: ")
            .is_some_and(|v| v.trim() == tag)
    });
    let mut failed_for = false;
    let mut current: Option<String> = None;
    for l in text.split("\r\n") {
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("final-recipient:") {
            current = v.split(';').nth(1).map(|s| s.trim().to_string());
        } else if let Some(v) = lower.strip_prefix("action:") {
            if v.trim() == "failed" && current.as_deref() == Some(&rcpt.to_ascii_lowercase()) {
                failed_for = true;
            }
        }
    }
    has_tag && failed_for
}

/// Every broken invariant, one line each.
pub(crate) fn check(w: &World) -> Vec<String> {
    let mut v: Vec<String> = w.runtime_violations.iter().take(50).cloned().collect();
    if let Some(u) = &w.unfinished {
        v.push(format!("liveness: the run did not drain: {u}"));
    }
    v.extend(w.leftovers());

    // All deliveries, ours (durable only) and the remote hosts'.
    let all: Vec<&Delivered> = w
        .durable
        .mailbox
        .iter()
        .chain(w.remote_mail.iter())
        .collect();
    let mut count: BTreeMap<Key, u32> = BTreeMap::new();
    for d in &all {
        *count.entry((d.tag.clone(), d.rcpt.clone())).or_default() += 1;
    }

    // Acknowledged => delivered or a failure DSN reached the sender.
    for key in &w.acked {
        if count.contains_key(key) {
            continue;
        }
        let dsn = w
            .remote_mail
            .iter()
            .chain(w.double_bounced.iter())
            .any(|d| dsn_reports(d, &key.0, &key.1));
        if !dsn {
            v.push(format!(
                "lost: {} to {} was answered 250 but neither delivered nor reported in a DSN",
                key.0, key.1
            ));
        }
    }

    // Delivered => committed, intact; no duplicate beyond the window.
    for d in &all {
        let key = (d.tag.clone(), d.rcpt.clone());
        if d.tag.starts_with('m') {
            if !w.committed.contains_key(&key) {
                v.push(format!(
                    "unacknowledged: {} delivered to {} without a durable commit",
                    d.tag, d.rcpt
                ));
            }
            match client_msg(w, &d.tag) {
                Some((m, attempt)) => {
                    if !d.bytes.ends_with(&client_message(m, attempt)) {
                        v.push(format!(
                            "corrupt: {} to {} differs from what the client sent",
                            d.tag, d.rcpt
                        ));
                    }
                }
                None => v.push(format!("unknown message {} delivered to {}", d.tag, d.rcpt)),
            }
        } else if !w.dsn_tags.contains_key(&d.tag) {
            v.push(format!(
                "unknown message {:?} delivered to {}",
                d.tag, d.rcpt
            ));
        }
    }
    for (key, n) in &count {
        let commits = if key.0.starts_with('m') {
            w.committed.get(key).copied().unwrap_or(0)
        } else {
            1
        };
        let window = w.window_out.get(key).copied().unwrap_or(0);
        let local = crate::world::domain_is(&key.1, LOCAL_DOMAIN);
        let allowed = if local { commits } else { commits + window };
        if *n > allowed {
            v.push(format!(
                "duplicate: {} delivered to {} {n} times (commits {commits}, window events {window})",
                key.0, key.1
            ));
        }
    }
    for (tag, n) in &w.commits_per_tag {
        if *n > 1 {
            v.push(format!("duplicate: transaction {tag} committed {n} times"));
        }
    }
    v
}
