//! The config file parser (TOML to a validated `Config`) on arbitrary text: no panic, an
//! error names a problem, and the getters the server calls on a valid config do not panic
//! either. The root package is a binary, so its `src/config.rs` is compiled into this
//! target directly (it depends only on std, serde, toml and rmox-core); only the methods
//! that read no files are called (`transports` reads `password_file`s and is left out).
#![no_main]

#[allow(dead_code)]
#[path = "../../src/config.rs"]
mod config;

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/rmox.toml");
    match config::Config::parse(text, path) {
        Err(e) => {
            assert!(!e.problem.is_empty(), "an error without a problem: {e:?}");
            let _ = e.to_string();
        }
        Ok(c) => {
            let _ = c.routes();
            let _ = c.incoming_checks();
            let _ = c.data_dir();
            let _ = c.resolve("postmaster", "mox.example");
            let _ = c.login_account("mjl@mox.example");
            let _ = c.account_owns("mjl", "mjl", "mox.example");
        }
    }
});
