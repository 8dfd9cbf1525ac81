//! DKIM verification as a [`Check`]: every signature on a message, each with its own
//! result.

use std::collections::HashMap;
use std::fmt;

use super::canon::{canon_header, relaxed_header_no_crlf, split_message, Canon, HeaderError};
use super::crypto::{self, VerifyFail};
use super::sig::{
    loose_domain_selector, strip_b_value, Algorithm, KeyRecord, KeyRecordError, Signature,
    SignatureError,
};
use crate::dns::{Check, CheckStep, Lookup, LookupResult, Record, RecordType};
use crate::time::UnixTime;

/// Limits and local policy for verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyLimits {
    /// At most this many DKIM-Signature fields are evaluated (top to bottom); the rest
    /// are ignored, so a message cannot make us do unbounded DNS lookups and RSA
    /// operations. Default 5.
    pub max_signatures: usize,
    /// Accept rsa-sha1 signatures. Default false: RFC 8301 3.1 says verifiers must not
    /// consider them valid, so they get `permerror`. (mox verifies them and passes them.)
    pub accept_sha1: bool,
    /// Accept signatures with a body length limit `l=`. Default false: such signatures
    /// get `policy`, because anything can be appended after the signed part.
    pub accept_length: bool,
    /// Require Subject among the signed header fields. Default true (`policy` otherwise).
    pub require_subject: bool,
    /// Smallest RSA key accepted, in bits. Default 1024 (the least ring verifies).
    pub min_rsa_bits: usize,
}

impl Default for VerifyLimits {
    fn default() -> Self {
        VerifyLimits {
            max_signatures: 5,
            accept_sha1: false,
            accept_length: false,
            require_subject: true,
            min_rsa_bits: 1024,
        }
    }
}

/// The result of one signature (RFC 8601 2.7.1 values, plus `policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// The signature verified.
    Pass,
    /// The signature or body hash did not match.
    Fail,
    /// The signature could not be processed for a reason not covered elsewhere.
    Neutral,
    /// A DNS failure that may go away: try later.
    Temperror,
    /// The signature or key is broken: trying again will not help.
    Permerror,
    /// The signature is valid but not acceptable by local policy (l=, unsigned Subject).
    Policy,
    /// No signature, or a failing signature from a key in testing mode (t=y).
    None,
}

impl Status {
    /// The name in Authentication-Results.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Neutral => "neutral",
            Status::Temperror => "temperror",
            Status::Permerror => "permerror",
            Status::Policy => "policy",
            Status::None => "none",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a signature did not pass.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The message header could not be split into fields.
    #[error("malformed message header: {0}")]
    Header(HeaderError),
    /// The DKIM-Signature field is invalid.
    #[error("bad signature: {0}")]
    Signature(SignatureError),
    /// `x=` has passed.
    #[error("signature expired")]
    Expired,
    /// rsa-sha1 is refused (RFC 8301).
    #[error("rsa-sha1 not accepted")]
    Sha1Refused,
    /// `l=` is refused by policy.
    #[error("l= not accepted")]
    LengthRefused,
    /// Subject is not signed and policy requires it.
    #[error("subject not signed")]
    SubjectNotSigned,
    /// `d=` is a public suffix (a TLD or the like): nobody may sign for it.
    #[error("signing domain is a public suffix")]
    PublicSuffix,
    /// No key record exists at the selector.
    #[error("no key record")]
    NoKey,
    /// The key lookup failed temporarily.
    #[error("key lookup failed: {0}")]
    KeyDns(String),
    /// The key record is invalid.
    #[error("bad key record: {0}")]
    KeyRecord(KeyRecordError),
    /// The key record has an empty `p=`.
    #[error("key revoked")]
    KeyRevoked,
    /// The key record's `h=` does not allow the signature's hash.
    #[error("hash not allowed by key")]
    HashNotAllowed,
    /// The key type does not match the algorithm, or the key is malformed.
    #[error("key unusable for algorithm")]
    BadKey,
    /// The key is not for email (`s=`).
    #[error("key not for email")]
    NotForEmail,
    /// `t=s` and the `i=` domain is not exactly `d=`.
    #[error("strict key: i= domain differs from d=")]
    StrictIdentity,
    /// The RSA key is too short.
    #[error("key too weak ({0} bits)")]
    WeakKey(usize),
    /// `l=` is longer than the canonical body.
    #[error("l= beyond body")]
    LengthBeyondBody,
    /// The signature does not verify.
    #[error("signature did not verify")]
    SignatureMismatch,
    /// The body hash does not match.
    #[error("body hash did not verify")]
    BodyHashMismatch,
}

/// The result of one signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DkimResult {
    /// The outcome.
    pub status: Status,
    /// `d=` (lower-case; empty if unparseable).
    pub domain: String,
    /// `s=` (lower-case; empty if unparseable).
    pub selector: String,
    /// `i=` if present.
    pub identity: Option<String>,
    /// `a=` if the signature parsed.
    pub algorithm: Option<Algorithm>,
    /// `b=` base64, whitespace removed (for `header.b`).
    pub b: String,
    /// Key size in bits once the key was used.
    pub key_bits: Option<usize>,
    /// The key record has `t=y`.
    pub testing: bool,
    /// Why it did not pass.
    pub error: Option<VerifyError>,
}

fn is_tspecial(c: char) -> bool {
    "()<>@,;:\\\"/[]?=".contains(c) || c.is_ascii_whitespace() || c.is_ascii_control()
}

/// A value for Authentication-Results: a token as is, else a quoted string.
pub(crate) fn ar_value(v: &str) -> String {
    if !v.is_empty() && !v.chars().any(is_tspecial) {
        v.to_string()
    } else {
        let mut s = String::from("\"");
        for c in v.chars() {
            if c == '"' || c == '\\' {
                s.push('\\');
            }
            if !c.is_control() {
                s.push(c);
            }
        }
        s.push('"');
        s
    }
}

impl DkimResult {
    /// The Authentication-Results method fragment, e.g.
    /// `dkim=pass header.d=example.org header.s=sel header.a=ed25519-sha256 header.b=abcdefgh`.
    pub fn auth_results(&self) -> String {
        let mut s = format!("dkim={}", self.status);
        if let Some(e) = &self.error {
            let reason: String = e
                .to_string()
                .chars()
                .filter(|c| !matches!(c, '(' | ')' | '\\') && !c.is_control())
                .collect();
            s.push_str(&format!(" ({reason})"));
        }
        if !self.domain.is_empty() {
            s.push_str(&format!(" header.d={}", ar_value(&self.domain)));
        }
        if let Some(i) = &self.identity {
            // RFC 8601 2.3: a pvalue may be `[local-part] "@" domain` unquoted.
            let plain = i
                .chars()
                .all(|c| c.is_alphanumeric() || "@.-_+".contains(c));
            let v = if plain { i.clone() } else { ar_value(i) };
            s.push_str(&format!(" header.i={v}"));
        }
        if !self.selector.is_empty() {
            s.push_str(&format!(" header.s={}", ar_value(&self.selector)));
        }
        if let Some(a) = self.algorithm {
            s.push_str(&format!(" header.a={}", a.as_str()));
        }
        if !self.b.is_empty() {
            let b: String = self.b.chars().take(8).collect();
            s.push_str(&format!(" header.b={}", ar_value(&b)));
        }
        s
    }

    fn failed(sig: &Signature, status: Status, e: VerifyError) -> DkimResult {
        DkimResult {
            status,
            domain: sig.domain.clone(),
            selector: sig.selector.clone(),
            identity: sig.identity.clone(),
            algorithm: Some(sig.algorithm),
            b: sig.signature_b64.clone(),
            key_bits: None,
            testing: false,
            error: Some(e),
        }
    }
}

/// Body hashes are shared between signatures with the same parameters.
type BodyKey = (Canon, Algorithm, Option<u64>);

struct Pending {
    sig: Signature,
    key_name: String,
    /// Canonical header fields plus the stripped signature field: what was signed.
    data: Vec<u8>,
    /// Whether the body hash matched (`Err` for l= beyond the body).
    body: Result<bool, VerifyError>,
}

enum Slot {
    Done(DkimResult),
    Waiting(Box<Pending>),
}

/// Verifies every DKIM-Signature of a message (up to [`VerifyLimits::max_signatures`]).
/// The verdict has one [`DkimResult`] per evaluated signature, top to bottom; an empty
/// verdict means the message is unsigned (`dkim=none`).
pub struct DkimVerify {
    slots: Vec<Slot>,
    to_ask: Vec<Lookup>,
    limits: VerifyLimits,
}

impl DkimVerify {
    /// Prepares verification of `message` (CRLF line endings, as received) at wall time
    /// `now`. All hashing happens here; what is left is asking for keys.
    pub fn new(message: &[u8], now: UnixTime, limits: &VerifyLimits) -> DkimVerify {
        let mut v = DkimVerify {
            slots: Vec::new(),
            to_ask: Vec::new(),
            limits: limits.clone(),
        };
        let split = match split_message(message) {
            Ok(s) => s,
            Err(e) => {
                let signed = message
                    .windows(15)
                    .any(|w| w.eq_ignore_ascii_case(b"dkim-signature:"));
                if signed {
                    v.slots.push(Slot::Done(DkimResult {
                        status: Status::Permerror,
                        domain: String::new(),
                        selector: String::new(),
                        identity: None,
                        algorithm: None,
                        b: String::new(),
                        key_bits: None,
                        testing: false,
                        error: Some(VerifyError::Header(e)),
                    }));
                }
                return v;
            }
        };
        let body = message.get(split.body_start..).unwrap_or(&[]);
        let mut body_cache: HashMap<BodyKey, Result<Vec<u8>, VerifyError>> = HashMap::new();
        let name_of = |f: &super::canon::HeaderField| message.get(f.name.clone()).unwrap_or(&[]);
        let sig_fields = split
            .fields
            .iter()
            .filter(|f| name_of(f).eq_ignore_ascii_case(b"dkim-signature"))
            .take(limits.max_signatures);
        for field in sig_fields {
            let value = message.get(field.value.clone()).unwrap_or(&[]);
            let sig = match Signature::parse(value) {
                Ok(s) => s,
                Err(e) => {
                    let (d, s) = loose_domain_selector(value);
                    v.slots.push(Slot::Done(DkimResult {
                        status: Status::Permerror,
                        domain: d,
                        selector: s,
                        identity: None,
                        algorithm: None,
                        b: String::new(),
                        key_bits: None,
                        testing: false,
                        error: Some(VerifyError::Signature(e)),
                    }));
                    continue;
                }
            };
            if let Some(r) = precheck(&sig, now, limits) {
                v.slots.push(Slot::Done(r));
                continue;
            }
            // Header hash input: for each h= name, the next unused instance from the bottom.
            let hc = sig.canonicalization.header;
            let mut used = vec![false; split.fields.len()];
            let mut data = Vec::new();
            for name in &sig.signed_headers {
                let found =
                    split.fields.iter().enumerate().rev().find(|(i, f)| {
                        !used[*i] && name_of(f).eq_ignore_ascii_case(name.as_bytes())
                    });
                if let Some((i, f)) = found {
                    used[i] = true;
                    canon_header(hc, message.get(f.raw.clone()).unwrap_or(&[]), &mut data);
                }
            }
            let mut raw_sig = message.get(field.raw.clone()).unwrap_or(&[]);
            while let Some(r) = raw_sig.strip_suffix(b"\n") {
                raw_sig = r.strip_suffix(b"\r").unwrap_or(r);
            }
            let stripped = strip_b_value(raw_sig);
            match hc {
                Canon::Simple => data.extend_from_slice(&stripped),
                Canon::Relaxed => relaxed_header_no_crlf(&stripped, &mut data),
            }
            let bc = sig.canonicalization.body;
            let key = (bc, sig.algorithm, sig.length);
            let bh = body_cache
                .entry(key)
                .or_insert_with(|| {
                    let limit = sig.length.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
                    crypto::body_digest(sig.algorithm, bc, body, limit)
                        .ok_or(VerifyError::LengthBeyondBody)
                })
                .clone();
            let body = bh.map(|h| h == sig.body_hash);
            let key_name = format!("{}._domainkey.{}", sig.selector, sig.domain);
            let lookup = Lookup {
                name: key_name.clone(),
                rtype: RecordType::Txt,
            };
            if !v.to_ask.contains(&lookup) {
                v.to_ask.push(lookup);
            }
            v.slots.push(Slot::Waiting(Box::new(Pending {
                sig,
                key_name,
                data,
                body,
            })));
        }
        v.to_ask.reverse();
        v
    }

    fn finish(&self, p: &Pending, result: &LookupResult) -> DkimResult {
        let sig = &p.sig;
        let records = match result {
            LookupResult::Records { records, .. } => records,
            LookupResult::NxDomain | LookupResult::NoData => {
                return DkimResult::failed(sig, Status::Permerror, VerifyError::NoKey)
            }
            LookupResult::TempFail(e) => {
                return DkimResult::failed(sig, Status::Temperror, VerifyError::KeyDns(e.clone()))
            }
        };
        let mut first_err = None;
        let mut key = None;
        for r in records {
            if let Record::Txt(strings) = r {
                let txt: Vec<u8> = strings.concat();
                match KeyRecord::parse(&txt) {
                    Ok(k) => {
                        key = Some(k);
                        break;
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        let Some(key) = key else {
            return match first_err {
                Some(e) => DkimResult::failed(sig, Status::Permerror, VerifyError::KeyRecord(e)),
                None => DkimResult::failed(sig, Status::Permerror, VerifyError::NoKey),
            };
        };
        let testing = key.has_flag("y");
        let mut r = self.check_with_key(p, &key);
        r.testing = testing;
        if testing && r.status != Status::Pass {
            // RFC 6376 3.6.1: a key in testing mode must not make a difference; like mox we
            // report failures of such keys as none.
            r.status = Status::None;
        }
        r
    }

    fn check_with_key(&self, p: &Pending, key: &KeyRecord) -> DkimResult {
        let sig = &p.sig;
        let perm = |e| DkimResult::failed(sig, Status::Permerror, e);
        if !key.hashes.is_empty()
            && !key
                .hashes
                .iter()
                .any(|h| h.eq_ignore_ascii_case(sig.algorithm.hash_name()))
        {
            return perm(VerifyError::HashNotAllowed);
        }
        if key.key_type != sig.algorithm.key_type() {
            return perm(VerifyError::BadKey);
        }
        if key.public_key.is_empty() {
            return perm(VerifyError::KeyRevoked);
        }
        if !key.allows_email() {
            return perm(VerifyError::NotForEmail);
        }
        if key.has_flag("s") {
            if let Some(i) = &sig.identity {
                let idom = i.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                if !idom.eq_ignore_ascii_case(&sig.domain) {
                    return perm(VerifyError::StrictIdentity);
                }
            }
        }
        let bits = match crypto::verify(
            sig.algorithm,
            key.key_type,
            &key.public_key,
            &p.data,
            &sig.signature,
            self.limits.min_rsa_bits,
        ) {
            Ok(bits) => bits,
            Err(VerifyFail::BadKey) => return perm(VerifyError::BadKey),
            Err(VerifyFail::WeakKey(b)) => return perm(VerifyError::WeakKey(b)),
            Err(VerifyFail::Mismatch) => {
                return DkimResult::failed(sig, Status::Fail, VerifyError::SignatureMismatch)
            }
        };
        let mut r = match &p.body {
            Ok(true) => DkimResult {
                status: Status::Pass,
                error: None,
                ..DkimResult::failed(sig, Status::Pass, VerifyError::BodyHashMismatch)
            },
            Ok(false) => DkimResult::failed(sig, Status::Fail, VerifyError::BodyHashMismatch),
            Err(e) => perm(e.clone()),
        };
        r.key_bits = Some(bits);
        r
    }

    fn results(&self) -> Vec<DkimResult> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                Slot::Done(r) => Some(r.clone()),
                Slot::Waiting(_) => None,
            })
            .collect()
    }
}

/// Checks that need no key: expiry, algorithm and policy, public suffix.
fn precheck(sig: &Signature, now: UnixTime, limits: &VerifyLimits) -> Option<DkimResult> {
    let fail = |status, e| Some(DkimResult::failed(sig, status, e));
    if sig.expiration.is_some_and(|x| x < now.secs()) {
        return fail(Status::Permerror, VerifyError::Expired);
    }
    if sig.algorithm == Algorithm::RsaSha1 && !limits.accept_sha1 {
        return fail(Status::Permerror, VerifyError::Sha1Refused);
    }
    if crate::publicsuffix::is_public_suffix(&sig.domain) {
        return fail(Status::Permerror, VerifyError::PublicSuffix);
    }
    if sig.length.is_some() && !limits.accept_length {
        return fail(Status::Policy, VerifyError::LengthRefused);
    }
    if limits.require_subject
        && !sig
            .signed_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case("subject"))
    {
        return fail(Status::Policy, VerifyError::SubjectNotSigned);
    }
    None
}

impl Check for DkimVerify {
    type Verdict = Vec<DkimResult>;

    fn poll(&mut self) -> CheckStep<Vec<DkimResult>> {
        if let Some(q) = self.to_ask.pop() {
            return CheckStep::Lookup(q);
        }
        if self.slots.iter().any(|s| matches!(s, Slot::Waiting(_))) {
            return CheckStep::Wait;
        }
        CheckStep::Done(self.results())
    }

    fn answer(&mut self, lookup: &Lookup, result: LookupResult) {
        if lookup.rtype != RecordType::Txt {
            return;
        }
        let mut slots = std::mem::take(&mut self.slots);
        for slot in &mut slots {
            if let Slot::Waiting(p) = slot {
                if p.key_name == lookup.name {
                    *slot = Slot::Done(self.finish(p, &result));
                }
            }
        }
        self.slots = slots;
    }
}
