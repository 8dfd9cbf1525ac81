//! JSON Web Signatures for ACME (RFC 8555 6.2, RFC 7515): the protected header, the
//! signing input, the flattened JSON body, the account key's JWK and its thumbprint
//! (RFC 7638). The signature itself is made by the caller (an effect): core has no
//! randomness, and ECDSA needs some.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// base64url without padding (RFC 8555 6.1).
pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// The public half of a P-256 account key, for `ES256` signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountKey {
    x: Vec<u8>,
    y: Vec<u8>,
}

impl AccountKey {
    /// From the uncompressed SEC1 point (`04 || X || Y`, 65 bytes), as ring's
    /// `EcdsaKeyPair::public_key` gives it. `None` for anything else.
    pub fn from_uncompressed(point: &[u8]) -> Option<AccountKey> {
        if point.len() != 65 || point[0] != 4 {
            return None;
        }
        Some(AccountKey {
            x: point[1..33].to_vec(),
            y: point[33..].to_vec(),
        })
    }

    /// The JWK (RFC 7517) as JSON text, members in lexicographic order without
    /// whitespace: the form the thumbprint hashes (RFC 7638 3.2).
    pub fn jwk(&self) -> String {
        format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            b64(&self.x),
            b64(&self.y)
        )
    }

    /// The JWK thumbprint, base64url of SHA-256 of [`AccountKey::jwk`] (RFC 7638).
    pub fn thumbprint(&self) -> String {
        b64(ring::digest::digest(&ring::digest::SHA256, self.jwk().as_bytes()).as_ref())
    }

    /// The key authorization of a challenge token (RFC 8555 8.1).
    pub fn key_authorization(&self, token: &str) -> String {
        format!("{token}.{}", self.thumbprint())
    }
}

/// How the signer is named in the protected header.
#[derive(Clone, Copy, Debug)]
pub enum Signer<'a> {
    /// The public key itself (newAccount).
    Jwk(&'a AccountKey),
    /// The account URL (every other request).
    Kid(&'a str),
}

/// A request waiting for its signature: the two encoded parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsigned {
    /// base64url of the protected header.
    pub protected: String,
    /// base64url of the payload; empty for POST-as-GET.
    pub payload: String,
}

impl Unsigned {
    /// The encoded header and payload of a request to `url` with `nonce`.
    pub fn new(signer: Signer<'_>, nonce: &str, url: &str, payload: &str) -> Unsigned {
        let who = match signer {
            Signer::Jwk(k) => format!(r#""jwk":{}"#, k.jwk()),
            Signer::Kid(kid) => format!(r#""kid":{}"#, json_string(kid)),
        };
        let header = format!(
            r#"{{"alg":"ES256",{who},"nonce":{},"url":{}}}"#,
            json_string(nonce),
            json_string(url)
        );
        Unsigned {
            protected: b64(header.as_bytes()),
            payload: b64(payload.as_bytes()),
        }
    }

    /// The bytes to sign: `protected "." payload` (RFC 7515 5.1).
    pub fn signing_input(&self) -> Vec<u8> {
        format!("{}.{}", self.protected, self.payload).into_bytes()
    }

    /// The flattened JWS JSON body with the signature (`r || s`, 64 bytes for ES256).
    pub fn body(&self, signature: &[u8]) -> Vec<u8> {
        format!(
            r#"{{"protected":"{}","payload":"{}","signature":"{}"}}"#,
            self.protected,
            self.payload,
            b64(signature)
        )
        .into_bytes()
    }
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}
