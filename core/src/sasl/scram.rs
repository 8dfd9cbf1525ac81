//! SCRAM (RFC 5802, RFC 7677) credentials, key derivation and message grammar helpers
//! shared by the server and client sides.
//!
//! Passwords are used as their UTF-8 bytes without SASLprep (RFC 4013) normalisation. For
//! ASCII passwords this is what SASLprep gives as well; a non-ASCII password interoperates
//! with other implementations only if it is already in NFKC form and contains none of the
//! characters SASLprep maps (non-ASCII spaces, soft hyphen, zero-width characters). rmox
//! derives and checks with the same code on both sides, so rmox-to-rmox always agrees.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;

/// The hash function of a SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SHA-1 (SCRAM-SHA-1, SCRAM-SHA-1-PLUS).
    Sha1,
    /// SHA-256 (SCRAM-SHA-256, SCRAM-SHA-256-PLUS).
    Sha256,
}

impl ScramHash {
    /// Output length of the hash in bytes (20 or 32).
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => digest::SHA1_OUTPUT_LEN,
            ScramHash::Sha256 => digest::SHA256_OUTPUT_LEN,
        }
    }

    fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => hmac::HMAC_SHA256,
        }
    }

    fn digest_alg(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => &digest::SHA256,
        }
    }

    fn pbkdf2_alg(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha1 => pbkdf2::PBKDF2_HMAC_SHA1,
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        }
    }

    /// `HMAC(key, data)`.
    pub(crate) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(self.hmac_alg(), key);
        hmac::sign(&key, data).as_ref().to_vec()
    }

    /// `H(data)`.
    pub(crate) fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest_alg(), data).as_ref().to_vec()
    }

    /// `Hi(password, salt, iterations)` (PBKDF2 with this hash); 0 iterations counts as 1.
    pub(crate) fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        pbkdf2::derive(self.pbkdf2_alg(), iterations, salt, password, &mut out);
        out
    }
}

/// Iteration count used by [`derive_scram`] callers that have no policy of their own, and
/// for the fake credentials of unknown users (RFC 7677 asks for at least 4096).
pub const SCRAM_DEFAULT_ITERATIONS: u32 = 4096;

/// What a server stores for one user and one SCRAM hash: never the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredentials {
    /// The hash these keys belong to.
    pub hash: ScramHash,
    /// The salt (raw bytes; sent base64-encoded).
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

/// The keys derived from a salted password.
pub(crate) struct Keys {
    pub(crate) client_key: Vec<u8>,
    pub(crate) stored_key: Vec<u8>,
    pub(crate) server_key: Vec<u8>,
}

pub(crate) fn keys(hash: ScramHash, salted_password: &[u8]) -> Keys {
    let client_key = hash.hmac(salted_password, b"Client Key");
    let stored_key = hash.hash(&client_key);
    let server_key = hash.hmac(salted_password, b"Server Key");
    Keys {
        client_key,
        stored_key,
        server_key,
    }
}

/// Derives the stored SCRAM credentials from a password (its UTF-8 bytes, no SASLprep; see
/// the module documentation). An iteration count of 0 is treated (and stored) as 1.
pub fn derive_scram(
    hash: ScramHash,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> ScramCredentials {
    let iterations = iterations.max(1);
    let salted = hash.salted_password(password.as_bytes(), salt, iterations);
    let k = keys(hash, &salted);
    ScramCredentials {
        hash,
        salt: salt.to_vec(),
        iterations,
        stored_key: k.stored_key,
        server_key: k.server_key,
    }
}

/// Constant-time equality of two byte strings (the length is not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0
}

/// `a XOR b` (same length by construction).
pub(crate) fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

pub(crate) fn b64_encode(data: &[u8]) -> String {
    B64.encode(data)
}

pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    B64.decode(s).ok()
}

/// Escapes a user name for `n=`/`a=`: `,` to `=2C` and `=` to `=3D`.
pub(crate) fn encode_saslname(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            ',' => out.push_str("=2C"),
            '=' => out.push_str("=3D"),
            c => out.push(c),
        }
    }
    out
}

/// Unescapes a `saslname`; `None` on an empty name, a bare `=` or a NUL.
pub(crate) fn decode_saslname(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('=') {
        out.push_str(rest.get(..pos)?);
        let esc = rest.get(pos..pos + 3)?;
        match esc {
            "=2C" | "=2c" => out.push(','),
            "=3D" | "=3d" => out.push('='),
            _ => return None,
        }
        rest = rest.get(pos + 3..)?;
    }
    out.push_str(rest);
    if out.contains('\0') {
        return None;
    }
    Some(out)
}

/// A nonce is non-empty printable ASCII except `,` (RFC 5802 `printable`).
pub(crate) fn valid_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// An attribute `x=value` with a single ALPHA name; returns (name, value).
pub(crate) fn attr(field: &str) -> Option<(u8, &str)> {
    let bytes = field.as_bytes();
    match bytes {
        [name, b'=', ..] if name.is_ascii_alphabetic() => Some((*name, field.get(2..)?)),
        _ => None,
    }
}

/// The value of attribute `name` in `field`, or `None`.
pub(crate) fn expect_attr(field: Option<&str>, name: u8) -> Option<&str> {
    match attr(field?) {
        Some((n, v)) if n == name => Some(v),
        _ => None,
    }
}

/// Every remaining field is a well-formed extension attribute (values are ignored).
pub(crate) fn valid_extensions<'a>(mut fields: impl Iterator<Item = &'a str>) -> bool {
    fields.all(|f| attr(f).is_some())
}

/// `ClientSignature = HMAC(StoredKey, AuthMessage)`; the proof is `ClientKey XOR` that.
pub(crate) fn client_signature(hash: ScramHash, stored_key: &[u8], auth_message: &[u8]) -> Vec<u8> {
    hash.hmac(stored_key, auth_message)
}

/// `ServerSignature = HMAC(ServerKey, AuthMessage)`.
pub(crate) fn server_signature(hash: ScramHash, server_key: &[u8], auth_message: &[u8]) -> Vec<u8> {
    hash.hmac(server_key, auth_message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// sasl_vectors.json: salted password, StoredKey and ServerKey of both RFC examples.
    #[test]
    fn rfc_derived_keys() {
        let cases = [
            (
                ScramHash::Sha1,
                "QSXCR+Q6sek8bf92",
                "1d96ee3a529b5a5f9e47c01f229a2cb8a6e15f7d",
                "6dlGYMOdZcOPutkcNY8U2g7vK9Y=",
                "D+CSWLOshSulAsxiupA+qs2/fTE=",
            ),
            (
                ScramHash::Sha256,
                "W22ZaJ0SNY7soEsUEjb6gQ==",
                "c4a49510323ab4f952cac1fa99441939e78ea74d6be81ddf7096e87513dc615d",
                "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
                "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            ),
        ];
        for (hash, salt, salted_hex, stored, server) in cases {
            let salt = b64_decode(salt).unwrap();
            assert_eq!(
                hex(&hash.salted_password(b"pencil", &salt, 4096)),
                salted_hex
            );
            let c = derive_scram(hash, "pencil", &salt, 4096);
            assert_eq!(b64_encode(&c.stored_key), stored, "{hash:?}");
            assert_eq!(b64_encode(&c.server_key), server, "{hash:?}");
            assert_eq!(c.iterations, 4096);
            assert_eq!(c.salt, salt);
        }
    }

    #[test]
    fn zero_iterations_stored_as_one() {
        let c = derive_scram(ScramHash::Sha256, "pw", b"salt", 0);
        assert_eq!(c.iterations, 1);
        assert_eq!(c, derive_scram(ScramHash::Sha256, "pw", b"salt", 1));
    }

    #[test]
    fn saslname_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("user", Some("user")),
            ("a=2Cb", Some("a,b")),
            ("a=3Db", Some("a=b")),
            ("=2C=3D", Some(",=")),
            ("a=2cb", Some("a,b")),
            ("", None),
            ("a=b", None),
            ("a=", None),
            ("a=2", None),
            ("a=41", None),
            ("a\0b", None),
            ("ü=3D", Some("ü=")),
        ];
        for (input, want) in cases {
            assert_eq!(decode_saslname(input).as_deref(), *want, "{input:?}");
        }
    }

    #[test]
    fn nonce_and_attr_table() {
        assert!(valid_nonce("fyko+d2lbbFgONRv9qkxdawL"));
        assert!(!valid_nonce(""));
        assert!(!valid_nonce("a,b"));
        assert!(!valid_nonce("a b"));
        assert!(!valid_nonce("é"));
        assert_eq!(attr("r=abc"), Some((b'r', "abc")));
        assert_eq!(attr("r="), Some((b'r', "")));
        assert_eq!(attr("rr=abc"), None);
        assert_eq!(attr("1=abc"), None);
        assert_eq!(attr("r"), None);
        assert_eq!(attr(""), None);
        assert_eq!(expect_attr(Some("s=x"), b's'), Some("x"));
        assert_eq!(expect_attr(Some("s=x"), b'i'), None);
        assert_eq!(expect_attr(None, b'i'), None);
    }

    #[test]
    fn ct_eq_table() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn saslname_round_trip(name in "[^\u{0}]{1,40}") {
            prop_assert_eq!(decode_saslname(&encode_saslname(&name)), Some(name));
        }

        #[test]
        fn saslname_never_panics(s in ".{0,40}") {
            let _ = decode_saslname(&s);
        }
    }
}
