//! The TLS policy machine: for one delivery (recipient domain, the message's REQUIRETLS /
//! `TLS-Required: No`, the time), the [`HostTls`] of every MX host the delivery asks about,
//! from MTA-STS (once per domain) and DANE (per host).
//!
//! # Why a machine of its own, beside the delivery machine
//!
//! The delivery machine already asks [`crate::delivery::Effect::HostTls`] per MX host
//! (with [`crate::delivery::HostTlsSource::Ask`]); this machine answers it. Keeping it
//! separate (rather than folding the lookups into `DeliverySession`) means:
//! * the delivery machine's effect and completion types do not change, so its drivers
//!   (on every runtime) gain one answer, not new variants in a shared enum;
//! * the MTA-STS state (record, cache, fetch) lives once per domain, whatever the number of
//!   hosts and connections, and can be tested in transcripts of its own;
//! * the policy cache and the HTTPS fetch stay effects of this machine only.
//!
//! The price: the DNSSEC facts DANE needs (the AD bit on the MX answer, the MX host's CNAME
//! chain and the AD bit on its addresses) are asked again here instead of being taken from
//! the delivery's MX plan. A caching resolver answers those from its cache, and the facts
//! come from answers with the AD bit, so the decision stays sound.
//!
//! # Driving
//!
//! The crate's contract (handle/poll, tokens, deadlines), with these inputs and outputs:
//!
//! ```text
//! let mut p = PolicySession::new(config, "example.org", MessageTls::Default, now);
//! p.handle(now, Input::Ask("mx1.example.org".into()))?;   // per Effect::HostTls
//! loop {
//!     match p.poll(now) {
//!         Output::Effect(t, Effect::Dns(lookups)) => /* Completion::Dns, one per lookup */,
//!         Output::Effect(t, Effect::CacheGet { domain }) => /* Completion::Cached(..) */,
//!         Output::Effect(t, Effect::Fetch(req)) => /* Completion::Fetched(..) */,
//!         Output::Cache(update) => /* write to storage; no answer */,
//!         Output::Verdict(v) => /* Completion::HostTls(v.host_tls) to the delivery */,
//!         Output::Idle { deadline } => break,
//!     }
//! }
//! ```
//!
//! # What it does
//!
//! * At the start: the `_mta-sts` TXT record and the domain's MX RRset (its AD bit: DANE
//!   applies only below a secure MX RRset) as one [`Effect::Dns`], and the cached policy as
//!   [`Effect::CacheGet`]. Then [`decide`]: a cached policy for the record's id is used; a
//!   new id or no valid cache fetches [`policy_url`] ([`Effect::Fetch`]) and the response is
//!   checked by [`policy_from_response`]; the cache update comes out as
//!   [`Output::Cache`] (put, drop, or "used" for the last-use time).
//! * Per host asked: nothing more when the AD bit is not trusted or the MX RRset is not
//!   secure. Otherwise the host's CNAME (followed one step at a time, at most
//!   [`MAX_CNAME_STEPS`]), A and AAAA, then the TLSA lookups [`DaneInput::step`] asks for.
//! * Once both are known: [`requirement`] gives the [`TlsRequirement`], turned into the
//!   delivery's [`HostTls`] (see [`to_host_tls`]).
//! * Every effect has a deadline ([`PolicyConfig::effect_timeout`]): a DNS answer not in
//!   time is a temporary failure, a cache read not in time is "nothing cached", a fetch
//!   not in time is a fetch error (and the cached policy, if still valid, is used).
//!
//! Limits of today's inputs: a denial (NXDOMAIN/NODATA) carries no AD bit in
//! [`LookupResult`], so an implicit MX (a domain without MX records) counts as insecure
//! and gets no DANE; and the client checks DANE and WebPKI against the MX host name as
//! published (its SNI), not the TLSA base domain of a CNAME chain.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dane::{AddressFacts, DaneInput, DaneSecure, DaneStep, DaneVerdict};
use super::mtasts::{
    decide, policy_from_response, policy_url, record_name, Applied, CacheAction, CachedPolicy,
    FetchError, PolicySource, RecordAnswer, StsDecision, StsPolicy, MAX_POLICY_SIZE,
};
use super::requirement::{
    requirement, ConnectTls, FailReason, MessageTls, OnFailure, SkipReason, TlsRequirement,
    Verification,
};
use super::results::{fetch_failure_result, session_results, Endpoints, TlsOutcome};
use super::tlsrpt::{Policy, PolicyType, ResultType, SessionResult};
use crate::client::{DaneCheck, TlsMode, Verify};
use crate::delivery::{HostTls, HostTlsConnect, TlsAttempt, TlsPolicyKind, TlsResult};
use crate::dns::{Lookup, LookupResult, Record, RecordType};
use crate::smtp::Enhanced;
use crate::time::{Now, UnixTime};
use crate::Token;

/// CNAME steps followed from an MX host name before giving up (temporary failure).
pub const MAX_CNAME_STEPS: usize = 8;

/// MX hosts one session answers for; more are refused with a skip.
pub const MAX_HOSTS: usize = 32;

/// How the policy machine behaves; shared by the deliveries of a queue runner.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// Whether the resolver's AD bit is trusted (it validates DNSSEC and the path to it is
    /// trusted). Without it DANE never applies.
    pub trust_ad: bool,
    /// Trusted roots for WebPKI verification of MX hosts under an MTA-STS policy. `None`:
    /// a host that must be verified that way is skipped (temporary failure).
    pub pkix: Option<Arc<rustls::ClientConfig>>,
    /// The same roots, for verifying MX hosts under an MTA-STS `testing` policy: a failure
    /// is reported, not fatal. `None`: such hosts are not verified at all.
    pub pkix_roots: Option<Arc<rustls::RootCertStore>>,
    /// Time an effect (DNS, cache read, policy fetch) may take.
    pub effect_timeout: Duration,
}

impl PolicyConfig {
    /// Trusting the AD bit, no WebPKI roots, 60 s per effect.
    pub fn new(trust_ad: bool) -> PolicyConfig {
        PolicyConfig {
            trust_ad,
            pkix: None,
            pkix_roots: None,
            effect_timeout: Duration::from_secs(60),
        }
    }
}

/// A cached MTA-STS policy as storage keeps it (plain data: the driver maps it to and from
/// its table; the policy text is parsed here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsCacheEntry {
    /// The policy domain (lower-case).
    pub domain: String,
    /// The `_mta-sts` record id the policy was fetched for.
    pub id: String,
    /// The policy text ([`StsPolicy::to_text`]).
    pub policy: String,
    /// When it was fetched.
    pub fetched: UnixTime,
    /// When it expires (`fetched + max_age`).
    pub expires: UnixTime,
}

impl StsCacheEntry {
    /// The entry for a cached policy of `domain`.
    pub fn from_cached(domain: &str, c: &CachedPolicy) -> StsCacheEntry {
        StsCacheEntry {
            domain: domain.to_ascii_lowercase(),
            id: c.id.clone(),
            policy: c.policy.to_text(),
            fetched: c.fetched,
            expires: c.expires(),
        }
    }

    /// The cached policy; `None` when the stored text no longer parses.
    pub fn to_cached(&self) -> Option<CachedPolicy> {
        Some(CachedPolicy {
            id: self.id.clone(),
            policy: StsPolicy::parse(self.policy.as_bytes()).ok()?,
            fetched: self.fetched,
        })
    }
}

/// The HTTPS request for a policy: GET `url` with WebPKI verification of `host`, no
/// redirects, a body of at most `max_body` bytes, done within `timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`.
    pub url: String,
    /// `mta-sts.DOMAIN`: the host to connect to, its SNI and the name its certificate must
    /// cover.
    pub host: String,
    /// Larger bodies are a fetch error ([`MAX_POLICY_SIZE`]).
    pub max_body: usize,
    /// The machine gives up after this long (the driver may use it too).
    pub timeout: Duration,
}

/// An HTTP response to a [`FetchRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchResponse {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header field, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// Requests for the outside world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Answer these DNS questions; [`Completion::Dns`], one result per lookup, in order.
    Dns(Vec<Lookup>),
    /// Read the cached policy of `domain`; [`Completion::Cached`].
    CacheGet {
        /// The policy domain.
        domain: String,
    },
    /// Fetch a policy; [`Completion::Fetched`] with the response, or the error (a TLS
    /// certificate error as [`FetchError::WebPki`], anything else as [`FetchError::Fetch`]).
    Fetch(FetchRequest),
}

/// Answers to effects, matched by token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Answer to [`Effect::Dns`].
    Dns(Vec<LookupResult>),
    /// Answer to [`Effect::CacheGet`]: the stored entry, expired or not.
    Cached(Option<StsCacheEntry>),
    /// Answer to [`Effect::Fetch`].
    Fetched(Result<FetchResponse, FetchError>),
}

/// A cache change to write (no answer expected; a failed write only costs a refetch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheUpdate {
    /// Store (replace) the entry.
    Put(StsCacheEntry),
    /// Remove the entry of this domain.
    Drop {
        /// The policy domain.
        domain: String,
    },
    /// The cached policy of this domain was used at this time (its last-use time).
    Used {
        /// The policy domain.
        domain: String,
        /// When.
        at: UnixTime,
    },
}

/// Inputs to [`PolicySession::handle`].
#[derive(Clone, Debug)]
pub enum Input {
    /// The TLS requirement of this MX host (as published) is wanted; it comes out as
    /// [`Output::Verdict`]. Asking again for a host answers again.
    Ask(String),
    /// The answer to an earlier effect. Answers to effects given up on are ignored.
    Completed(Token, Completion),
    /// A deadline may have passed.
    Timeout,
}

/// The verdict for one MX host, with what the TLS report needs.
#[derive(Clone, Debug)]
pub struct HostVerdict {
    /// The MX host as asked.
    pub host: String,
    /// The combined requirement.
    pub requirement: TlsRequirement,
    /// The requirement in the delivery machine's terms.
    pub host_tls: HostTls,
    /// The MTA-STS policy that applied (mode none is given as `None`).
    pub sts: Option<StsPolicy>,
    /// The host's DANE verdict.
    pub dane: DaneVerdict,
}

impl HostVerdict {
    /// The connection rules, when the host is to be connected to (for
    /// [`super::session_results`]).
    pub fn connect(&self) -> Option<&ConnectTls> {
        match &self.requirement {
            TlsRequirement::Connect(c) => Some(c),
            _ => None,
        }
    }

    /// The report policy entry of a connection under this verdict, for the recipient
    /// domain's report (`sts` with the policy, or `no-policy-found`) or, for DANE, the MX
    /// host's report (`tlsa` with the records of the TLSA base domain).
    pub fn report_policy(&self, recipient_domain: &str) -> Policy {
        match (self.connect(), &self.sts) {
            (Some(c), _) if c.report == PolicyType::Tlsa => match &c.verify {
                Verification::Dane(d) => Policy::tlsa(&d.base_domain, &d.records),
                _ => Policy::none(recipient_domain),
            },
            (Some(c), Some(p)) if c.report == PolicyType::Sts => Policy::sts(recipient_domain, p),
            _ => Policy::none(recipient_domain),
        }
    }
}

impl HostVerdict {
    /// The TLS report results of one connection the delivery made under this verdict (a
    /// [`TlsAttempt`] of its report) to `recipient_domain`: the recipient domain's result,
    /// and for DANE also the MX host's (see [`session_results`]). A session that went on
    /// in plaintext is recorded as `starttls-not-supported`. Nothing for a verdict that
    /// did not connect.
    pub fn session_results(
        &self,
        recipient_domain: &str,
        attempt: &TlsAttempt,
    ) -> Vec<SessionResult> {
        let Some(c) = self.connect() else {
            return Vec::new();
        };
        let outcome = match &attempt.result {
            TlsResult::Established(_) => TlsOutcome::Established,
            TlsResult::Plaintext => TlsOutcome::NotOffered,
            TlsResult::Failed {
                result_type,
                detail,
            } => TlsOutcome::Failed {
                result_type: ResultType::from(result_type.to_string()),
                detail: detail.clone(),
            },
        };
        let ends = Endpoints {
            sending_ip: None,
            receiving_ip: Some(attempt.receiving_ip),
            receiving_helo: None,
        };
        session_results(
            c,
            recipient_domain,
            self.sts.as_ref(),
            &self.host,
            &ends,
            &outcome,
        )
    }
}

/// Outputs drained with [`PolicySession::poll`].
#[derive(Debug)]
pub enum Output {
    /// Perform this effect and answer with [`Input::Completed`].
    Effect(Token, Effect),
    /// Write this to the policy cache.
    Cache(CacheUpdate),
    /// The verdict for a host asked with [`Input::Ask`].
    Verdict(Box<HostVerdict>),
    /// Nothing more now: wait for input, a completion or the deadline.
    Idle {
        /// The earliest deadline, if any.
        deadline: Option<Instant>,
    },
}

/// Why `handle` refused an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A completion of the wrong kind for its effect.
    #[error("api misuse: {0}")]
    Misuse(&'static str),
}

/// The message's statement from the delivery's `requiretls` (REQUIRETLS `Some(true)`,
/// `TLS-Required: No` `Some(false)`).
pub fn message_tls(requiretls: Option<bool>) -> MessageTls {
    match requiretls {
        Some(true) => MessageTls::RequireTls,
        Some(false) => MessageTls::TlsRequiredNo,
        None => MessageTls::Default,
    }
}

/// The delivery machine's [`HostTls`] for a requirement of an MX host of `domain`:
/// * STARTTLS required or opportunistic as the requirement says;
/// * WebPKI with abort: PKIX with the configured roots (no roots: skip the host);
///   DANE with abort: the usable TLSA records; no verification: none;
/// * a verification whose failure only is to be reported (MTA-STS testing,
///   `TLS-Required: No`): verification errors ignored (the client has no "verify and
///   report" mode yet, so such a failure is not seen by the TLS report);
/// * skips are temporary (the MX mismatch, a DANE lookup failure), REQUIRETLS failures
///   permanent with 5.7.10.
pub fn to_host_tls(
    req: &TlsRequirement,
    domain: &str,
    pkix: Option<&Arc<rustls::ClientConfig>>,
    pkix_roots: Option<&Arc<rustls::RootCertStore>>,
) -> HostTls {
    match req {
        TlsRequirement::Skip(SkipReason::StsMxMismatch) => HostTls::Skip(format!(
            "MX host not listed in the MTA-STS policy of {domain}"
        )),
        TlsRequirement::Skip(SkipReason::DaneTempFail { name, reason }) => {
            HostTls::Skip(format!("DANE: looking up {name}: {reason}"))
        }
        TlsRequirement::Fail(r) => HostTls::Fail {
            enhanced: match r {
                FailReason::NoVerifiedTls => Enhanced::new(5, 7, 10),
                FailReason::NextHopLacksRequireTls => Enhanced::new(5, 7, 30),
            },
            detail: match r {
                FailReason::NoVerifiedTls => {
                    "REQUIRETLS: neither DANE nor MTA-STS can verify TLS to this host".into()
                }
                FailReason::NextHopLacksRequireTls => {
                    "REQUIRETLS support required, not offered by next hop".into()
                }
            },
        },
        TlsRequirement::Connect(c) => {
            let policy = match c.report {
                PolicyType::Sts => TlsPolicyKind::Sts,
                PolicyType::Tlsa => TlsPolicyKind::Tlsa,
                PolicyType::NoPolicyFound => TlsPolicyKind::NoPolicy,
            };
            let verify = match (&c.verify, c.on_failure) {
                (Verification::None, _) => Verify::None,
                // Verified all the same, a failure reported (RFC 8461 5, RFC 8689 5).
                (Verification::Dane(d), OnFailure::DeliverAndReport) => {
                    Verify::DaneReport(dane_check(d))
                }
                (Verification::WebPki { .. }, OnFailure::DeliverAndReport) => match pkix_roots {
                    Some(r) => Verify::PkixReport(Arc::clone(r)),
                    None => Verify::IgnoreErrors,
                },
                (Verification::Dane(d), OnFailure::Abort) => Verify::Dane(dane_check(d)),
                (Verification::WebPki { .. }, OnFailure::Abort) => match pkix {
                    Some(p) => Verify::Pkix(Arc::clone(p)),
                    None => {
                        return HostTls::Skip(format!(
                            "{} requires verified TLS and no trusted roots are configured",
                            if c.requiretls {
                                "REQUIRETLS"
                            } else {
                                "MTA-STS"
                            }
                        ))
                    }
                },
            };
            let mode: TlsMode = c.tls_mode();
            HostTls::Connect(HostTlsConnect {
                mode,
                verify,
                policy,
            })
        }
    }
}

/// The client's DANE check for a secure host: its records, the TLSA base domain as SNI,
/// and the base domain and the MX host name as DANE-TA reference identifiers.
fn dane_check(d: &DaneSecure) -> DaneCheck {
    DaneCheck {
        records: d.records.clone(),
        sni: Some(d.base_domain.clone()),
        names: d.names.clone(),
    }
}

/// What the MTA-STS part waits for.
#[derive(Debug)]
enum Sts {
    /// The record and MX answers, and the cache read.
    Looking {
        record: Option<RecordAnswer>,
        cached: Option<Option<CachedPolicy>>,
    },
    /// The fetch.
    Fetching {
        record: RecordAnswer,
        cached: Option<CachedPolicy>,
    },
    /// Decided.
    Done(Box<Applied>),
}

/// The DNSSEC state of the domain's MX RRset.
#[derive(Clone, Debug)]
enum MxFact {
    Secure(bool),
    TempFail(String),
}

/// Where one host's DANE evaluation is.
#[derive(Debug)]
enum Dane {
    /// Waiting for the domain's MX fact.
    WaitMx,
    /// CNAME, A and AAAA of the host asked.
    Addresses,
    /// Following the CNAME chain: the next CNAME lookup of the last name is out.
    Chain { cnames: Vec<String>, secure: bool },
    /// TLSA lookups.
    Tlsa(DaneInput),
    /// Known.
    Done(DaneVerdict),
}

#[derive(Debug)]
struct HostState {
    host: String,
    dane: Dane,
    /// Asked again after being answered, or not answered yet.
    want: bool,
    /// The address answers' facts while the chain is followed.
    addr_secure: bool,
}

/// What an outstanding effect was for.
#[derive(Debug)]
enum Pending {
    /// TXT `_mta-sts` and MX of the domain.
    Domain,
    /// The cache read.
    Cache,
    /// The policy fetch.
    Fetch,
    /// DNS for host `i`.
    Host(usize),
}

/// The TLS policy of one delivery.
#[derive(Debug)]
pub struct PolicySession {
    config: Arc<PolicyConfig>,
    domain: String,
    message: MessageTls,
    /// The wall time the policy decisions use (the delivery's start).
    wall: UnixTime,
    sts: Sts,
    mx: Option<MxFact>,
    hosts: Vec<HostState>,
    pending: BTreeMap<Token, (Pending, Instant, usize)>,
    outputs: VecDeque<Output>,
    next_token: u64,
    last_mono: Instant,
}

impl PolicySession {
    /// The policy of a delivery to `domain`; the domain's lookups are ready to poll.
    pub fn new(
        config: Arc<PolicyConfig>,
        domain: &str,
        message: MessageTls,
        now: Now,
    ) -> PolicySession {
        let mut s = PolicySession {
            config,
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            message,
            wall: now.wall,
            sts: Sts::Looking {
                record: None,
                cached: None,
            },
            mx: None,
            hosts: Vec::new(),
            pending: BTreeMap::new(),
            outputs: VecDeque::new(),
            next_token: 0,
            last_mono: now.mono,
        };
        let lookups = vec![
            Lookup {
                name: record_name(&s.domain),
                rtype: RecordType::Txt,
            },
            Lookup {
                name: s.domain.clone(),
                rtype: RecordType::Mx,
            },
        ];
        s.effect(now.mono, Pending::Domain, Effect::Dns(lookups));
        let domain = s.domain.clone();
        s.effect(now.mono, Pending::Cache, Effect::CacheGet { domain });
        s
    }

    /// The recipient domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The MTA-STS decision, once made: the policy (valid, not mode none) and where it
    /// came from.
    pub fn sts(&self) -> Option<(Option<&CachedPolicy>, &PolicySource)> {
        match &self.sts {
            Sts::Done(a) => Some((a.policy.as_ref(), &a.source)),
            _ => None,
        }
    }

    /// The TLS report result of a failed policy fetch (recorded once per delivery, under
    /// the recipient domain), when the fetch failed.
    pub fn fetch_failure(&self) -> Option<SessionResult> {
        match self.sts()? {
            (_, PolicySource::FetchFailed(e)) | (_, PolicySource::CacheFetchFailed(e)) => {
                Some(fetch_failure_result(&self.domain, e))
            }
            _ => None,
        }
    }

    fn effect(&mut self, mono: Instant, p: Pending, e: Effect) {
        self.next_token += 1;
        let token = Token(self.next_token);
        let n = match &e {
            Effect::Dns(l) => l.len(),
            _ => 0,
        };
        self.pending
            .insert(token, (p, mono + self.config.effect_timeout, n));
        self.outputs.push_back(Output::Effect(token, e));
    }

    /// Takes one input.
    pub fn handle(&mut self, now: Now, input: Input) -> Result<(), PolicyError> {
        let mono = self.guard(now.mono);
        match input {
            Input::Ask(host) => {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                if let Some(i) = self.hosts.iter().position(|h| h.host == host) {
                    if let Some(h) = self.hosts.get_mut(i) {
                        h.want = true;
                    }
                } else if self.hosts.len() >= MAX_HOSTS {
                    self.outputs
                        .push_back(Output::Verdict(Box::new(self.too_many(&host))));
                    return Ok(());
                } else {
                    self.hosts.push(HostState {
                        host,
                        dane: Dane::WaitMx,
                        want: true,
                        addr_secure: true,
                    });
                    let i = self.hosts.len() - 1;
                    self.advance_host(mono, i);
                }
                self.emit_verdicts();
                Ok(())
            }
            Input::Completed(token, c) => {
                let Some((p, _, _)) = self.pending.remove(&token) else {
                    return Ok(());
                };
                self.completed(mono, p, c)
            }
            Input::Timeout => {
                let expired: Vec<Token> = self
                    .pending
                    .iter()
                    .filter(|(_, (_, at, _))| *at <= mono)
                    .map(|(t, _)| *t)
                    .collect();
                for t in expired {
                    let Some((p, _, n)) = self.pending.remove(&t) else {
                        continue;
                    };
                    let c = match p {
                        Pending::Domain | Pending::Host(_) => {
                            Completion::Dns(vec![LookupResult::TempFail("DNS timed out".into()); n])
                        }
                        Pending::Cache => Completion::Cached(None),
                        Pending::Fetch => Completion::Fetched(Err(FetchError::Fetch(
                            "policy fetch timed out".into(),
                        ))),
                    };
                    self.completed(mono, p, c)?;
                }
                Ok(())
            }
        }
    }

    fn guard(&mut self, mono: Instant) -> Instant {
        if mono > self.last_mono {
            self.last_mono = mono;
        }
        self.last_mono
    }

    fn too_many(&self, host: &str) -> HostVerdict {
        let requirement = TlsRequirement::Skip(SkipReason::DaneTempFail {
            name: host.to_string(),
            reason: format!("more than {MAX_HOSTS} MX hosts asked"),
        });
        HostVerdict {
            host: host.to_string(),
            host_tls: HostTls::Skip(format!("more than {MAX_HOSTS} MX hosts asked")),
            requirement,
            sts: None,
            dane: DaneVerdict::TempFail {
                name: host.to_string(),
                reason: "too many hosts".into(),
            },
        }
    }

    fn completed(&mut self, mono: Instant, p: Pending, c: Completion) -> Result<(), PolicyError> {
        match (p, c) {
            (Pending::Domain, Completion::Dns(answers)) => {
                let mut it = answers.into_iter();
                let txt = it
                    .next()
                    .unwrap_or(LookupResult::TempFail("no answer".into()));
                let mx = it
                    .next()
                    .unwrap_or(LookupResult::TempFail("no answer".into()));
                self.mx = Some(match mx {
                    LookupResult::Records { authentic, .. } => MxFact::Secure(authentic),
                    // A denial carries no AD bit here: not known to be secure.
                    LookupResult::NxDomain | LookupResult::NoData => MxFact::Secure(false),
                    LookupResult::TempFail(e) => MxFact::TempFail(e),
                });
                if let Sts::Looking { record, .. } = &mut self.sts {
                    *record = Some(RecordAnswer::from_lookup(&txt));
                }
                self.advance_sts(mono);
                for i in 0..self.hosts.len() {
                    self.advance_host(mono, i);
                }
            }
            (Pending::Cache, Completion::Cached(entry)) => {
                if let Sts::Looking { cached, .. } = &mut self.sts {
                    *cached = Some(entry.and_then(|e| e.to_cached()));
                }
                self.advance_sts(mono);
            }
            (Pending::Fetch, Completion::Fetched(result)) => {
                let fetched = result.and_then(|r| {
                    policy_from_response(r.status, r.content_type.as_deref(), &r.body)
                });
                if let Sts::Fetching { record, cached } = &self.sts {
                    let d = decide(cached.as_ref(), record, Some(fetched), self.wall);
                    self.apply(d);
                }
            }
            (Pending::Host(i), Completion::Dns(answers)) => self.host_answers(mono, i, answers),
            _ => return Err(PolicyError::Misuse("completion of the wrong kind")),
        }
        self.emit_verdicts();
        Ok(())
    }

    fn advance_sts(&mut self, mono: Instant) {
        let Sts::Looking {
            record: Some(record),
            cached: Some(cached),
        } = &self.sts
        else {
            return;
        };
        let (record, cached) = (record.clone(), cached.clone());
        match decide(cached.as_ref(), &record, None, self.wall) {
            StsDecision::Fetch => {
                self.sts = Sts::Fetching { record, cached };
                let req = FetchRequest {
                    url: policy_url(&self.domain),
                    host: format!("mta-sts.{}", self.domain),
                    max_body: MAX_POLICY_SIZE,
                    timeout: self.config.effect_timeout,
                };
                self.effect(mono, Pending::Fetch, Effect::Fetch(req));
            }
            d => self.apply(d),
        }
    }

    fn apply(&mut self, d: StsDecision) {
        let StsDecision::Apply(applied) = d else {
            // `decide` with a fetch outcome never asks to fetch again.
            let e = FetchError::Fetch("fetch asked twice".into());
            self.sts = Sts::Done(Box::new(Applied {
                policy: None,
                cache: CacheAction::Keep,
                source: PolicySource::FetchFailed(e),
            }));
            return;
        };
        let domain = self.domain.clone();
        match &applied.cache {
            CacheAction::Store(c) => {
                self.outputs
                    .push_back(Output::Cache(CacheUpdate::Put(StsCacheEntry::from_cached(
                        &domain, c,
                    ))))
            }
            CacheAction::Delete => self
                .outputs
                .push_back(Output::Cache(CacheUpdate::Drop { domain })),
            CacheAction::Keep => {
                if applied.policy.is_some() {
                    self.outputs.push_back(Output::Cache(CacheUpdate::Used {
                        domain,
                        at: self.wall,
                    }));
                }
            }
        }
        self.sts = Sts::Done(applied);
    }

    fn host_dns(&mut self, mono: Instant, i: usize, lookups: Vec<Lookup>) {
        self.effect(mono, Pending::Host(i), Effect::Dns(lookups));
    }

    /// Moves host `i` on as far as its known facts allow.
    fn advance_host(&mut self, mono: Instant, i: usize) {
        let trust = self.config.trust_ad;
        let Some(h) = self.hosts.get_mut(i) else {
            return;
        };
        match &h.dane {
            Dane::WaitMx => {
                let verdict = match &self.mx {
                    None => return,
                    _ if !trust => Some(DaneInput::new(&h.host, false, Default::default(), false)),
                    Some(MxFact::TempFail(e)) => {
                        h.dane = Dane::Done(DaneVerdict::TempFail {
                            name: self.domain.clone(),
                            reason: format!("MX lookup: {e}"),
                        });
                        return;
                    }
                    Some(MxFact::Secure(false)) => {
                        Some(DaneInput::new(&h.host, false, Default::default(), trust))
                    }
                    Some(MxFact::Secure(true)) => None,
                };
                if let Some(input) = verdict {
                    // Insecure before any host lookup.
                    h.dane = Dane::Done(match input.step() {
                        DaneStep::Verdict(v) => v,
                        DaneStep::LookupTlsa(_) => return,
                    });
                    return;
                }
                h.dane = Dane::Addresses;
                let name = h.host.clone();
                let lookups = [RecordType::Cname, RecordType::A, RecordType::Aaaa]
                    .into_iter()
                    .map(|rtype| Lookup {
                        name: name.clone(),
                        rtype,
                    })
                    .collect();
                self.host_dns(mono, i, lookups);
            }
            Dane::Tlsa(input) => match input.step() {
                DaneStep::Verdict(v) => h.dane = Dane::Done(v),
                DaneStep::LookupTlsa(name) => self.host_dns(
                    mono,
                    i,
                    vec![Lookup {
                        name,
                        rtype: RecordType::Tlsa,
                    }],
                ),
            },
            Dane::Addresses | Dane::Chain { .. } | Dane::Done(_) => {}
        }
    }

    /// The CNAME target in an answer to a CNAME question (`None`: the chain ends), or a
    /// temporary failure.
    fn cname(answer: &LookupResult) -> Result<Option<(String, bool)>, String> {
        match answer {
            LookupResult::Records { records, authentic } => {
                Ok(records.iter().find_map(|r| match r {
                    Record::Cname(t) => {
                        Some((t.trim_end_matches('.').to_ascii_lowercase(), *authentic))
                    }
                    _ => None,
                }))
            }
            LookupResult::NxDomain | LookupResult::NoData => Ok(None),
            LookupResult::TempFail(e) => Err(e.clone()),
        }
    }

    fn host_answers(&mut self, mono: Instant, i: usize, answers: Vec<LookupResult>) {
        let trust = self.config.trust_ad;
        let Some(h) = self.hosts.get_mut(i) else {
            return;
        };
        let tempfail = |name: &str, e: String| {
            Dane::Done(DaneVerdict::TempFail {
                name: name.to_string(),
                reason: e,
            })
        };
        let (cnames, chain_secure, next) = match std::mem::replace(&mut h.dane, Dane::WaitMx) {
            Dane::Addresses => {
                let mut it = answers.into_iter();
                let cname = it
                    .next()
                    .unwrap_or(LookupResult::TempFail("no answer".into()));
                // Addresses: secure when some family has records and every answer with
                // records carries the AD bit (a failed family is not connected to).
                let mut any = false;
                let mut secure = true;
                for a in it {
                    if let LookupResult::Records { authentic, .. } = a {
                        any = true;
                        secure &= authentic;
                    }
                }
                h.addr_secure = any && secure;
                match Self::cname(&cname) {
                    Err(e) => {
                        h.dane = tempfail(&h.host, format!("CNAME lookup: {e}"));
                        return;
                    }
                    Ok(None) => (Vec::new(), true, None),
                    Ok(Some((t, auth))) => (vec![t.clone()], auth, Some(t)),
                }
            }
            Dane::Chain { mut cnames, secure } => {
                let a = answers
                    .into_iter()
                    .next()
                    .unwrap_or(LookupResult::TempFail("no answer".into()));
                match Self::cname(&a) {
                    Err(e) => {
                        h.dane = tempfail(&h.host, format!("CNAME lookup: {e}"));
                        return;
                    }
                    Ok(None) => (cnames, secure, None),
                    Ok(Some((t, auth))) => {
                        if cnames.contains(&t) || cnames.len() >= MAX_CNAME_STEPS {
                            h.dane = tempfail(&h.host, "CNAME chain too long or a loop".into());
                            return;
                        }
                        cnames.push(t.clone());
                        (cnames, secure && auth, Some(t))
                    }
                }
            }
            Dane::Tlsa(mut input) => {
                input.tlsa.push(
                    answers
                        .into_iter()
                        .next()
                        .unwrap_or(LookupResult::TempFail("no answer".into())),
                );
                h.dane = Dane::Tlsa(input);
                return self.advance_host(mono, i);
            }
            other => {
                h.dane = other;
                return;
            }
        };
        match next {
            // An insecure step ends the chain early: DANE cannot apply.
            Some(t) if chain_secure => {
                h.dane = Dane::Chain {
                    cnames,
                    secure: chain_secure,
                };
                self.host_dns(
                    mono,
                    i,
                    vec![Lookup {
                        name: t,
                        rtype: RecordType::Cname,
                    }],
                );
            }
            _ => {
                let facts = AddressFacts {
                    cnames,
                    secure: chain_secure && h.addr_secure,
                };
                h.dane = Dane::Tlsa(DaneInput::new(&h.host, true, facts, trust));
                self.advance_host(mono, i);
            }
        }
    }

    /// Verdicts for every host wanted whose facts are all in.
    fn emit_verdicts(&mut self) {
        let Sts::Done(applied) = &self.sts else {
            return;
        };
        let sts = applied.policy.as_ref().map(|c| c.policy.clone());
        for h in self.hosts.iter_mut() {
            let Dane::Done(dane) = &h.dane else {
                continue;
            };
            if !h.want {
                continue;
            }
            h.want = false;
            let req = requirement(sts.as_ref(), &h.host, dane, self.message);
            let host_tls = to_host_tls(
                &req,
                &self.domain,
                self.config.pkix.as_ref(),
                self.config.pkix_roots.as_ref(),
            );
            self.outputs
                .push_back(Output::Verdict(Box::new(HostVerdict {
                    host: h.host.clone(),
                    requirement: req,
                    host_tls,
                    sts: sts.clone(),
                    dane: dane.clone(),
                })));
        }
    }

    /// The next output; call until it returns `Idle` after every `handle`.
    pub fn poll(&mut self, now: Now) -> Output {
        self.guard(now.mono);
        if let Some(o) = self.outputs.pop_front() {
            return o;
        }
        Output::Idle {
            deadline: self.pending.values().map(|(_, at, _)| *at).min(),
        }
    }
}

#[cfg(test)]
mod tests;
