//! Webhooks: what an application is told about its account's mail, as mox's webhooks tell
//! it (the same JSON shapes, so handlers written for mox work): outgoing delivery events
//! and incoming messages. Here the payload, the signature and the retry schedule; the
//! server stores hooks with the event that causes them and POSTs them
//! (`src/webhooks.rs`).
//!
//! Every POST carries `X-Rmox-Signature: t=UNIX,v1=HEX`, HEX being the HMAC-SHA256 under
//! the account's secret of `UNIX.` followed by the body, so that a receiver can check the
//! sender and refuse replays of old deliveries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Rmox-Signature";

/// The default waits (seconds) before each retry after a failed POST: 11 retries over
/// about 32 hours, then the hook is retired as failed.
pub const RETRY_INTERVALS: &[u64] = &[
    60, 120, 240, 480, 900, 1800, 3600, 7200, 14400, 28800, 57600,
];

/// An outgoing delivery event (mox's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The receiving server accepted the message.
    Delivered,
    /// Not attempted: the recipient is on the account's suppression list.
    Suppressed,
    /// An attempt failed temporarily; it will be tried again.
    Delayed,
    /// Failed permanently (or for too long).
    Failed,
    /// Cancelled by an administrator.
    Canceled,
    /// A DSN came back: relayed to a system that sends no DSNs.
    Relayed,
    /// A DSN came back: delivered to a list or alias that expands to other addresses.
    Expanded,
    /// Something came back to the message's unique return address that is not a DSN rmox
    /// understands.
    Unrecognized,
}

impl Event {
    /// The name in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Delivered => "delivered",
            Event::Suppressed => "suppressed",
            Event::Delayed => "delayed",
            Event::Failed => "failed",
            Event::Canceled => "canceled",
            Event::Relayed => "relayed",
            Event::Expanded => "expanded",
            Event::Unrecognized => "unrecognized",
        }
    }
}

/// mox's webhook.Outgoing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Outgoing {
    /// Format version, 0.
    pub version: u32,
    /// delivered, suppressed, delayed, failed, canceled.
    pub event: String,
    /// Caused by a DSN that came back (rmox reports from its own attempts: false).
    #[serde(rename = "DSN")]
    pub dsn: bool,
    /// This failure put the address on the suppression list.
    pub suppressing: bool,
    /// The queue entry (as `Send` answered it).
    #[serde(rename = "QueueMsgID")]
    pub queue_msg_id: u64,
    /// The per-message MAIL FROM id (empty: rmox sends with the From address).
    #[serde(rename = "FromID")]
    pub from_id: String,
    /// The message's Message-ID, with `<>`.
    #[serde(rename = "MessageID")]
    pub message_id: String,
    /// The message's subject.
    pub subject: String,
    /// When the hook was made (RFC 3339).
    pub webhook_queued: String,
    /// The SMTP reply code of an error.
    #[serde(rename = "SMTPCode")]
    pub smtp_code: u16,
    /// Its enhanced status code, e.g. `5.1.1`.
    #[serde(rename = "SMTPEnhancedCode")]
    pub smtp_enhanced_code: String,
    /// The error, if any.
    pub error: String,
    /// Metadata given at submission.
    pub extra: BTreeMap<String, String>,
}

/// The SMTP code and enhanced code at the start of an error text (`"550 5.1.1 no such
/// user"`), or zero and empty.
pub fn smtp_codes(error: &str) -> (u16, String) {
    let mut words = error.split_whitespace();
    let code = words
        .next()
        .filter(|w| w.len() == 3)
        .and_then(|w| w.parse::<u16>().ok())
        .filter(|c| (200..600).contains(c));
    let Some(code) = code else {
        return (0, String::new());
    };
    let enhanced = words
        .next()
        .filter(|w| crate::smtp::Enhanced::parse(w).is_some())
        .unwrap_or("")
        .to_string();
    (code, enhanced)
}

/// What a message that came back to a sent message's unique return address (mox's fromid)
/// says about that message: the webhook event and what goes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Returned {
    /// The event: the DSN's action, or [`Event::Unrecognized`].
    pub event: Event,
    /// It was a DSN (possibly one that could not be used).
    pub dsn: bool,
    /// The SMTP code: the Diagnostic-Code's, else 400/500 from the Status class; 0: none.
    pub smtp_code: u16,
    /// The enhanced status code, e.g. `5.1.1`; empty: none.
    pub smtp_enhanced_code: String,
    /// What it said, for the payload's Error and the queue entry's history.
    pub note: String,
    /// A failure that puts the recipient on the sender's suppression list (the rules of
    /// [`crate::queue::should_suppress_codes`]).
    pub suppressing: bool,
}

/// Reads `message`, which came back to a unique return address, as mox does: a DSN about
/// exactly one recipient gives its action (failed, delayed, delivered, relayed, expanded)
/// and codes; anything else is [`Event::Unrecognized`] with the reason in `note`.
pub fn returned(message: &[u8]) -> Returned {
    use crate::queue::dsnread::{read_dsn, DsnAction, DsnReadError};
    let unrecognized = |dsn: bool, note: String| Returned {
        event: Event::Unrecognized,
        dsn,
        smtp_code: 0,
        smtp_enhanced_code: String::new(),
        note,
        suppressing: false,
    };
    let report = match read_dsn(message) {
        Ok(r) => r,
        Err(DsnReadError::NotReport) => {
            return unrecognized(false, "incoming message not a dsn".into())
        }
        Err(e) => return unrecognized(true, format!("parsing incoming dsn: {e}")),
    };
    let [rcpt] = report.recipients.as_slice() else {
        return unrecognized(
            true,
            format!(
                "incoming dsn has {} recipients, expecting 1",
                report.recipients.len()
            ),
        );
    };
    let (code, enhanced) = rcpt.codes();
    let enhanced = enhanced.unwrap_or_default();
    let mut note = format!("dsn: {} {}", rcpt.action.as_str(), rcpt.status);
    if let Some(d) = &rcpt.diagnostic_code {
        note.push_str(": ");
        note.push_str(d);
    }
    let event = match &rcpt.action {
        DsnAction::Failed => Event::Failed,
        DsnAction::Delayed => Event::Delayed,
        DsnAction::Delivered => Event::Delivered,
        DsnAction::Relayed => Event::Relayed,
        DsnAction::Expanded => Event::Expanded,
        DsnAction::Other(a) => return unrecognized(true, format!("unrecognized dsn action {a:?}")),
    };
    let suppressing = event == Event::Failed
        && crate::queue::should_suppress_codes(code, crate::smtp::Enhanced::parse(&enhanced));
    Returned {
        event,
        dsn: true,
        smtp_code: code,
        smtp_enhanced_code: enhanced,
        note,
        suppressing,
    }
}

/// How long to wait before the next POST after `attempts` failed ones (1 or more), or
/// `None` when they are used up.
pub fn retry_after(attempts: u32, intervals: &[u64]) -> Option<u64> {
    let i = usize::try_from(attempts).ok()?.checked_sub(1)?;
    intervals.get(i).copied()
}

/// The `X-Rmox-Signature` value of `body` sent at `unix`.
pub fn signature(secret: &[u8], unix: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(format!("{unix}.").as_bytes());
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix},v1={hex}")
}

/// Whether a POST's answer means the hook was taken (any 2xx).
pub fn accepted(status: u16) -> bool {
    (200..300).contains(&status)
}
