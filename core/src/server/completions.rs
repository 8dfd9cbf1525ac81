//! The answers to effects, and what happens when none comes in time. Each pending effect
//! owns the stage its answer continues ([`Pending`]); the answer gives the next [`State`].

use crate::message;
use crate::smtp::{Enhanced, Reply};
use crate::time::Now;
use crate::Token;

use super::checks::{self, CheckSet};
use super::outcome::{is_unknown_recipients_only, transaction_failed_reply};
use super::state::{AfterChecks, Delayed, Hello, Pending, Spooled, Stage, State};
use super::{
    Completion, CredentialsAnswer, Event, PasswordCheck, RecipientFailure, ServerSession,
    SessionError, SpoolAnswer, StoreOutcome, Timer, TransactionLog, TxnVerdict, Verdict,
};

impl ServerSession {
    /// An answer to an effect. The answer to one given up on (its deadline passed) is
    /// ignored; any other token is a misuse.
    pub(super) fn handle_completion(
        &mut self,
        now: Now,
        token: Token,
        c: Completion,
    ) -> Result<(), SessionError> {
        let waiting_for = match &self.state {
            State::Waiting { token, .. } => Some(*token),
            _ => None,
        };
        if waiting_for != Some(token) {
            if self.is_forgotten(token) {
                return Ok(());
            }
            return Err(SessionError::Misuse(match waiting_for {
                None => "completion without a pending effect",
                Some(_) => "completion with an unknown token",
            }));
        }
        let State::Waiting { pending, .. } = self.take_state() else {
            return Err(SessionError::Misuse("completion without a pending effect"));
        };
        self.timers.stop(Timer::Effect);
        match self.complete(now, pending, c) {
            Ok(next) => {
                self.state = next;
                Ok(())
            }
            Err(e) => {
                self.state = self.finish("api misuse");
                Err(e)
            }
        }
    }

    fn complete(
        &mut self,
        now: Now,
        pending: Pending,
        c: Completion,
    ) -> Result<State, SessionError> {
        Ok(match (pending, c) {
            (Pending::Connection, Completion::Verdict(v)) => match v {
                Verdict::Accept => {
                    let r = Reply::new(220, None, format!("{} ESMTP rmox", self.config.hostname));
                    self.reply(r);
                    State::Command(Stage::ExpectHello)
                }
                Verdict::Reject(r) => {
                    self.reply(r);
                    self.finish("connection refused by policy")
                }
            },
            (Pending::Sender { hello, txn }, Completion::Verdict(v)) => match v {
                Verdict::Accept => {
                    self.txn_log = Some(TransactionLog::new(&txn.mail_from));
                    self.reply(Reply::new(
                        250,
                        Some(Enhanced::new(2, 1, 0)),
                        "looking good",
                    ));
                    State::Command(Stage::InTransaction(hello, txn))
                }
                Verdict::Reject(r) => self.reply_error(r, Stage::ExpectMail(hello)),
            },
            (
                Pending::Recipient {
                    hello,
                    mut txn,
                    path,
                    params,
                },
                Completion::Verdict(v),
            ) => match v {
                Verdict::Accept => {
                    if let Some(l) = &mut self.txn_log {
                        l.recipient_accepted(&path);
                    }
                    txn.recipients.push((path, params));
                    self.reply(Reply::new(
                        250,
                        Some(Enhanced::new(2, 1, 5)),
                        "now on the list",
                    ));
                    State::Command(Stage::InTransaction(hello, txn))
                }
                Verdict::Reject(r) => {
                    if let Some(l) = &mut self.txn_log {
                        l.recipient_refused(&path, r.code);
                    }
                    self.reply_error(r, Stage::InTransaction(hello, txn))
                }
            },
            (Pending::FromHeader { hello, txn }, Completion::Verdict(v)) => match v {
                Verdict::Accept => self.store(now, hello, txn),
                Verdict::Reject(r) => self.reply_error(r, Stage::ExpectMail(hello)),
            },
            (
                Pending::Store {
                    hello,
                    size,
                    recipients,
                },
                Completion::Stored(outcome),
            ) => self.stored(now, hello, outcome, size, recipients),
            (Pending::Spool { data }, Completion::Spool(a)) => self.spooled_data(data, a),
            (p @ Pending::SpoolChunk { .. }, Completion::Spool(a)) => {
                let failed = match a {
                    SpoolAnswer::Failed(why) => Some(super::data::spool_failed(&why)),
                    _ => None,
                };
                self.spooled_chunk(now, p, failed)
            }
            (Pending::SpoolEnd { hello, txn }, Completion::Spool(a)) => {
                self.spooled_end(now, hello, txn, a)
            }
            (
                Pending::Checks {
                    mut set,
                    after,
                    deadline,
                },
                Completion::Dns(results),
            ) => {
                set.answer(now, results);
                self.run_checks(now, set, after, deadline)
            }
            (
                Pending::Password {
                    stage,
                    mut exchange,
                    username,
                },
                Completion::Password(p),
            ) => match p {
                PasswordCheck::Valid { account } => {
                    exchange.resolved = Some(account);
                    let step = exchange.auth.password_checked(true);
                    self.auth_step(now, stage, exchange, step)
                }
                PasswordCheck::Invalid => {
                    let r = Reply::new(535, Some(Enhanced::new(5, 7, 8)), "bad user/pass");
                    self.auth_failed(now, stage, Some(username), exchange.mechanism, r)
                }
                PasswordCheck::Disabled(msg) => self.auth_failed(
                    now,
                    stage,
                    Some(username),
                    exchange.mechanism,
                    login_disabled(&msg),
                ),
                PasswordCheck::RateLimited => self.auth_rate_limited(),
            },
            (
                Pending::Credentials {
                    stage,
                    mut exchange,
                    username,
                },
                Completion::Credentials(a),
            ) => match a {
                CredentialsAnswer::Found {
                    account,
                    credentials,
                } => {
                    exchange.resolved = Some(account);
                    let step = exchange.auth.credentials(Some(credentials));
                    self.auth_step(now, stage, exchange, step)
                }
                CredentialsAnswer::Unknown => {
                    let step = exchange.auth.credentials(None);
                    self.auth_step(now, stage, exchange, step)
                }
                CredentialsAnswer::Disabled(msg) => self.auth_failed(
                    now,
                    stage,
                    Some(username),
                    exchange.mechanism,
                    login_disabled(&msg),
                ),
                CredentialsAnswer::RateLimited => self.auth_rate_limited(),
            },
            _ => return Err(SessionError::Misuse("completion of the wrong kind")),
        })
    }

    /// No answer came in time ([`Timer::Effect`]). Inside a transaction the command waiting
    /// for it is answered `451 4.3.0` and the session goes on as after a refusal; the
    /// connection policy and AUTH have no such fallback: `421 4.3.0` and close.
    pub(super) fn effect_expired(&mut self, pending: Pending) -> State {
        let stage = match pending {
            // In the middle of DATA the client is still sending: the rest is read and
            // dropped, and the message refused at its end.
            Pending::Spool { mut data } => {
                data.failed = Some(Reply::new(
                    451,
                    Some(Enhanced::new(4, 3, 0)),
                    "internal timeout, try again later",
                ));
                data.msg.clear();
                return State::Data(data);
            }
            Pending::SpoolEnd { hello, .. } => Stage::ExpectMail(hello),
            Pending::SpoolChunk {
                hello, remaining, ..
            } => {
                let reply = Reply::new(
                    451,
                    Some(Enhanced::new(4, 3, 0)),
                    "internal timeout, try again later",
                );
                if remaining == 0 {
                    return self.reply_error(reply, Stage::ExpectMail(hello));
                }
                return State::Discard {
                    stage: Stage::ExpectMail(hello),
                    remaining,
                    reply,
                };
            }
            Pending::Sender { hello, .. }
            | Pending::FromHeader { hello, .. }
            | Pending::Store { hello, .. }
            | Pending::Checks {
                after: AfterChecks::Mail { hello, .. } | AfterChecks::Data { hello, .. },
                ..
            } => Stage::ExpectMail(hello),
            Pending::Recipient {
                hello, txn, path, ..
            } => {
                if let Some(l) = &mut self.txn_log {
                    l.recipient_refused(&path, 451);
                }
                Stage::InTransaction(hello, txn)
            }
            Pending::Connection | Pending::Password { .. } | Pending::Credentials { .. } => {
                self.reply(Reply::new(
                    421,
                    Some(Enhanced::new(4, 3, 0)),
                    "internal timeout, try again later",
                ));
                return self.finish("effect timed out");
            }
        };
        if !stage.has_txn() {
            self.txn_end(TxnVerdict::Refused(451), "internal timeout");
        }
        self.reply(Reply::new(
            451,
            Some(Enhanced::new(4, 3, 0)),
            "internal timeout, try again later",
        ));
        State::Command(stage)
    }

    fn stored(
        &mut self,
        now: Now,
        hello: Hello,
        outcome: StoreOutcome,
        size: usize,
        recipients: usize,
    ) -> State {
        let next = Stage::ExpectMail(hello);
        match outcome {
            StoreOutcome::Delivered => {
                self.txn_end(TxnVerdict::Accepted, "stored");
                self.accepted(Spooled::from_store_completion(), size, recipients);
                State::Command(next)
            }
            StoreOutcome::Partial { failed } => {
                self.recipients_failed(&failed);
                let delivered = recipients.saturating_sub(failed.len());
                let reason = match failed.first() {
                    Some(f) => format!(
                        "stored for {delivered} of {recipients} recipients; {} failed, first {} {}: {}",
                        failed.len(),
                        f.code,
                        f.recipient,
                        f.reason
                    ),
                    None => "stored".to_string(),
                };
                self.txn_end(TxnVerdict::Partial, reason);
                self.accepted(Spooled::from_store_completion(), size, delivered);
                State::Command(next)
            }
            StoreOutcome::Failed(failed) => {
                self.recipients_failed(&failed);
                let r = transaction_failed_reply(&failed);
                let delay = self.config.unknown_recipient_delay;
                if is_unknown_recipients_only(&failed) && !delay.is_zero() {
                    // Slows down address guessing; the session waits, input is buffered.
                    return self.hold(now, delay, Delayed::Error(r), next);
                }
                self.reply_error(r, next)
            }
            StoreOutcome::Refused(r) => self.reply_error(r, next),
        }
    }

    fn recipients_failed(&mut self, failed: &[RecipientFailure]) {
        for f in failed {
            self.event(Event::RecipientFailed {
                recipient: f.recipient.clone(),
                code: f.code,
                enhanced: f.enhanced,
                reason: f.reason.clone(),
            });
        }
    }

    /// The 250 after the message: only with the proof that it was stored.
    fn accepted(&mut self, _proof: Spooled, size: usize, recipients: usize) {
        self.delivered += 1;
        self.event(Event::Accepted { size, recipients });
        self.reply(Reply::new(250, Some(Enhanced::new(2, 0, 0)), "it is done"));
    }

    // ---- DNS checks ----

    /// Advances a set of checks: asks its next batch of questions, or finishes.
    pub(super) fn run_checks(
        &mut self,
        now: Now,
        mut set: CheckSet,
        after: AfterChecks,
        deadline: std::time::Instant,
    ) -> State {
        match set.step(now) {
            Some(lookups) => {
                let pending = Pending::Checks {
                    set,
                    after,
                    deadline,
                };
                self.effect(now, pending, super::Effect::Dns(lookups))
            }
            None => self.checks_done(now, set, after, deadline),
        }
    }

    fn checks_done(
        &mut self,
        now: Now,
        set: CheckSet,
        after: AfterChecks,
        deadline: std::time::Instant,
    ) -> State {
        match after {
            AfterChecks::Mail { hello, mut txn } => {
                set.collect(&mut txn.verdicts);
                match mail_checks_refusal(&txn.verdicts) {
                    Some(r) => self.reply_error(r, Stage::ExpectMail(hello)),
                    None => self.mail_checked(now, hello, txn),
                }
            }
            AfterChecks::Data {
                hello,
                mut t,
                mut verdicts,
                dmarc,
            } => {
                set.collect(&mut verdicts);
                let want_dmarc = self.config.checks.as_ref().is_some_and(|c| c.dmarc);
                if !dmarc && want_dmarc {
                    let from = message::from_addresses(&t.message.header())
                        .first()
                        .and_then(|a| a.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()));
                    if let Some(d) = from {
                        let check = checks::dmarc_check(&d, &verdicts);
                        verdicts.from_domain = Some(d);
                        let after = AfterChecks::Data {
                            hello,
                            t,
                            verdicts,
                            dmarc: true,
                        };
                        return self.run_checks(
                            now,
                            CheckSet::new(vec![check], self.config.checks_timeout),
                            after,
                            deadline,
                        );
                    }
                }
                let headers = checks::auth_headers(&self.config.hostname, self.peer.ip, &verdicts);
                t.message.prepend(headers.as_bytes());
                t.auth = Some(verdicts);
                self.store(now, hello, t)
            }
        }
    }
}

/// `535` for an account whose logins are disabled, with the reason the policy gave.
fn login_disabled(msg: &str) -> Reply {
    Reply::new(
        535,
        Some(Enhanced::new(5, 7, 8)),
        format!("login disabled: {msg}"),
    )
}

/// What the checks at MAIL FROM refuse, if anything.
fn mail_checks_refusal(v: &checks::Verdicts) -> Option<Reply> {
    if v.ehlo == Some(checks::HostStatus::NotFound) {
        return Some(Reply::new(
            550,
            Some(Enhanced::new(5, 5, 0)),
            "your ehlo domain does not resolve to an IP address",
        ));
    }
    match v.mail_domain {
        Some(checks::MailDomainStatus::NullMx) | Some(checks::MailDomainStatus::NotFound) => {
            Some(Reply::new(
                550,
                Some(Enhanced::new(5, 7, 27)),
                "mailfrom domain not configured for mail",
            ))
        }
        Some(checks::MailDomainStatus::TempFail) => Some(Reply::new(
            451,
            Some(Enhanced::new(4, 4, 0)),
            "cannot verify mx records for mailfrom domain",
        )),
        _ => None,
    }
}
