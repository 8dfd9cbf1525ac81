//! localserve's special local parts, as one table: which part of a local part asks for a
//! simulated failure at which stage, and what the failure is. The server consults it; it
//! decides nothing of its own about them.
//!
//! | stage | applies to | the local part | failure words |
//! | --- | --- | --- | --- |
//! | [`Stage::MailFrom`] | MAIL FROM | starts with `mailfrom` and ends with a word | all |
//! | [`Stage::RcptTo`] | RCPT TO | starts with `rcptto` and ends with a word | all |
//! | [`Stage::Data`] | delivery after DATA | ends with a word | all |
//! | [`Stage::Queue`] | the queue's localserve delivery (submitted mail) | starts with `queue` directly followed by a word | `temperror`, `permerror`, `timeout` |
//!
//! The words (case-insensitive): `temperror` (451 4.3.0), `permerror` (550 5.0.0),
//! `timeout` (451 4.4.2, after [`TIMEOUT_DELAY`] in SMTP; in the queue a timeout without a
//! reply) and, except in the queue, a 3-digit code 400..=599 (that code with enhanced
//! code `class.0.0`), e.g. `user550`.

use std::time::Duration;

use crate::queue::{AttemptResult, Failure};
use crate::smtp::{Enhanced, Reply};

/// Where a special local part is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The MAIL FROM address.
    MailFrom,
    /// A RCPT TO address.
    RcptTo,
    /// A recipient when the message is delivered after DATA.
    Data,
    /// A submitted message's recipient, in the queue's localserve delivery.
    Queue,
}

/// The simulated failure a special local part asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// `temperror`.
    TempError,
    /// `permerror`.
    PermError,
    /// `timeout`.
    Timeout,
    /// A 3-digit reply code from 400 to 599.
    Code(u16),
}

/// How long SMTP waits before a `timeout` failure's reply.
pub const TIMEOUT_DELAY: Duration = Duration::from_secs(3);

/// Where the failure word stands.
#[derive(Clone, Copy)]
enum At {
    /// At the end of the local part.
    End,
    /// Right after the prefix.
    AfterPrefix,
}

/// One row of the table: the prefix, where the word stands, whether codes count, and how
/// the stage is named in replies.
struct Rule {
    prefix: &'static str,
    at: At,
    codes: bool,
    what: &'static str,
}

/// The table: each stage's row.
const fn rule(stage: Stage) -> Rule {
    let (prefix, at, codes, what) = match stage {
        Stage::MailFrom => ("mailfrom", At::End, true, "mail from"),
        Stage::RcptTo => ("rcptto", At::End, true, "rcpt to"),
        Stage::Data => ("", At::End, true, "delivery"),
        Stage::Queue => ("queue", At::AfterPrefix, false, "delivery"),
    };
    Rule {
        prefix,
        at,
        codes,
        what,
    }
}

const WORDS: [(&str, Special); 3] = [
    ("temperror", Special::TempError),
    ("permerror", Special::PermError),
    ("timeout", Special::Timeout),
];

/// The failure `localpart` asks for at `stage`, if any.
pub fn special(stage: Stage, localpart: &str) -> Option<Special> {
    let r = rule(stage);
    let lp = localpart.to_ascii_lowercase();
    let rest = lp.strip_prefix(r.prefix)?;
    let word = WORDS.iter().find(|(w, _)| match r.at {
        At::End => rest.ends_with(w),
        At::AfterPrefix => rest.starts_with(w),
    });
    if let Some((_, s)) = word {
        return Some(*s);
    }
    if !r.codes {
        return None;
    }
    // Bytes, not a str slice: the local part may be UTF-8 (SMTPUTF8) and the last three
    // bytes need not start at a character boundary.
    let tail = rest.as_bytes().get(rest.len().checked_sub(3)?..)?;
    if !tail.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = tail.iter().fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    (400..600).contains(&code).then_some(Special::Code(code))
}

/// Whether `localpart` carries `stage`'s prefix (case-insensitive): submitted mail to a
/// `queue` local part is left to the queue's stage.
pub fn has_prefix(stage: Stage, localpart: &str) -> bool {
    let prefix = rule(stage).prefix;
    localpart
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// The local part of `address` (all of it without `@`).
pub fn localpart(address: &str) -> &str {
    address.rsplit_once('@').map_or(address, |(l, _)| l)
}

impl Special {
    /// The SMTP reply that refuses at `stage` (for [`Special::Timeout`] after
    /// [`TIMEOUT_DELAY`]).
    pub fn reply(self, stage: Stage) -> Reply {
        let what = rule(stage).what;
        let r = |code, e: (u8, u16, u16), text: String| {
            Reply::new(code, Some(Enhanced::new(e.0, e.1, e.2)), text)
        };
        match self {
            Special::TempError => r(
                451,
                (4, 3, 0),
                format!("temporary failure of {what} due to special localpart"),
            ),
            Special::PermError => r(
                550,
                (5, 0, 0),
                format!("permanent failure of {what} due to special localpart"),
            ),
            Special::Timeout => r(
                451,
                (4, 4, 2),
                format!("timing out {what} due to special localpart"),
            ),
            Special::Code(c) => r(
                c,
                ((c / 100) as u8, 0, 0),
                format!("failure with code {c} due to special localpart"),
            ),
        }
    }

    /// The queue's delivery result for this failure ([`Stage::Queue`]).
    pub fn attempt_result(self) -> AttemptResult {
        let host = Some("localserve".to_string());
        let failure = |reply: Option<Reply>, detail: &str, enhanced| Failure {
            host: host.clone(),
            reply,
            detail: detail.into(),
            enhanced,
        };
        let reply = |code, e: Enhanced, text: &str| {
            Some(Reply::new(
                code,
                Some(e),
                format!("{text} due to special localpart"),
            ))
        };
        match self {
            Special::TempError => AttemptResult::Temporary(failure(
                reply(451, Enhanced::new(4, 3, 0), "temporary failure"),
                "",
                None,
            )),
            Special::Timeout => AttemptResult::Temporary(failure(
                None,
                "timeout waiting for reply due to special localpart",
                Some(Enhanced::new(4, 4, 2)),
            )),
            Special::PermError => AttemptResult::Permanent(failure(
                reply(550, Enhanced::new(5, 0, 0), "permanent failure"),
                "",
                None,
            )),
            Special::Code(_) => {
                AttemptResult::from_reply("localserve", self.reply(Stage::Queue), false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Special::*;
    use Stage::*;

    /// Every prefix and suffix with its one meaning per stage.
    #[test]
    fn table() {
        #[rustfmt::skip]
        let cases: &[(Stage, &str, Option<Special>)] = &[
            (MailFrom, "mailfromtemperror", Some(TempError)),
            (MailFrom, "MailFrom-x-PermError", Some(PermError)),
            (MailFrom, "mailfromtimeout", Some(Timeout)),
            (MailFrom, "mailfrom550", Some(Code(550))),
            (MailFrom, "mailfrom421", Some(Code(421))),
            (MailFrom, "mailfrom399", None),
            (MailFrom, "mailfrom600", None),
            (MailFrom, "temperror", None),
            (MailFrom, "rcpttotemperror", None),
            (MailFrom, "mailfrom", None),
            (RcptTo, "rcpttotemperror", Some(TempError)),
            (RcptTo, "rcptto451", Some(Code(451))),
            (RcptTo, "mailfromtemperror", None),
            (RcptTo, "user", None),
            (Data, "temperror", Some(TempError)),
            (Data, "userpermerror", Some(PermError)),
            (Data, "mailfromtimeout", Some(Timeout)),
            (Data, "user550", Some(Code(550))),
            (Data, "user55", None),
            (Data, "50", None),
            (Data, "mjl", None),
            (Data, "temperroruser", None),
            // UTF-8 local parts: the last three bytes may split a character.
            (Data, "usé", None),
            (Data, "ü550", Some(Code(550))),
            (Queue, "queuetemperror", Some(TempError)),
            (Queue, "queuepermerror", Some(PermError)),
            (Queue, "queuetimeout1", Some(Timeout)),
            (Queue, "QueueTempError-2", Some(TempError)),
            (Queue, "queue550", None),
            (Queue, "queuextemperror", None),
            (Queue, "temperror", None),
            (Queue, "mjl", None),
        ];
        for (stage, lp, want) in cases {
            assert_eq!(special(*stage, lp), *want, "{stage:?} {lp}");
        }
    }

    /// Regression (moved from the binary): `special` evaluated `unwrap_or(return None)`
    /// eagerly, so the `mailfrom`/`rcptto` prefixes never matched; and it sliced a str at a
    /// byte offset, panicking on UTF-8 local parts.
    #[test]
    fn localserve_special_localparts() {
        let code = |lp: &str, stage| match special(stage, lp) {
            None => "none".to_string(),
            Some(TempError) => "temp".to_string(),
            Some(PermError) => "perm".to_string(),
            Some(Timeout) => "timeout".to_string(),
            Some(Code(c)) => c.to_string(),
        };
        let cases = [
            ("mailfrom550", MailFrom, "550"),
            ("MailFromTempError", MailFrom, "temp"),
            ("rcpttopermerror", RcptTo, "perm"),
            ("rcptto-timeout", RcptTo, "timeout"),
            ("x550", MailFrom, "none"),
            ("mailfrom", MailFrom, "none"),
            ("x-452", Data, "452"),
            ("x-200", Data, "none"),
            ("x-999", Data, "none"),
            ("plain", Data, "none"),
            ("éé", Data, "none"),
            ("é", Data, "none"),
            ("aé5", Data, "none"),
            ("rcpttoéé", RcptTo, "none"),
            ("", Data, "none"),
        ];
        for (lp, stage, want) in cases {
            assert_eq!(code(lp, stage), want, "{lp:?} at {stage:?}");
        }
    }

    #[test]
    fn replies() {
        let cases = [
            (
                TempError,
                MailFrom,
                "451 4.3.0 temporary failure of mail from due to special localpart",
            ),
            (
                PermError,
                RcptTo,
                "550 5.0.0 permanent failure of rcpt to due to special localpart",
            ),
            (
                Timeout,
                Data,
                "451 4.4.2 timing out delivery due to special localpart",
            ),
            (
                Code(552),
                Data,
                "552 5.0.0 failure with code 552 due to special localpart",
            ),
            (
                Code(421),
                RcptTo,
                "421 4.0.0 failure with code 421 due to special localpart",
            ),
        ];
        for (s, stage, want) in cases {
            assert_eq!(s.reply(stage).to_string(), want);
        }
    }

    #[test]
    fn queue_results() {
        let AttemptResult::Temporary(f) = TempError.attempt_result() else {
            panic!("temperror is temporary");
        };
        assert_eq!(f.host.as_deref(), Some("localserve"));
        assert_eq!(
            f.reply.map(|r| r.to_string()).as_deref(),
            Some("451 4.3.0 temporary failure due to special localpart")
        );
        let AttemptResult::Permanent(f) = PermError.attempt_result() else {
            panic!("permerror is permanent");
        };
        assert_eq!(f.reply.map(|r| r.code), Some(550));
        let AttemptResult::Temporary(f) = Timeout.attempt_result() else {
            panic!("timeout is temporary");
        };
        assert_eq!(f.reply, None);
        assert_eq!(f.enhanced, Some(Enhanced::new(4, 4, 2)));
        assert_eq!(
            localpart("queuetimeout1@elsewhere.example"),
            "queuetimeout1"
        );
        assert_eq!(localpart("nodomain"), "nodomain");
        assert!(has_prefix(Queue, "QUEUEx"));
        assert!(has_prefix(Queue, "queue"));
        assert!(!has_prefix(Queue, "queu"));
        assert!(!has_prefix(Queue, "xqueue"));
        assert!(!has_prefix(Queue, "qüeue"));
    }
}
