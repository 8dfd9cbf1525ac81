//! The message: DATA and BDAT, the finished message's checks and headers, and its store.

use std::net::IpAddr;

use crate::message;
use crate::smtp::{Address, Body, DataEnd, DataReader, Enhanced, ForwardPath, Reply, ReversePath};
use crate::time::Now;
use crate::tls::TlsLayer;

use super::checks::{self, CheckSet};
use super::commands::seq_error;
use super::state::{AfterChecks, DataState, Hello, Pending, Sent, Stage, State, Txn};
use super::{Effect, Event, MessageData, SenderSource, ServerSession, SpoolAnswer, Transaction};

impl ServerSession {
    /// DATA: only in a transaction with recipients and no BDAT chunks.
    pub(super) fn cmd_data(&mut self, stage: Stage) -> State {
        let (hello, txn) = match stage {
            Stage::InTransaction(hello, txn) => (hello, txn),
            other => return self.reply_error(seq_error("missing MAIL FROM"), other),
        };
        let refusal = if txn.recipients.is_empty() {
            Some(seq_error("missing RCPT TO"))
        } else if txn.chunks.is_some() {
            Some(seq_error("DATA not allowed after BDAT"))
        } else if txn.params.body == Some(Body::BinaryMime) {
            Some(seq_error("BINARYMIME requires BDAT"))
        } else {
            None
        };
        if let Some(r) = refusal {
            return self.reply_error(r, Stage::InTransaction(hello, txn));
        }
        self.reply(Reply::new(354, None, "see you at the bare dot"));
        State::Data(Box::new(DataState {
            hello,
            txn,
            reader: DataReader::new(self.config.max_message_size),
            msg: Vec::new(),
            failed: None,
        }))
    }

    /// BDAT: the chunk's bytes are read into the transaction, or, when the transaction
    /// cannot take a message yet, read and dropped before the refusal.
    pub(super) fn cmd_bdat(&mut self, now: Now, stage: Stage, size: u64, last: bool) -> State {
        let next = match stage {
            Stage::InTransaction(hello, mut txn) if !txn.recipients.is_empty() => {
                txn.chunks.get_or_insert_with(Vec::new);
                State::Chunk {
                    hello,
                    txn,
                    remaining: size,
                    last,
                }
            }
            Stage::InTransaction(hello, _) => State::Discard {
                stage: Stage::ExpectMail(hello),
                remaining: size,
                reply: seq_error("missing RCPT TO"),
            },
            other => State::Discard {
                stage: other,
                remaining: size,
                reply: seq_error("missing MAIL FROM"),
            },
        };
        if size == 0 {
            // No chunk bytes follow: the chunk is complete now.
            return self.chunk_end(now, next);
        }
        next
    }

    /// The end of the message after DATA.
    pub(super) fn data_end(&mut self, now: Now, st: State, end: DataEnd) -> State {
        let State::Data(d) = st else {
            return st;
        };
        let DataState {
            hello,
            txn,
            msg,
            failed,
            ..
        } = *d;
        if end.smuggling {
            self.event(Event::Smuggling);
            let r = Reply::new(
                500,
                Some(Enhanced::new(5, 5, 2)),
                "bare carriage return or linefeed next to a dot: refusing possible smtp smuggling",
            );
            return self.reply_error(r, Stage::ExpectMail(hello));
        }
        if end.too_large {
            let r = Reply::new(552, Some(Enhanced::new(5, 3, 4)), "message too large");
            return self.reply_error(r, Stage::ExpectMail(hello));
        }
        if let Some(r) = failed {
            return self.reply_error(r, Stage::ExpectMail(hello));
        }
        if self.spool.is_some() {
            // The rest goes after the spooled data; the answer gives the whole message.
            let effect = Effect::Spool {
                spool: self.spool_id(),
                chunk: msg,
                last: true,
            };
            return self.effect(now, Pending::SpoolEnd { hello, txn }, effect);
        }
        self.message_complete(now, hello, txn, Sent::Memory(msg))
    }

    /// The message data held reached the spool threshold: it goes to the spool file, and
    /// the session reads no more until that is done (backpressure).
    pub(super) fn spool_data(&mut self, now: Now, st: State) -> State {
        let State::Data(mut d) = st else {
            return st;
        };
        let chunk = std::mem::take(&mut d.msg);
        let effect = Effect::Spool {
            spool: self.spool_id(),
            chunk,
            last: false,
        };
        self.effect(now, Pending::Spool { data: d }, effect)
    }

    /// The BDAT data held reached the spool threshold: as for DATA, it goes to the spool
    /// file and the session reads no more until that is done.
    pub(super) fn spool_chunk(&mut self, now: Now, st: State) -> State {
        let State::Chunk {
            hello,
            mut txn,
            remaining,
            last,
        } = st
        else {
            return st;
        };
        let chunk = txn.chunks.as_mut().map(std::mem::take).unwrap_or_default();
        txn.spooled += chunk.len() as u64;
        let effect = Effect::Spool {
            spool: self.spool_id(),
            chunk,
            last: false,
        };
        let pending = Pending::SpoolChunk {
            hello,
            txn,
            remaining,
            last,
        };
        self.effect(now, pending, effect)
    }

    /// The answer to spooling BDAT data: reading the chunk goes on (it may be complete);
    /// after a failure the rest of the chunk is read and dropped and the chunk refused,
    /// which ends the transaction.
    pub(super) fn spooled_chunk(
        &mut self,
        now: Now,
        pending: Pending,
        failed: Option<Reply>,
    ) -> State {
        let Pending::SpoolChunk {
            hello,
            txn,
            remaining,
            last,
        } = pending
        else {
            return State::Closed;
        };
        let next = match failed {
            Some(reply) => State::Discard {
                stage: Stage::ExpectMail(hello),
                remaining,
                reply,
            },
            None => State::Chunk {
                hello,
                txn,
                remaining,
                last,
            },
        };
        if remaining == 0 {
            return self.chunk_end(now, next);
        }
        next
    }

    /// The answer to spooling data in the middle of DATA: reading goes on (after a
    /// failure, only to drop the rest and refuse the message at its end).
    pub(super) fn spooled_data(&mut self, mut d: Box<DataState>, answer: SpoolAnswer) -> State {
        if let SpoolAnswer::Failed(why) = answer {
            d.failed = Some(spool_failed(&why));
        }
        State::Data(d)
    }

    /// The answer to spooling the last data after the final dot.
    pub(super) fn spooled_end(
        &mut self,
        now: Now,
        hello: Hello,
        txn: Box<Txn>,
        answer: SpoolAnswer,
    ) -> State {
        match answer {
            SpoolAnswer::Complete(bytes) => {
                self.message_complete(now, hello, txn, Sent::Spooled(bytes))
            }
            SpoolAnswer::Failed(why) => {
                self.reply_error(spool_failed(&why), Stage::ExpectMail(hello))
            }
            SpoolAnswer::Appended => self.reply_error(
                spool_failed("no message after the last chunk"),
                Stage::ExpectMail(hello),
            ),
        }
    }

    /// The end of a BDAT chunk (read or discarded).
    pub(super) fn chunk_end(&mut self, now: Now, st: State) -> State {
        match st {
            State::Discard { stage, reply, .. } => self.reply_error(reply, stage),
            State::Chunk {
                hello,
                txn,
                last: false,
                ..
            } => {
                let size = txn.spooled + txn.chunks.as_ref().map_or(0, Vec::len) as u64;
                self.reply(Reply::new(
                    250,
                    Some(Enhanced::new(2, 0, 0)),
                    format!("chunk received, {size} octets so far"),
                ));
                State::Command(Stage::InTransaction(hello, txn))
            }
            State::Chunk { hello, mut txn, .. } => {
                let msg = txn.chunks.take().unwrap_or_default();
                if self.spool.is_some() {
                    let effect = Effect::Spool {
                        spool: self.spool_id(),
                        chunk: msg,
                        last: true,
                    };
                    return self.effect(now, Pending::SpoolEnd { hello, txn }, effect);
                }
                self.message_complete(now, hello, txn, Sent::Memory(msg))
            }
            other => other,
        }
    }

    /// The message of the transaction is complete: check it, then store it. The
    /// transaction ends here whatever happens next.
    fn message_complete(&mut self, now: Now, hello: Hello, txn: Box<Txn>, sent: Sent) -> State {
        let after = Stage::ExpectMail;
        let msg = sent.bytes();
        if let Err(e) = message::check_structure(msg) {
            let text = match e {
                message::Malformed::NoBody => e.to_string(),
                _ => format!("malformed message: {e}"),
            };
            let r = Reply::new(554, Some(Enhanced::new(5, 6, 0)), text);
            return self.reply_error(r, after(hello));
        }
        let Some(body_at) = message::body_offset(msg) else {
            // check_structure refuses a message without a separator; kept as a reply.
            let r = Reply::new(
                554,
                Some(Enhanced::new(5, 6, 0)),
                "message requires both header and body section",
            );
            return self.reply_error(r, after(hello));
        };
        if body_at > self.config.spool_threshold.max(1) {
            // Only a spooled message can get here: its header is read into memory.
            let r = Reply::new(
                552,
                Some(Enhanced::new(5, 3, 4)),
                "message header too large",
            );
            return self.reply_error(r, after(hello));
        }
        let header = &msg[..body_at];
        if !self.config.submission
            && message::received_count(header) > self.config.max_received_headers
        {
            let r = Reply::new(
                550,
                Some(Enhanced::new(5, 4, 6)),
                format!(
                    "loop detected, more than {} Received headers",
                    self.config.max_received_headers
                ),
            );
            return self.reply_error(r, after(hello));
        }
        let mut requiretls = if txn.params.requiretls {
            Some(true)
        } else {
            None
        };
        let mut from_header = None;
        let mut prefix = String::new();
        if self.config.submission {
            if message::has_field(header, "Return-Path") {
                let r = Reply::new(
                    550,
                    Some(Enhanced::new(5, 6, 0)),
                    "message must not have Return-Path header",
                );
                return self.reply_error(r, after(hello));
            }
            let froms = message::from_addresses(header);
            if froms.len() != 1 {
                let r = Reply::new(
                    550,
                    Some(Enhanced::new(5, 6, 0)),
                    "message must have exactly one From address",
                );
                return self.reply_error(r, after(hello));
            }
            from_header = froms.into_iter().next();
            if requiretls.is_none() {
                // RFC 8689 5: TLS-Required: No, only when given once and exactly so.
                let v: Vec<&[u8]> = message::values(header, "TLS-Required").collect();
                if v.len() == 1 && v[0].eq_ignore_ascii_case(b"no") {
                    requiretls = Some(false);
                }
            }
            if !message::has_field(header, "Message-Id") {
                let r = self.rng.next_u64();
                prefix.push_str(&format!(
                    "Message-Id: <{:016x}.{}@{}>\r\n",
                    r, self.peer.cid, self.config.hostname
                ));
            }
            if !message::has_field(header, "Date") {
                prefix.push_str(&format!("Date: {}\r\n", now.wall.rfc5322()));
            }
        }
        let received = self.received_header(now, &hello, &txn);
        let checks = match (self.config.submission, &self.config.checks) {
            (false, Some(c)) => Some(checks::data_checks(c, self.peer.ip, msg, now.wall)),
            _ => None,
        };
        let mut head = Vec::with_capacity(received.len() + prefix.len());
        head.extend_from_slice(received.as_bytes());
        head.extend_from_slice(prefix.as_bytes());
        let message = match sent {
            Sent::Memory(msg) => {
                head.extend_from_slice(&msg);
                MessageData::memory(head)
            }
            Sent::Spooled(bytes) => MessageData::spooled(head, bytes),
        };
        let txn = *txn;
        let t = Box::new(Transaction {
            cid: self.peer.cid,
            remote_ip: self.peer.ip,
            ehlo: hello.name(),
            tls: self.tls.as_ref().and_then(TlsLayer::info),
            account: self.account().map(str::to_string),
            login: self.login().map(str::to_string),
            mail_from: txn.mail_from,
            params: txn.params,
            recipients: txn.recipients,
            message,
            requiretls,
            hold_until: txn.hold_until,
            from_header: from_header.clone(),
            received: now.wall,
            auth: None,
        });
        if let Some(list) = checks {
            let deadline = now.mono + self.config.checks_timeout;
            let after = AfterChecks::Data {
                hello,
                t,
                verdicts: Box::new(txn.verdicts),
                dmarc: false,
            };
            return self.run_checks(
                now,
                CheckSet::new(list, self.config.checks_timeout),
                after,
                deadline,
            );
        }
        let Some(f) = from_header else {
            return self.store(now, hello, t);
        };
        let address = match Address::parse(&f) {
            Ok(a) => ReversePath::Mailbox(a),
            Err(_) => {
                let r = Reply::new(
                    550,
                    Some(Enhanced::new(5, 6, 0)),
                    "cannot parse From address",
                );
                return self.reply_error(r, after(hello));
            }
        };
        let effect = Effect::CheckSender {
            account: self.account().map(str::to_string),
            address,
            source: SenderSource::FromHeader,
            ip: self.peer.ip,
        };
        self.effect(now, Pending::FromHeader { hello, txn: t }, effect)
    }

    /// Asks for the transaction to be made durable.
    pub(super) fn store(&mut self, now: Now, hello: Hello, t: Box<Transaction>) -> State {
        let (size, recipients) = (t.message.len(), t.recipients.len());
        if let Some(l) = &mut self.txn_log {
            l.size = Some(size);
            l.auth = t
                .auth
                .as_deref()
                .map(|v| checks::auth_summary(self.peer.ip, v));
        }
        let pending = Pending::Store {
            hello,
            size,
            recipients,
        };
        self.effect(now, pending, Effect::Store(t))
    }

    fn received_header(&self, now: Now, hello: &Hello, txn: &Txn) -> String {
        let with = match (self.tls.is_some(), self.account.is_some(), hello.esmtp) {
            (_, _, false) => "SMTP",
            (true, true, _) => "ESMTPSA",
            (true, false, _) => "ESMTPS",
            (false, true, _) => "ESMTPA",
            (false, false, _) => "ESMTP",
        };
        let ip = match self.peer.ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let mut h = format!(
            "Received: from {} ([{}])\r\n\tby {} with {} id {}",
            sanitize(&hello.name()),
            ip,
            self.config.hostname,
            with,
            self.peer.cid
        );
        if let Some(info) = self.tls.as_ref().and_then(TlsLayer::info) {
            h.push_str(&format!(
                "\r\n\t(version={} cipher={})",
                info.version, info.cipher
            ));
        }
        if let [(ForwardPath::Mailbox(a), _)] = txn.recipients.as_slice() {
            h.push_str(&format!("\r\n\tfor <{a}>"));
        }
        h.push_str(&format!(";\r\n\t{}\r\n", now.wall.rfc5322()));
        h
    }
}

/// The reply to a message whose data could not be spooled.
pub(super) fn spool_failed(why: &str) -> Reply {
    Reply::new(
        451,
        Some(Enhanced::new(4, 3, 0)),
        format!("error writing message to spool, try again later ({why})"),
    )
}

/// Keeps a peer-supplied name safe inside a header comment.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control()) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
