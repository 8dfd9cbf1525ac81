//! Command::parse on arbitrary lines; a parsed command must render and parse back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_core::smtp::{split_line, Command, LineResult, MAX_COMMAND_LINE};

fuzz_target!(|data: &[u8]| {
    if let LineResult::Line(line, _) = split_line(data, MAX_COMMAND_LINE) {
        if let Ok(cmd) = Command::parse(line) {
            let mut out = Vec::new();
            cmd.render(&mut out);
            let again = Command::parse(out.strip_suffix(b"\r\n").unwrap_or(&out));
            assert_eq!(again.as_ref(), Ok(&cmd));
        }
    }
    let _ = Command::parse(data);
});
