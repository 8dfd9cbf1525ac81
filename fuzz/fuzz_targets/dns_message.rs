//! The resolver's answer path: arbitrary datagrams and TCP bytes for an outstanding query
//! never panic. The first two bytes of the input are replaced by the query's ID so that the
//! parser and the answer interpretation are reached, not only the ID filter.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use rmox_core::dns::{
    Lookup, RecordType, Resolver, ResolverConfig, ResolverInput, ResolverOutput, StaticZone,
};
use rmox_core::{Now, Rng, UnixTime};

fuzz_target!(|data: &[u8]| {
    #[allow(clippy::disallowed_methods)]
    let now = Now {
        mono: Instant::now(),
        wall: UnixTime(0),
    };
    let server = "127.0.0.1:53".parse().unwrap();
    let mut r = Resolver::new(
        ResolverConfig {
            servers: vec![server],
            ..ResolverConfig::default()
        },
        Rng::new(1),
    );
    r.query(
        now,
        Lookup {
            name: "example.org".into(),
            rtype: RecordType::Mx,
        },
    );
    let mut id = [0u8; 2];
    while let ResolverOutput::SendUdp { bytes, .. } = r.poll(now) {
        id.copy_from_slice(&bytes[..2]);
    }
    let mut msg = data.to_vec();
    if msg.len() >= 2 {
        msg[..2].copy_from_slice(&id);
    }
    r.handle(
        now,
        ResolverInput::Udp {
            from: server,
            bytes: &msg,
        },
    );
    loop {
        match r.poll(now) {
            ResolverOutput::SendTcp { conn, .. } => {
                r.handle(now, ResolverInput::Tcp { conn, bytes: data })
            }
            ResolverOutput::Idle { .. } => break,
            _ => {}
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = StaticZone::parse(text);
    }
});
