//! CRAM-MD5 (RFC 2195) credentials and the keyed digest.
//!
//! The response is `username SP hex(HMAC-MD5(password, challenge))`. The server stores
//! only the two MD5 chaining states after absorbing `key XOR ipad` and `key XOR opad`
//! ([`CramMd5Credentials`]); from them it can compute the HMAC of any challenge without
//! knowing the password (the same idea as Dovecot's `CRAM-MD5` scheme).

use super::md5::{self, Md5, BLOCK_LEN};

/// The stored form of a CRAM-MD5 secret: the HMAC-MD5 inner and outer states.
///
/// These are password-equivalent for CRAM-MD5 (whoever has them can authenticate with
/// CRAM-MD5), but they do not reveal the password for other mechanisms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CramMd5Credentials {
    /// MD5 chaining state after the block `key XOR ipad`, as four little-endian words.
    pub inner: [u8; 16],
    /// MD5 chaining state after the block `key XOR opad`, as four little-endian words.
    pub outer: [u8; 16],
}

/// Length of [`CramMd5Credentials::to_bytes`].
pub const CRAM_MD5_CREDENTIALS_LEN: usize = 32;

fn state_to_bytes(state: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

fn bytes_to_state(bytes: &[u8; 16]) -> [u32; 4] {
    let mut state = [0u32; 4];
    for (word, chunk) in state.iter_mut().zip(bytes.chunks_exact(4)) {
        *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    state
}

impl CramMd5Credentials {
    /// The storage form: `inner || outer`, 32 bytes.
    pub fn to_bytes(&self) -> [u8; CRAM_MD5_CREDENTIALS_LEN] {
        let mut out = [0u8; CRAM_MD5_CREDENTIALS_LEN];
        out[..16].copy_from_slice(&self.inner);
        out[16..].copy_from_slice(&self.outer);
        out
    }

    /// Parses the storage form; `None` unless exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<CramMd5Credentials> {
        if bytes.len() != CRAM_MD5_CREDENTIALS_LEN {
            return None;
        }
        let mut inner = [0u8; 16];
        let mut outer = [0u8; 16];
        inner.copy_from_slice(bytes.get(..16)?);
        outer.copy_from_slice(bytes.get(16..)?);
        Some(CramMd5Credentials { inner, outer })
    }

    /// HMAC-MD5 of `message` under the password these credentials were derived from.
    pub fn hmac(&self, message: &[u8]) -> [u8; 16] {
        let mut inner = Md5::from_state(bytes_to_state(&self.inner), 1);
        inner.update(message);
        let inner_digest = inner.finish();
        let mut outer = Md5::from_state(bytes_to_state(&self.outer), 1);
        outer.update(&inner_digest);
        outer.finish()
    }
}

/// Derives the stored CRAM-MD5 credentials from a password (its UTF-8 bytes, as-is).
pub fn derive_cram_md5(password: &str) -> CramMd5Credentials {
    derive_from_bytes(password.as_bytes())
}

/// [`derive_cram_md5`] over raw key bytes.
fn derive_from_bytes(pw: &[u8]) -> CramMd5Credentials {
    let mut key = [0u8; BLOCK_LEN];
    if pw.len() > BLOCK_LEN {
        key[..16].copy_from_slice(&md5::digest(pw));
    } else {
        key[..pw.len()].copy_from_slice(pw);
    }
    let mut ipad = [0u8; BLOCK_LEN];
    let mut opad = [0u8; BLOCK_LEN];
    for ((i, o), k) in ipad.iter_mut().zip(opad.iter_mut()).zip(key) {
        *i = k ^ 0x36;
        *o = k ^ 0x5c;
    }
    let mut inner = Md5::new();
    inner.update(&ipad);
    let mut outer = Md5::new();
    outer.update(&opad);
    CramMd5Credentials {
        inner: state_to_bytes(inner.state()),
        outer: state_to_bytes(outer.state()),
    }
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Parses exactly 32 hex digits (either case) into 16 bytes.
pub(crate) fn parse_hex_digest(s: &[u8]) -> Option<[u8; 16]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 2195 section 2 (sasl_vectors.json "CRAM-MD5").
    #[test]
    fn rfc2195_example() {
        let creds = derive_cram_md5("tanstaaftanstaaf");
        let mac = creds.hmac(b"<1896.697170952@postoffice.reston.mci.net>");
        assert_eq!(hex(&mac), "b913a602c7eda7a495b4e6e7334d3890");
    }

    /// RFC 2104 / RFC 2202 HMAC-MD5 test cases, including a key longer than a block.
    #[test]
    fn rfc2202_hmac_md5() {
        let cases: &[(&[u8], &[u8], &str)] = &[
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "750c783e6ab0b503eaa86e310a5db738",
            ),
            (
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd",
            ),
            (
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
                "6f630fad67cda0ee1fb1f562db3aa53e",
            ),
        ];
        for (key, data, want) in cases {
            assert_eq!(hex(&derive_from_bytes(key).hmac(data)), *want);
        }
    }

    #[test]
    fn storage_round_trip_and_length() {
        let c = derive_cram_md5("secret");
        let b = c.to_bytes();
        assert_eq!(CramMd5Credentials::from_bytes(&b), Some(c));
        assert_eq!(CramMd5Credentials::from_bytes(&b[..31]), None);
        assert_eq!(CramMd5Credentials::from_bytes(&[0; 33]), None);
    }

    #[test]
    fn long_password_is_hashed_first() {
        let long = "x".repeat(100);
        let hashed = md5::digest(long.as_bytes());
        // The HMAC with the long key equals the HMAC keyed with its MD5.
        let mut k = [0u8; 64];
        k[..16].copy_from_slice(&hashed);
        let mut inner = Md5::new();
        inner.update(&k.map(|b| b ^ 0x36));
        inner.update(b"msg");
        let i = inner.finish();
        let mut outer = Md5::new();
        outer.update(&k.map(|b| b ^ 0x5c));
        outer.update(&i);
        assert_eq!(derive_cram_md5(&long).hmac(b"msg"), outer.finish());
    }

    #[test]
    fn hex_parse_table() {
        let ok = "b913a602c7eda7a495b4e6e7334d3890";
        assert_eq!(
            parse_hex_digest(ok.as_bytes()).map(|d| hex(&d)),
            Some(ok.into())
        );
        assert_eq!(
            parse_hex_digest(ok.to_uppercase().as_bytes()).map(|d| hex(&d)),
            Some(ok.into())
        );
        for bad in [
            "",
            "b913",
            "g913a602c7eda7a495b4e6e7334d3890",
            &format!("{ok}0"),
        ] {
            assert_eq!(parse_hex_digest(bad.as_bytes()), None, "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The stored states give the same HMAC as a direct HMAC-MD5 over the password.
        #[test]
        fn states_equal_direct_hmac(pw in "[ -~]{0,80}", msg in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut key = [0u8; 64];
            if pw.len() > 64 {
                key[..16].copy_from_slice(&md5::digest(pw.as_bytes()));
            } else {
                key[..pw.len()].copy_from_slice(pw.as_bytes());
            }
            let mut inner = Md5::new();
            inner.update(&key.map(|b| b ^ 0x36));
            inner.update(&msg);
            let i = inner.finish();
            let mut outer = Md5::new();
            outer.update(&key.map(|b| b ^ 0x5c));
            outer.update(&i);
            prop_assert_eq!(derive_cram_md5(&pw).hmac(&msg), outer.finish());
        }
    }
}
