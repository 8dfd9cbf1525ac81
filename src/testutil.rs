//! Helpers shared by the in-memory tests of the binary's modules (world, reports, config
//! checks): a temporary directory and a driver loop for one server session.

use std::path::PathBuf;

use rmox_core::server::{Input, Output, ServerSession};
use rmox_driver::Answerer;

use crate::world::World;

/// A temporary directory removed on drop.
pub(crate) struct Tmp(pub(crate) PathBuf);

impl Tmp {
    /// A new empty directory named after `tag`, unique within the process.
    pub(crate) fn new(tag: &str) -> Tmp {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "rmox-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Feeds `bytes` to the session, answering its effects with `world`, until it has nothing
/// more to do; returns what it wrote.
pub(crate) fn run(s: &mut ServerSession, world: &World, bytes: &[u8]) -> String {
    let mut tx = Vec::new();
    let mut rest = bytes;
    for _ in 0..10_000 {
        if !rest.is_empty() {
            let n = s.handle(rmox_driver::now(), Input::Received(rest)).unwrap();
            rest = &rest[n..];
        }
        let mut progressed = false;
        loop {
            match s.poll(rmox_driver::now(), &mut tx) {
                Output::Transmit => {}
                Output::Effect(token, effect) => {
                    let c = world.answer(effect);
                    s.handle(rmox_driver::now(), Input::Completed(token, c))
                        .unwrap();
                    progressed = true;
                }
                Output::Event(e) => world.event(1, &e),
                Output::Idle { .. } | Output::Close => break,
            }
        }
        if rest.is_empty() && !progressed {
            break;
        }
    }
    String::from_utf8(tx).unwrap()
}
