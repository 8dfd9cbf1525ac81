//! The AUTH exchange: from the command through challenges, password or credential
//! effects, to [`Authenticated`] or a (possibly delayed) failure.

use base64::Engine;

use crate::sasl::{Mechanism, ServerAuth, ServerStep};
use crate::smtp::{Enhanced, Reply};
use crate::time::Now;
use crate::tls::TlsLayer;

use super::commands::seq_error;
use super::state::{AuthExchange, Authenticated, Delayed, Pending, Stage, State};
use super::{Effect, Event, ServerSession};

impl ServerSession {
    pub(super) fn cmd_auth(
        &mut self,
        now: Now,
        stage: Stage,
        mechanism: &str,
        initial: Option<&str>,
    ) -> State {
        let (mech, initial) = match self.auth_refusal(&stage, mechanism, initial) {
            Ok(v) => v,
            Err(r) => return self.reply_error(r, stage),
        };
        let cb = self.tls.as_ref().and_then(TlsLayer::channel_binding);
        let mut auth = ServerAuth::new(mech, &mut self.rng, &self.config.hostname, cb);
        let step = auth.start(initial.as_deref());
        let exchange = Box::new(AuthExchange {
            auth,
            mechanism: mech,
            final_sent: None,
            resolved: None,
        });
        self.auth_step(now, stage, exchange, step)
    }

    /// Why AUTH is refused here, or the mechanism and the decoded initial response.
    #[allow(clippy::type_complexity)]
    fn auth_refusal(
        &self,
        stage: &Stage,
        mechanism: &str,
        initial: Option<&str>,
    ) -> Result<(Mechanism, Option<Vec<u8>>), Reply> {
        if !self.config.submission {
            return Err(seq_error("authentication only allowed on submission ports"));
        }
        if self.account.is_some() {
            return Err(seq_error("already authenticated"));
        }
        if stage.has_txn() {
            return Err(seq_error(
                "authentication not allowed during mail transaction",
            ));
        }
        if self.tls.is_none() && self.config.require_tls_for_auth {
            return Err(Reply::new(
                538,
                Some(Enhanced::new(5, 7, 11)),
                "authentication requires tls",
            ));
        }
        let mech = match Mechanism::from_name(mechanism) {
            Some(m) if self.config.auth_mechanisms.contains(&m) => m,
            _ => {
                return Err(Reply::new(
                    504,
                    Some(Enhanced::new(5, 5, 4)),
                    format!("mechanism {mechanism} not supported"),
                ))
            }
        };
        let cb = self.tls.as_ref().and_then(TlsLayer::channel_binding);
        if mech.needs_channel_binding() && cb.is_none() {
            return Err(Reply::new(
                504,
                Some(Enhanced::new(5, 5, 4)),
                format!("mechanism {mechanism} requires tls"),
            ));
        }
        let initial = match initial {
            None => None,
            Some("=") => Some(Vec::new()),
            Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(v) => Some(v),
                Err(_) => {
                    return Err(Reply::new(
                        501,
                        Some(Enhanced::new(5, 5, 2)),
                        "invalid base64",
                    ))
                }
            },
        };
        Ok((mech, initial))
    }

    /// The client's next line of the exchange.
    pub(super) fn auth_response(
        &mut self,
        now: Now,
        stage: Stage,
        mut exchange: Box<AuthExchange>,
        line: &[u8],
    ) -> State {
        if line == b"*" {
            let r = Reply::new(501, Some(Enhanced::new(5, 0, 0)), "authentication aborted");
            return self.reply_error(r, stage);
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(line) else {
            let r = Reply::new(501, Some(Enhanced::new(5, 5, 2)), "invalid base64");
            return self.reply_error(r, stage);
        };
        if let Some((account, login)) = exchange.final_sent.take() {
            return self.auth_success(stage, account, login, exchange.mechanism);
        }
        let step = exchange.auth.respond(&decoded);
        self.auth_step(now, stage, exchange, step)
    }

    /// Acts on what the SASL machine says next.
    pub(super) fn auth_step(
        &mut self,
        now: Now,
        stage: Stage,
        mut exchange: Box<AuthExchange>,
        step: ServerStep,
    ) -> State {
        match step {
            ServerStep::Challenge(c) => {
                let text = base64::engine::general_purpose::STANDARD.encode(c);
                self.reply(Reply::new(334, None, text));
                State::Auth { stage, exchange }
            }
            ServerStep::CheckPassword { username, password } => {
                let effect = Effect::CheckPassword {
                    username: username.clone(),
                    password,
                    ip: self.peer.ip,
                };
                let pending = Pending::Password {
                    stage,
                    exchange,
                    username,
                };
                self.effect(now, pending, effect)
            }
            ServerStep::NeedCredentials { username, kind } => {
                let effect = Effect::LookupCredentials {
                    username: username.clone(),
                    kind,
                    ip: self.peer.ip,
                };
                let pending = Pending::Credentials {
                    stage,
                    exchange,
                    username,
                };
                self.effect(now, pending, effect)
            }
            ServerStep::Success {
                username,
                final_data,
            } => {
                // The account comes from the completion that led here.
                let account = exchange.resolved.take().unwrap_or_else(|| username.clone());
                match final_data {
                    Some(d) => {
                        let text = base64::engine::general_purpose::STANDARD.encode(d);
                        self.reply(Reply::new(334, None, text));
                        exchange.final_sent = Some((account, username));
                        State::Auth { stage, exchange }
                    }
                    None => self.auth_success(stage, account, username, exchange.mechanism),
                }
            }
            ServerStep::Failure(f) => {
                let r = if f.is_malformed() {
                    Reply::new(
                        501,
                        Some(Enhanced::new(5, 5, 2)),
                        format!("malformed authentication: {f}"),
                    )
                } else {
                    Reply::new(535, Some(Enhanced::new(5, 7, 8)), "bad user/pass")
                };
                self.auth_failed(now, stage, None, exchange.mechanism, r)
            }
        }
    }

    fn auth_success(
        &mut self,
        stage: Stage,
        account: String,
        login: String,
        mech: Mechanism,
    ) -> State {
        self.event(Event::Authenticated {
            account: account.clone(),
            mechanism: mech.name(),
        });
        self.account = Some(Authenticated::from_exchange(account, login));
        self.reply(Reply::new(235, Some(Enhanced::new(2, 7, 0)), "nice"));
        State::Command(stage)
    }

    /// A failed exchange: counted, answered (after a delay growing with the failures), and
    /// the session closed after too many.
    pub(super) fn auth_failed(
        &mut self,
        now: Now,
        stage: Stage,
        username: Option<String>,
        mechanism: Mechanism,
        r: Reply,
    ) -> State {
        self.auth_failures += 1;
        self.errors += 1;
        self.event(Event::AuthFailed {
            username,
            mechanism: mechanism.name(),
        });
        let close = self.auth_failures >= self.config.max_auth_failures;
        let delay = self.config.auth_failure_delay * self.auth_failures;
        let mut reply = r;
        if close {
            reply.lines.push("too many authentication failures".into());
        }
        if !delay.is_zero() {
            return self.hold(now, delay, Delayed::Auth { reply, close }, stage);
        }
        self.reply(reply);
        if close {
            return self.finish("too many authentication failures");
        }
        State::Command(stage)
    }

    /// The policy refuses more AUTH from this IP now: `421` and close.
    pub(super) fn auth_rate_limited(&mut self) -> State {
        self.reply(Reply::new(
            421,
            Some(Enhanced::new(4, 7, 0)),
            "too many auth failures",
        ));
        self.finish("auth rate limited")
    }
}
