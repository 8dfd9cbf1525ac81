//! The junk filter's tokenizer on arbitrary messages, and the classifier on what it
//! makes: no panic, tokens bounded in number and length, a probability in [0, 1].
#![no_main]

#[path = "mail_parser_hook.rs"]
mod mail_parser_hook;

use libfuzzer_sys::fuzz_target;
use rmox_core::junk::{classify, tokenize, Counts, Params, MAX_TOKENS, MAX_WORD};

fuzz_target!(|msg: &[u8]| {
    mail_parser_hook::install();
    let p = Params::default();
    let tokens = tokenize(&p, msg);
    assert!(tokens.len() <= MAX_TOKENS);
    let counted: Vec<(String, Counts)> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            assert!(t.len() <= MAX_WORD * 2 + 1 + 16, "{t:?}");
            let n = i as u32;
            (t, Counts { ham: n % 7, spam: n % 5 })
        })
        .collect();
    let c = classify(&p, 60, 40, &counted);
    assert!((0.0..=1.0).contains(&c.probability));
});
