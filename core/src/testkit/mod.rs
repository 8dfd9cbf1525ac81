//! Test support shared by the machine tests: a virtual clock, TLS configs with a
//! self-signed certificate, the shared test vectors, and the [`Pair`] that runs a client
//! and a server machine against each other ([`pair`]). Compiled for core's own tests and,
//! with the `testing` feature, for the tests of other crates; never part of a release
//! build.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    dead_code
)]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::time::{Now, UnixTime};

/// Virtual time: starts at a fixed wall time and only moves when told.
#[derive(Debug, Clone)]
pub struct TestClock {
    base: Instant,
    mono: Instant,
    wall0: UnixTime,
}

impl TestClock {
    /// A clock at 2026-11-22T02:41:08Z.
    pub fn new() -> TestClock {
        let base = Instant::now();
        TestClock {
            base,
            mono: base,
            wall0: UnixTime(1_795_315_268),
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Now {
        let elapsed = self.mono.duration_since(self.base);
        Now {
            mono: self.mono,
            wall: self.wall0.add(elapsed),
        }
    }

    /// Moves time forward by `d`.
    pub fn advance(&mut self, d: Duration) {
        self.mono += d;
    }

    /// Moves monotonic time to `at` (never backwards).
    pub fn set_mono(&mut self, at: Instant) {
        if at > self.mono {
            self.mono = at;
        }
    }
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

struct Pki {
    cert_der: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ck = rcgen::generate_simple_self_signed(vec!["mox.example".to_string()]).unwrap();
        let cert_pem = ck.cert.pem();
        let key_pem = ck.key_pair.serialize_pem();
        let server =
            crate::tls::server_config_from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
        Pki {
            cert_der: ck.cert.der().to_vec(),
            server,
        }
    })
}

/// A server TLS config for `mox.example` with a self-signed certificate.
pub fn server_tls() -> Arc<rustls::ServerConfig> {
    Arc::clone(&pki().server)
}

/// The DER certificate of [`server_tls`] (for DANE records).
pub fn server_cert_der() -> Vec<u8> {
    pki().cert_der.clone()
}

/// A client TLS config that trusts exactly the certificate of [`server_tls`].
pub fn client_tls() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            pki().cert_der.clone(),
        ))
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

/// Where the shared test material lives (`../shared/vectors` next to the repository).
pub fn vectors_dir() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for up in [
        manifest.join("../../shared/vectors"),
        manifest.join("../shared/vectors"),
    ] {
        if up.is_dir() {
            return up;
        }
    }
    panic!("shared/vectors not found next to the repository");
}

/// The fake end-of-data sequences from `smtp-smuggling/smuggling_vectors.json`, named.
pub fn smuggling_vectors() -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(vectors_dir().join("smtp-smuggling/smuggling_vectors.json"))
        .unwrap();
    // A tiny extraction of the JSON string values that are sequences (short, only CR, LF,
    // NUL and dots), so that no JSON dependency is needed.
    let mut out = Vec::new();
    let mut rest = text.as_str();
    let mut n = 0;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        let raw = &after[..end];
        rest = &after[end + 1..];
        let decoded = raw
            .replace("\\r", "\r")
            .replace("\\n", "\n")
            .replace("\\u0000", "\0");
        if !decoded.is_empty()
            && decoded.len() <= 8
            && decoded.contains('.')
            && decoded
                .bytes()
                .all(|b| matches!(b, b'\r' | b'\n' | b'\0' | b'.'))
            && !decoded.contains("\r\n.\r\n")
        {
            n += 1;
            out.push((format!("{n}:{raw}"), decoded.into_bytes()));
        }
    }
    assert!(
        out.len() >= 20,
        "too few smuggling vectors found: {}",
        out.len()
    );
    out
}

pub mod pair;
#[cfg(test)]
mod pair_tests;

pub use pair::{Dir, Pair};
