//! Command lines: each takes the current [`Stage`] by value and gives the next [`State`].

use crate::smtp::{
    Command, Enhanced, ForwardPath, Hold, Host, MailParams, RcptParams, Reply, ReversePath,
};
use crate::time::{Now, UnixTime};
use crate::tls::TlsLayer;

use super::checks::{self, CheckSet, Verdicts};
use super::state::{AfterChecks, Hello, Pending, Stage, State, Txn};
use super::{Effect, Event, SenderSource, ServerSession, TxnVerdict};

/// `503 5.5.1`: a command out of sequence.
pub(super) fn seq_error(msg: &str) -> Reply {
    Reply::new(503, Some(Enhanced::new(5, 5, 1)), msg)
}

impl ServerSession {
    /// Handles one line (a command, or the next line of an AUTH exchange). Returns the TLS
    /// layer to start when STARTTLS was accepted; `more` says input followed the line.
    pub(super) fn line(&mut self, now: Now, line: &[u8], more: bool) -> Option<TlsLayer> {
        let (next, tls) = match self.take_state() {
            State::Auth { stage, exchange } => {
                (self.auth_response(now, stage, exchange, line), None)
            }
            State::Command(stage) => self.command(now, stage, line, more),
            other => (other, None),
        };
        self.state = next;
        tls
    }

    fn command(
        &mut self,
        now: Now,
        stage: Stage,
        line: &[u8],
        more: bool,
    ) -> (State, Option<TlsLayer>) {
        self.commands += 1;
        let cmd = match Command::parse(line) {
            Ok(c) => c,
            Err(e) => {
                let r = e.reply();
                if self.commands == 1 && r.code == 500 {
                    // Not SMTP at all (e.g. HTTP): say so and hang up.
                    self.reply(Reply::new(
                        500,
                        Some(Enhanced::new(5, 5, 2)),
                        "please try again speaking smtp",
                    ));
                    return (self.finish("non-smtp first command"), None);
                }
                return (self.reply_error(r, stage), None);
            }
        };
        self.event(Event::Command(cmd.verb().to_string()));
        if self.shutting_down && !matches!(cmd, Command::Quit) {
            self.reply(Reply::new(
                421,
                Some(Enhanced::new(4, 3, 2)),
                "shutting down",
            ));
            return (self.finish("shutting down"), None);
        }
        let next = match cmd {
            Command::Ehlo(host) => self.cmd_hello(now, stage, host, true),
            Command::Helo(host) => self.cmd_hello(now, stage, host, false),
            Command::StartTls => return self.cmd_starttls(stage, more),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.cmd_auth(now, stage, &mechanism, initial_response.as_deref()),
            Command::Mail(path, params) => self.cmd_mail(now, stage, path, params),
            Command::Rcpt(path, params) => self.cmd_rcpt(now, stage, path, params),
            Command::Data => self.cmd_data(stage),
            Command::Bdat { size, last } => self.cmd_bdat(now, stage, size, last),
            Command::Rset => {
                if stage.has_txn() {
                    self.txn_end(TxnVerdict::Abandoned, "RSET");
                }
                self.reply(Reply::new(250, Some(Enhanced::new(2, 0, 0)), "all clear"));
                State::Command(stage.without_txn())
            }
            Command::Vrfy(_) => {
                self.reply(Reply::new(
                    252,
                    Some(Enhanced::new(2, 7, 0)),
                    "no verify but will try delivery",
                ));
                State::Command(stage)
            }
            Command::Expn(_) => {
                self.reply(Reply::new(
                    252,
                    Some(Enhanced::new(2, 7, 0)),
                    "no expand but will try delivery",
                ));
                State::Command(stage)
            }
            Command::Help(_) => {
                self.reply(Reply::new(
                    214,
                    Some(Enhanced::new(2, 0, 0)),
                    "see rfc 5321 (smtp)",
                ));
                State::Command(stage)
            }
            Command::Noop(_) => {
                self.reply(Reply::new(250, Some(Enhanced::new(2, 0, 0)), "alrighty"));
                State::Command(stage)
            }
            Command::Quit => {
                self.reply(Reply::new(
                    221,
                    Some(Enhanced::new(2, 0, 0)),
                    "okay thanks bye",
                ));
                self.finish("quit")
            }
        };
        (next, None)
    }

    /// EHLO/HELO: whatever the stage was (a transaction included) is replaced by the new
    /// hello facts.
    fn cmd_hello(&mut self, now: Now, old: Stage, host: Host, ehlo: bool) -> State {
        if old.has_txn() {
            self.txn_end(TxnVerdict::Abandoned, "new EHLO/HELO");
        }
        let hello = Hello { host, esmtp: ehlo };
        if !ehlo {
            let r = Reply::new(250, None, self.config.hostname.clone());
            self.reply(r);
            return State::Command(Stage::ExpectMail(hello));
        }
        let c = &self.config;
        let mut lines = vec![
            c.hostname.clone(),
            "PIPELINING".to_string(),
            format!("SIZE {}", c.max_message_size),
        ];
        let tls_active = self.tls.is_some();
        if c.tls.is_some() && !tls_active {
            lines.push("STARTTLS".into());
        }
        if tls_active {
            lines.push("REQUIRETLS".into());
        }
        if c.submission && self.account.is_none() && (tls_active || !c.require_tls_for_auth) {
            let mut mechs: Vec<_> = c
                .auth_mechanisms
                .iter()
                .filter(|m| tls_active || !m.needs_channel_binding())
                .collect();
            mechs.sort_by_key(|m| std::cmp::Reverse(m.strength()));
            if !mechs.is_empty() {
                let names: Vec<&str> = mechs.iter().map(|m| m.name()).collect();
                lines.push(format!("AUTH {}", names.join(" ")));
            }
        }
        if c.submission {
            let max = c.future_release_max;
            lines.push(format!(
                "FUTURERELEASE {} {}",
                max.as_secs(),
                now.wall.add(max).rfc3339()
            ));
        }
        lines.push(format!("LIMITS RCPTMAX={}", c.max_recipients));
        lines.push("DSN".into());
        lines.push("8BITMIME".into());
        lines.push("SMTPUTF8".into());
        lines.push("ENHANCEDSTATUSCODES".into());
        lines.push("CHUNKING".into());
        self.reply(Reply {
            code: 250,
            enhanced: None,
            lines,
        });
        State::Command(Stage::ExpectMail(hello))
    }

    /// STARTTLS: when accepted, the next state is a fresh [`Stage::ExpectHello`]; the old
    /// stage (hello facts, a transaction) is dropped here, by value (RFC 3207 4.2).
    fn cmd_starttls(&mut self, stage: Stage, more: bool) -> (State, Option<TlsLayer>) {
        if self.tls.is_some() {
            let r = Reply::new(503, Some(Enhanced::new(5, 5, 1)), "already speaking tls");
            return (self.reply_error(r, stage), None);
        }
        let Some(tc) = self.config.tls.clone() else {
            let r = Reply::new(502, Some(Enhanced::new(5, 5, 1)), "STARTTLS not available");
            return (self.reply_error(r, stage), None);
        };
        if self.account.is_some() {
            let r = Reply::new(
                503,
                Some(Enhanced::new(5, 5, 1)),
                "cannot starttls after authentication",
            );
            return (self.reply_error(r, stage), None);
        }
        if more {
            // RFC 3207 5: nothing may follow STARTTLS before the handshake; bytes that did
            // would be taken as said inside TLS (command injection). Say why, then close.
            self.reply(Reply::new(
                500,
                Some(Enhanced::new(5, 5, 0)),
                "data pipelined after STARTTLS, closing",
            ));
            return (self.finish("data pipelined after STARTTLS"), None);
        }
        let layer = match TlsLayer::server(tc) {
            Ok(t) => t,
            Err(_) => {
                let r = Reply::new(
                    454,
                    Some(Enhanced::new(4, 7, 0)),
                    "TLS not available due to temporary reason",
                );
                return (self.reply_error(r, stage), None);
            }
        };
        if stage.has_txn() {
            self.txn_end(TxnVerdict::Abandoned, "STARTTLS");
        }
        self.reply(Reply::new(220, Some(Enhanced::new(2, 0, 0)), "go!"));
        drop(stage);
        (State::Command(Stage::ExpectHello), Some(layer))
    }

    fn cmd_mail(&mut self, now: Now, stage: Stage, path: ReversePath, params: MailParams) -> State {
        let hold_until = match self.mail_refusal(now, &stage, &path, &params) {
            Ok(h) => h,
            Err(r) => return self.reply_error(r, stage),
        };
        let Stage::ExpectMail(hello) = stage else {
            // mail_refusal refuses every other stage.
            return State::Command(stage);
        };
        let txn = Box::new(Txn {
            mail_from: path,
            params,
            recipients: Vec::new(),
            hold_until,
            verdicts: Verdicts::default(),
            chunks: None,
            spooled: 0,
        });
        if let (false, Some(c)) = (self.config.submission, self.config.checks.clone()) {
            let ehlo = match &hello.host {
                Host::Domain(d) => Some(d.ascii.clone()),
                _ => None,
            };
            let mail_from = match &txn.mail_from {
                ReversePath::Mailbox(a) => match &a.host {
                    Host::Domain(d) => Some((a.to_string(), d.ascii.clone())),
                    _ => None,
                },
                ReversePath::Null => None,
            };
            let list = checks::mail_checks(
                &c,
                self.peer.ip,
                ehlo.as_deref(),
                mail_from.as_ref().map(|(a, d)| (a.as_str(), d.as_str())),
                &self.config.hostname,
                now.wall,
            );
            let deadline = now.mono + self.config.checks_timeout;
            return self.run_checks(
                now,
                CheckSet::new(list, self.config.checks_timeout),
                AfterChecks::Mail { hello, txn },
                deadline,
            );
        }
        self.mail_checked(now, hello, txn)
    }

    /// Why MAIL FROM is refused in this stage, or the FUTURERELEASE time it asks for.
    fn mail_refusal(
        &self,
        now: Now,
        stage: &Stage,
        path: &ReversePath,
        params: &MailParams,
    ) -> Result<Option<UnixTime>, Reply> {
        if stage.hello().is_none() {
            return Err(seq_error("no ehlo/helo yet"));
        }
        if self.config.require_tls_for_delivery && self.tls.is_none() {
            return Err(Reply::new(
                530,
                Some(Enhanced::new(5, 7, 0)),
                "STARTTLS required for mail delivery",
            ));
        }
        if self.config.submission && self.account.is_none() {
            return Err(Reply::new(
                530,
                Some(Enhanced::new(5, 7, 0)),
                "authentication required",
            ));
        }
        if stage.has_txn() {
            return Err(seq_error("already have MAIL"));
        }
        if let Some(size) = params.size {
            if size > self.config.max_message_size {
                return Err(Reply::new(
                    552,
                    Some(Enhanced::new(5, 3, 4)),
                    "message too large",
                ));
            }
        }
        if params.requiretls && self.tls.is_none() {
            return Err(Reply::new(
                530,
                Some(Enhanced::new(5, 7, 10)),
                "REQUIRETLS requires a TLS connection",
            ));
        }
        if let ReversePath::Mailbox(a) = path {
            if !a.is_ascii() && !params.smtputf8 {
                return Err(Reply::new(
                    553,
                    Some(Enhanced::new(5, 6, 7)),
                    "non-ascii address requires SMTPUTF8",
                ));
            }
            if !self.config.submission && !matches!(a.host, Host::Domain(_)) {
                return Err(Reply::new(
                    550,
                    Some(Enhanced::new(5, 7, 0)),
                    "domain name required",
                ));
            }
        }
        let Some(hold) = params.hold else {
            return Ok(None);
        };
        if !self.config.submission {
            return Err(Reply::new(
                555,
                Some(Enhanced::new(5, 3, 3)),
                "unrecognized parameter: future release only on submission",
            ));
        }
        let max = now.wall.add(self.config.future_release_max);
        let until = match hold {
            Hold::For(0) => {
                return Err(Reply::new(
                    501,
                    Some(Enhanced::new(5, 5, 4)),
                    "HOLDFOR must be at least 1 second",
                ));
            }
            Hold::For(secs) => UnixTime(
                now.wall
                    .0
                    .saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)),
            ),
            Hold::Until(t) => t,
        };
        if until <= now.wall {
            return Err(Reply::new(
                554,
                Some(Enhanced::new(5, 5, 4)),
                "requested future release time is in the past",
            ));
        }
        if until > max {
            return Err(Reply::new(
                554,
                Some(Enhanced::new(5, 5, 4)),
                "requested future release time is too far in the future",
            ));
        }
        Ok(Some(until))
    }

    /// MAIL FROM passed the protocol and DNS checks: ask the policy.
    pub(super) fn mail_checked(&mut self, now: Now, hello: Hello, txn: Box<Txn>) -> State {
        let effect = Effect::CheckSender {
            account: self.account().map(str::to_string),
            address: txn.mail_from.clone(),
            source: SenderSource::MailFrom,
            ip: self.peer.ip,
        };
        self.effect(now, Pending::Sender { hello, txn }, effect)
    }

    fn cmd_rcpt(&mut self, now: Now, stage: Stage, path: ForwardPath, params: RcptParams) -> State {
        let (hello, txn) = match stage {
            Stage::InTransaction(hello, txn) => (hello, txn),
            other => return self.reply_error(seq_error("missing MAIL FROM"), other),
        };
        if txn.recipients.len() >= self.config.max_recipients {
            // Over the recipient limit: 452, and not a failed command (RFC 5321 4.5.3.1.10:
            // the client sends the rest in another transaction). Counting these closed a
            // pipelining client's session and lost the recipients it had.
            self.reply(Reply::new(
                452,
                Some(Enhanced::new(4, 5, 3)),
                format!("max of {} recipients reached", self.config.max_recipients),
            ));
            return State::Command(Stage::InTransaction(hello, txn));
        }
        if let Some(r) = self.rcpt_refusal(&txn, &path) {
            if let Some(l) = &mut self.txn_log {
                l.recipient_refused(&path, r.code);
            }
            return self.reply_error(r, Stage::InTransaction(hello, txn));
        }
        let effect = Effect::CheckRecipient {
            account: self.account().map(str::to_string),
            mail_from: txn.mail_from.clone(),
            recipient: path.clone(),
            ip: self.peer.ip,
        };
        let pending = Pending::Recipient {
            hello,
            txn,
            path,
            params,
        };
        self.effect(now, pending, effect)
    }

    /// Why RCPT TO is refused in this transaction, if it is.
    fn rcpt_refusal(&self, txn: &Txn, path: &ForwardPath) -> Option<Reply> {
        let spf_pass = txn
            .verdicts
            .spf
            .as_ref()
            .is_some_and(|r| r.result == crate::spf::SpfStatus::Pass);
        let need_spf = self
            .config
            .checks
            .as_ref()
            .is_some_and(|c| c.multiple_recipients_need_spf_pass);
        if !self.config.submission && need_spf && !spf_pass && !txn.recipients.is_empty() {
            return Some(Reply::new(
                452,
                Some(Enhanced::new(4, 5, 3)),
                "only one recipient allowed without spf pass",
            ));
        }
        if txn.mail_from == ReversePath::Null && !txn.recipients.is_empty() {
            return Some(Reply::new(
                452,
                Some(Enhanced::new(4, 5, 3)),
                "only one recipient allowed with null reverse address",
            ));
        }
        if let ForwardPath::Mailbox(a) = path {
            if !a.is_ascii() && !txn.params.smtputf8 {
                return Some(Reply::new(
                    553,
                    Some(Enhanced::new(5, 6, 7)),
                    "non-ascii address requires SMTPUTF8",
                ));
            }
            if !self.config.submission && !matches!(a.host, Host::Domain(_)) {
                return Some(Reply::new(
                    550,
                    Some(Enhanced::new(5, 1, 1)),
                    "not accepting email for ip",
                ));
            }
        }
        None
    }
}
