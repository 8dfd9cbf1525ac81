//! Subjectpass: a way through for a human whose message was refused as likely spam (a
//! DNSBL-listed IP, no reputation). The refusal carries a pass; the sender puts it in the
//! Subject of the message sent again, and it is accepted. A pass is an HMAC of the sender's
//! From address and the time it was made, with the account's secret key, valid for a
//! configured period. Pure: the key and the time come in.

use base64::Engine;
use ring::hmac;

use crate::time::UnixTime;

/// The refusal text that precedes the pass (the sender copies what follows it).
pub const EXPLANATION: &str =
    "your message resembles spam; to get it through, send it again with this added to the Subject: ";

/// The prefix of a pass in a Subject.
pub const PREFIX: &str = "rmoxpass-";

/// Octets of the HMAC kept in a pass.
const MAC_LEN: usize = 12;

fn mac(key: &[u8], from: &str, t: i64) -> [u8; MAC_LEN] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(from.to_ascii_lowercase().as_bytes());
    ctx.update(&[0]);
    ctx.update(&t.to_be_bytes());
    let tag = ctx.sign();
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&tag.as_ref()[..MAC_LEN]);
    out
}

/// A pass for `from` (the From address), made at `now`.
pub fn generate(key: &[u8], from: &str, now: UnixTime) -> String {
    let mut raw = Vec::with_capacity(8 + MAC_LEN);
    raw.extend_from_slice(&now.0.to_be_bytes());
    raw.extend_from_slice(&mac(key, from, now.0));
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

/// Whether `subject` holds a pass for `from` made no longer than `period` seconds before
/// `now` (and not in the future).
pub fn verify(key: &[u8], from: &str, subject: &str, period: i64, now: UnixTime) -> bool {
    subject.split_whitespace().any(|word| {
        let Some(b64) = word.strip_prefix(PREFIX) else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64) else {
            return false;
        };
        if raw.len() != 8 + MAC_LEN {
            return false;
        }
        let mut tb = [0u8; 8];
        tb.copy_from_slice(&raw[..8]);
        let t = i64::from_be_bytes(tb);
        if t > now.0 || now.0.saturating_sub(t) > period {
            return false;
        }
        let want = mac(key, from, t);
        // Constant time: the comparison says nothing about how much matched.
        raw[8..]
            .iter()
            .zip(want.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn pass_round_trip_and_limits() {
        let now = UnixTime(1_800_000_000);
        let p = generate(KEY, "Remote@Example.org", now);
        assert!(p.starts_with(PREFIX));
        let subject = format!("Re: test {p}");
        assert!(verify(KEY, "remote@example.org", &subject, 3600, now));
        assert!(verify(
            KEY,
            "remote@example.org",
            &subject,
            3600,
            UnixTime(now.0 + 3600)
        ));
        // Expired, from the future, another sender, another key, altered.
        assert!(!verify(
            KEY,
            "remote@example.org",
            &subject,
            3600,
            UnixTime(now.0 + 3601)
        ));
        assert!(!verify(
            KEY,
            "remote@example.org",
            &subject,
            3600,
            UnixTime(now.0 - 1)
        ));
        assert!(!verify(KEY, "other@example.org", &subject, 3600, now));
        assert!(!verify(
            b"another key",
            "remote@example.org",
            &subject,
            3600,
            now
        ));
        let mut bad = p.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        assert!(!verify(KEY, "remote@example.org", &bad, 3600, now));
        for s in ["", "rmoxpass-", "rmoxpass-!!!", "test rmoxpass-AAAA"] {
            assert!(!verify(KEY, "remote@example.org", s, 3600, now), "{s}");
        }
    }
}
