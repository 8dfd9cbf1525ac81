//! Keys and the signature primitives: Ed25519 through `ed25519-dalek`, RSA and the hashes
//! through `ring`.
//!
//! Why ring and not the `rsa` crate for RSA signing: the `rsa` crate's private-key operation
//! has a known timing side channel (RUSTSEC-2023-0071, "Marvin"); ring's RSA signing is
//! constant-time and blinded, and ring is already in the tree for rustls. ring cannot
//! generate RSA keys, so RSA key generation is left to the binary (the `rsa` crate); ring's
//! RSA signing wants a `SecureRandom` for blinding (the signature itself is deterministic),
//! which the caller passes in because core has no source of OS randomness.
//!
//! Ed25519 (RFC 8463) goes through `ed25519-dalek`, as the design names: signing is
//! deterministic, and verification is strict (non-canonical signatures and small-order
//! public keys are refused, as libsodium, which dkimpy uses, refuses them).

use std::sync::Arc;

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use ring::signature::{self, KeyPair as _};

use super::sig::{Algorithm, KeyType};

/// Why a key could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The PEM armour is missing or its base64 is broken.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// The DER is not a key we accept (PKCS#8 RSA or Ed25519, PKCS#1 RSA).
    #[error("key rejected: {0}")]
    Rejected(String),
}

/// A private key for signing. Cheap to clone.
#[derive(Clone, Debug)]
pub enum SigningKey {
    /// An Ed25519 key (RFC 8463).
    Ed25519(Arc<ed25519_dalek::SigningKey>),
    /// An RSA key (rsa-sha256).
    Rsa(Arc<signature::RsaKeyPair>),
}

/// PKCS#8 v1 prefix for an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// id-Ed25519 (RFC 8410): OID 1.3.101.112.
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// The 32-byte seed of a PKCS#8 Ed25519 private key (RFC 8410: version 1, or version 2 with
/// the public key, which must then match); `None` when the DER is not one.
fn ed25519_seed_from_pkcs8(der: &[u8]) -> Result<Option<[u8; 32]>, KeyError> {
    let Some((0x30, body, b"")) = der_read(der) else {
        return Ok(None);
    };
    let Some((0x02, version, rest)) = der_read(body) else {
        return Ok(None);
    };
    let Some((0x30, alg, rest)) = der_read(rest) else {
        return Ok(None);
    };
    // RFC 8410 3: the parameters are absent.
    if alg != ED25519_OID {
        return Ok(None);
    }
    let bad = |why: &str| KeyError::Rejected(format!("Ed25519 PKCS#8: {why}"));
    if version != [0] && version != [1] {
        return Err(bad("unknown version"));
    }
    let (tag, key, mut rest) = der_read(rest).ok_or_else(|| bad("no private key"))?;
    if tag != 0x04 {
        return Err(bad("private key not an OCTET STRING"));
    }
    // CurvePrivateKey ::= OCTET STRING (the seed), inside the privateKey OCTET STRING.
    let seed: [u8; 32] = match der_read(key) {
        Some((0x04, seed, b"")) => seed.try_into().map_err(|_| bad("seed not 32 bytes"))?,
        _ => return Err(bad("bad CurvePrivateKey")),
    };
    let mut public = None;
    while !rest.is_empty() {
        let (tag, content, more) = der_read(rest).ok_or_else(|| bad("trailing garbage"))?;
        match tag {
            // [0] attributes: ignored.
            0xa0 => {}
            // [1] publicKey (version 2): a BIT STRING without unused bits.
            0x81 if version == [1] => match content.split_first() {
                Some((0, key)) => public = Some(key),
                _ => return Err(bad("bad public key")),
            },
            _ => return Err(bad("unexpected field")),
        }
        rest = more;
    }
    if let Some(p) = public {
        let derived = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        if p != derived.as_bytes() {
            return Err(bad("public key does not match the private key"));
        }
    }
    Ok(Some(seed))
}

/// The PKCS#8 document (DER) for an Ed25519 private key from its 32-byte seed, for storing
/// a generated key.
pub fn ed25519_pkcs8_from_seed(seed: &[u8; 32]) -> Vec<u8> {
    let mut v = ED25519_PKCS8_PREFIX.to_vec();
    v.extend_from_slice(seed);
    v
}

/// Wraps DER in PEM armour with the given label (`PRIVATE KEY`).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// The DER inside the first PEM block, and its label.
pub fn pem_decode(pem: &str) -> Result<(String, Vec<u8>), KeyError> {
    let start = pem
        .find("-----BEGIN ")
        .ok_or_else(|| KeyError::Pem("no BEGIN line".into()))?;
    let rest = &pem[start + 11..];
    let label_end = rest
        .find("-----")
        .ok_or_else(|| KeyError::Pem("bad BEGIN line".into()))?;
    let label = rest[..label_end].to_string();
    let body = &rest[label_end + 5..];
    let end = body
        .find("-----END ")
        .ok_or_else(|| KeyError::Pem("no END line".into()))?;
    let b: String = body[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b)
        .map_err(|e| KeyError::Pem(e.to_string()))?;
    Ok((label, der))
}

impl SigningKey {
    /// An Ed25519 key from a 32-byte seed (key generation: the caller draws the seed from
    /// the operating system's random source).
    pub fn ed25519_from_seed(seed: &[u8; 32]) -> Result<SigningKey, KeyError> {
        Ok(SigningKey::Ed25519(Arc::new(
            ed25519_dalek::SigningKey::from_bytes(seed),
        )))
    }

    /// A key from DER: PKCS#8 (RSA or Ed25519) or PKCS#1 `RSAPrivateKey`.
    pub fn from_der(der: &[u8]) -> Result<SigningKey, KeyError> {
        if let Some(seed) = ed25519_seed_from_pkcs8(der)? {
            return Self::ed25519_from_seed(&seed);
        }
        match signature::RsaKeyPair::from_pkcs8(der) {
            Ok(k) => Ok(SigningKey::Rsa(Arc::new(k))),
            Err(_) => signature::RsaKeyPair::from_der(der)
                .map(|k| SigningKey::Rsa(Arc::new(k)))
                .map_err(|e| KeyError::Rejected(e.to_string())),
        }
    }

    /// A key from PEM (`PRIVATE KEY` or `RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        let (_, der) = pem_decode(pem)?;
        Self::from_der(&der)
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            SigningKey::Ed25519(_) => Algorithm::Ed25519Sha256,
            SigningKey::Rsa(_) => Algorithm::RsaSha256,
        }
    }

    /// The public key as it goes in `p=`: SubjectPublicKeyInfo DER for RSA, the raw 32
    /// bytes for Ed25519.
    pub fn public_key_bytes(&self) -> Vec<u8> {
        match self {
            SigningKey::Ed25519(k) => k.verifying_key().to_bytes().to_vec(),
            SigningKey::Rsa(k) => rsa_spki(k.public_key().as_ref()),
        }
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`.
    pub fn dns_record(&self) -> String {
        let k = match self {
            SigningKey::Ed25519(_) => "ed25519",
            SigningKey::Rsa(_) => "rsa",
        };
        let p = base64::engine::general_purpose::STANDARD.encode(self.public_key_bytes());
        format!("v=DKIM1; k={k}; p={p}")
    }

    /// Signs `data` (the bytes to be hashed, not a hash).
    pub(crate) fn sign(
        &self,
        data: &[u8],
        rng: &dyn ring::rand::SecureRandom,
    ) -> Result<Vec<u8>, KeyError> {
        match self {
            // RFC 8463 3: Ed25519 (PureEdDSA) signs the SHA-256 hash of the data.
            SigningKey::Ed25519(k) => Ok(k
                .sign(&digest(Algorithm::Ed25519Sha256, data))
                .to_bytes()
                .to_vec()),
            SigningKey::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, rng, data, &mut sig)
                    .map_err(|_| KeyError::Rejected("RSA signing failed".into()))?;
                Ok(sig)
            }
        }
    }
}

/// DER length bytes.
fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    der_len(content.len(), &mut v);
    v.extend_from_slice(content);
    v
}

/// rsaEncryption AlgorithmIdentifier: SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }.
const RSA_ALG_ID: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

fn rsa_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(rsa_public_key);
    let mut content = RSA_ALG_ID.to_vec();
    content.extend(der_tlv(0x03, &bits));
    der_tlv(0x30, &content)
}

/// A minimal DER reader: one TLV from `b`, returning (tag, content, rest).
fn der_read(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = if l0 < 0x80 {
        (usize::from(l0), rest)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &x in &rest[..n] {
            len = (len << 8) | usize::from(x);
        }
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The `RSAPublicKey` DER and the modulus size in bits, from `p=`: either a
/// SubjectPublicKeyInfo with rsaEncryption (what RFC 6376 specifies) or a bare PKCS#1
/// `RSAPublicKey` (which some publish and dkimpy accepts).
pub(crate) fn rsa_public_key(p: &[u8]) -> Option<(&[u8], usize)> {
    let (tag, content, rest) = der_read(p)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (t1, c1, after1) = der_read(content)?;
    let rsa_der = if t1 == 0x30 {
        // SPKI: AlgorithmIdentifier then BIT STRING.
        if c1.get(..11) != Some(&RSA_ALG_ID[2..13]) {
            return None;
        }
        let (t2, bits, tail) = der_read(after1)?;
        if t2 != 0x03 || !tail.is_empty() || bits.first() != Some(&0) {
            return None;
        }
        bits.get(1..)?
    } else {
        p
    };
    // RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }.
    let (t, seq, tail) = der_read(rsa_der)?;
    if t != 0x30 || !tail.is_empty() {
        return None;
    }
    let (tn, n, _) = der_read(seq)?;
    if tn != 0x02 {
        return None;
    }
    let lead = n.iter().take_while(|&&b| b == 0).count();
    let n = &n[lead..];
    let bits = match n.first() {
        Some(&top) => n.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    };
    Some((rsa_der, bits))
}

/// Why a signature did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VerifyFail {
    /// The key is unusable for this algorithm.
    BadKey,
    /// The key is shorter than allowed.
    WeakKey(usize),
    /// The signature does not match.
    Mismatch,
}

/// Verifies `sig` over `data` with the key from a key record. Returns the key size in bits.
pub(crate) fn verify(
    alg: Algorithm,
    key_type: KeyType,
    public_key: &[u8],
    data: &[u8],
    sig: &[u8],
    min_rsa_bits: usize,
) -> Result<usize, VerifyFail> {
    if alg.key_type() != key_type {
        return Err(VerifyFail::BadKey);
    }
    match alg {
        Algorithm::Ed25519Sha256 => {
            let key: &[u8; 32] = public_key.try_into().map_err(|_| VerifyFail::BadKey)?;
            let key =
                ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| VerifyFail::BadKey)?;
            // A small-order key would make "signatures" that verify for many messages.
            if key.is_weak() {
                return Err(VerifyFail::BadKey);
            }
            let sig =
                ed25519_dalek::Signature::from_slice(sig).map_err(|_| VerifyFail::Mismatch)?;
            // RFC 8463 3: the signature is over the SHA-256 hash of the data.
            key.verify_strict(&digest(alg, data), &sig)
                .map_err(|_| VerifyFail::Mismatch)?;
            Ok(256)
        }
        Algorithm::RsaSha256 | Algorithm::RsaSha1 => {
            let (der, bits) = rsa_public_key(public_key).ok_or(VerifyFail::BadKey)?;
            if bits < min_rsa_bits.max(1024) {
                return Err(VerifyFail::WeakKey(bits));
            }
            if bits > 8192 {
                return Err(VerifyFail::BadKey);
            }
            let params = if alg == Algorithm::RsaSha1 {
                &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY
            } else {
                &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY
            };
            signature::UnparsedPublicKey::new(params, der)
                .verify(data, sig)
                .map_err(|_| VerifyFail::Mismatch)?;
            Ok(bits)
        }
    }
}

/// Hash for the body hash.
pub(crate) fn digest(alg: Algorithm, data: &[u8]) -> Vec<u8> {
    let a = match alg {
        Algorithm::RsaSha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        _ => &ring::digest::SHA256,
    };
    ring::digest::digest(a, data).as_ref().to_vec()
}

/// The body hash of `body` in canonical form `c`, streamed into the digest (nothing the
/// size of the body is allocated); with `limit` (the `l=` tag) only that many canonical
/// octets, `None` when the canonical body is shorter.
pub(crate) fn body_digest(
    alg: Algorithm,
    c: super::canon::Canon,
    body: &[u8],
    limit: Option<usize>,
) -> Option<Vec<u8>> {
    let a = match alg {
        Algorithm::RsaSha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        _ => &ring::digest::SHA256,
    };
    let mut ctx = ring::digest::Context::new(a);
    let mut left = limit.unwrap_or(usize::MAX);
    super::canon::canon_body_into(c, body, &mut |b| {
        let n = b.len().min(left);
        ctx.update(&b[..n]);
        left -= n;
    });
    if limit.is_some() && left > 0 {
        return None;
    }
    Some(ctx.finish().as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_seed_and_record() {
        // RFC 8032 7.1 test 1.
        let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode("nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
            .unwrap()
            .try_into()
            .unwrap();
        let k = SigningKey::ed25519_from_seed(&seed).unwrap();
        assert_eq!(
            k.dns_record(),
            "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
        );
        let pem = pem_encode("PRIVATE KEY", &ed25519_pkcs8_from_seed(&seed));
        assert_eq!(
            SigningKey::from_pem(&pem).unwrap().public_key_bytes(),
            k.public_key_bytes()
        );
    }

    /// Ed25519 keys went through ring, which the design card replaces with ed25519-dalek:
    /// the PKCS#8 forms ring read (version 1, and version 2 with the public key, RFC 8410)
    /// must still be read, and a version 2 key whose public key is not the private key's
    /// refused.
    #[test]
    fn ed25519_pkcs8_forms() {
        // RFC 8410 10.3: version 2 with an attribute and the public key.
        let rfc = "-----BEGIN PRIVATE KEY-----\n\
            MHICAQEwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
            oB8wHQYKKoZIhvcNAQkJFDEPDA1DdXJkbGUgQ2hhaXJzgSEAGb9ECWmEzf6FQbrB\n\
            Z9w7lshQhqowtrbLDFw4rXAxZuE=\n\
            -----END PRIVATE KEY-----\n";
        let k = SigningKey::from_pem(rfc).unwrap();
        assert!(matches!(k, SigningKey::Ed25519(_)));
        let (_, der) = pem_decode(rfc).unwrap();
        let public = k.public_key_bytes();
        assert_eq!(Some(&public[..]), der.get(der.len() - 32..));
        // Version 1 from the same seed: the same key.
        let seed: [u8; 32] = der[16..48].try_into().unwrap();
        let v1 = SigningKey::from_der(&ed25519_pkcs8_from_seed(&seed)).unwrap();
        assert_eq!(v1.public_key_bytes(), public);
        // ring's own version 2 form: 0x81 public key, no attributes.
        let mut v2 = vec![0x30, 0x51, 0x02, 0x01, 0x01];
        v2.extend_from_slice(&ed25519_pkcs8_from_seed(&seed)[5..]);
        v2.extend_from_slice(&[0x81, 0x21, 0x00]);
        v2.extend_from_slice(&public);
        assert_eq!(
            SigningKey::from_der(&v2).unwrap().public_key_bytes(),
            public
        );
        // Someone else's public key.
        let last = v2.len() - 1;
        v2[last] ^= 1;
        assert!(matches!(
            SigningKey::from_der(&v2),
            Err(KeyError::Rejected(_))
        ));
        // A seed of the wrong length.
        let mut short = ed25519_pkcs8_from_seed(&seed);
        short.pop();
        assert!(SigningKey::from_der(&short).is_err());
    }

    /// Signing is deterministic and verification strict: a signature verifies, one bit off
    /// does not, and a small-order public key (which would accept forged signatures) is an
    /// unusable key.
    #[test]
    fn ed25519_sign_verify() {
        let k = SigningKey::ed25519_from_seed(&[7; 32]).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let sig = k.sign(b"data", &rng).unwrap();
        assert_eq!(sig, k.sign(b"data", &rng).unwrap());
        let p = k.public_key_bytes();
        let v = |key: &[u8], data: &[u8], sig: &[u8]| {
            verify(
                Algorithm::Ed25519Sha256,
                KeyType::Ed25519,
                key,
                data,
                sig,
                1024,
            )
        };
        assert_eq!(v(&p, b"data", &sig), Ok(256));
        assert_eq!(v(&p, b"date", &sig), Err(VerifyFail::Mismatch));
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert_eq!(v(&p, b"data", &bad), Err(VerifyFail::Mismatch));
        assert_eq!(v(&p, b"data", &sig[..63]), Err(VerifyFail::Mismatch));
        assert_eq!(v(&p[..31], b"data", &sig), Err(VerifyFail::BadKey));
        // The identity point (small order).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(v(&identity, b"data", &sig), Err(VerifyFail::BadKey));
    }

    #[test]
    fn rsa_key_forms() {
        let d = format!(
            "{}/dkim-dkimpy/data/",
            super::super::test_vectors_dir().display()
        );
        let pem = std::fs::read_to_string(format!("{d}2048_testkey.key")).unwrap();
        let k = SigningKey::from_pem(&pem).unwrap();
        let rec = std::fs::read_to_string(format!("{d}2048_testkey_wo_markers.pub.txt")).unwrap();
        assert_eq!(k.dns_record(), rec.trim().replace("g=*; ", ""));
        let pem8 = std::fs::read_to_string(format!("{d}2048_testkey_PKCS8.key")).unwrap();
        assert!(matches!(
            SigningKey::from_pem(&pem8).unwrap(),
            SigningKey::Rsa(_)
        ));
        let spki = k.public_key_bytes();
        let (inner, bits) = rsa_public_key(&spki).unwrap();
        assert_eq!(bits, 2048);
        assert_eq!(rsa_public_key(inner).unwrap().1, 2048);
        // ring signs only with keys of 2048 bits or more; 1024-bit keys still verify.
        let small = std::fs::read_to_string(format!("{d}1024_testkey.key")).unwrap();
        assert!(SigningKey::from_pem(&small).is_err());
        assert!(rsa_public_key(&spki[..spki.len() - 1]).is_none());
        assert!(rsa_public_key(b"").is_none());
        assert!(SigningKey::from_pem("junk").is_err());
        assert!(SigningKey::from_der(b"\x30\x00").is_err());
    }
}
