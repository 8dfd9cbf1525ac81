//! The protocol state of a server session, as types.
//!
//! A session is always in exactly one [`State`], and each state owns what belongs to it:
//! the hello facts live in [`Stage`] once EHLO/HELO was given, the one transaction in
//! [`Stage::InTransaction`] (its recipients, the checks made at MAIL FROM and the BDAT chunks
//! so far), the message being read in [`State::Data`] or [`State::Chunk`], an AUTH exchange
//! in [`State::Auth`], and a pending effect in [`State::Waiting`] with everything its answer
//! continues. Transitions take the state by value and give the next one back (as rustls'
//! handshake states do), so nothing of a state can outlive it by accident: STARTTLS gives
//! [`Stage::ExpectHello`] and the old hello and transaction are dropped with the old value
//! (RFC 3207 4.2), not reset field by field.

use crate::sasl::{Mechanism, ServerAuth};
use crate::smtp::{DataReader, ForwardPath, Host, MailParams, RcptParams, Reply, ReversePath};
use crate::time::UnixTime;
use crate::Token;

use super::checks::{CheckSet, Verdicts};
use super::{SpooledBytes, Transaction};

/// Proof that a transaction was stored durably: only made from a
/// [`super::Completion::Stored`] with [`super::StoreOutcome::Delivered`] or
/// [`super::StoreOutcome::Partial`], and required to send the 250 after DATA.
pub(super) struct Spooled(());

impl Spooled {
    /// Made only where a store completion said the message is durable (`completions`).
    pub(super) fn from_store_completion() -> Spooled {
        Spooled(())
    }
}

/// Proof that an AUTH exchange succeeded: only made when the SASL exchange ended in success
/// with the account a password or credentials completion named; the session is
/// authenticated only while it holds one.
#[derive(Debug)]
pub(super) struct Authenticated {
    account: String,
    login: String,
}

impl Authenticated {
    /// Made only at the successful end of an AUTH exchange (`auth`): the account, and the
    /// user name the client gave.
    pub(super) fn from_exchange(account: String, login: String) -> Authenticated {
        Authenticated { account, login }
    }

    /// The account logged in to.
    pub(super) fn account(&self) -> &str {
        &self.account
    }

    /// The user name the client authenticated with (an address or an account name).
    pub(super) fn login(&self) -> &str {
        &self.login
    }
}

/// What the client said in EHLO/HELO.
#[derive(Debug)]
pub(super) struct Hello {
    /// The name given.
    pub(super) host: Host,
    /// EHLO (true) or HELO.
    pub(super) esmtp: bool,
}

impl Hello {
    /// The name as shown in headers and the transaction.
    pub(super) fn name(&self) -> String {
        self.host.to_string()
    }
}

/// One mail transaction: MAIL given, recipients collected, BDAT chunks gathered.
#[derive(Debug)]
pub(super) struct Txn {
    pub(super) mail_from: ReversePath,
    pub(super) params: MailParams,
    pub(super) recipients: Vec<(ForwardPath, RcptParams)>,
    pub(super) hold_until: Option<UnixTime>,
    /// Results of the checks made at MAIL FROM.
    pub(super) verdicts: Verdicts,
    /// The message collected by BDAT chunks so far; `None` until the first BDAT (then DATA
    /// is refused).
    pub(super) chunks: Option<Vec<u8>>,
    /// Octets of BDAT chunks already in the spool file (not in `chunks`).
    pub(super) spooled: u64,
}

/// How far the conversation got, between commands.
#[derive(Debug)]
pub(super) enum Stage {
    /// No EHLO/HELO yet (after the greeting, or after STARTTLS).
    ExpectHello,
    /// EHLO/HELO given, no transaction.
    ExpectMail(Hello),
    /// In a transaction.
    InTransaction(Hello, Box<Txn>),
}

impl Stage {
    /// The hello facts, once given.
    pub(super) fn hello(&self) -> Option<&Hello> {
        match self {
            Stage::ExpectHello => None,
            Stage::ExpectMail(h) | Stage::InTransaction(h, _) => Some(h),
        }
    }

    /// Whether a transaction is open.
    pub(super) fn has_txn(&self) -> bool {
        matches!(self, Stage::InTransaction(..))
    }

    /// The same stage with its transaction (if any) dropped.
    pub(super) fn without_txn(self) -> Stage {
        match self {
            Stage::InTransaction(h, _) => Stage::ExpectMail(h),
            other => other,
        }
    }
}

/// What the client sent after DATA, complete.
pub(super) enum Sent {
    /// Held in memory (under the spool threshold).
    Memory(Vec<u8>),
    /// In the spool file.
    Spooled(SpooledBytes),
}

impl Sent {
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Sent::Memory(v) => v,
            Sent::Spooled(s) => s.bytes(),
        }
    }
}

/// Reading the message after DATA.
pub(super) struct DataState {
    pub(super) hello: Hello,
    pub(super) txn: Box<Txn>,
    pub(super) reader: DataReader,
    /// Message data not yet spooled.
    pub(super) msg: Vec<u8>,
    /// The spool failed: the rest of the message is read and dropped, then this refuses it.
    pub(super) failed: Option<Reply>,
}

/// An AUTH exchange between two lines of the client.
pub(super) struct AuthExchange {
    pub(super) auth: ServerAuth,
    pub(super) mechanism: Mechanism,
    /// The server-final data was sent for this account; an empty response completes the
    /// exchange.
    pub(super) final_sent: Option<(String, String)>,
    /// The account a password or credentials completion resolved the user name to.
    pub(super) resolved: Option<String>,
}

/// A reply held back until [`super::Timer::Delay`] expires.
pub(super) enum Delayed {
    /// A failed AUTH; `close` ends the session after it.
    Auth { reply: Reply, close: bool },
    /// A failed transaction (all recipients unknown): an error reply.
    Error(Reply),
}

/// What a pending effect's answer continues; each owns the stage to return to.
pub(super) enum Pending {
    /// The connection policy; the greeting follows.
    Connection,
    /// The sender policy at MAIL FROM.
    Sender { hello: Hello, txn: Box<Txn> },
    /// The recipient policy at RCPT TO.
    Recipient {
        hello: Hello,
        txn: Box<Txn>,
        path: ForwardPath,
        params: RcptParams,
    },
    /// A password check in an AUTH exchange.
    Password {
        stage: Stage,
        exchange: Box<AuthExchange>,
        username: String,
    },
    /// A credentials lookup in an AUTH exchange.
    Credentials {
        stage: Stage,
        exchange: Box<AuthExchange>,
        username: String,
    },
    /// The sender policy for the From header (submission).
    FromHeader { hello: Hello, txn: Box<Transaction> },
    /// The store of a complete transaction.
    Store {
        hello: Hello,
        size: usize,
        recipients: usize,
    },
    /// Message data being appended to the spool file, in the middle of DATA.
    Spool { data: Box<DataState> },
    /// BDAT chunk data being appended to the spool file; `remaining` octets of the chunk
    /// follow.
    SpoolChunk {
        hello: Hello,
        txn: Box<Txn>,
        remaining: u64,
        last: bool,
    },
    /// The last message data being appended to the spool file, after the final dot.
    SpoolEnd { hello: Hello, txn: Box<Txn> },
    /// A round of DNS lookups of a set of checks.
    Checks {
        set: CheckSet,
        after: AfterChecks,
        /// When the checks of this command must be done.
        deadline: std::time::Instant,
    },
}

/// What follows when a set of checks is done.
pub(super) enum AfterChecks {
    /// The checks at MAIL FROM.
    Mail { hello: Hello, txn: Box<Txn> },
    /// The checks after the message; `dmarc` is false until the DMARC round ran.
    Data {
        hello: Hello,
        t: Box<Transaction>,
        verdicts: Box<Verdicts>,
        dmarc: bool,
    },
}

/// The session's protocol state.
pub(super) enum State {
    /// Reading command lines.
    Command(Stage),
    /// Reading the message after DATA.
    Data(Box<DataState>),
    /// Reading a BDAT chunk into the transaction.
    Chunk {
        hello: Hello,
        txn: Box<Txn>,
        remaining: u64,
        last: bool,
    },
    /// Reading a BDAT chunk only to discard it; `reply` answers it, then `stage` goes on.
    Discard {
        stage: Stage,
        remaining: u64,
        reply: Reply,
    },
    /// Waiting for the client's next line of an AUTH exchange.
    Auth {
        stage: Stage,
        exchange: Box<AuthExchange>,
    },
    /// An effect is out; its answer continues `pending`.
    Waiting { token: Token, pending: Pending },
    /// A reply is held back; then `stage` goes on.
    Delayed { held: Delayed, stage: Stage },
    /// Nothing more: the session is over.
    Closed,
}

impl State {
    /// A short name for logs and `Debug`.
    pub(super) fn name(&self) -> &'static str {
        match self {
            State::Command(Stage::ExpectHello) => "expect-hello",
            State::Command(Stage::ExpectMail(_)) => "expect-mail",
            State::Command(Stage::InTransaction(..)) => "in-transaction",
            State::Data(_) => "data",
            State::Chunk { .. } => "bdat",
            State::Discard { .. } => "bdat-discard",
            State::Auth { .. } => "auth",
            State::Waiting { .. } => "waiting",
            State::Delayed { .. } => "delayed",
            State::Closed => "closed",
        }
    }
}
