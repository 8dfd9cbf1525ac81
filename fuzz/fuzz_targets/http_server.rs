//! An HTTP server session fed arbitrary bytes in arbitrary chunks, with every request
//! answered (some at once, some later, some never, so that deadlines fire): no panic,
//! consumed counts within the input, and it always drains to idle or close.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rmox_core::http::codec::Limits;
use rmox_core::http::server::{Completion, Effect, HttpServerSession, Input, Output, ServerConfig};
use rmox_core::http::Response;
use rmox_core::{Now, Token, UnixTime};

fuzz_target!(|data: &[u8]| {
    // The first byte: the chunk size (bits 2..) and how requests are answered (bits 0-1).
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let cfg = ServerConfig {
        limits: Limits {
            max_head: 1024,
            max_headers: 8,
            max_body: 2048,
        },
        max_pipelined: 3,
        ..ServerConfig::new()
    };
    #[allow(clippy::disallowed_methods)]
    let mut now = Now {
        mono: Instant::now(),
        wall: UnixTime(1_795_315_268),
    };
    let Ok(mut s) = HttpServerSession::new(Arc::new(cfg), now) else {
        return;
    };
    let chunk = usize::from(mode >> 2).max(1);
    let mut tx = Vec::new();
    let mut inbuf: Vec<u8> = Vec::new();
    let mut later: Vec<Token> = Vec::new();
    let mut n_req = 0u32;
    let mut drain = |s: &mut HttpServerSession, now: Now, later: &mut Vec<Token>| -> bool {
        for _ in 0..10_000 {
            match s.poll(now, &mut tx) {
                Output::Transmit => tx.clear(),
                Output::Effect(t, Effect::Request { head, body }) => {
                    n_req += 1;
                    let r = Response::new(200, "text/plain", format!("{} {}", head.target, body.len()));
                    match (mode & 3, n_req % 3) {
                        (0, _) | (1, 0) => {
                            s.handle(now, Input::Completed(t, Completion::Response(r)));
                        }
                        (3, 1) => {} // never answered: the handler deadline fires
                        _ => later.push(t),
                    }
                }
                Output::Event(_) => {}
                Output::Idle { .. } => return true,
                Output::Close => return false,
            }
        }
        panic!("session did not go idle");
    };
    for piece in rest.chunks(chunk) {
        inbuf.extend_from_slice(piece);
        let n = s.handle(now, Input::Received(&inbuf));
        assert!(n <= inbuf.len());
        inbuf.drain(..n);
        if !drain(&mut s, now, &mut later) {
            return;
        }
        if let Some(t) = later.pop() {
            let r = Response::new(204, "text/plain", "");
            s.handle(now, Input::Completed(t, Completion::Response(r)));
            if !drain(&mut s, now, &mut later) {
                return;
            }
        }
        now.mono += Duration::from_secs(7);
        now.wall = now.wall.add(Duration::from_secs(7));
        s.handle(now, Input::Timeout);
        if !drain(&mut s, now, &mut later) {
            return;
        }
    }
    s.handle(now, Input::Closed);
    drain(&mut s, now, &mut later);
});
