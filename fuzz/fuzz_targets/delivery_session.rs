//! The delivery machine (MX lookup, connection attempts, SMTP client, optionally through a
//! SOCKS5 proxy) fed arbitrary DNS answers and arbitrary peer bytes in arbitrary chunks,
//! with failed connects, closes and timeouts: no panic, it always ends (Done within a
//! bounded number of timeouts), and the report has one result per recipient.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rmox_core::client::Needs;
use rmox_core::delivery::{
    Completion, ConnId, DeliveryConfig, DeliverySession, Effect, Input, Job, Output,
};
use rmox_core::dns::{LookupResult, Record, RecordType};
use rmox_core::queue::route::{Transport, TransportSocks5};
use rmox_core::smtp::{ForwardPath, Host, MailParams, RcptParams, ReversePath};
use rmox_core::{Now, UnixTime};

/// Reads answer choices; zeros when exhausted.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
}

fn dns_answer(rtype: RecordType, c: &mut Choices<'_>) -> LookupResult {
    let b = c.next();
    match b % 8 {
        0 => LookupResult::NxDomain,
        1 => LookupResult::NoData,
        2 => LookupResult::TempFail("SERVFAIL".into()),
        _ => {
            let n = 1 + usize::from(b >> 6);
            let records = (0..n)
                .map(|i| {
                    let x = c.next();
                    match rtype {
                        RecordType::A => Record::A(Ipv4Addr::new(127, 0, x, i as u8)),
                        RecordType::Aaaa => {
                            Record::Aaaa(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, u16::from(x), 1))
                        }
                        RecordType::Mx => Record::Mx {
                            preference: u16::from(x & 3),
                            host: match x >> 5 {
                                0 => String::new(), // null MX
                                1 => "mox.example".into(),
                                2 => "127.0.0.1".into(),
                                3 => "a..b".into(),
                                _ => format!("mx{}.mox.example", x & 7),
                            },
                        },
                        RecordType::Cname => Record::Cname("other.example".into()),
                        RecordType::Ptr => Record::Ptr("mox.example".into()),
                        RecordType::Txt => Record::Txt(vec![vec![x]]),
                        RecordType::Tlsa => Record::Tlsa {
                            usage: x & 3,
                            selector: (x >> 2) & 1,
                            matching: (x >> 3) & 3,
                            data: vec![x; 32],
                        },
                    }
                })
                .collect();
            LookupResult::Records {
                records,
                authentic: b & 32 != 0,
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (head, rest) = data.split_at(3);
    let (opts, chunk, ndns) = (head[0], usize::from(head[1]).max(1), usize::from(head[2]));
    let (dns, peer) = rest.split_at(ndns.min(rest.len()));
    let mut choices = Choices(dns);
    let Ok(host) = Host::parse("mail.mox.example") else {
        return;
    };
    let mut cfg = DeliveryConfig::new(host);
    if opts & 1 != 0 {
        cfg.transport = Transport::Socks5(TransportSocks5 {
            proxy: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1080),
            remote_ips: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))],
            ehlo_hostname: "proxy.mox.example".into(),
        });
        if opts & 2 != 0 {
            cfg.proxy_auth = Some(("user".into(), "pass".into()));
        }
    }
    let (Ok(from), Ok(to)) = (
        ReversePath::parse("<a@mox.example>"),
        ForwardPath::parse("<b@other.example>"),
    ) else {
        return;
    };
    let nrcpt = 1 + usize::from((opts >> 2) & 1);
    let job = Job {
        domain: if opts & 8 != 0 {
            "[127.0.0.1]".into()
        } else {
            "other.example".into()
        },
        mail_from: from,
        recipients: vec![(to, RcptParams::default()); nrcpt],
        params: MailParams::default(),
        message: Arc::from(&b"Subject: x\r\n\r\n.body\r\n"[..]),
        needs: Needs {
            smtputf8: opts & 16 != 0,
            requiretls: false,
            eightbit: false,
        },
        requiretls: match opts >> 5 & 3 {
            0 => None,
            1 => Some(true),
            _ => Some(false),
        },
        seed: u64::from(opts),
    };
    let mut now = Now {
        mono: Instant::now(),
        wall: UnixTime(1_700_000_000),
    };
    let mut d = DeliverySession::new(Arc::new(cfg), job, now);
    let mut peer_chunks = peer.chunks(chunk);
    let mut conn: Option<ConnId> = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut tx = Vec::new();
    let mut idle_rounds = 0;
    'outer: for _ in 0..100_000 {
        // Drain outputs.
        let mut deadline = None;
        for _ in 0..10_000 {
            match d.poll(now, &mut tx) {
                Output::Transmit(_) => tx.clear(),
                Output::Effect(t, e) => {
                    let c = match e {
                        Effect::Dns(lookups) => Completion::Dns(
                            lookups
                                .iter()
                                .map(|l| dns_answer(l.rtype, &mut choices))
                                .collect(),
                        ),
                        Effect::Connect { conn: id, .. } => {
                            if choices.next() % 4 == 3 {
                                Completion::ConnectFailed("refused".into())
                            } else {
                                conn = Some(id);
                                pending.clear();
                                Completion::Connected
                            }
                        }
                        Effect::HostTls { .. } => {
                            // Only asked for with HostTlsSource::Ask, which is not set.
                            panic!("HostTls effect without HostTlsSource::Ask")
                        }
                    };
                    let _ = d.handle(now, Input::Completed(t, c));
                }
                Output::Event(_) => {}
                Output::Close(id) => {
                    if conn == Some(id) {
                        conn = None;
                    }
                }
                Output::Idle { deadline: dl, .. } => {
                    deadline = dl;
                    break;
                }
                Output::Done => break 'outer,
            }
        }
        // Feed the next peer chunk, or close, or let time pass.
        match (conn, peer_chunks.next()) {
            (Some(id), Some(piece)) => {
                pending.extend_from_slice(piece);
                match d.handle(now, Input::Received(id, &pending)) {
                    Ok(n) => {
                        assert!(n <= pending.len());
                        pending.drain(..n);
                    }
                    Err(_) => pending.clear(),
                }
            }
            (Some(id), None) if opts & 128 != 0 => {
                let _ = d.handle(now, Input::Closed(id));
                conn = None;
            }
            _ => {
                idle_rounds += 1;
                assert!(idle_rounds < 1000, "delivery did not end");
                now = match deadline {
                    Some(dl) if dl > now.mono => now.advance(dl - now.mono),
                    _ => now.advance(Duration::from_secs(60)),
                };
                let _ = d.handle(now, Input::Timeout);
            }
        }
    }
    assert!(d.is_done(), "delivery did not end");
    let report = d.report().expect("a done delivery has a report");
    assert_eq!(report.results.len(), nrcpt);
});
