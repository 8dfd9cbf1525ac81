//! DKIM-Signature and key record parsing, and a whole verification over a static zone,
//! must never panic on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_core::dkim::{DkimVerify, KeyRecord, Signature, VerifyLimits};
use rmox_core::dns::{run_sync, LookupResult, Record};
use rmox_core::UnixTime;

fuzz_target!(|data: &[u8]| {
    let _ = Signature::parse(data);
    let _ = KeyRecord::parse(data);
    let mut v = DkimVerify::new(data, UnixTime(1_700_000_000), &VerifyLimits::default());
    let _ = run_sync(
        &mut v,
        |_| LookupResult::Records {
            records: vec![Record::Txt(vec![data.to_vec()])],
            authentic: false,
        },
        50,
    );
});
