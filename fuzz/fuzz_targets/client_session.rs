//! A client session fed arbitrary server bytes in arbitrary chunks, with timeouts and EOF:
//! no panic, outputs always drain to Idle or Close.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rmox_core::client::{
    ClientConfig, ClientSession, Credentials, Delivery, Input, Needs, Output, TlsMode,
};
use rmox_core::smtp::{ForwardPath, Host, MailParams, RcptParams, ReversePath};
use rmox_core::{Now, UnixTime};

fn drain(c: &mut ClientSession, now: Now) {
    let mut tx = Vec::new();
    for _ in 0..10_000 {
        match c.poll(now, &mut tx) {
            Output::Idle { .. } | Output::Close => return,
            _ => tx.clear(),
        }
    }
    panic!("client session did not become idle");
}

fuzz_target!(|data: &[u8]| {
    // First byte: chunk size; second: options.
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let Some((&opts, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let Ok(host) = Host::parse("localhost") else {
        return;
    };
    let mut cfg = ClientConfig::new(host, "mox.example");
    cfg.tls_mode = match opts % 3 {
        0 => TlsMode::Skip,
        1 => TlsMode::Opportunistic,
        _ => TlsMode::RequiredStartTls,
    };
    if opts & 4 != 0 {
        cfg.auth = Some(Credentials {
            mechanism: None,
            username: "user".into(),
            password: "pass".into(),
        });
    }
    let now = Now {
        mono: Instant::now(),
        wall: UnixTime(1_700_000_000),
    };
    let mut c = ClientSession::new(Arc::new(cfg), now);
    let (Ok(from), Ok(to)) = (
        ReversePath::parse("<a@mox.example>"),
        ForwardPath::parse("<b@mox.example>"),
    ) else {
        return;
    };
    let d = Delivery {
        mail_from: from,
        recipients: vec![
            (to.clone(), RcptParams::default()),
            (to, RcptParams::default()),
        ],
        params: MailParams::default(),
        message: Arc::from(&b"Subject: x\r\n\r\n.body\r\n"[..]),
        needs: Needs {
            smtputf8: opts & 8 != 0,
            requiretls: opts & 16 != 0,
            eightbit: opts & 32 != 0,
        },
    };
    let _ = c.handle(now, Input::Deliver(Box::new(d)));
    drain(&mut c, now);
    let mut pending: Vec<u8> = Vec::new();
    for piece in data.chunks(chunk) {
        pending.extend_from_slice(piece);
        match c.handle(now, Input::Received(&pending)) {
            Ok(n) => {
                assert!(n <= pending.len());
                pending.drain(..n);
            }
            Err(_) => pending.clear(),
        }
        drain(&mut c, now);
    }
    if opts & 64 != 0 {
        let later = now.advance(Duration::from_secs(3600));
        let _ = c.handle(later, Input::Timeout);
        drain(&mut c, later);
    }
    let _ = c.handle(now, Input::PeerClosed);
    drain(&mut c, now);
});
