//! A whole server session fed arbitrary bytes in arbitrary chunks, with every effect
//! answered (alternately accepting and refusing), never panics and always drains to idle.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rmox_core::server::{
    Completion, Effect, Input, Output, PasswordCheck, Peer, ServerConfig, ServerSession, Verdict,
};
use rmox_core::smtp::{Enhanced, Reply};
use rmox_core::{Now, UnixTime};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut cfg = ServerConfig::new("mox.example");
    cfg.submission = mode & 1 == 1;
    cfg.require_tls_for_auth = false;
    cfg.auth_failure_delay = Duration::ZERO;
    // Small, so that fuzzed messages go through the spool effects too.
    cfg.spool_threshold = 64;
    let spools = rmox_core::server::MemorySpool::default();
    #[allow(clippy::disallowed_methods)]
    let mut now = Now {
        mono: Instant::now(),
        wall: UnixTime(1_795_315_268),
    };
    let peer = Peer {
        ip: "192.0.2.1".parse().unwrap(),
        cid: 1,
    };
    let Ok(mut s) = ServerSession::new(Arc::new(cfg), peer, now) else {
        return;
    };
    let mut tx = Vec::new();
    let mut inbuf: Vec<u8> = Vec::new();
    let mut flip = false;
    let chunk = usize::from(mode >> 1).max(1);
    for piece in rest.chunks(chunk) {
        inbuf.extend_from_slice(piece);
        let Ok(n) = s.handle(now, Input::Received(&inbuf)) else {
            return;
        };
        inbuf.drain(..n);
        for _ in 0..10_000 {
            match s.poll(now, &mut tx) {
                Output::Transmit => tx.clear(),
                Output::Effect(t, e) => {
                    flip = !flip;
                    let c = match e {
                        Effect::CheckPassword { .. } => Completion::Password(if flip {
                            PasswordCheck::Valid {
                                account: "a".into(),
                            }
                        } else {
                            PasswordCheck::Invalid
                        }),
                        Effect::LookupCredentials { .. } => {
                            Completion::Credentials(rmox_core::server::CredentialsAnswer::Unknown)
                        }
                        Effect::Spool { spool, chunk, last } => {
                            Completion::Spool(spools.append(spool, &chunk, last))
                        }
                        Effect::Store(_) => Completion::Stored(
                            if flip {
                                Ok(())
                            } else {
                                Err(Reply::new(451, Some(Enhanced::new(4, 3, 0)), "no"))
                            }
                            .into(),
                        ),
                        _ => Completion::Verdict(if flip {
                            Verdict::Accept
                        } else {
                            Verdict::Reject(Reply::new(550, None, "no"))
                        }),
                    };
                    if s.handle(now, Input::Completed(t, c)).is_err() {
                        return;
                    }
                    let Ok(n) = s.handle(now, Input::Received(&inbuf)) else {
                        return;
                    };
                    inbuf.drain(..n);
                }
                Output::Event(_) => {}
                Output::Idle { deadline, .. } => {
                    if let Some(d) = deadline {
                        now.mono = now.mono.max(d);
                        let _ = s.handle(now, Input::Timeout);
                    }
                    break;
                }
                Output::Close => return,
            }
        }
    }
});
