//! rmox-core: every protocol and policy decision of the rmox mail server, as pure,
//! deterministic, sans-IO state machines.
//!
//! Nothing in this crate touches a socket, a clock, a disk, a thread or the operating
//! system's randomness. Time and randomness come in as arguments; bytes, requests for the
//! outside world and log events come out.
//!
//! # The driving contract (every machine)
//!
//! ```text
//! let mut s = ServerSession::new(Arc::clone(&config), peer, now);
//! s.handle(now, Input::Received(&buf))?;            // bytes from the peer
//! s.handle(now, Input::Completed(token, answer))?;  // the answer to an earlier Effect
//! s.handle(now, Input::Timeout)?;                   // a deadline passed; early calls are no-ops
//! loop {                                            // after EVERY handle: drain until Idle
//!     match s.poll(now, &mut tx) {
//!         Output::Transmit => { /* write tx to the socket, clear it */ }
//!         Output::Effect(token, e) => { /* perform e, later handle Completed(token, ..) */ }
//!         Output::Event(ev) => { /* log, metrics */ }
//!         Output::Idle { deadline, .. } => break,   // wait for input, a completion or the deadline
//!     }
//! }
//! ```
//!
//! * `handle` takes one input and never blocks. `Input::Received` borrows the bytes and
//!   returns how many it consumed; the driver keeps the rest and offers them again with more
//!   input (backpressure).
//! * `poll` must be called until it returns `Idle` after every `handle`, before the next
//!   `handle`. Bytes are appended to the caller's buffer; the caller writes and clears it.
//! * Effects carry a [`Token`]; the answer comes back as `Completed` with the same token, in
//!   any order relative to other effects.
//! * `Idle { deadline, timer }` gives the earliest deadline and which timer it is. The
//!   driver calls `handle(now, Input::Timeout)` once `now >= deadline`; an early call does
//!   nothing.
//! * A `now` earlier than one given before is ignored: the machine goes on at the latest
//!   time it was given (str0m's guard), so a clock stepping back cannot move a deadline.
//! * Everything a machine waits for has a deadline, effects included: an answer that does
//!   not come in time is given up on (the server session answers `451`/`421`), and a
//!   completion arriving after that is ignored.
//! * A peer's protocol error is answered with the protocol's error reply. `Err` from
//!   `handle` means the session cannot continue; it is sticky. Nothing reachable from network
//!   bytes panics.

pub mod acme;
pub mod client;
pub mod codec;
pub mod delivery;
pub mod dkim;
pub mod dmarc;
pub mod dns;
pub mod dnsbl;
pub mod http;
pub mod inbox;
pub mod incoming;
pub mod iprev;
pub mod junk;
pub mod localserve;
pub mod message;
pub mod publicsuffix;
pub mod queue;
pub mod ratelimit;
pub mod reputation;
pub mod rng;
pub mod ruleset;
pub mod sasl;
pub mod server;
pub mod smtp;
pub mod spf;
pub mod subjectpass;
#[cfg(any(test, feature = "testing"))]
pub mod testkit;
pub mod time;
pub mod timer;
pub mod tls;
pub mod tlspolicy;
pub mod webapi;
pub mod webhook;

pub use rng::Rng;
pub use time::{Now, UnixTime};
pub use timer::TimerTable;

/// Names one outstanding effect of a machine; the answer carries the same token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);
