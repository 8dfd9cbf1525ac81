//! Interop of the core SMTP client machine with real servers on loopback: Postfix's
//! `smtp-sink` (no STARTTLS: it does not implement TLS, so STARTTLS is tested against
//! aiosmtpd only, and against smtp-sink only that a required STARTTLS fails) and Python's
//! `aiosmtpd` (STARTTLS, AUTH, a refused recipient, with and without PIPELINING).
//!
//! Each test starts its own server on a unique 127.x.y.z address (so tests run in
//! parallel), bounded by `timeout` and stopped on drop, delivers with the blocking driver
//! in `rmox_tests::client_driver`, and checks what the server stored byte for byte.
//! Outside CI a missing smtp-sink or aiosmtpd skips the test with a printed reason; with
//! CI set it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rmox_core::client::{
    ClientConfig, Credentials, ErrorKind, Event, PeerIncompatible, Stage, Timeouts, TlsMode,
    Transport, Verify,
};
use rmox_core::sasl::Mechanism;
use rmox_core::smtp::{Enhanced, Host};
use rmox_core::tls::TlsFailureReason;
use rmox_tests::client_driver::{
    aiosmtpd, aiosmtpd_messages, aiosmtpd_python, delivery, run, sink_dumps, smtp_sink,
    smtp_sink_bin, AioOptions, Run,
};
use rmox_tests::{unique_ip, TempDir};

/// The port every test server listens on (each on its own address).
const PORT: u16 = 2525;
/// Bound on one client connection.
const LIMIT: Duration = Duration::from_secs(60);
/// The name in the test certificate.
const MX: &str = "mx.test.example";
const FROM: &str = "sender@client.test.example";

fn config(tls_mode: TlsMode, verification: Verify) -> ClientConfig {
    let t = Duration::from_secs(30);
    let mut c = ClientConfig::new(Host::parse("client.test.example").unwrap(), MX);
    c.tls_mode = tls_mode;
    c.verification = verification;
    c.timeouts = Timeouts {
        greeting: t,
        command: t,
        mail: t,
        rcpt: t,
        data_init: t,
        data_block: t,
        data_end: t,
    };
    c
}

/// A message that needs dot-stuffing in every way and carries 8-bit bytes (UTF-8 and
/// bytes that are not UTF-8), and a 998-octet line.
fn tricky_message(subject: &str) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(format!("Subject: {subject}\r\n").as_bytes());
    m.extend_from_slice(b"From: <sender@client.test.example>\r\n");
    m.extend_from_slice(b"MIME-Version: 1.0\r\n");
    m.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    m.extend_from_slice(b"Content-Transfer-Encoding: 8bit\r\n\r\n");
    for line in [
        &b"."[..],
        b"..",
        b"...",
        b".leading dot",
        b"..two leading dots",
        b" . not at the start",
        b"",
        b".",
        b"caf\xc3\xa9 \xe2\x82\xac 8-bit UTF-8",
        b"raw \x80\xfe\xff bytes",
        b"\t.tab then dot",
        b".\t",
        b"",
    ] {
        m.extend_from_slice(line);
        m.extend_from_slice(b"\r\n");
    }
    m.extend(std::iter::repeat_n(b'x', 997));
    m.push(b'.');
    m.extend_from_slice(b"\r\n.last line\r\n");
    m
}

/// A message of at least 2 MiB: 76-octet lines, every 7th starting with a dot, some
/// 8-bit.
fn big_message(subject: &str) -> Vec<u8> {
    let mut m = format!("Subject: {subject}\r\n\r\n").into_bytes();
    let mut i = 0u32;
    while m.len() < 2 * 1024 * 1024 {
        let lead = if i % 7 == 0 { "." } else { "" };
        let eight = if i % 11 == 0 { "\u{e9}" } else { "e" };
        let line = format!("{lead}{i:08} {eight} ");
        m.extend_from_slice(line.as_bytes());
        m.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, 76 - line.len()));
        m.extend_from_slice(b"\r\n");
        i += 1;
    }
    m
}

/// What smtp-sink's dump holds for `message`: LF line ends, and one empty line added.
fn as_sink_dump(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 1);
    let mut i = 0;
    while i < message.len() {
        if message[i] == b'\r' && message.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(message[i]);
        i += 1;
    }
    out.push(b'\n');
    out
}

/// Asserts two messages are identical, reporting the first difference.
fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let ctx = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.saturating_sub(40)..(at + 40).min(b.len())]).into_owned()
    };
    panic!(
        "{what}: content differs at byte {at} (got {} bytes, want {}):\n got: {:?}\nwant: {:?}",
        got.len(),
        want.len(),
        ctx(got),
        ctx(want)
    );
}

fn recipients(domain: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("rcpt{i}@{domain}")).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ---------------- smtp-sink ----------------

/// Opportunistic TLS against a server without STARTTLS goes on in plaintext; PIPELINING is
/// used (MAIL, every RCPT and DATA in one group); three recipients; 8BITMIME is announced
/// so BODY=8BITMIME is sent; every byte arrives (dot-stuffing undone by the server).
#[test]
fn sink_plain_pipelined_recipients_dot_stuffing() {
    let Some(bin) = smtp_sink_bin() else { return };
    let dir = TempDir::new("sink-plain");
    let ip = unique_ip();
    let _sink = smtp_sink(&bin, ip, PORT, dir.path(), &[]);
    let msg = tricky_message("sink plain");
    let to = recipients("sink.test.example", 3);
    let r = run(
        (ip, PORT).into(),
        config(TlsMode::Opportunistic, Verify::None),
        vec![delivery(FROM, &refs(&to), &msg)],
        LIMIT,
    );
    r.assert_all_delivered(1);
    let ext = r.ready.clone().unwrap();
    assert!(
        ext.pipelining && ext.eightbitmime && !ext.starttls && !ext.chunking,
        "{ext:?}"
    );
    assert!(!r.tls());
    assert_eq!(
        r.first_group(),
        ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"],
        "not pipelined: {r:#?}"
    );
    assert_eq!(
        r.commands(),
        ["EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "DATA", "QUIT"]
    );
    let dumps = sink_dumps(dir.path());
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let d = &dumps[0];
    assert_eq!(d.helo, "client.test.example");
    assert_eq!(
        d.mail_args,
        format!("<{FROM}> BODY=8BITMIME"),
        "smtp-sink announces no SIZE, so none is sent"
    );
    let want: Vec<String> = to.iter().map(|t| format!("<{t}>")).collect();
    assert_eq!(d.rcpt_args, want);
    assert_same_bytes(&d.body, &as_sink_dump(&msg), "smtp-sink dump");
}

/// A server without 8BITMIME still gets the 8-bit message (seed 003), without a BODY
/// parameter; a server without PIPELINING gets one command at a time.
#[test]
fn sink_eightbit_without_8bitmime_or_pipelining() {
    let Some(bin) = smtp_sink_bin() else { return };
    let dir = TempDir::new("sink-no8bit");
    let ip = unique_ip();
    let _sink = smtp_sink(&bin, ip, PORT, dir.path(), &["-8", "-p"]);
    let msg = tricky_message("sink no 8bitmime");
    let r = run(
        (ip, PORT).into(),
        config(TlsMode::Opportunistic, Verify::None),
        vec![delivery(
            FROM,
            &["one@sink.test.example", "two@sink.test.example"],
            &msg,
        )],
        LIMIT,
    );
    r.assert_all_delivered(1);
    let ext = r.ready.clone().unwrap();
    assert!(!ext.eightbitmime && !ext.pipelining, "{ext:?}");
    assert_eq!(
        r.first_group(),
        ["MAIL"],
        "pipelined without PIPELINING: {r:#?}"
    );
    let dumps = sink_dumps(dir.path());
    assert_eq!(dumps.len(), 1);
    assert_eq!(dumps[0].mail_args, format!("<{FROM}>"));
    assert_eq!(dumps[0].rcpt_args.len(), 2);
    assert_same_bytes(&dumps[0].body, &as_sink_dump(&msg), "smtp-sink dump");
}

/// A 2 MiB message and a second transaction on the same connection.
#[test]
fn sink_two_megabytes_then_second_transaction() {
    let Some(bin) = smtp_sink_bin() else { return };
    let dir = TempDir::new("sink-big");
    let ip = unique_ip();
    let _sink = smtp_sink(&bin, ip, PORT, dir.path(), &[]);
    let big = big_message("sink big");
    let small = tricky_message("sink second");
    let r = run(
        (ip, PORT).into(),
        config(TlsMode::Opportunistic, Verify::None),
        vec![
            delivery(FROM, &["big@sink.test.example"], &big),
            delivery(FROM, &["small@sink.test.example"], &small),
        ],
        LIMIT,
    );
    r.assert_all_delivered(2);
    assert_eq!(
        r.commands().iter().filter(|c| **c == "EHLO").count(),
        1,
        "one connection, one EHLO"
    );
    let dumps = sink_dumps(dir.path());
    assert_eq!(dumps.len(), 2);
    for (rcpt, msg) in [
        ("<big@sink.test.example>", &big),
        ("<small@sink.test.example>", &small),
    ] {
        let d = dumps
            .iter()
            .find(|d| d.rcpt_args == [rcpt])
            .unwrap_or_else(|| panic!("no dump for {rcpt}"));
        assert_same_bytes(&d.body, &as_sink_dump(msg), rcpt);
    }
}

/// Required STARTTLS against a server that cannot do it: a permanent STARTTLS error with
/// the server's reply, and no message sent.
#[test]
fn sink_required_starttls_fails_permanently() {
    let Some(bin) = smtp_sink_bin() else { return };
    let dir = TempDir::new("sink-reqtls");
    let ip = unique_ip();
    let _sink = smtp_sink(&bin, ip, PORT, dir.path(), &[]);
    let r = run(
        (ip, PORT).into(),
        config(TlsMode::RequiredStartTls, Verify::None),
        vec![delivery(
            FROM,
            &["x@sink.test.example"],
            b"Subject: x\r\n\r\nx\r\n",
        )],
        LIMIT,
    );
    let e = r
        .failed
        .clone()
        .unwrap_or_else(|| panic!("no failure: {r:#?}"));
    assert_eq!(e.stage, Stage::StartTls, "{e}");
    assert!(e.permanent, "{e}");
    assert!(
        matches!(
            e.kind,
            ErrorKind::PeerIncompatible(PeerIncompatible::StartTls)
        ),
        "{e}"
    );
    let reply = e.reply.clone().unwrap();
    assert!(reply.code / 100 == 5, "{reply}");
    assert!(!r.commands().contains(&"MAIL"), "{r:#?}");
    // The delivery in flight is reported as failed with the same error.
    assert_eq!(r.outcomes.len(), 1);
    assert_eq!(r.outcomes[0].data.as_ref().unwrap_err(), &e);
    assert!(sink_dumps(dir.path()).is_empty());
}

/// Every RCPT refused with a 5xx: each recipient has a permanent RCPT error with the full
/// reply, the message is not sent.
#[test]
fn sink_recipients_refused() {
    let Some(bin) = smtp_sink_bin() else { return };
    let dir = TempDir::new("sink-rcpt550");
    let ip = unique_ip();
    let _sink = smtp_sink(
        &bin,
        ip,
        PORT,
        dir.path(),
        &["-f", "RCPT", "-B", "550 5.1.1 Error: no such user"],
    );
    let r = run(
        (ip, PORT).into(),
        config(TlsMode::Opportunistic, Verify::None),
        vec![delivery(
            FROM,
            &["a@sink.test.example", "b@sink.test.example"],
            b"Subject: x\r\n\r\nx\r\n",
        )],
        LIMIT,
    );
    assert!(r.failed.is_none(), "{r:#?}");
    assert_eq!(r.outcomes.len(), 1);
    let o = &r.outcomes[0];
    for rcpt in &o.recipients {
        let e = rcpt.as_ref().unwrap_err();
        assert_eq!(e.stage, Stage::Rcpt, "{e}");
        assert!(e.permanent, "{e}");
        let reply = e.reply.as_ref().unwrap();
        assert_eq!(reply.code, 550);
        assert_eq!(reply.enhanced, Some(Enhanced::new(5, 1, 1)));
    }
    let e = o.data.as_ref().unwrap_err();
    assert!(e.permanent, "{e}");
    assert!(
        !r.commands().contains(&"DATA"),
        "DATA after every RCPT failed: {r:#?}"
    );
    assert!(sink_dumps(dir.path()).is_empty());
}

/// MAIL refused with a 4xx: every recipient gets the temporary MAIL error.
#[test]
fn sink_mail_tempfail() {
    let Some(bin) = smtp_sink_bin() else { return };
    let dir = TempDir::new("sink-mail450");
    let ip = unique_ip();
    let _sink = smtp_sink(&bin, ip, PORT, dir.path(), &["-r", "MAIL"]);
    let r = run(
        (ip, PORT).into(),
        config(TlsMode::Opportunistic, Verify::None),
        vec![delivery(
            FROM,
            &["a@sink.test.example", "b@sink.test.example"],
            b"Subject: x\r\n\r\nx\r\n",
        )],
        LIMIT,
    );
    assert!(r.failed.is_none(), "{r:#?}");
    let o = &r.outcomes[0];
    for res in o.recipients.iter().chain([&o.data]) {
        let e = res.as_ref().unwrap_err();
        assert_eq!(e.stage, Stage::Mail, "{e}");
        assert!(!e.permanent, "{e}");
        assert_eq!(e.reply.as_ref().map(|r| r.code / 100), Some(4), "{e}");
    }
    assert!(sink_dumps(dir.path()).is_empty());
}

// ---------------- aiosmtpd ----------------

/// A self-signed certificate for MX, written as PEM files into `dir`; returns the paths
/// and the DER certificate.
fn write_cert(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec![MX.to_string()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (cert, key, ck.cert.der().to_vec())
}

/// PKIX with only `der` as a root.
fn pkix(der: &[u8]) -> Verify {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(rmox_core::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Verify::Pkix(Arc::new(cfg))
}

const AIO_DOMAIN: &str = "aio.test.example";

/// Checks the standard "three recipients, the middle one refused" outcome.
fn assert_middle_refused(r: &Run) {
    assert!(r.failed.is_none(), "{r:#?}");
    assert!(r.closed_cleanly, "{r:#?}");
    assert_eq!(r.outcomes.len(), 1);
    let o = &r.outcomes[0];
    assert!(o.data.is_ok(), "{r:#?}");
    assert!(o.recipients[0].is_ok() && o.recipients[2].is_ok(), "{r:#?}");
    let e = o.recipients[1].as_ref().unwrap_err();
    assert_eq!(e.stage, Stage::Rcpt);
    assert!(e.permanent);
    let reply = e.reply.as_ref().unwrap();
    assert_eq!(reply.code, 550);
    assert_eq!(reply.enhanced, Some(Enhanced::new(5, 1, 1)));
    assert!(reply.text().contains("refused by test"), "{reply}");
    assert_eq!(o.delivered().collect::<Vec<_>>(), [0, 2]);
}

/// aiosmtpd announces neither PIPELINING nor CHUNKING: one command at a time and DATA,
/// never BDAT; one of three recipients refused with 550; every byte intact.
#[test]
fn aio_plain_one_at_a_time_data_and_refused_recipient() {
    let Some(py) = aiosmtpd_python() else { return };
    let dir = TempDir::new("aio-plain");
    let ip = unique_ip();
    let bad = format!("bad@{AIO_DOMAIN}");
    let opts = AioOptions {
        reject: vec![bad.clone()],
        ..AioOptions::default()
    };
    let _srv = aiosmtpd(&py, ip, PORT, dir.path(), &opts);
    let msg = tricky_message("aio plain");
    let to = [
        format!("ok1@{AIO_DOMAIN}"),
        bad,
        format!("ok2@{AIO_DOMAIN}"),
    ];
    let r = run(
        (ip, PORT).into(),
        config(TlsMode::Opportunistic, Verify::None),
        vec![delivery(FROM, &refs(&to), &msg)],
        LIMIT,
    );
    assert_middle_refused(&r);
    let ext = r.ready.clone().unwrap();
    assert!(
        !ext.pipelining && !ext.chunking && ext.eightbitmime,
        "{ext:?}"
    );
    assert_eq!(r.first_group(), ["MAIL"], "{r:#?}");
    assert_eq!(
        r.commands(),
        ["EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "DATA", "QUIT"]
    );
    let got = aiosmtpd_messages(dir.path());
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert!(!m.tls);
    assert_eq!(m.helo, "client.test.example");
    assert_eq!(m.mail_from, FROM);
    assert_eq!(m.mail_options, format!("SIZE={} BODY=8BITMIME", msg.len()));
    assert_eq!(m.rcpts, [to[0].clone(), to[2].clone()]);
    assert_same_bytes(&m.content, &msg, "aiosmtpd content");
}

/// With PIPELINING announced the whole transaction goes in one group, and the refused
/// recipient in the middle of it is still reported per recipient.
#[test]
fn aio_pipelined_with_refused_recipient() {
    let Some(py) = aiosmtpd_python() else { return };
    let dir = TempDir::new("aio-pipe");
    let ip = unique_ip();
    let bad = format!("bad@{AIO_DOMAIN}");
    let opts = AioOptions {
        reject: vec![bad.clone()],
        pipelining: true,
        ..AioOptions::default()
    };
    let _srv = aiosmtpd(&py, ip, PORT, dir.path(), &opts);
    let msg = tricky_message("aio pipelined");
    let to = [
        format!("ok1@{AIO_DOMAIN}"),
        bad,
        format!("ok2@{AIO_DOMAIN}"),
    ];
    let r = run(
        (ip, PORT).into(),
        config(TlsMode::Opportunistic, Verify::None),
        vec![delivery(FROM, &refs(&to), &msg)],
        LIMIT,
    );
    assert_middle_refused(&r);
    assert_eq!(
        r.first_group(),
        ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"],
        "{r:#?}"
    );
    let got = aiosmtpd_messages(dir.path());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpts, [to[0].clone(), to[2].clone()]);
    assert_same_bytes(&got[0].content, &msg, "aiosmtpd content");
}

/// Opportunistic STARTTLS (any certificate) with a server that refuses mail without it:
/// EHLO again after TLS, a 2 MiB 8-bit message and a second one over TLS, pipelined.
#[test]
fn aio_starttls_opportunistic_big_message() {
    let Some(py) = aiosmtpd_python() else { return };
    let dir = TempDir::new("aio-tls");
    let ip = unique_ip();
    let (cert, key, _) = write_cert(dir.path());
    let opts = AioOptions {
        starttls: Some((cert, key)),
        require_starttls: true,
        pipelining: true,
        ..AioOptions::default()
    };
    let _srv = aiosmtpd(&py, ip, PORT, dir.path(), &opts);
    let big = big_message("aio tls big");
    let small = tricky_message("aio tls small");
    let r = run(
        (ip, PORT).into(),
        config(TlsMode::Opportunistic, Verify::None),
        vec![
            delivery(FROM, &[&format!("big@{AIO_DOMAIN}")], &big),
            delivery(FROM, &[&format!("small@{AIO_DOMAIN}")], &small),
        ],
        LIMIT,
    );
    r.assert_all_delivered(2);
    assert!(r.tls(), "{r:#?}");
    let cmds = r.commands();
    assert_eq!(cmds[..3], ["EHLO", "STARTTLS", "EHLO"], "{cmds:?}");
    assert!(
        !r.ready.clone().unwrap().starttls,
        "STARTTLS is not announced after TLS"
    );
    assert_eq!(r.first_group(), ["MAIL", "RCPT", "DATA"]);
    let got = aiosmtpd_messages(dir.path());
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| m.tls));
    assert_same_bytes(&got[0].content, &big, "2 MiB message over TLS");
    assert_same_bytes(&got[1].content, &small, "second message over TLS");
}

/// PKIX verification with the server's certificate as the only root: the right name
/// passes; another name is a permanent TLS failure with required STARTTLS, and nothing is
/// delivered.
#[test]
fn aio_starttls_pkix_name_check() {
    let Some(py) = aiosmtpd_python() else { return };
    let dir = TempDir::new("aio-pkix");
    let ip = unique_ip();
    let (cert, key, der) = write_cert(dir.path());
    let opts = AioOptions {
        starttls: Some((cert, key)),
        require_starttls: true,
        ..AioOptions::default()
    };
    let _srv = aiosmtpd(&py, ip, PORT, dir.path(), &opts);
    let msg = tricky_message("aio pkix");
    let rcpt = format!("pkix@{AIO_DOMAIN}");

    let r = run(
        (ip, PORT).into(),
        config(TlsMode::RequiredStartTls, pkix(&der)),
        vec![delivery(FROM, &[&rcpt], &msg)],
        LIMIT,
    );
    r.assert_all_delivered(1);
    assert!(r.tls());

    let mut wrong = config(TlsMode::RequiredStartTls, pkix(&der));
    wrong.remote_hostname = "other.test.example".into();
    let r = run(
        (ip, PORT).into(),
        wrong,
        vec![delivery(FROM, &[&rcpt], &msg)],
        LIMIT,
    );
    let e = r
        .failed
        .clone()
        .unwrap_or_else(|| panic!("no failure: {r:#?}"));
    assert_eq!(e.stage, Stage::StartTls, "{e}");
    assert!(e.permanent, "{e}");
    assert!(
        matches!(
            &e.kind,
            ErrorKind::Transport(Transport::Tls(f))
                if f.reason == TlsFailureReason::CertificateHostMismatch
        ),
        "{e}"
    );
    assert!(!r.tls());
    assert!(!r.commands().contains(&"MAIL"));

    let got = aiosmtpd_messages(dir.path());
    assert_eq!(got.len(), 1, "only the first connection delivered");
    assert_same_bytes(&got[0].content, &msg, "aiosmtpd content");
}

/// TLS mode Skip never sends STARTTLS, even when offered: a server requiring it refuses
/// MAIL with 530, a permanent MAIL error for every recipient.
#[test]
fn aio_skip_tls_does_not_starttls() {
    let Some(py) = aiosmtpd_python() else { return };
    let dir = TempDir::new("aio-skip");
    let ip = unique_ip();
    let (cert, key, _) = write_cert(dir.path());
    let opts = AioOptions {
        starttls: Some((cert, key)),
        require_starttls: true,
        ..AioOptions::default()
    };
    let _srv = aiosmtpd(&py, ip, PORT, dir.path(), &opts);
    let r = run(
        (ip, PORT).into(),
        config(TlsMode::Skip, Verify::None),
        vec![delivery(
            FROM,
            &[&format!("x@{AIO_DOMAIN}")],
            b"Subject: x\r\n\r\nx\r\n",
        )],
        LIMIT,
    );
    assert!(r.ready.clone().unwrap().starttls);
    assert!(!r.commands().contains(&"STARTTLS"), "{r:#?}");
    assert!(!r.tls());
    let o = &r.outcomes[0];
    let e = o.recipients[0].as_ref().unwrap_err();
    assert_eq!(e.stage, Stage::Mail, "{e}");
    assert!(e.permanent, "{e}");
    assert_eq!(e.reply.as_ref().unwrap().code, 530, "{e}");
    assert!(aiosmtpd_messages(dir.path()).is_empty());
}

/// AUTH without TLS (allowed by this server) with PLAIN, LOGIN and the automatic choice;
/// the server records the authenticated user.
#[test]
fn aio_auth_mechanisms() {
    let Some(py) = aiosmtpd_python() else { return };
    let dir = TempDir::new("aio-auth");
    let ip = unique_ip();
    let opts = AioOptions {
        auth: Some(("mjl".into(), "s3cret pass".into())),
        ..AioOptions::default()
    };
    let _srv = aiosmtpd(&py, ip, PORT, dir.path(), &opts);
    let cases = [
        (Some(Mechanism::Plain), Mechanism::Plain),
        (Some(Mechanism::Login), Mechanism::Login),
        // aiosmtpd offers LOGIN and PLAIN: the client picks the stronger, PLAIN.
        (None, Mechanism::Plain),
    ];
    for (i, (configured, used)) in cases.into_iter().enumerate() {
        let mut c = config(TlsMode::Opportunistic, Verify::None);
        c.auth = Some(Credentials {
            mechanism: configured,
            username: "mjl".into(),
            password: "s3cret pass".into(),
        });
        let msg = tricky_message(&format!("aio auth {i}"));
        let r = run(
            (ip, PORT).into(),
            c,
            vec![delivery(FROM, &[&format!("auth{i}@{AIO_DOMAIN}")], &msg)],
            LIMIT,
        );
        r.assert_all_delivered(1);
        assert!(
            r.events.contains(&Event::Authenticated(used)),
            "case {i}: {r:#?}"
        );
        let got = aiosmtpd_messages(dir.path());
        assert_eq!(got.len(), i + 1);
        assert_eq!(got[i].auth, "mjl", "case {i}");
        assert_same_bytes(&got[i].content, &msg, "aiosmtpd content");
    }
}

/// A wrong password: a permanent AUTH error with the server's 535, nothing delivered.
#[test]
fn aio_auth_wrong_password() {
    let Some(py) = aiosmtpd_python() else { return };
    let dir = TempDir::new("aio-authbad");
    let ip = unique_ip();
    let opts = AioOptions {
        auth: Some(("mjl".into(), "right".into())),
        ..AioOptions::default()
    };
    let _srv = aiosmtpd(&py, ip, PORT, dir.path(), &opts);
    let mut c = config(TlsMode::Opportunistic, Verify::None);
    c.auth = Some(Credentials {
        mechanism: Some(Mechanism::Plain),
        username: "mjl".into(),
        password: "wrong".into(),
    });
    let r = run(
        (ip, PORT).into(),
        c,
        vec![delivery(
            FROM,
            &[&format!("x@{AIO_DOMAIN}")],
            b"Subject: x\r\n\r\nx\r\n",
        )],
        LIMIT,
    );
    let e = r
        .failed
        .clone()
        .unwrap_or_else(|| panic!("no failure: {r:#?}"));
    assert_eq!(e.stage, Stage::Auth, "{e}");
    assert!(e.permanent, "{e}");
    assert_eq!(e.reply.as_ref().unwrap().code, 535, "{e}");
    assert!(!r.commands().contains(&"MAIL"));
    assert!(aiosmtpd_messages(dir.path()).is_empty());
}

/// AUTH offered only after STARTTLS: the client authenticates over TLS.
#[test]
fn aio_auth_after_starttls() {
    let Some(py) = aiosmtpd_python() else { return };
    let dir = TempDir::new("aio-tlsauth");
    let ip = unique_ip();
    let (cert, key, der) = write_cert(dir.path());
    let opts = AioOptions {
        starttls: Some((cert, key)),
        require_starttls: true,
        auth: Some(("mjl".into(), "pw".into())),
        auth_require_tls: true,
        pipelining: true,
        ..AioOptions::default()
    };
    let _srv = aiosmtpd(&py, ip, PORT, dir.path(), &opts);
    let mut c = config(TlsMode::RequiredStartTls, pkix(&der));
    c.auth = Some(Credentials {
        mechanism: None,
        username: "mjl".into(),
        password: "pw".into(),
    });
    let msg = tricky_message("aio tls auth");
    let r = run(
        (ip, PORT).into(),
        c,
        vec![delivery(FROM, &[&format!("x@{AIO_DOMAIN}")], &msg)],
        LIMIT,
    );
    r.assert_all_delivered(1);
    assert!(r.tls());
    assert!(r
        .events
        .iter()
        .any(|e| matches!(e, Event::Authenticated(_))));
    let cmds = r.commands();
    assert_eq!(cmds[..4], ["EHLO", "STARTTLS", "EHLO", "AUTH"], "{cmds:?}");
    let got = aiosmtpd_messages(dir.path());
    assert_eq!(got.len(), 1);
    assert!(got[0].tls);
    assert_eq!(got[0].auth, "mjl");
    assert_same_bytes(&got[0].content, &msg, "aiosmtpd content");
}
