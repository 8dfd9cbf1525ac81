//! The session: the driving contract (`handle`, `poll`), bytes in and out, the TLS layer,
//! the timer table, and the loop that hands complete lines and message bytes to the state.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::rng::Rng;
use crate::smtp::{split_line, Enhanced, LineResult, Reply, MAX_COMMAND_LINE};
use crate::time::Now;
use crate::timer::TimerTable;
use crate::tls::TlsLayer;
use crate::Token;

use super::state::{Authenticated, Delayed, Pending, Stage, State};
use super::{
    Effect, Event, Input, Output, Peer, ServerConfig, SessionError, SpoolId, Timer, TransactionLog,
    TxnVerdict,
};

/// Largest amount of decrypted input buffered while the session waits for an effect.
const MAX_PLAIN_BUFFER: usize = 1 << 20;

/// Tokens of effects given up on that are remembered, so a late answer is ignored rather
/// than taken for misuse.
const EXPIRED_TOKENS: usize = 16;

/// One SMTP server session.
pub struct ServerSession {
    pub(super) config: Arc<ServerConfig>,
    pub(super) peer: Peer,
    pub(super) rng: Rng,
    /// The protocol state; see [`State`].
    pub(super) state: State,
    pub(super) timers: TimerTable<Timer>,
    /// The TLS layer once TLS is on (implicit, or after STARTTLS's 220).
    pub(super) tls: Option<TlsLayer>,
    tls_announced: bool,
    plain_in: Vec<u8>,
    out_raw: Vec<u8>,
    out_plain: Vec<u8>,
    outputs: VecDeque<Output>,
    next_token: u64,
    /// Effects given up on (newest last).
    expired: VecDeque<Token>,
    /// Set by a successful AUTH; kept for the rest of the session.
    pub(super) account: Option<Authenticated>,
    pub(super) commands: u64,
    pub(super) errors: u32,
    pub(super) delivered: u32,
    pub(super) auth_failures: u32,
    pub(super) shutting_down: bool,
    close_after_flush: bool,
    /// The spool file of the current transaction, once message data went to one; ended
    /// ([`Event::SpoolEnded`]) by the next reply (DATA has one reply, at its end) or close.
    pub(super) spool: Option<SpoolId>,
    /// Transactions that spooled so far (numbers the next spool).
    spools: u32,
    /// The latest time given; an earlier one is ignored.
    last_now: Now,
    /// The open transaction's log record, from MAIL FROM's 250 until it ends
    /// ([`Event::Transaction`]).
    pub(super) txn_log: Option<TransactionLog>,
}

impl std::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSession")
            .field("peer", &self.peer)
            .field("state", &self.state.name())
            .field("account", &self.account())
            .finish()
    }
}

impl ServerSession {
    /// A new session for a connection from `peer`. The connection policy is asked first
    /// ([`Effect::CheckConnection`]); the greeting follows its acceptance.
    pub fn new(
        config: Arc<ServerConfig>,
        peer: Peer,
        now: Now,
    ) -> Result<ServerSession, SessionError> {
        let mut seed = Rng::new(config.seed ^ peer.cid.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let rng = seed.child();
        let tls = match (&config.tls, config.implicit_tls) {
            (Some(tc), true) => Some(TlsLayer::server(Arc::clone(tc))?),
            (None, true) => return Err(SessionError::Misuse("implicit TLS without TLS config")),
            _ => None,
        };
        let mut s = ServerSession {
            config,
            peer,
            rng,
            state: State::Closed,
            timers: TimerTable::default(),
            tls,
            tls_announced: false,
            plain_in: Vec::new(),
            out_raw: Vec::new(),
            out_plain: Vec::new(),
            outputs: VecDeque::new(),
            next_token: 0,
            expired: VecDeque::new(),
            account: None,
            commands: 0,
            errors: 0,
            delivered: 0,
            auth_failures: 0,
            shutting_down: false,
            close_after_flush: false,
            spool: None,
            spools: 0,
            last_now: now,
            txn_log: None,
        };
        if s.tls.is_some() {
            s.timers
                .set(Timer::Handshake, now.mono + s.config.tls_handshake_timeout);
        }
        let effect = Effect::CheckConnection {
            ip: peer.ip,
            cid: peer.cid,
            submission: s.config.submission,
            listener: Arc::clone(&s.config.listener),
        };
        s.state = s.effect(now, Pending::Connection, effect);
        Ok(s)
    }

    /// Whether TLS is active (implicit, or after STARTTLS).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The authenticated account, if any.
    pub fn account(&self) -> Option<&str> {
        self.account.as_ref().map(Authenticated::account)
    }

    /// The user name the client authenticated with, when it did.
    pub fn login(&self) -> Option<&str> {
        self.account.as_ref().map(Authenticated::login)
    }

    /// Takes one input. For [`Input::Received`], returns how many bytes were consumed; the
    /// caller keeps the rest and offers it again (with more) after the next input.
    ///
    /// A `now` earlier than one given before is ignored: the session goes on at the latest
    /// time it knows (so a clock stepping back cannot move a deadline earlier or fire one
    /// twice).
    pub fn handle(&mut self, now: Now, input: Input<'_>) -> Result<usize, SessionError> {
        let now = self.clock(now);
        if self.is_closed() {
            return Ok(match input {
                Input::Received(b) => b.len(),
                _ => 0,
            });
        }
        let consumed = match input {
            Input::Received(bytes) => self.handle_received(now, bytes)?,
            Input::Completed(token, completion) => {
                self.handle_completion(now, token, completion)?;
                self.resume(now);
                0
            }
            Input::Timeout => {
                // An early call changes nothing: the idle deadline is not pushed back.
                if self.handle_timeout(now) {
                    self.resume(now);
                }
                0
            }
            Input::PeerClosed => {
                // A transaction in progress is dropped: nothing was acknowledged.
                self.end("peer closed connection");
                0
            }
            Input::Overflow => {
                // A transaction in progress is dropped: nothing was acknowledged.
                self.reply(Reply::new(
                    421,
                    Some(Enhanced::new(4, 7, 0)),
                    "too much input ahead of our replies, closing",
                ));
                self.end("input overflow");
                0
            }
            Input::Shutdown => {
                self.shutting_down = true;
                let between_transactions = match &self.state {
                    State::Command(stage) | State::Delayed { stage, .. } => !stage.has_txn(),
                    _ => false,
                };
                if between_transactions {
                    self.reply(Reply::new(
                        421,
                        Some(Enhanced::new(4, 3, 2)),
                        "shutting down",
                    ));
                    self.end("shutting down");
                }
                0
            }
        };
        self.settle_spool();
        Ok(consumed)
    }

    /// The next output; call until it returns `Idle` (or `Close`) after every `handle`.
    pub fn poll(&mut self, _now: Now, tx: &mut Vec<u8>) -> Output {
        if let Some(o) = self.outputs.pop_front() {
            return o;
        }
        let before = tx.len();
        tx.append(&mut self.out_raw);
        let closed = self.is_closed();
        if let Some(tls) = &mut self.tls {
            if !self.out_plain.is_empty() {
                tls.write_plain(&self.out_plain);
                self.out_plain.clear();
            }
            if closed && self.close_after_flush {
                tls.close();
                self.close_after_flush = false;
            }
            tls.take_ciphertext(tx);
        } else {
            tx.append(&mut self.out_plain);
        }
        if tx.len() > before {
            return Output::Transmit;
        }
        if closed {
            return Output::Close;
        }
        let next = self.timers.next();
        Output::Idle {
            deadline: next.map(|(_, at)| at),
            timer: next.map(|(t, _)| t),
        }
    }

    /// The time to act at: `now`, unless it is earlier than a time given before.
    fn clock(&mut self, now: Now) -> Now {
        if now.mono < self.last_now.mono {
            return self.last_now;
        }
        self.last_now = now;
        now
    }

    // ---- Outputs ----

    fn next_token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    /// Asks the outside world; the session waits for the answer (or its deadline) in
    /// [`State::Waiting`].
    pub(super) fn effect(&mut self, now: Now, pending: Pending, effect: Effect) -> State {
        let token = self.next_token();
        self.timers.stop(Timer::Command);
        self.timers.stop(Timer::Data);
        let deadline = match &pending {
            Pending::Checks { deadline, .. } => *deadline,
            _ => now.mono + self.config.effect_timeout,
        };
        self.timers.set(Timer::Effect, deadline);
        self.outputs.push_back(Output::Effect(token, effect));
        State::Waiting { token, pending }
    }

    /// Remembers a token given up on, so its late answer is ignored.
    pub(super) fn forget_token(&mut self, token: Token) {
        if self.expired.len() >= EXPIRED_TOKENS {
            self.expired.pop_front();
        }
        self.expired.push_back(token);
    }

    /// Whether `token` names an effect given up on.
    pub(super) fn is_forgotten(&self, token: Token) -> bool {
        self.expired.contains(&token)
    }

    pub(super) fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    pub(super) fn reply(&mut self, r: Reply) {
        r.render(&mut self.out_plain);
        self.outputs.push_back(Output::Event(Event::Reply(r.code)));
        if r.code >= 400 {
            self.outputs.push_back(Output::Event(Event::Refused {
                ip: self.peer.ip,
                code: r.code,
                enhanced: r.enhanced,
                text: r.lines.join("; "),
            }));
        }
    }

    /// A failed MAIL/RCPT/DATA or unknown command: counted toward the error limit. Goes on
    /// with `next`, or closes when there were too many.
    pub(super) fn reply_error(&mut self, r: Reply, next: Stage) -> State {
        if !next.has_txn() {
            self.txn_end(TxnVerdict::Refused(r.code), r.lines.join("; "));
        }
        self.reply(r);
        self.errors += 1;
        if self.errors > self.config.max_errors && self.delivered == 0 {
            self.reply(Reply::new(
                550,
                Some(Enhanced::new(5, 1, 0)),
                "too many failures",
            ));
            return self.finish("too many failures");
        }
        State::Command(next)
    }

    /// The session ends: the state to enter is [`State::Closed`].
    pub(super) fn finish(&mut self, why: &str) -> State {
        self.txn_end(TxnVerdict::Abandoned, why);
        self.end_spool();
        self.close_after_flush = true;
        self.timers.clear();
        self.event(Event::Closing(why.to_string()));
        State::Closed
    }

    /// The open transaction (if one is) ended: its one log line goes out.
    pub(super) fn txn_end(&mut self, verdict: TxnVerdict, reason: impl Into<String>) {
        if let Some(mut l) = self.txn_log.take() {
            l.verdict = verdict;
            l.reason = reason.into();
            self.event(Event::Transaction(Box::new(l)));
        }
    }

    /// The spool of the current transaction, made when its first data goes out.
    pub(super) fn spool_id(&mut self) -> SpoolId {
        if let Some(id) = self.spool {
            return id;
        }
        self.spools += 1;
        let id = SpoolId {
            cid: self.peer.cid,
            txn: self.spools,
        };
        self.spool = Some(id);
        id
    }

    /// Whether the state still writes to or waits on the spool file: reading DATA or
    /// BDAT, a spool write out, or a BDAT transaction open between chunks. Once the whole
    /// message is back (mapped) or the transaction is gone, the file can go.
    fn holds_spool(&self) -> bool {
        match &self.state {
            State::Data(_) | State::Chunk { .. } => true,
            State::Waiting { pending, .. } => match pending {
                Pending::Spool { .. }
                | Pending::SpoolChunk { .. }
                | Pending::SpoolEnd { .. }
                | Pending::Recipient { .. } => true,
                Pending::Password { stage, .. } | Pending::Credentials { stage, .. } => {
                    stage.has_txn()
                }
                _ => false,
            },
            State::Command(stage) | State::Auth { stage, .. } | State::Delayed { stage, .. } => {
                stage.has_txn()
            }
            State::Discard { .. } | State::Closed => false,
        }
    }

    /// Ends the spool when the state no longer holds it (after every input).
    fn settle_spool(&mut self) {
        if self.spool.is_some() && !self.holds_spool() {
            self.end_spool();
        }
    }

    /// The transaction that spooled is over: its file can go.
    fn end_spool(&mut self) {
        if let Some(id) = self.spool.take() {
            self.outputs.push_back(Output::Event(Event::SpoolEnded(id)));
        }
    }

    /// Ends the session from outside a transition.
    pub(super) fn end(&mut self, why: &str) {
        if self.is_closed() {
            return;
        }
        self.state = self.finish(why);
    }

    /// Takes the state out for a transition; the caller puts the next one back.
    pub(super) fn take_state(&mut self) -> State {
        std::mem::replace(&mut self.state, State::Closed)
    }

    pub(super) fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    fn is_blocked(&self) -> bool {
        matches!(
            self.state,
            State::Waiting { .. } | State::Delayed { .. } | State::Closed
        )
    }

    // ---- Bytes in ----

    fn handle_received(&mut self, now: Now, bytes: &[u8]) -> Result<usize, SessionError> {
        if bytes.is_empty() {
            return Ok(0);
        }
        if self.tls.is_none() {
            if self.is_blocked() {
                return Ok(0);
            }
            let n = self.process(now, bytes);
            if !self.is_blocked() {
                self.touch_timer(now);
            }
            return Ok(n);
        }
        // TLS: rustls takes the ciphertext; plaintext is buffered here.
        if self.plain_in.len() > MAX_PLAIN_BUFFER {
            return Ok(0);
        }
        let mut plain = std::mem::take(&mut self.plain_in);
        let fed = match self.tls.as_mut() {
            Some(tls) => tls.feed(bytes, &mut plain),
            None => Ok(0),
        };
        self.plain_in = plain;
        let n = match fed {
            Ok(n) => n,
            Err(e) => {
                // The peer broke TLS: rustls queued an alert saying why, which goes out
                // before the close (the close is the session's, not an `Err`).
                self.end(&format!("tls error: {e}"));
                return Ok(bytes.len());
            }
        };
        self.check_handshake();
        self.resume(now);
        Ok(n)
    }

    fn check_handshake(&mut self) {
        if self.tls_announced {
            return;
        }
        let info = match &self.tls {
            Some(t) if !t.is_handshaking() => t.info(),
            _ => return,
        };
        self.tls_announced = true;
        self.timers.stop(Timer::Handshake);
        if let Some(info) = info {
            self.event(Event::TlsEstablished(info));
        }
    }

    /// Restarts the timer of what the session reads next (and stops the other one).
    fn touch_timer(&mut self, now: Now) {
        let (set, stop, after) = match self.state {
            State::Data(_) | State::Chunk { .. } | State::Discard { .. } => {
                (Timer::Data, Timer::Command, self.config.data_timeout)
            }
            State::Command(_) | State::Auth { .. } => {
                (Timer::Command, Timer::Data, self.config.command_timeout)
            }
            State::Waiting { .. } | State::Delayed { .. } | State::Closed => return,
        };
        self.timers.stop(stop);
        self.timers.set(set, now.mono + after);
    }

    /// Processes buffered plaintext (TLS) after something unblocked the session.
    fn resume(&mut self, now: Now) {
        if self.tls.is_some() && !self.plain_in.is_empty() && !self.is_blocked() {
            let plain = std::mem::take(&mut self.plain_in);
            let used = self.process(now, &plain);
            let mut rest = plain;
            rest.drain(..used.min(rest.len()));
            // Bytes that arrived while processing stay after the leftover.
            rest.append(&mut self.plain_in);
            self.plain_in = rest;
        }
        if !self.is_blocked() {
            self.touch_timer(now);
        }
    }

    /// Processes plaintext protocol bytes; returns how many were consumed.
    fn process(&mut self, now: Now, data: &[u8]) -> usize {
        let mut pos = 0;
        while pos < data.len() && !self.is_blocked() {
            let rest = &data[pos..];
            match &mut self.state {
                State::Waiting { .. } | State::Delayed { .. } | State::Closed => break,
                State::Data(d) => {
                    // At most the spool threshold is held: past it the data goes to the
                    // spool file, and no more is read until that is done.
                    let threshold = self.config.spool_threshold.max(1);
                    let room = threshold.saturating_sub(d.msg.len()).max(1);
                    let input = &rest[..rest.len().min(room)];
                    let (n, end) = d.reader.feed(input, &mut d.msg);
                    pos += n;
                    if d.failed.is_some() {
                        d.msg.clear();
                    }
                    if let Some(end) = end {
                        let st = self.take_state();
                        self.state = self.data_end(now, st, end);
                    } else if d.msg.len() >= threshold {
                        let st = self.take_state();
                        self.state = self.spool_data(now, st);
                    } else if n == rest.len() {
                        break;
                    }
                }
                State::Chunk { txn, remaining, .. } => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    let buf = txn.chunks.get_or_insert_with(Vec::new);
                    let threshold = self.config.spool_threshold.max(1);
                    let take = take.min(threshold.saturating_sub(buf.len()).max(1));
                    if txn.spooled + (buf.len() + take) as u64 > self.config.max_message_size {
                        // The rest of the chunk is read and dropped, then refused.
                        let st = self.take_state();
                        self.state = chunk_too_large(st);
                        continue;
                    }
                    buf.extend_from_slice(&rest[..take]);
                    *remaining -= take as u64;
                    pos += take;
                    if buf.len() >= threshold {
                        // Past the threshold the chunk data goes to the spool file.
                        let st = self.take_state();
                        self.state = self.spool_chunk(now, st);
                        continue;
                    }
                    if *remaining > 0 {
                        if pos < data.len() {
                            continue;
                        }
                        break;
                    }
                    let st = self.take_state();
                    self.state = self.chunk_end(now, st);
                }
                State::Discard { remaining, .. } => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    *remaining -= take as u64;
                    pos += take;
                    if *remaining > 0 {
                        break;
                    }
                    let st = self.take_state();
                    self.state = self.chunk_end(now, st);
                }
                State::Command(_) | State::Auth { .. } => {
                    match split_line(rest, MAX_COMMAND_LINE) {
                        LineResult::Line(line, n) => {
                            pos += n;
                            let more = pos < data.len();
                            if let Some(tls) = self.line(now, line, more) {
                                self.start_tls(now, tls);
                                return pos;
                            }
                        }
                        LineResult::Partial => break,
                        LineResult::TooLong => {
                            self.reply(Reply::new(
                                500,
                                Some(Enhanced::new(5, 5, 2)),
                                "line too long, smtp max is 512 and we allow 4096",
                            ));
                            self.end("line too long");
                            return data.len();
                        }
                    }
                }
            }
        }
        pos
    }

    /// STARTTLS was accepted: its 220 goes out in plaintext, everything after it through
    /// TLS. The state was already replaced by a fresh [`Stage::ExpectHello`].
    fn start_tls(&mut self, now: Now, layer: TlsLayer) {
        self.out_raw.append(&mut self.out_plain);
        self.tls = Some(layer);
        self.timers.set(
            Timer::Handshake,
            now.mono + self.config.tls_handshake_timeout,
        );
    }

    // ---- Deadlines ----

    /// Acts on the timers that expired; returns whether any did.
    fn handle_timeout(&mut self, now: Now) -> bool {
        let mut fired = false;
        while let Some(t) = self.timers.expired(now.mono) {
            fired = true;
            match t {
                Timer::Delay => {
                    let st = self.take_state();
                    self.state = match st {
                        State::Delayed { held, stage } => self.release(held, stage),
                        other => other,
                    };
                }
                Timer::Effect => {
                    let st = self.take_state();
                    self.state = match st {
                        State::Waiting { token, pending } => {
                            self.forget_token(token);
                            self.effect_expired(pending)
                        }
                        other => other,
                    };
                }
                Timer::Command | Timer::Data | Timer::Handshake => {
                    if self.tls_announced || t != Timer::Handshake {
                        self.reply(Reply::new(
                            421,
                            Some(Enhanced::new(4, 4, 2)),
                            "timeout, closing",
                        ));
                    }
                    self.end("timeout");
                }
            }
        }
        fired
    }

    /// Sends a held-back reply.
    fn release(&mut self, held: Delayed, stage: Stage) -> State {
        match held {
            Delayed::Auth { reply, close } => {
                self.reply(reply);
                if close {
                    return self.finish("too many authentication failures");
                }
                State::Command(stage)
            }
            Delayed::Error(r) => self.reply_error(r, stage),
        }
    }

    /// Holds `held` back for `delay`; input is buffered meanwhile.
    pub(super) fn hold(
        &mut self,
        now: Now,
        delay: std::time::Duration,
        held: Delayed,
        stage: Stage,
    ) -> State {
        self.timers.stop(Timer::Command);
        self.timers.set(Timer::Delay, now.mono + delay);
        State::Delayed { held, stage }
    }
}

/// A BDAT chunk that would make the message too large: the rest of it is discarded, the
/// transaction dropped, and `552` answers it.
fn chunk_too_large(st: State) -> State {
    let (stage, remaining) = match st {
        State::Chunk {
            hello, remaining, ..
        } => (Stage::ExpectMail(hello), remaining),
        other => return other,
    };
    State::Discard {
        stage,
        remaining,
        reply: Reply::new(552, Some(Enhanced::new(5, 3, 4)), "message too large"),
    }
}
