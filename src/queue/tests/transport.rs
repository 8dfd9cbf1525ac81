//! Transports end to end over loopback: a smarthost and a submission service that are rmox
//! itself (STARTTLS and implicit TLS, AUTH), a SOCKS5 proxy in front of the SMTP sink,
//! direct delivery with address family switches, and route selection per attempt.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};

use rmox_storage::Store;

use super::*;

on_every_runtime!(
    smarthost_and_submission_with_auth_through_rmox,
    socks5_proxy_in_front_of_the_sink,
    direct_transport_address_family_switches,
    routes_select_transport_per_attempt,
    unknown_transport_on_an_item_fails_temporarily,
);

/// Zone data: the sink's MX on 127.0.0.1 and ::1, and the smarthost's name.
fn zone() -> crate::resolve::Dns {
    let zone = rmox_core::dns::StaticZone::parse(
        "example.net. MX 10 mx.example.net.\nmx.example.net. A 127.0.0.1\nmx.example.net. AAAA ::1\nsmarthost.example. A 127.0.0.1\n",
    )
    .unwrap();
    crate::resolve::Dns::Zone(zone)
}

/// An rmox server acting as smarthost: submission with STARTTLS and submissions with
/// implicit TLS on 127.0.0.1, account `relayuser` (password `password123`) owning
/// `mjl@mox.example`.
struct Smarthost {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    starttls_port: u16,
    implicit_port: u16,
    cert_file: std::path::PathBuf,
    shutdown: Arc<rmox_driver::Shutdown>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Smarthost {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn smarthost() -> Smarthost {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
hostname = "smarthost.example"
data_dir = "data"
[domain."mox.example"]
[account.relayuser]
domain = "mox.example"
destinations = { "mjl@mox.example" = {} }
"#;
    let config = Arc::new(Config::parse(text, &dir.path().join("rmox.toml")).unwrap());
    let store = Arc::new(Store::open(&config.data_dir()).unwrap());
    store.account_add("relayuser", "mox.example").unwrap();
    crate::admin::set_password(&*store, "relayuser", "password123").unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["smarthost.example".to_string()]).unwrap();
    let cert_file = dir.path().join("cert.pem");
    std::fs::write(&cert_file, ck.cert.pem()).unwrap();
    let tls = rmox_core::tls::server_config_from_pem(
        ck.cert.pem().as_bytes(),
        ck.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let mut specs = Vec::new();
    let mut ports = Vec::new();
    for implicit in [false, true] {
        let listener = crate::serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        ports.push(listener.local_addr().unwrap().port());
        let mut sc = rmox_core::server::ServerConfig::new("smarthost.example".to_string());
        sc.submission = true;
        sc.implicit_tls = implicit;
        sc.tls = Some(Arc::clone(&tls));
        sc.require_tls_for_auth = true;
        sc.auth_failure_delay = Duration::ZERO;
        sc.command_timeout = Duration::from_secs(10);
        sc.seed = 5;
        specs.push(rmox_runtime_smol::ListenerSpec::smtp(
            listener,
            Arc::new(sc),
        ));
    }
    let world: Arc<dyn rmox_driver::Answerer> = Arc::new(
        crate::world::World::new(
            Arc::clone(&config),
            Arc::clone(&store) as Arc<dyn MailStore>,
            None,
        )
        .unwrap(),
    );
    let shutdown = rmox_driver::Shutdown::new();
    let sd = Arc::clone(&shutdown);
    let thread = std::thread::spawn(move || {
        let _ = rmox_runtime_smol::run(specs, world, 1, sd);
    });
    Smarthost {
        _dir: dir,
        store,
        starttls_port: ports[0],
        implicit_port: ports[1],
        cert_file,
        shutdown,
        thread: Some(thread),
    }
}

impl Smarthost {
    /// Recipients of the messages queued on the smarthost, and whether each body has the
    /// test message.
    fn queued(&self) -> Vec<(String, bool)> {
        self.store
            .queue_list(&QueueFilter::default())
            .unwrap()
            .into_iter()
            .map(|q| {
                let body = self.store.queue_message(q.msg_id).unwrap();
                let body = String::from_utf8_lossy(&body).to_string();
                (q.rcpt.recipient, body.contains("hello"))
            })
            .collect()
    }
}

fn smarthost_and_submission_with_auth_through_rmox() {
    let sh = smarthost();
    let cert = sh.cert_file.display().to_string();
    // (transport settings, delivered?, what the failure mentions)
    let cases = [
        (
            format!("kind = \"smarthost\"\nhost = \"smarthost.example\"\nport = {}\ntls = \"starttls\"\nca_file = \"{cert}\"\nauth = {{ username = \"relayuser\", password = \"password123\" }}\n", sh.starttls_port),
            true,
            "",
        ),
        (
            format!("kind = \"smarthost\"\nhost = \"smarthost.example\"\nport = {}\ntls = \"starttls\"\nverify = false\nauth = {{ username = \"relayuser\", password = \"password123\", mechanisms = [\"PLAIN\"] }}\n", sh.starttls_port),
            true,
            "",
        ),
        (
            format!("kind = \"smarthost\"\nhost = \"smarthost.example\"\nport = {}\nauth = {{ username = \"relayuser\", password = \"password123\", mechanisms = [\"CRAM-MD5\"] }}\n", sh.starttls_port),
            true,
            "",
        ),
        (
            format!("kind = \"submission\"\nhost = \"smarthost.example\"\nport = {}\ntls = \"implicit\"\nca_file = \"{cert}\"\nauth = {{ username = \"relayuser\", password = \"password123\", mechanisms = [\"SCRAM-SHA-1\"] }}\n", sh.implicit_port),
            true,
            "",
        ),
        (
            format!("kind = \"submission\"\nhost = \"smarthost.example\"\nport = {}\nca_file = \"{cert}\"\nauth = {{ username = \"relayuser\", password = \"password123\" }}\n", sh.starttls_port),
            true,
            "",
        ),
        // -PLUS needs channel binding, which implicit TLS outside the machine cannot give:
        // the next configured mechanism is tried.
        (
            format!("kind = \"submission\"\nhost = \"smarthost.example\"\nport = {}\ntls = \"implicit\"\nca_file = \"{cert}\"\nauth = {{ username = \"relayuser\", password = \"password123\", mechanisms = [\"SCRAM-SHA-256-PLUS\", \"PLAIN\"] }}\n", sh.implicit_port),
            true,
            "",
        ),
        // Wrong password: refused.
        (
            format!("kind = \"smarthost\"\nhost = \"smarthost.example\"\nport = {}\ntls = \"starttls\"\nverify = false\nauth = {{ username = \"relayuser\", password = \"wrong-password\" }}\n", sh.starttls_port),
            false,
            "535",
        ),
        // The certificate is not trusted by the system roots.
        (
            format!("kind = \"submission\"\nhost = \"smarthost.example\"\nport = {}\ntls = \"implicit\"\nauth = {{ username = \"relayuser\", password = \"password123\" }}\n", sh.implicit_port),
            false,
            "smarthost.example",
        ),
        // No AUTH: the submission port refuses the sender.
        (
            format!("kind = \"smarthost\"\nhost = \"smarthost.example\"\nport = {}\n", sh.starttls_port),
            false,
            "530 5.7.0 authentication required",
        ),
    ];
    let mut delivered = 0;
    for (i, (transport, want, mention)) in cases.iter().enumerate() {
        let e = env(
            false,
            &format!("[transport.relay]\n{transport}\n[[route]]\ntransport = \"relay\"\n"),
        );
        let r = e.dns_runner(zone());
        let to = format!("rcpt{i}@example.net");
        let id = e.queue("mjl@mox.example", &[&to])[0];
        r.run_once(e.now()).unwrap();
        let queued = sh.queued();
        let arrived = queued.iter().any(|(rc, body)| *rc == to && *body);
        if *want {
            delivered += 1;
            assert!(
                matches!(e.retired(id), Some(Outcome::Delivered(_))),
                "case {i}: {:?} {:?}",
                e.retired(id),
                e.store.queue_get(id).unwrap().map(|q| q.history)
            );
            assert!(arrived, "case {i}: not on the smarthost: {queued:?}");
        } else {
            assert!(!arrived, "case {i}");
            let text = match e.retired(id) {
                Some(Outcome::Failed(t)) => t,
                None => e.store.queue_get(id).unwrap().unwrap().last_error.unwrap(),
                other => panic!("case {i}: {other:?}"),
            };
            assert!(text.contains(mention), "case {i}: {text}");
        }
    }
    assert_eq!(sh.queued().len(), delivered);
}

/// A SOCKS5 proxy for tests: serves connections on its own threads, records every CONNECT
/// target, optionally requires a user name and password.
struct Proxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SocketAddr>>>,
}

fn proxy(auth: Option<(&'static str, &'static str)>) -> Proxy {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { return };
            let seen = Arc::clone(&seen2);
            std::thread::spawn(move || {
                let _ = serve_socks(c, auth, &seen);
            });
        }
    });
    Proxy { addr, seen }
}

fn serve_socks(
    mut c: TcpStream,
    auth: Option<(&str, &str)>,
    seen: &Mutex<Vec<SocketAddr>>,
) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut b = [0u8; 2];
    c.read_exact(&mut b)?;
    let mut methods = vec![0u8; usize::from(b[1])];
    c.read_exact(&mut methods)?;
    let want = if auth.is_some() { 2 } else { 0 };
    if b[0] != 5 || !methods.contains(&want) {
        return c.write_all(&[5, 0xff]);
    }
    c.write_all(&[5, want])?;
    if let Some((user, pass)) = auth {
        let mut h = [0u8; 2];
        c.read_exact(&mut h)?;
        let mut u = vec![0u8; usize::from(h[1])];
        c.read_exact(&mut u)?;
        let mut pl = [0u8; 1];
        c.read_exact(&mut pl)?;
        let mut p = vec![0u8; usize::from(pl[0])];
        c.read_exact(&mut p)?;
        let ok = u == user.as_bytes() && p == pass.as_bytes();
        c.write_all(&[1, if ok { 0 } else { 1 }])?;
        if !ok {
            return Ok(());
        }
    }
    let mut req = [0u8; 4];
    c.read_exact(&mut req)?;
    let ip: std::net::IpAddr = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            c.read_exact(&mut a)?;
            a.into()
        }
        4 => {
            let mut a = [0u8; 16];
            c.read_exact(&mut a)?;
            a.into()
        }
        _ => return c.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]),
    };
    let mut port = [0u8; 2];
    c.read_exact(&mut port)?;
    let target = SocketAddr::new(ip, u16::from_be_bytes(port));
    seen.lock().unwrap().push(target);
    let Ok(up) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        return c.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
    };
    c.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0])?;
    up.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (mut c2, mut up2) = (c.try_clone()?, up.try_clone()?);
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up2, &mut c2);
        let _ = c2.shutdown(std::net::Shutdown::Write);
    });
    let mut up = up;
    let _ = std::io::copy(&mut c, &mut up);
    let _ = up.shutdown(std::net::Shutdown::Write);
    let _ = t.join();
    Ok(())
}

fn socks5_proxy_in_front_of_the_sink() {
    let s = sink();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let plain = proxy(None);
    let authed = proxy(Some(("rmox", "proxypass")));
    // (proxy, credentials, MX port, delivered?, what the failure mentions)
    let cases = [
        (&plain, "", s.port, true, ""),
        (
            &authed,
            "proxy_username = \"rmox\"\nproxy_password = \"proxypass\"\n",
            s.port,
            true,
            "",
        ),
        (
            &authed,
            "proxy_username = \"rmox\"\nproxy_password = \"wrong\"\n",
            s.port,
            false,
            "refused our user name",
        ),
        (
            &authed,
            "",
            s.port,
            false,
            "none of our authentication methods",
        ),
        (&plain, "", closed, false, "connection refused"),
    ];
    for (i, (p, creds, port, want, mention)) in cases.into_iter().enumerate() {
        let before = p.seen.lock().unwrap().len();
        let e = env(
            false,
            &format!(
                "[queue]\nsmtp_port = {port}\n[transport.s5]\nkind = \"socks5\"\nproxy = \"{}\"\nehlo_hostname = \"proxy.mox.example\"\n{creds}[[route]]\ntransport = \"s5\"\n",
                p.addr
            ),
        );
        let r = e.dns_runner(zone_dns());
        let to = format!("socks{i}@example.net");
        let id = e.queue("mjl@mox.example", &[&to])[0];
        r.run_once(e.now()).unwrap();
        let got = s.received.lock().unwrap().clone();
        let arrived = got.iter().any(|(_, rc, _)| rc.contains(&format!("<{to}>")));
        assert_eq!(arrived, want, "case {i}");
        if want {
            assert!(
                matches!(e.retired(id), Some(Outcome::Delivered(_))),
                "case {i}"
            );
            let seen = p.seen.lock().unwrap();
            assert_eq!(
                seen.get(before..).unwrap_or_default(),
                &[SocketAddr::from(([127, 0, 0, 1], port))],
                "case {i}: the proxy connected to the MX by IP"
            );
        } else {
            let q = e.store.queue_get(id).unwrap().unwrap();
            let err = q.last_error.unwrap();
            assert!(err.contains(mention), "case {i}: {err}");
            assert!(err.contains(&p.addr.to_string()), "case {i}: {err}");
        }
    }
}

/// `ipv4`/`ipv6` of a direct transport choose the address family of the MX connection.
/// The MX listens on the same port on 127.0.0.1 and ::1 (held by this test, so no other
/// test's server can answer on ::1), and each listener records who connected.
fn direct_transport_address_family_switches() {
    let Some((l6, l4, port)) = dual_listeners() else {
        // No IPv6 loopback: an IPv6-only transport must still try ::1, and only it.
        let s = sink();
        let e = env(
            false,
            &format!(
                "[queue]\nsmtp_port = {}\n[transport.d]\nkind = \"direct\"\nipv4 = false\nipv6 = true\n[[route]]\ntransport = \"d\"\n",
                s.port
            ),
        );
        let id = e.queue("mjl@mox.example", &["direct@example.net"])[0];
        e.dns_runner(zone()).run_once(e.now()).unwrap();
        let err = e.store.queue_get(id).unwrap().unwrap().last_error.unwrap();
        assert!(err.contains("[::1]"), "{err}");
        assert!(s.peers.lock().unwrap().is_empty());
        return;
    };
    let (s4, s6) = (sink_on(l4), sink_on(l6));
    // (ipv4, ipv6, the listener that must get the message)
    let cases = [(true, false, "127.0.0.1"), (false, true, "::1")];
    for (i, (v4, v6, want)) in cases.into_iter().enumerate() {
        let e = env(
            false,
            &format!(
                "[queue]\nsmtp_port = {port}\n[transport.d]\nkind = \"direct\"\nipv4 = {v4}\nipv6 = {v6}\n[[route]]\ntransport = \"d\"\n"
            ),
        );
        let r = e.dns_runner(zone());
        let to = format!("direct{i}@example.net");
        let id = e.queue("mjl@mox.example", &[&to])[0];
        r.run_once(e.now()).unwrap();
        assert!(
            matches!(e.retired(id), Some(Outcome::Delivered(_))),
            "case {i}: {:?}",
            e.store.queue_get(id).unwrap().and_then(|q| q.last_error)
        );
        for s in [&s4, &s6] {
            let got = s.received.lock().unwrap();
            let here = got.iter().any(|(_, rc, _)| rc.contains(&format!("<{to}>")));
            let peers = s.peers.lock().unwrap();
            let is_want = peers.first().map(|p| p.to_string()) == Some(want.to_string());
            assert_eq!(here, is_want, "case {i}: {peers:?} {got:?}");
        }
    }
    assert_eq!(s4.peers.lock().unwrap().len(), 1);
    assert_eq!(s6.peers.lock().unwrap().len(), 1);
}

/// Records the transport of every batch and fails temporarily.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, Option<String>)>>,
}

impl Connector for Recorder {
    fn deliver(&self, job: &Job<'_>) -> Vec<AttemptResult> {
        for it in job.items {
            self.seen
                .lock()
                .unwrap()
                .push((it.recipient.clone(), job.batch.key.transport.clone()));
        }
        job.items
            .iter()
            .map(|_| AttemptResult::Temporary(Failure::local("try later", Enhanced::new(4, 0, 0))))
            .collect()
    }
}

fn routes_select_transport_per_attempt() {
    let e = env(
        false,
        r#"
[transport.relay]
kind = "smarthost"
host = "127.0.0.1"
[transport.sub]
kind = "submission"
host = "127.0.0.1"
auth = { username = "u", password = "p" }
[[account.mjl.routes]]
to_domains = ["acct.example"]
transport = "direct"
[[domain."mox.example".routes]]
to_domains = [".sub.example"]
transport = "sub"
[[route]]
min_attempts = 2
transport = "relay"
"#,
    );
    let rec = Arc::new(Recorder::default());
    let r = e.runner(rec.clone());
    e.queue(
        "mjl@mox.example",
        &["a@example.net", "b@acct.example", "c@x.sub.example"],
    );
    r.run_once(e.now()).unwrap();
    e.advance(60);
    r.run_once(e.now()).unwrap();
    let mut seen = rec.seen.lock().unwrap().clone();
    seen.sort();
    let s = |t: &str| Some(t.to_string());
    assert_eq!(
        seen,
        vec![
            ("a@example.net".into(), None),
            ("a@example.net".into(), s("relay")),
            ("b@acct.example".into(), None),
            ("b@acct.example".into(), None),
            ("c@x.sub.example".into(), s("sub")),
            ("c@x.sub.example".into(), s("sub")),
        ]
    );
}

fn unknown_transport_on_an_item_fails_temporarily() {
    let e = env(false, "");
    let r = e.dns_runner(zone());
    let id = e.queue("mjl@mox.example", &["x@example.net"])[0];
    e.store
        .queue_update(id, |q| q.rcpt.transport = Some("gone".into()))
        .unwrap();
    r.run_once(e.now()).unwrap();
    let err = e.store.queue_get(id).unwrap().unwrap().last_error.unwrap();
    assert!(
        err.contains("transport \"gone\" is not configured"),
        "{err}"
    );
}
