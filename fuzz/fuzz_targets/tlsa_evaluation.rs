//! DANE evaluation of arbitrary DNS facts must end within two TLSA lookups, never panic,
//! and never call a host secure unless the resolver is trusted and the MX, address and
//! TLSA answers were all authenticated; a secure verdict holds only usable records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_core::dns::{LookupResult, Record};
use rmox_core::tlspolicy::{is_usable, AddressFacts, DaneInput, DaneVerdict};

/// Turns bytes into one TLSA answer: a kind byte, an AD flag, then records of
/// (usage, selector, matching, length, data...).
fn answer(b: &[u8]) -> (LookupResult, bool) {
    let kind = b.first().copied().unwrap_or(0);
    let auth = b.get(1).is_some_and(|x| x & 1 == 1);
    let result = match kind % 4 {
        0 => LookupResult::NxDomain,
        1 => LookupResult::NoData,
        2 => LookupResult::TempFail("servfail".into()),
        _ => {
            let mut records = Vec::new();
            let mut rest = b.get(2..).unwrap_or_default();
            while rest.len() >= 4 && records.len() < 8 {
                let (u, s, m, n) = (rest[0], rest[1], rest[2], usize::from(rest[3] % 80));
                let data = rest.get(4..4 + n).unwrap_or(&rest[4..]).to_vec();
                rest = rest.get(4 + n..).unwrap_or_default();
                records.push(Record::Tlsa {
                    usage: u,
                    selector: s,
                    matching: m,
                    data,
                });
            }
            LookupResult::Records {
                records,
                authentic: auth,
            }
        }
    };
    (result, auth)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let flags = data[0];
    let mid = usize::from(data[1]).min(data.len() - 2);
    let (first, second) = data[2..].split_at(mid);
    let cnames = if flags & 8 != 0 {
        vec!["target.example".to_string()]
    } else {
        Vec::new()
    };
    let input = DaneInput::new(
        "mx.example",
        flags & 1 != 0,
        AddressFacts {
            cnames,
            secure: flags & 2 != 0,
        },
        flags & 4 != 0,
    );
    let answers = [answer(first), answer(second)];
    let mut n = 0usize;
    let mut last_auth = false;
    let v = input.evaluate(|_| {
        let (a, auth) = answers[n.min(1)].clone();
        n += 1;
        last_auth = auth;
        a
    });
    assert!(n <= 2, "{n} lookups");
    if let DaneVerdict::Secure(s) = v {
        assert!(flags & 7 == 7 && last_auth, "secure from insecure facts");
        assert!(!s.records.is_empty() && s.records.iter().all(is_usable));
    }
});
