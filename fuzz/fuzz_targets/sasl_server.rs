//! The server side of every SASL mechanism fed arbitrary client lines, with fixed stored
//! credentials (user `user`, password `secret`): no panic, an exchange always ends within
//! a bounded number of steps, and it succeeds only for `user`. When the input asks for it,
//! a real client exchange with the right password must succeed and one with a wrong
//! password must fail (round trip of client and server).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_core::sasl::{
    derive_cram_md5, derive_scram, ClientAuth, CredentialKind, Mechanism, ScramHash, ServerAuth,
    ServerStep, StoredCredentials,
};

const USER: &str = "user";
const PASSWORD: &str = "secret";
/// Small, so that each run is fast; the fake parameters of unknown users use it too.
const ITERATIONS: u32 = 2;
const CHANNEL_BINDING: [u8; 32] = [7; 32];

fn stored(kind: CredentialKind) -> StoredCredentials {
    match kind {
        CredentialKind::CramMd5 => StoredCredentials::CramMd5(derive_cram_md5(PASSWORD)),
        CredentialKind::ScramSha1 => StoredCredentials::Scram(derive_scram(
            ScramHash::Sha1,
            PASSWORD,
            b"saltsalt",
            ITERATIONS,
        )),
        CredentialKind::ScramSha256 => StoredCredentials::Scram(derive_scram(
            ScramHash::Sha256,
            PASSWORD,
            b"saltsalt",
            ITERATIONS,
        )),
    }
}

fn server(mech: Mechanism, cb: bool) -> ServerAuth {
    let mut s = ServerAuth::with_nonce(
        mech,
        "c2VydmVybm9uY2U",
        "mox.example",
        cb.then(|| CHANNEL_BINDING.to_vec()),
    );
    s.set_unknown_user_params(b"fuzz key", ITERATIONS);
    s
}

/// Answers effects until the exchange needs a client response (`Some(challenge)`) or is
/// over (`None`, with the outcome in `done`).
fn settle(s: &mut ServerAuth, mut step: ServerStep, done: &mut Option<bool>) -> Option<Vec<u8>> {
    for _ in 0..8 {
        step = match step {
            ServerStep::Challenge(c) => return Some(c),
            ServerStep::CheckPassword { username, password } => {
                s.password_checked(username == USER && password == PASSWORD)
            }
            ServerStep::NeedCredentials { username, kind } => {
                s.credentials((username == USER).then(|| stored(kind)))
            }
            ServerStep::Success {
                username,
                final_data,
            } => {
                assert_eq!(username, USER, "success for a user without credentials");
                *done = Some(true);
                // SCRAM: the server-final-message goes out as a challenge.
                return final_data;
            }
            ServerStep::Failure(f) => {
                let _ = f.smtp_code();
                *done = Some(false);
                return None;
            }
        };
    }
    panic!("exchange did not settle");
}

/// A client exchange against the server: whether the server said Success and the client
/// accepted the server's final data.
fn round_trip(mech: Mechanism, cb: bool, password: &str) -> bool {
    let binding = cb.then(|| CHANNEL_BINDING.to_vec());
    let mut c = ClientAuth::with_nonce(mech, USER, password, "Y2xpZW50bm9uY2U", binding);
    let mut s = server(mech, cb);
    let mut done = None;
    let initial = c.initial_response();
    let first = s.start(initial.as_deref());
    let mut next = settle(&mut s, first, &mut done);
    for _ in 0..8 {
        match (next, done) {
            (Some(ch), Some(true)) => {
                // SCRAM server-final: the client checks it.
                return c.respond(&ch).is_ok() && c.finish().is_ok();
            }
            (None, Some(ok)) => return ok && c.finish().is_ok(),
            (Some(ch), None) => match c.respond(&ch) {
                Ok(resp) => {
                    let step = s.respond(&resp);
                    next = settle(&mut s, step, &mut done);
                }
                Err(_) => return false,
            },
            (Some(_), Some(false)) | (None, None) => return false,
        }
    }
    false
}

fuzz_target!(|data: &[u8]| {
    let Some((&opts, data)) = data.split_first() else {
        return;
    };
    let mech = Mechanism::ALL[usize::from(opts & 7) % Mechanism::ALL.len()];
    let cb = opts & 8 != 0;
    let with_initial = opts & 16 != 0;
    if opts & 32 != 0 {
        // -PLUS needs channel binding; plain SCRAM with channel binding available says
        // `y`, which a server that advertises -PLUS refuses as a downgrade.
        let scram = !matches!(
            mech,
            Mechanism::Plain | Mechanism::Login | Mechanism::CramMd5
        );
        let expect_ok = if mech.needs_channel_binding() {
            cb
        } else {
            !(scram && cb)
        };
        assert_eq!(
            round_trip(mech, cb, PASSWORD),
            expect_ok,
            "{mech:?} (channel binding {cb}) with the right password"
        );
        assert!(
            !round_trip(mech, cb, "wrong"),
            "{mech:?} with a wrong password succeeded"
        );
        return;
    }
    let mut s = server(mech, cb);
    if opts & 64 != 0 {
        s.set_plus_advertised(!cb);
    }
    let mut lines = data.split(|&b| b == b'\n');
    let initial = if with_initial { lines.next() } else { None };
    let mut done = None;
    let first = s.start(initial);
    let mut next = settle(&mut s, first, &mut done);
    let mut steps = 0;
    while let Some(_challenge) = next {
        steps += 1;
        assert!(steps <= 16, "exchange did not end");
        let Some(line) = lines.next() else {
            break;
        };
        if done.is_some() {
            // After the end (or SCRAM's final data) the server refuses more.
            let _ = s.respond(line);
            break;
        }
        let step = s.respond(line);
        next = settle(&mut s, step, &mut done);
    }
});
