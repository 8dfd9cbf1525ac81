//! Tests of both SMTP ends at once through the [`Pair`]: the client session delivering to
//! the server session over STARTTLS, with bytes in random chunks, and with the link
//! tampered with (injection after STARTTLS, corrupted TLS records, a flipped byte either
//! way); a whole transaction arrives identical whatever the chunking.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::pair::{SmtpClient, SmtpServer};
use super::{Dir, Pair, TestClock};
use crate::client::{ClientConfig, Delivery, Event as CEvent, Needs, TlsMode};
use crate::server::{Event as SEvent, ServerConfig};
use crate::smtp::{ForwardPath, Host, MailParams, RcptParams, ReversePath};

/// The SMTP client session against the server session.
type SmtpPair = Pair<SmtpClient, SmtpServer>;

/// The writes one way, as a tamper hook saw them.
type Writes = Rc<RefCell<Vec<Vec<u8>>>>;

const MESSAGE: &[u8] =
    b"From: <postmaster@mox.example>\r\nTo: <mjl@mox.example>\r\nSubject: pair\r\n\r\nhello\r\n.dot\r\n";

fn delivery() -> Delivery {
    Delivery {
        mail_from: ReversePath::parse("<postmaster@mox.example>").unwrap(),
        recipients: vec![(
            ForwardPath::parse("<mjl@mox.example>").unwrap(),
            RcptParams::default(),
        )],
        params: MailParams::default(),
        message: Arc::from(MESSAGE),
        needs: Needs::default(),
    }
}

/// A client that requires STARTTLS and trusts the test certificate, and a server offering
/// STARTTLS, with one delivery to make.
fn smtp_pair(seed: u64, max_chunk: usize) -> SmtpPair {
    smtp_pair_with(seed, max_chunk, vec![delivery()])
}

/// [`smtp_pair`] with these deliveries.
fn smtp_pair_with(seed: u64, max_chunk: usize, deliveries: Vec<Delivery>) -> SmtpPair {
    let clock = TestClock::new();
    let mut cc = ClientConfig::new(Host::parse("localhost").unwrap(), "mox.example");
    cc.seed = seed;
    cc.tls_mode = TlsMode::RequiredStartTls;
    cc.verification = crate::client::Verify::Pkix(super::client_tls());
    let mut sc = ServerConfig::new("mox.example");
    sc.tls = Some(super::server_tls());
    let client = SmtpClient::new(cc, deliveries, clock.now());
    let server = SmtpServer::new(sc, clock.now(), None);
    Pair::new(client, server, clock, seed, max_chunk)
}

fn stored_intact(p: &SmtpPair) -> bool {
    p.server
        .stored
        .iter()
        .all(|t| t.message.to_vec().ends_with(MESSAGE))
}

/// The client delivers to the server over STARTTLS whatever the chunking of the bytes:
/// the message arrives intact, over TLS, and both ends close.
#[test]
fn delivery_over_starttls_any_chunking() {
    for (seed, max_chunk) in [(1, 0), (2, 1), (3, 7), (4, 100), (5, 3000)] {
        let mut p = smtp_pair(seed, max_chunk);
        p.run();
        assert!(p.closed(), "seed {seed}");
        assert!(p.client.failed.is_none(), "{:?}", p.client.failed);
        assert_eq!(p.client.outcomes.len(), 1);
        assert_eq!(p.client.outcomes[0].delivered().count(), 1);
        assert_eq!(p.server.stored.len(), 1, "seed {seed}");
        assert!(p.server.stored[0].tls.is_some());
        assert!(stored_intact(&p));
        assert!(p
            .client
            .events
            .iter()
            .any(|e| matches!(e, CEvent::TlsEstablished(_))));
    }
}

/// A server that never answers: the client gives up at its greeting timeout, reached by
/// virtual time jumping to the deadline (no real waiting).
#[test]
fn silent_server_times_out_in_virtual_time() {
    let mut p = smtp_pair(1, 0).tamper(|dir, bytes| {
        if dir == Dir::ToClient {
            bytes.clear();
        }
    });
    let start = p.clock.now();
    p.run();
    assert!(p.client_closed());
    assert!(p.client.failed.is_some());
    let waited = p.clock.now().mono.duration_since(start.mono);
    assert!(waited >= std::time::Duration::from_secs(60), "{waited:?}");
    assert!(p.server.stored.is_empty());
}

/// STARTTLS command injection (a man in the middle appends plaintext commands to the
/// client's STARTTLS so that they would be read as said inside TLS): the server refuses,
/// whether the injected bytes arrive with the STARTTLS line or after its 220, and no
/// injected command is acted on.
#[test]
fn injection_after_starttls_refused() {
    for (seed, max_chunk) in [(1, 0), (2, 5), (3, 1), (4, 64)] {
        let mut p = smtp_pair(seed, max_chunk).tamper(|dir, bytes| {
            if dir == Dir::ToServer && bytes.ends_with(b"STARTTLS\r\n") {
                bytes.extend_from_slice(
                    b"MAIL FROM:<evil@evil.example>\r\nRCPT TO:<mjl@mox.example>\r\n",
                );
            }
        });
        p.run();
        assert!(p.closed(), "seed {seed}");
        assert!(p.server.stored.is_empty());
        assert!(
            !p.server
                .events
                .iter()
                .any(|e| matches!(e, SEvent::Command(c) if c == "MAIL" || c == "RCPT")),
            "seed {seed}: {:?}",
            p.server.events
        );
        assert!(p.client.failed.is_some(), "seed {seed}");
        // Without chunking the injection arrives with STARTTLS: refused with a reply.
        if max_chunk == 0 {
            let said = String::from_utf8_lossy(&p.wire_log[Dir::ToClient as usize]).to_string();
            assert!(said.contains("pipelined after STARTTLS"), "{said}");
        }
    }
}

/// A flipped bit in any client write once TLS is on (the handshake's last flight, a
/// command, the message, QUIT): the connection fails or the delivery completes, but a
/// damaged record is never taken as data: what is stored is the message as sent, and the
/// client never reports delivered a message that was not stored.
#[test]
fn corrupted_tls_record_never_accepted() {
    // The writes of a clean run, to know how many there are and which starts TLS.
    let writes = Rc::new(RefCell::new(Vec::<Vec<u8>>::new()));
    let w = Rc::clone(&writes);
    let mut p = smtp_pair(1, 0).tamper(move |dir, bytes| {
        if dir == Dir::ToServer {
            w.borrow_mut().push(bytes.clone());
        }
    });
    p.run();
    assert_eq!(p.server.stored.len(), 1);
    let writes = writes.borrow().clone();
    let tls_from = writes
        .iter()
        .position(|w| w.ends_with(b"STARTTLS\r\n"))
        .unwrap()
        + 1;
    let mut failed = 0;
    for target in tls_from..writes.len() {
        let count = Rc::new(RefCell::new(0usize));
        let c = Rc::clone(&count);
        let mut p = smtp_pair(1, 0).tamper(move |dir, bytes| {
            if dir == Dir::ToServer {
                if *c.borrow() == target {
                    let at = bytes.len() - 1;
                    bytes[at] ^= 0x20;
                }
                *c.borrow_mut() += 1;
            }
        });
        p.run();
        assert!(p.closed(), "write {target}");
        assert!(stored_intact(&p), "write {target}");
        let delivered: usize = p
            .client
            .outcomes
            .iter()
            .map(|o| o.delivered().count())
            .sum();
        assert!(delivered <= p.server.stored.len(), "write {target}");
        if p.client.failed.is_some() && p.server.stored.is_empty() {
            failed += 1;
        }
    }
    // Corrupting the handshake's end or any command before the message stops delivery.
    assert!(
        failed >= 3,
        "{failed} of {} corruptions failed",
        writes.len() - tls_from
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Any seed and chunk size: the delivery over STARTTLS succeeds and the message
        /// arrives as sent.
        #[test]
        fn delivery_any_seed_any_chunk(seed: u64, max_chunk in 0usize..200) {
            let mut p = smtp_pair(seed, max_chunk);
            p.run();
            prop_assert!(p.closed());
            prop_assert!(p.client.failed.is_none(), "{:?}", p.client.failed);
            prop_assert_eq!(p.server.stored.len(), 1);
            prop_assert!(stored_intact(&p));
        }
    }
}

/// A message with what chunking could break: dot lines (stuffed on the wire), empty
/// lines, a line longer than most chunks, a lone dot and a double dot.
fn chunky_message() -> Vec<u8> {
    let mut m =
        b"From: <postmaster@mox.example>\r\nTo: <mjl@mox.example>\r\nSubject: chunks\r\n\r\n"
            .to_vec();
    m.extend_from_slice(b".leading dot\r\n..two dots\r\n\r\n\r\n");
    m.extend(std::iter::repeat_n(b'x', 900));
    m.extend_from_slice(b"\r\n.\r\n..\r\nend\r\n");
    m
}

/// Two deliveries: [`chunky_message`] to two recipients, then [`MESSAGE`].
fn transaction_pair(seed: u64, max_chunk: usize) -> SmtpPair {
    let mut first = delivery();
    first.message = Arc::from(&chunky_message()[..]);
    first.recipients.push((
        ForwardPath::parse("<other@mox.example>").unwrap(),
        RcptParams::default(),
    ));
    smtp_pair_with(seed, max_chunk, vec![first, delivery()])
}

/// What the server stored, whole: envelope, TLS, and the message bytes as stored.
fn stored_transactions(p: &SmtpPair) -> Vec<String> {
    p.server
        .stored
        .iter()
        .map(|t| {
            format!(
                "{} {:?} {:?} {:?} {:?} tls={} {:?}",
                t.ehlo,
                t.mail_from,
                t.params,
                t.recipients,
                t.requiretls,
                t.tls.is_some(),
                String::from_utf8_lossy(&t.message.to_vec()),
            )
        })
        .collect()
}

/// A whole transaction arrives identical whatever the chunking: over seeds and chunk
/// sizes, the server stores byte for byte what it stores when every write arrives whole
/// (both deliveries, dot lines unstuffed), and the client sees the same replies.
#[test]
fn whole_transaction_identical_any_chunking() {
    let mut want = transaction_pair(0, 0);
    want.run();
    let stored = stored_transactions(&want);
    assert_eq!(stored.len(), 2, "{:?}", want.client.failed);
    assert!(want.server.stored[0]
        .message
        .to_vec()
        .ends_with(&chunky_message()));
    assert!(want.server.stored[1].message.to_vec().ends_with(MESSAGE));
    let replies = |p: &SmtpPair| -> Vec<String> {
        p.client
            .outcomes
            .iter()
            .map(|o| format!("{:?}", o.delivered().collect::<Vec<_>>()))
            .collect()
    };
    for seed in 1..=24u64 {
        let max_chunk = [1, 2, 3, 5, 8, 13, 64, 500][seed as usize % 8];
        let mut p = transaction_pair(seed, max_chunk);
        p.run();
        assert!(p.closed(), "seed {seed}");
        assert!(
            p.client.failed.is_none(),
            "seed {seed}: {:?}",
            p.client.failed
        );
        assert_eq!(
            stored_transactions(&p),
            stored,
            "seed {seed} chunk {max_chunk}"
        );
        assert_eq!(replies(&p), replies(&want), "seed {seed} chunk {max_chunk}");
    }
}

/// Counts the writes in direction `dir` through a tamper hook, flipping one bit in the
/// middle of write number `flip` (if any).
fn counting_pair(dir: Dir, flip: Option<usize>) -> (SmtpPair, Writes) {
    let writes = Rc::new(RefCell::new(Vec::<Vec<u8>>::new()));
    let w = Rc::clone(&writes);
    let p = smtp_pair(1, 0).tamper(move |d, bytes| {
        if d == dir {
            if Some(w.borrow().len()) == flip {
                let at = bytes.len() / 2;
                bytes[at] ^= 0x01;
            }
            w.borrow_mut().push(bytes.clone());
        }
    });
    (p, writes)
}

/// A byte flipped in any write after STARTTLS, either way, is rejected: the end that
/// reads it refuses the record (the client reports a TLS failure, its own or the server's
/// alert), the connection ends, and the damaged record is never acted on: a flip in any
/// write made before the server stored the message means nothing is stored, and whatever
/// is stored is the message as sent.
#[test]
fn flipped_byte_after_starttls_rejected() {
    for dir in [Dir::ToServer, Dir::ToClient] {
        // The clean run: which write follows STARTTLS, and how many writes this way had
        // been made when the server stored the message.
        let (mut p, writes) = counting_pair(dir, None);
        // (Writes made in the step that stored come after the store: counted from the
        // step before.)
        let mut before_store = None;
        let mut made = 0;
        while p.step() {
            if before_store.is_none() && !p.server.stored.is_empty() {
                before_store = Some(made);
            }
            made = writes.borrow().len();
        }
        let (Some(before_store), true) = (before_store, p.client.failed.is_none()) else {
            panic!("{dir:?}: the clean run delivers");
        };
        let writes = writes.borrow().clone();
        let starttls = match dir {
            Dir::ToServer => writes.iter().position(|w| w == b"STARTTLS\r\n"),
            Dir::ToClient => writes.iter().position(|w| w.starts_with(b"220 2.0.0")),
        };
        let after = starttls.expect("STARTTLS in the clean run") + 1;
        assert!(after + 2 < before_store, "{dir:?}: {after} {before_store}");
        for target in after..writes.len() {
            let (mut p, _) = counting_pair(dir, Some(target));
            p.run();
            let what = format!("{dir:?} write {target}");
            assert!(p.closed(), "{what}");
            assert!(stored_intact(&p), "{what}");
            let failure = p.client.failed.as_ref().map(|f| f.kind.clone());
            assert!(
                matches!(
                    failure,
                    Some(crate::client::ErrorKind::Transport(
                        crate::client::Transport::Tls(_)
                    ))
                ),
                "{what}: {failure:?}"
            );
            if target < before_store {
                assert!(p.server.stored.is_empty(), "{what}");
            }
        }
    }
}
