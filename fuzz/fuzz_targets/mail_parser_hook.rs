//! For targets that reach mail-parser: rmox-core catches mail-parser's panics (it panics on
//! some messages, see `parse_mime` in core/src/message.rs), but libfuzzer-sys's panic hook
//! aborts on every panic, caught or not. This hook lets panics located in mail-parser
//! unwind to core's `catch_unwind`; any panic that escapes core still aborts (libfuzzer-sys
//! aborts when the target returns by unwinding), and every other panic aborts at once.

pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let libfuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info
                .location()
                .is_some_and(|l| l.file().contains("/mail-parser-"))
            {
                return;
            }
            libfuzzer_hook(info);
        }));
    });
}
