//! DKIM signing.

use std::time::Duration;

use base64::Engine as _;

use super::canon::{canon_header, relaxed_header_no_crlf, split_message, Canon, HeaderError};
use super::crypto::{self, KeyError, SigningKey};
use super::sig::{valid_dns_name, Canonicalization};
use crate::time::UnixTime;

/// Header fields signed by default (each instance present in the message).
pub const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Subject",
    "Date",
    "Message-Id",
    "In-Reply-To",
    "References",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Header fields oversigned by default: signed once more than they occur, so that an
/// added instance breaks the signature.
pub const DEFAULT_OVERSIGN: &[&str] = &["From", "To", "Cc", "Reply-To", "Subject", "Date"];

/// One signature to add.
#[derive(Clone, Debug)]
pub struct SignConfig {
    /// `d=`, lower-case ASCII.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// The private key; its type decides `a=`.
    pub key: SigningKey,
    /// Header fields to sign (must include From).
    pub headers: Vec<String>,
    /// Header fields to oversign (a subset of `headers` makes sense).
    pub oversign: Vec<String>,
    /// `c=`.
    pub canonicalization: Canonicalization,
    /// `x=` is `t=` plus this, if set.
    pub expiry: Option<Duration>,
}

impl SignConfig {
    /// A config with the default header lists, relaxed/relaxed and no expiry.
    pub fn new(domain: &str, selector: &str, key: SigningKey) -> SignConfig {
        SignConfig {
            domain: domain.to_ascii_lowercase(),
            selector: selector.to_ascii_lowercase(),
            key,
            headers: DEFAULT_HEADERS.iter().map(|s| s.to_string()).collect(),
            oversign: DEFAULT_OVERSIGN.iter().map(|s| s.to_string()).collect(),
            canonicalization: Canonicalization::RELAXED,
            expiry: None,
        }
    }
}

/// Why a message could not be signed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The message header could not be split into fields.
    #[error("malformed message header: {0}")]
    Header(#[from] HeaderError),
    /// The message has no From field, or From is not in the header list.
    #[error("message has no From header field, or From is not signed")]
    NoFrom,
    /// The domain or selector is not a valid DNS name.
    #[error("bad domain or selector {0:?}")]
    BadName(String),
    /// The key failed to sign.
    #[error("key: {0}")]
    Key(#[from] KeyError),
}

/// Folds `tokens` into header lines of about 78 bytes (CRLF + TAB continuation).
fn fold(out: &mut String, line_len: &mut usize, token: &str, space_before: bool) {
    let need = token.len() + usize::from(space_before);
    if *line_len + need > 78 && *line_len > 1 {
        out.push_str("\r\n\t");
        *line_len = 1;
    } else if space_before {
        out.push(' ');
        *line_len += 1;
    }
    out.push_str(token);
    *line_len += token.len();
}

/// Signs `message` (CRLF line endings) once per config and returns the DKIM-Signature
/// header fields to prepend, each ending in CRLF, in config order. `rng` blinds the RSA
/// operation (ring requires it; the signature does not depend on it): pass
/// `ring::rand::SystemRandom` from the runtime.
pub fn sign(
    message: &[u8],
    configs: &[SignConfig],
    now: UnixTime,
    rng: &dyn ring::rand::SecureRandom,
) -> Result<String, SignError> {
    let split = split_message(message)?;
    let body = message.get(split.body_start..).unwrap_or(&[]);
    sign_split(message, &split, body, configs, now, rng)
}

/// [`sign`] for a message given as its header section (through the empty line) and its
/// body apart: a spooled message's header is copied into memory, its body is read where it
/// is (a memory map).
pub fn sign_parts(
    header: &[u8],
    body: &[u8],
    configs: &[SignConfig],
    now: UnixTime,
    rng: &dyn ring::rand::SecureRandom,
) -> Result<String, SignError> {
    let split = split_message(header)?;
    sign_split(header, &split, body, configs, now, rng)
}

fn sign_split(
    message: &[u8],
    split: &super::canon::SplitMessage,
    body: &[u8],
    configs: &[SignConfig],
    now: UnixTime,
    rng: &dyn ring::rand::SecureRandom,
) -> Result<String, SignError> {
    let name_of = |i: usize| {
        split
            .fields
            .get(i)
            .and_then(|f| message.get(f.name.clone()))
            .unwrap_or(&[])
    };
    let count = |n: &str| {
        (0..split.fields.len())
            .filter(|&i| name_of(i).eq_ignore_ascii_case(n.as_bytes()))
            .count()
    };
    let mut out = String::new();
    for c in configs {
        if !valid_dns_name(&c.domain) || !c.domain.is_ascii() {
            return Err(SignError::BadName(c.domain.clone()));
        }
        if !valid_dns_name(&c.selector) || !c.selector.is_ascii() {
            return Err(SignError::BadName(c.selector.clone()));
        }
        if count("From") == 0 || !c.headers.iter().any(|h| h.eq_ignore_ascii_case("from")) {
            return Err(SignError::NoFrom);
        }
        let alg = c.key.algorithm();
        let mut names: Vec<&str> = Vec::new();
        for h in &c.headers {
            if names.iter().any(|n| n.eq_ignore_ascii_case(h)) {
                continue;
            }
            let n = count(h);
            let over = c.oversign.iter().any(|o| o.eq_ignore_ascii_case(h));
            for _ in 0..n + usize::from(over) {
                names.push(h);
            }
        }
        // Streamed: a large (spooled) body is read, not copied. Without a limit there is
        // always a hash.
        let bh = crypto::body_digest(alg, c.canonicalization.body, body, None).unwrap_or_default();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);

        let mut hdr = String::from("DKIM-Signature:");
        let mut line_len = hdr.len();
        let mut tags: Vec<String> = vec![
            "v=1;".into(),
            format!("a={};", alg.as_str()),
            format!("d={};", c.domain),
            format!("s={};", c.selector),
            format!(
                "c={}/{};",
                c.canonicalization.header.as_str(),
                c.canonicalization.body.as_str()
            ),
            format!("t={};", now.secs()),
        ];
        if let Some(e) = c.expiry {
            tags.push(format!("x={};", now.add(e).secs()));
        }
        for t in &tags {
            fold(&mut hdr, &mut line_len, t, true);
        }
        for (i, n) in names.iter().enumerate() {
            let last = i + 1 == names.len();
            let tok = match (i, last) {
                (0, true) => format!("h={n};"),
                (0, false) => format!("h={n}:"),
                (_, true) => format!("{n};"),
                _ => format!("{n}:"),
            };
            fold(&mut hdr, &mut line_len, &tok, i == 0);
        }
        fold(&mut hdr, &mut line_len, &format!("bh={};", b64(&bh)), true);
        fold(&mut hdr, &mut line_len, "b=", true);

        // What is signed: the selected header fields, then this field with an empty b=.
        let mut data = Vec::new();
        let mut used = vec![false; split.fields.len()];
        for n in &names {
            let found = (0..split.fields.len())
                .rev()
                .find(|&i| !used[i] && name_of(i).eq_ignore_ascii_case(n.as_bytes()));
            if let Some(i) = found {
                used[i] = true;
                let raw = split
                    .fields
                    .get(i)
                    .and_then(|f| message.get(f.raw.clone()))
                    .unwrap_or(&[]);
                canon_header(c.canonicalization.header, raw, &mut data);
            }
        }
        match c.canonicalization.header {
            Canon::Simple => data.extend_from_slice(hdr.as_bytes()),
            Canon::Relaxed => relaxed_header_no_crlf(hdr.as_bytes(), &mut data),
        }
        let sig = b64(&c.key.sign(&data, rng)?);
        // Folding inside b= is part of the value that verifiers remove before hashing.
        let mut room = 78usize.saturating_sub(line_len);
        if room < 8 {
            hdr.push_str("\r\n\t");
            room = 72;
        }
        let mut rest = sig.as_str();
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(room.min(rest.len()));
            hdr.push_str(chunk);
            rest = tail;
            if !rest.is_empty() {
                hdr.push_str("\r\n\t");
            }
            room = 72;
        }
        hdr.push_str("\r\n");
        out.push_str(&hdr);
    }
    Ok(out)
}
