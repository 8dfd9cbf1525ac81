//! TLS of delivery attempts over loopback: the attempt history and TLS result records for a
//! plaintext sink, a STARTTLS sink with a self-signed certificate (opportunistic: success),
//! REQUIRETLS failing verification (failure recorded) and REQUIRETLS to a server that does
//! not announce it (permanent failure with a DSN); the other address family tried after a
//! connection-level failure.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};

use rmox_storage::ReportKind;

use super::*;

on_every_runtime!(
    tls_mode_and_result_recorded,
    requiretls_to_server_without_requiretls_fails_with_dsn,
    other_family_tried_after_connection_level_failure,
    own_tls_report_delivery_not_recorded,
);

/// Zone data: the sink's MX on 127.0.0.1 and ::1, and a relay name for the sink.
fn zone() -> crate::resolve::Dns {
    let zone = rmox_core::dns::StaticZone::parse(
        "example.net. MX 10 mx.example.net.\nmx.example.net. A 127.0.0.1\nmx.example.net. AAAA ::1\nrelay.example. A 127.0.0.1\n",
    )
    .unwrap();
    crate::resolve::Dns::Zone(zone)
}

/// A self-signed certificate for `names`: (server config, certificate PEM).
fn self_signed(names: &[&str]) -> (Arc<rustls::ServerConfig>, String) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let tls = rmox_core::tls::server_config_from_pem(
        ck.cert.pem().as_bytes(),
        ck.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    (tls, ck.cert.pem())
}

/// A plain or TLS server stream.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(b),
            Stream::Tls(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(b),
            Stream::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

fn read_line(s: &mut Stream) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(1) => {
                line.push(b[0]);
                if b[0] == b'\n' {
                    return Some(String::from_utf8_lossy(&line).into_owned());
                }
            }
            _ => return None,
        }
    }
}

/// What a TLS sink does.
#[derive(Clone)]
struct SinkSetup {
    /// Offer STARTTLS with this config.
    starttls: Option<Arc<rustls::ServerConfig>>,
    /// Announce REQUIRETLS (after TLS).
    requiretls: bool,
    /// The greeting line.
    greeting: &'static str,
}

/// A sink on `listener`: counts accepted messages.
fn tls_sink(listener: TcpListener, setup: SinkSetup) -> Arc<AtomicUsize> {
    let received = Arc::new(AtomicUsize::new(0));
    let rcv = Arc::clone(&received);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(c) = conn else { return };
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let mut s = Stream::Plain(c);
            let _ = s.write_all(setup.greeting.as_bytes());
            if !setup.greeting.starts_with("220") {
                continue;
            }
            while let Some(line) = read_line(&mut s) {
                let up = line.to_ascii_uppercase();
                let tls = matches!(s, Stream::Tls(_));
                let reply: String = if up.starts_with("EHLO") {
                    let mut r = String::from("250-sink\r\n250-8BITMIME\r\n");
                    if setup.starttls.is_some() && !tls {
                        r.push_str("250-STARTTLS\r\n");
                    }
                    if setup.requiretls && tls {
                        r.push_str("250-REQUIRETLS\r\n");
                    }
                    r.push_str("250 ENHANCEDSTATUSCODES\r\n");
                    r
                } else if up.starts_with("STARTTLS") {
                    let (Some(cfg), Stream::Plain(tcp)) = (&setup.starttls, &s) else {
                        let _ = s.write_all(b"500 5.5.1 no\r\n");
                        continue;
                    };
                    let tcp = tcp.try_clone().unwrap();
                    let _ = s.write_all(b"220 2.0.0 go ahead\r\n");
                    let conn = rustls::ServerConnection::new(Arc::clone(cfg)).unwrap();
                    s = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
                    continue;
                } else if up.starts_with("MAIL FROM:") || up.starts_with("RCPT TO:") {
                    "250 2.1.0 ok\r\n".into()
                } else if up.starts_with("DATA") {
                    let _ = s.write_all(b"354 go ahead\r\n");
                    while let Some(l) = read_line(&mut s) {
                        if l == ".\r\n" {
                            break;
                        }
                    }
                    rcv.fetch_add(1, Ordering::SeqCst);
                    "250 2.0.0 queued\r\n".into()
                } else if up.starts_with("QUIT") {
                    let _ = s.write_all(b"221 2.0.0 bye\r\n");
                    let _ = s.flush();
                    break;
                } else {
                    "250 2.0.0 ok\r\n".into()
                };
                let _ = s.write_all(reply.as_bytes());
                let _ = s.flush();
            }
        }
    });
    received
}

fn queue_with(e: &Env, to: &str, requiretls: RequireTls) -> QueueId {
    let rcpt = QueueRecipient {
        sender_account: Some("mjl".into()),
        mail_from: "mjl@mox.example".into(),
        recipient: to.into(),
        has_8bit: false,
        smtputf8: false,
        requiretls,
        transport: None,
        next_attempt: e.now(),
        queued: e.now(),
        hold: false,
        dsn: rmox_storage::DsnParams::default(),
        is_dsn: false,
        from_id: None,
    };
    e.store
        .queue_add(
            b"Subject: test\r\nFrom: <mjl@mox.example>\r\n\r\nhello\r\n",
            vec![rcpt],
        )
        .unwrap()[0]
}

/// The entry's history, retired or not.
fn history(e: &Env, id: QueueId) -> Vec<Attempt> {
    if let Some(q) = e.store.queue_get(id).unwrap() {
        return q.history;
    }
    e.store
        .queue_retired(1000)
        .unwrap()
        .into_iter()
        .find(|r| r.entry.id == id)
        .map(|r| r.entry.history)
        .unwrap_or_default()
}

fn tls_reports(e: &Env, domain: &str) -> Vec<serde_json::Value> {
    e.store
        .reports(ReportKind::TlsResult, domain)
        .unwrap()
        .into_iter()
        .map(|(_, b)| serde_json::from_slice(&b).unwrap())
        .collect()
}

fn listener4() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn tls_mode_and_result_recorded() {
    let (cert, _) = self_signed(&["mx.example.net"]);
    // (sink offers STARTTLS, message REQUIRETLS, delivered, history TLS result starts with,
    // report (success, failure, result type))
    type Case = (
        bool,
        RequireTls,
        bool,
        &'static str,
        &'static str,
        Option<(u64, u64, &'static str)>,
    );
    let cases: &[Case] = &[
        // Plaintext is recorded as a failure to report: STARTTLS not offered.
        (
            false,
            RequireTls::Default,
            true,
            "opportunistic",
            "plaintext",
            Some((0, 1, "starttls-not-supported")),
        ),
        (
            true,
            RequireTls::Default,
            true,
            "opportunistic",
            "TLS",
            Some((1, 0, "")),
        ),
        // TLS-Required: No ignores verification errors: still a success.
        (
            true,
            RequireTls::NotRequired,
            true,
            "opportunistic",
            "TLS",
            Some((1, 0, "")),
        ),
        // REQUIRETLS to a domain without MTA-STS or DANE: nothing can verify the MX host,
        // so it fails (5.7.10) without a connection (RFC 8689 4.1), with or without STARTTLS.
        (true, RequireTls::Required, false, "", "", None),
        (false, RequireTls::Required, false, "", "", None),
    ];
    for (i, (starttls, rt, delivered, mode, result, report)) in cases.iter().enumerate() {
        let (l, port) = listener4();
        let got = tls_sink(
            l,
            SinkSetup {
                starttls: starttls.then(|| Arc::clone(&cert)),
                requiretls: false,
                greeting: "220 sink ESMTP\r\n",
            },
        );
        let extra = format!("[queue]\nsmtp_port = {port}\n[transport.d]\nkind = \"direct\"\nipv4 = true\nipv6 = false\n[[route]]\ntransport = \"d\"\n");
        let e = env(false, &extra);
        let r = e.dns_runner(zone());
        let id = queue_with(&e, "rcpt@example.net", *rt);
        r.run_once(e.now()).unwrap();
        let h = history(&e, id);
        assert_eq!(h.len(), 1, "case {i}: {h:?}");
        assert_eq!(
            h[0].tls_mode.as_deref(),
            Some(*mode).filter(|m| !m.is_empty()),
            "case {i}: {h:?}"
        );
        let res = h[0].tls_result.clone().unwrap_or_default();
        assert!(res.starts_with(result), "case {i}: {res} {h:?}");
        let out = e.retired(id);
        if *delivered {
            assert!(
                matches!(out, Some(Outcome::Delivered(_))),
                "case {i}: {out:?}"
            );
            assert_eq!(got.load(Ordering::SeqCst), 1, "case {i}");
        } else {
            // Required TLS failing is permanent: failed with a DSN.
            assert!(matches!(out, Some(Outcome::Failed(_))), "case {i}: {out:?}");
            assert_eq!(got.load(Ordering::SeqCst), 0, "case {i}");
            assert_eq!(e.inbox().len(), 1, "case {i}: DSN");
        }
        let reps = tls_reports(&e, "example.net");
        match report {
            None => assert!(reps.is_empty(), "case {i}: {reps:?}"),
            Some((ok, fail, rtype)) => {
                // One stored tlspolicy::SessionResult per session (the report sender's
                // input); a success has no failure.
                assert_eq!(reps.len(), 1, "case {i}: {reps:?}");
                // The stored form is the policy machine's SessionResult (what the report
                // sender reads): no policy for a domain without MTA-STS or DANE.
                let v = &reps[0];
                assert_eq!(v["scope"], "RecipientDomain", "case {i}: {v}");
                assert_eq!(v["policy"]["policy-type"], "no-policy-found", "case {i}");
                assert_eq!(v["policy"]["policy-domain"], "example.net", "case {i}");
                let f = &v["failure"];
                assert_eq!(f.is_null(), *fail == 0, "case {i}: {v}");
                assert_eq!(*ok + *fail, 1, "case {i}");
                if !rtype.is_empty() {
                    assert_eq!(f["result-type"], *rtype, "case {i}");
                    assert_eq!(f["receiving-mx-hostname"], "mx.example.net", "case {i}");
                    assert_eq!(f["receiving-ip"], "127.0.0.1", "case {i}");
                }
            }
        }
    }
}

/// Delivering one of our own TLS reports (a message with `TLS-Report-Domain`) records no
/// TLS result, so a failing report delivery does not become the next report (mox does not
/// report them either); the same message without the header is recorded.
fn own_tls_report_delivery_not_recorded() {
    let (cert, _) = self_signed(&["mx.example.net"]);
    for (header, want) in [("TLS-Report-Domain: example.net\r\n", 0), ("", 1)] {
        let (l, port) = listener4();
        let got = tls_sink(
            l,
            SinkSetup {
                starttls: Some(Arc::clone(&cert)),
                requiretls: false,
                greeting: "220 sink ESMTP\r\n",
            },
        );
        let extra = format!("[queue]\nsmtp_port = {port}\n[transport.d]\nkind = \"direct\"\nipv4 = true\nipv6 = false\n[[route]]\ntransport = \"d\"\n");
        let e = env(false, &extra);
        let r = e.dns_runner(zone());
        let rcpt = QueueRecipient {
            sender_account: None,
            mail_from: "postmaster@mox.example".into(),
            recipient: "tlsrpt@example.net".into(),
            has_8bit: false,
            smtputf8: false,
            requiretls: RequireTls::NotRequired,
            transport: None,
            next_attempt: e.now(),
            queued: e.now(),
            hold: false,
            dsn: rmox_storage::DsnParams::default(),
            is_dsn: false,
            from_id: None,
        };
        let msg =
            format!("From: <postmaster@mox.example>\r\n{header}Subject: report\r\n\r\nreport\r\n");
        e.store.queue_add(msg.as_bytes(), vec![rcpt]).unwrap();
        r.run_once(e.now()).unwrap();
        assert_eq!(got.load(Ordering::SeqCst), 1, "{header:?}");
        assert_eq!(tls_reports(&e, "example.net").len(), want, "{header:?}");
    }
}

fn requiretls_to_server_without_requiretls_fails_with_dsn() {
    // A relay with a certificate trusted through ca_file, so REQUIRETLS gets verified TLS;
    // with and without REQUIRETLS announced.
    let dir = tempfile::tempdir().unwrap();
    let (cert, pem) = self_signed(&["relay.example"]);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    for announce in [false, true] {
        let (l, port) = listener4();
        let got = tls_sink(
            l,
            SinkSetup {
                starttls: Some(Arc::clone(&cert)),
                requiretls: announce,
                greeting: "220 sink ESMTP\r\n",
            },
        );
        let extra = format!(
            "[transport.relay]\nkind = \"smarthost\"\nhost = \"relay.example\"\nport = {port}\nca_file = \"{}\"\n[[route]]\ntransport = \"relay\"\n",
            ca.display()
        );
        let e = env(false, &extra);
        let r = e.dns_runner(zone());
        let id = queue_with(&e, "rcpt@example.net", RequireTls::Required);
        r.run_once(e.now()).unwrap();
        let h = history(&e, id);
        assert_eq!(h[0].tls_mode.as_deref(), Some("required"), "{h:?}");
        assert!(
            h[0].tls_result.as_deref().unwrap_or("").starts_with("TLS"),
            "{h:?}"
        );
        if announce {
            assert!(matches!(e.retired(id), Some(Outcome::Delivered(_))));
            assert_eq!(got.load(Ordering::SeqCst), 1);
            assert!(e.inbox().is_empty());
        } else {
            let out = e.retired(id);
            assert!(
                matches!(&out, Some(Outcome::Failed(t)) if t.contains("REQUIRETLS")),
                "{out:?}"
            );
            assert_eq!(got.load(Ordering::SeqCst), 0);
            let inbox = e.inbox();
            assert_eq!(inbox.len(), 1);
            assert!(inbox[0].contains("Action: failed"), "{}", inbox[0]);
            assert!(inbox[0].contains("REQUIRETLS"), "{}", inbox[0]);
        }
        // TLS reporting (RFC 8460) is about MX hosts under the recipient domain's policy:
        // nothing is recorded for a relay.
        let reps = tls_reports(&e, "relay.example");
        assert!(reps.is_empty(), "{reps:?}");
    }
}

fn other_family_tried_after_connection_level_failure() {
    let ok = SinkSetup {
        starttls: None,
        requiretls: false,
        greeting: "220 sink ESMTP\r\n",
    };
    // (what 127.0.0.1 does: refuses connections, or a permanent greeting refusal)
    for greeting in [None, Some("554 5.3.2 not now\r\n")] {
        let Some((l6, l4, port)) = dual_listeners() else {
            eprintln!("skipping: no IPv6 loopback");
            return;
        };
        // Holds 127.0.0.1's port, bound but not listening: connections are refused and no
        // other test's listener can take the port while ::1 serves it.
        let mut _refuser = None;
        match greeting {
            None => {
                drop(l4);
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                s.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
                    .expect("the port just released");
                _refuser = Some(s);
            }
            Some(g) => {
                tls_sink(
                    l4,
                    SinkSetup {
                        greeting: g,
                        ..ok.clone()
                    },
                );
            }
        }
        let got6 = tls_sink(l6, ok.clone());
        let e = env(false, &format!("[queue]\nsmtp_port = {port}\n"));
        let r = e.dns_runner(zone());
        let id = e.queue("mjl@mox.example", &["rcpt@example.net"])[0];
        r.run_once(e.now()).unwrap();
        let out = e.retired(id);
        assert!(
            matches!(out, Some(Outcome::Delivered(_))),
            "{greeting:?}: {out:?} {:?}",
            history(&e, id)
        );
        assert_eq!(got6.load(Ordering::SeqCst), 1, "{greeting:?}");
    }
}
