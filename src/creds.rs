//! Credentials as stored: derived from the password when it is set, never the password.
//!
//! Kinds stored per account: `scram-sha-256`, `scram-sha-1` (iterations, salt, stored and
//! server key) and `cram-md5` (the inner and outer HMAC-MD5 states). PLAIN and LOGIN are
//! checked by deriving SCRAM-SHA-256 from the given password with the stored salt and
//! comparing the stored key in constant time.

use rmox_core::sasl::{
    derive_cram_md5, derive_scram, CramMd5Credentials, CredentialKind, ScramCredentials, ScramHash,
    StoredCredentials,
};

/// PBKDF2 iterations for new SCRAM credentials.
pub const ITERATIONS: u32 = 4096;

/// Storage name of a credential kind.
pub fn kind_name(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::ScramSha1 => "scram-sha-1",
        CredentialKind::ScramSha256 => "scram-sha-256",
        CredentialKind::CramMd5 => "cram-md5",
    }
}

/// All credentials for `password`, with a fresh `salt` (16 random bytes from the caller).
pub fn derive_all(password: &str, salt: &[u8]) -> Vec<(String, Vec<u8>)> {
    let s256 = derive_scram(ScramHash::Sha256, password, salt, ITERATIONS);
    let s1 = derive_scram(ScramHash::Sha1, password, salt, ITERATIONS);
    vec![
        ("scram-sha-256".to_string(), encode_scram(&s256)),
        ("scram-sha-1".to_string(), encode_scram(&s1)),
        (
            "cram-md5".to_string(),
            derive_cram_md5(password).to_bytes().to_vec(),
        ),
    ]
}

fn encode_scram(c: &ScramCredentials) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&c.iterations.to_be_bytes());
    out.push(c.salt.len() as u8);
    out.extend_from_slice(&c.salt);
    out.extend_from_slice(&c.stored_key);
    out.extend_from_slice(&c.server_key);
    out
}

fn decode_scram(hash: ScramHash, b: &[u8]) -> Option<ScramCredentials> {
    let iterations = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    let salt_len = usize::from(*b.get(4)?);
    let salt = b.get(5..5 + salt_len)?.to_vec();
    let n = hash.output_len();
    let rest = b.get(5 + salt_len..)?;
    if rest.len() != 2 * n {
        return None;
    }
    Some(ScramCredentials {
        hash,
        salt,
        iterations,
        stored_key: rest[..n].to_vec(),
        server_key: rest[n..].to_vec(),
    })
}

/// Decodes stored bytes of `kind`.
pub fn decode(kind: CredentialKind, b: &[u8]) -> Option<StoredCredentials> {
    match kind {
        CredentialKind::ScramSha1 => decode_scram(ScramHash::Sha1, b).map(StoredCredentials::Scram),
        CredentialKind::ScramSha256 => {
            decode_scram(ScramHash::Sha256, b).map(StoredCredentials::Scram)
        }
        CredentialKind::CramMd5 => {
            CramMd5Credentials::from_bytes(b).map(StoredCredentials::CramMd5)
        }
    }
}

/// Whether `password` matches the stored SCRAM-SHA-256 credentials.
pub fn check_password(stored_scram256: &[u8], password: &str) -> bool {
    let Some(c) = decode_scram(ScramHash::Sha256, stored_scram256) else {
        return false;
    };
    let d = derive_scram(ScramHash::Sha256, password, &c.salt, c.iterations);
    constant_time_eq(&d.stored_key, &c.stored_key)
}

/// Compares without an early exit, so timing does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_check() {
        let all = derive_all("testtest", b"0123456789abcdef");
        let s256 = &all.iter().find(|(k, _)| k == "scram-sha-256").unwrap().1;
        assert!(check_password(s256, "testtest"));
        assert!(!check_password(s256, "testtesx"));
        assert!(!check_password(b"garbage", "testtest"));
        for (k, kind) in [
            ("scram-sha-1", CredentialKind::ScramSha1),
            ("cram-md5", CredentialKind::CramMd5),
        ] {
            let b = &all.iter().find(|(n, _)| n == k).unwrap().1;
            assert!(decode(kind, b).is_some(), "{k}");
        }
    }
}
