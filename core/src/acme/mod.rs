//! ACME (RFC 8555): one certificate order as a sans-IO machine, and the renewal schedule.
//!
//! [`AcmeOrder`] runs the whole flow for one certificate: the directory, a nonce, the
//! account (`newAccount` signed with the account key's `jwk`; afterwards every request names
//! the account by `kid`), `newOrder`, each authorization, the challenge of the configured
//! kind ([`ChallengeKind`]: `tls-alpn-01`, RFC 8737, or `http-01`), polling until the CA
//! has validated it, `finalize` with the caller's CSR, polling the order, and the download
//! of the certificate chain.
//!
//! It follows the crate's driving contract with these effects:
//!
//! * [`Effect::Fetch`]: an HTTPS request (the driver runs [`crate::http::HttpsFetch`]),
//!   answered with [`Completion::Fetched`].
//! * [`Effect::Sign`]: an `ES256` signature of the bytes with the account key, answered
//!   with [`Completion::Signed`] (`r || s`, 64 bytes). ECDSA needs randomness, which core
//!   does not have; the key stays with the caller.
//! * [`Effect::Publish`]: make the challenge answerable (the `tls-alpn-01` certificate for
//!   the name, or the `http-01` key authorization at its path), answered with
//!   [`Completion::Published`] once it is; the machine responds to the challenge only
//!   then. [`Effect::Unpublish`] takes it away again (answer with `Published` too; the
//!   answer is not waited for).
//!
//! Nonces: every response's `Replay-Nonce` is kept for the next request. A `badNonce`
//! error (Pebble rejects some valid nonces on purpose) makes the machine sign the same
//! request again with the nonce of the error response, up to
//! [`AcmeConfig::max_bad_nonce_retries`] times.
//!
//! Polling waits for `Retry-After` when the server gives one (delta-seconds or an HTTP
//! date, capped at [`AcmeConfig::max_poll_interval`]), else [`AcmeConfig::poll_interval`].
//! One deadline covers the whole order ([`AcmeConfig::timeout`]).
//!
//! When [`Output::Done`] is returned, [`AcmeOrder::take_result`] gives the chain or an
//! [`AcmeError`]; a server error carries the server's `Retry-After` for the caller's
//! schedule ([`retry_delay`]).

pub mod jws;
pub mod x509;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{FetchError, FetchRequest, Header, Response};
use crate::time::{Now, UnixTime};
use crate::timer::TimerTable;
use crate::Token;

pub use jws::AccountKey;
use jws::{Signer, Unsigned};

/// The ALPN protocol of `tls-alpn-01` (RFC 8737 6.2).
pub const ALPN_PROTOCOL: &[u8] = b"acme-tls/1";

/// The path prefix of `http-01` answers (RFC 8555 8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Which challenge to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeKind {
    /// `tls-alpn-01` (RFC 8737): a self-signed certificate on the TLS port, for ALPN
    /// `acme-tls/1`.
    TlsAlpn01,
    /// `http-01` (RFC 8555 8.3): the key authorization at
    /// `http://NAME/.well-known/acme-challenge/TOKEN`.
    Http01,
}

impl ChallengeKind {
    /// The name in the ACME protocol and in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
            ChallengeKind::Http01 => "http-01",
        }
    }
}

/// How orders run.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    /// The directory URL (`https://...`).
    pub directory_url: String,
    /// Contact URLs for the account (`mailto:...`).
    pub contact: Vec<String>,
    /// The challenge to answer.
    pub challenge: ChallengeKind,
    /// The whole order must finish within this.
    pub timeout: Duration,
    /// Wait between polls when the server gives no `Retry-After`.
    pub poll_interval: Duration,
    /// The longest wait between polls, whatever `Retry-After` says.
    pub max_poll_interval: Duration,
    /// How often one request is signed again after `badNonce`.
    pub max_bad_nonce_retries: u32,
}

impl AcmeConfig {
    /// Defaults: 10 minutes per order, polls every second (at most every 60 s), 10
    /// `badNonce` retries per request.
    pub fn new(directory_url: &str, challenge: ChallengeKind) -> AcmeConfig {
        AcmeConfig {
            directory_url: directory_url.to_string(),
            contact: Vec::new(),
            challenge,
            timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(1),
            max_poll_interval: Duration::from_secs(60),
            max_bad_nonce_retries: 10,
        }
    }
}

/// A challenge to make answerable (or to take away).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Its kind.
    pub kind: ChallengeKind,
    /// The DNS name being validated.
    pub identifier: String,
    /// The challenge token.
    pub token: String,
    /// The key authorization (`token.thumbprint`).
    pub key_authorization: String,
}

impl Challenge {
    /// SHA-256 of the key authorization: the `acmeIdentifier` extension value of a
    /// `tls-alpn-01` certificate (RFC 8737 3).
    pub fn key_authorization_digest(&self) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, self.key_authorization.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
}

/// Requests for the outside world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Perform this HTTPS request; answer [`Completion::Fetched`].
    Fetch(FetchRequest),
    /// Sign these bytes with the account key (ES256); answer [`Completion::Signed`].
    Sign(Vec<u8>),
    /// Make this challenge answerable; answer [`Completion::Published`].
    Publish(Challenge),
    /// Stop answering this challenge (the answer is not waited for).
    Unpublish(Challenge),
}

/// Answers to effects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The outcome of a fetch.
    Fetched(Result<Response, FetchError>),
    /// The signature, `r || s` (64 bytes).
    Signed(Vec<u8>),
    /// The account key could not sign, why.
    SignFailed(String),
    /// The challenge is answerable (or gone).
    Published,
}

/// Inputs to [`AcmeOrder::handle`].
#[derive(Debug)]
pub enum Input {
    /// The answer to an earlier effect.
    Completed(Token, Completion),
    /// A deadline may have passed.
    Timeout,
}

/// The machine's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// The whole order.
    Total,
    /// The wait before the next poll.
    Poll,
}

/// What happened, for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The account is known to the CA (`created`: it was new).
    Account {
        /// The account URL.
        url: String,
        /// Created by this request.
        created: bool,
    },
    /// The order was created.
    Order {
        /// The order URL.
        url: String,
    },
    /// A request was signed again with a fresh nonce after `badNonce`.
    BadNonceRetry {
        /// The request URL.
        url: String,
    },
    /// The CA validated the challenge for this name.
    Validated {
        /// The name.
        identifier: String,
    },
    /// The certificate was downloaded.
    Issued {
        /// The certificate URL.
        url: String,
    },
}

/// Outputs of [`AcmeOrder::poll`].
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Perform this effect and answer with [`Input::Completed`].
    Effect(Token, Effect),
    /// Something happened.
    Event(Event),
    /// Nothing more now: wait for a completion or the deadline.
    Idle {
        /// The deadline, if any.
        deadline: Option<Instant>,
        /// Its timer.
        timer: Option<Timer>,
    },
    /// The order is over: [`AcmeOrder::take_result`] holds the outcome.
    Done,
}

/// An ACME problem document (RFC 8555 6.7, RFC 7807).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The HTTP status.
    pub status: u16,
    /// The type, e.g. `urn:ietf:params:acme:error:rateLimited` (empty when absent).
    pub kind: String,
    /// The detail text.
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self
            .kind
            .strip_prefix("urn:ietf:params:acme:error:")
            .unwrap_or(&self.kind);
        write!(f, "{} {kind}: {}", self.status, self.detail)
    }
}

/// Why an order failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    /// The caller's input cannot make an order (no names, a key that is not P-256).
    #[error("acme: {0}")]
    Setup(String),
    /// An HTTPS request failed (connection, TLS, timeout).
    #[error("acme: {url}: {error}")]
    Fetch {
        /// The request URL.
        url: String,
        /// What went wrong.
        error: FetchError,
    },
    /// The server answered with an error (rate limits included).
    #[error("acme: {url}: {problem}")]
    Server {
        /// The request URL.
        url: String,
        /// The problem document.
        problem: Problem,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The server's answer is not what RFC 8555 says it should be.
    #[error("acme: {url}: invalid response: {why}")]
    Protocol {
        /// The request URL.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The CA offers no challenge of the configured kind for a name.
    #[error("acme: {identifier}: no {wanted} challenge offered (offered: {offered})")]
    NoChallenge {
        /// The name.
        identifier: String,
        /// The configured kind.
        wanted: &'static str,
        /// What the CA offers, comma-separated.
        offered: String,
    },
    /// The CA could not validate a name.
    #[error("acme: {identifier}: authorization {status}: {detail}")]
    Authorization {
        /// The name.
        identifier: String,
        /// The authorization's status (`invalid`, `expired`, ...).
        status: String,
        /// The challenge's error, if the CA gave one.
        detail: String,
    },
    /// The order became invalid.
    #[error("acme: order {url} invalid: {detail}")]
    Order {
        /// The order URL.
        url: String,
        /// The order's error, if the CA gave one.
        detail: String,
    },
    /// The account key could not sign.
    #[error("acme: signing: {0}")]
    Sign(String),
    /// The order did not finish within [`AcmeConfig::timeout`].
    #[error("acme: order not finished within {0:?}")]
    Timeout(Duration),
}

impl AcmeError {
    /// The server's `Retry-After`, for a server error that has one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AcmeError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A certificate as issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The chain, PEM (leaf first).
    pub chain_pem: String,
    /// The account URL (the `kid` of later requests).
    pub account_url: String,
}

/// The directory's URLs.
#[derive(Clone, Debug, Default)]
struct Directory {
    new_nonce: String,
    new_account: String,
    new_order: String,
}

/// What a request is for: decides what its response leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Directory,
    Account,
    NewOrder,
    /// The first look at authorization `i`.
    Authz(usize),
    /// The response to challenge `i`.
    Respond(usize),
    /// A poll of authorization `i`.
    PollAuthz(usize),
    Finalize,
    PollOrder,
    Download,
}

/// Where the current request is.
#[derive(Clone, Debug)]
enum Phase {
    /// A nonce is being fetched for it.
    Nonce(Token),
    /// Its signature is being made.
    Signing(Token, Unsigned),
    /// It is being fetched.
    Fetching(Token),
    /// Waiting for the poll timer, then sent.
    Waiting,
    /// Waiting for a challenge to be published, then sent.
    Publishing(Token),
}

/// The request in flight.
#[derive(Clone, Debug)]
struct Request {
    step: Step,
    url: String,
    /// `None`: an unsigned GET (the directory); `Some("")`: POST-as-GET.
    payload: Option<String>,
    phase: Phase,
    bad_nonces: u32,
}

/// One certificate order; see the module docs.
#[derive(Debug)]
pub struct AcmeOrder {
    config: Arc<AcmeConfig>,
    key: AccountKey,
    names: Vec<String>,
    csr: Vec<u8>,
    dir: Directory,
    nonce: Option<String>,
    account_url: Option<String>,
    order_url: String,
    finalize_url: String,
    authorizations: Vec<String>,
    /// Challenges published and not taken away yet.
    published: Vec<Challenge>,
    req: Option<Request>,
    next_token: u64,
    outputs: VecDeque<Output>,
    timers: TimerTable<Timer>,
    result: Option<Result<Issued, AcmeError>>,
    last_mono: Instant,
    wall: UnixTime,
}

impl AcmeOrder {
    /// An order for `names` (DNS names) with the account key `key` and a CSR (DER) for
    /// those names; the first output fetches the directory.
    pub fn new(
        config: Arc<AcmeConfig>,
        key: AccountKey,
        names: Vec<String>,
        csr_der: Vec<u8>,
        now: Now,
    ) -> AcmeOrder {
        let mut timers = TimerTable::default();
        timers.set(Timer::Total, now.mono + config.timeout);
        let mut o = AcmeOrder {
            key,
            names,
            csr: csr_der,
            dir: Directory::default(),
            nonce: None,
            account_url: None,
            order_url: String::new(),
            finalize_url: String::new(),
            authorizations: Vec::new(),
            published: Vec::new(),
            req: None,
            next_token: 0,
            outputs: VecDeque::new(),
            timers,
            result: None,
            last_mono: now.mono,
            wall: now.wall,
            config,
        };
        if o.names.is_empty() {
            o.fail(AcmeError::Setup(
                "no names to order a certificate for".into(),
            ));
        } else {
            let url = o.config.directory_url.clone();
            o.start(Step::Directory, url, None);
        }
        o
    }

    /// Takes the outcome out, once [`Output::Done`] was returned.
    pub fn take_result(&mut self) -> Option<Result<Issued, AcmeError>> {
        self.result.take()
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn guard(&mut self, now: Now) -> Instant {
        if now.mono > self.last_mono {
            self.last_mono = now.mono;
        }
        if now.wall > self.wall {
            self.wall = now.wall;
        }
        self.last_mono
    }

    /// Takes one input. Never fails: every failure ends the order with an error result.
    pub fn handle(&mut self, now: Now, input: Input) {
        let mono = self.guard(now);
        if self.result.is_some() {
            return;
        }
        match input {
            Input::Timeout => match self.timers.expired(mono) {
                Some(Timer::Total) => self.fail(AcmeError::Timeout(self.config.timeout)),
                Some(Timer::Poll) => {
                    if let Some(r) = self.req.as_mut() {
                        if matches!(r.phase, Phase::Waiting) {
                            self.send();
                        }
                    }
                }
                None => {}
            },
            Input::Completed(token, c) => self.completed(token, c),
        }
    }

    fn completed(&mut self, token: Token, c: Completion) {
        let Some(r) = self.req.as_ref() else {
            return;
        };
        let (phase, url, step) = (r.phase.clone(), r.url.clone(), r.step.clone());
        match (phase, c) {
            (Phase::Nonce(t), Completion::Fetched(res)) if t == token => {
                let url = self.dir.new_nonce.clone();
                match res {
                    Err(error) => self.fail(AcmeError::Fetch { url, error }),
                    Ok(resp) => {
                        self.take_nonce(&resp);
                        if self.nonce.is_none() {
                            return self.fail(AcmeError::Protocol {
                                url,
                                why: format!("no Replay-Nonce (status {})", resp.status),
                            });
                        }
                        self.send();
                    }
                }
            }
            (Phase::Signing(t, u), Completion::Signed(sig)) if t == token => {
                let mut fr = FetchRequest::post(&url, "application/jose+json", u.body(&sig));
                if step == Step::Download {
                    fr.headers
                        .push(Header::new("Accept", "application/pem-certificate-chain"));
                }
                let t = self.token();
                if let Some(r) = self.req.as_mut() {
                    r.phase = Phase::Fetching(t);
                }
                self.outputs.push_back(Output::Effect(t, Effect::Fetch(fr)));
            }
            (Phase::Signing(t, _), Completion::SignFailed(why)) if t == token => {
                self.fail(AcmeError::Sign(why))
            }
            (Phase::Fetching(t), Completion::Fetched(res)) if t == token => match res {
                Err(error) => self.fail(AcmeError::Fetch { url, error }),
                Ok(resp) => self.response(resp),
            },
            (Phase::Publishing(t), Completion::Published) if t == token => self.send(),
            // Late or unknown answers (an unpublish, or after a failure) are ignored.
            _ => {}
        }
    }

    /// Starts a request; `payload` `None` is an unsigned GET.
    fn start(&mut self, step: Step, url: String, payload: Option<String>) {
        self.req = Some(Request {
            step,
            url,
            payload,
            phase: Phase::Waiting,
            bad_nonces: 0,
        });
        self.send();
    }

    /// Sends the current request: a GET at once; a POST signed with the nonce at hand, or
    /// after fetching one.
    fn send(&mut self) {
        let Some(r) = self.req.clone() else {
            return;
        };
        let t = self.token();
        let phase = match &r.payload {
            None => {
                self.outputs
                    .push_back(Output::Effect(t, Effect::Fetch(FetchRequest::get(&r.url))));
                Phase::Fetching(t)
            }
            Some(payload) => match self.nonce.take() {
                None => {
                    let get = FetchRequest::get(&self.dir.new_nonce);
                    self.outputs
                        .push_back(Output::Effect(t, Effect::Fetch(get)));
                    Phase::Nonce(t)
                }
                Some(nonce) => {
                    let signer = match &self.account_url {
                        Some(kid) if r.step != Step::Account => Signer::Kid(kid),
                        _ => Signer::Jwk(&self.key),
                    };
                    let u = Unsigned::new(signer, &nonce, &r.url, payload);
                    self.outputs
                        .push_back(Output::Effect(t, Effect::Sign(u.signing_input())));
                    Phase::Signing(t, u)
                }
            },
        };
        if let Some(r) = self.req.as_mut() {
            r.phase = phase;
        }
    }

    fn take_nonce(&mut self, resp: &Response) {
        if let Some(n) = crate::http::codec::header(&resp.headers, "replay-nonce") {
            let n = n.trim();
            if !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                self.nonce = Some(n.to_string());
            }
        }
    }

    /// The server's `Retry-After`, if any (delta-seconds or an HTTP date).
    fn retry_after(&self, resp: &Response) -> Option<Duration> {
        let v = crate::http::codec::header(&resp.headers, "retry-after")?.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        let at = parse_http_date(v)?;
        Some(Duration::from_secs(
            u64::try_from(at.0.saturating_sub(self.wall.0)).unwrap_or(0),
        ))
    }

    fn response(&mut self, resp: Response) {
        self.take_nonce(&resp);
        let Some(r) = self.req.clone() else {
            return;
        };
        if resp.status >= 400 || (r.step != Step::Directory && resp.status >= 300) {
            let problem = problem(&resp);
            if problem.kind == "urn:ietf:params:acme:error:badNonce"
                && r.payload.is_some()
                && r.bad_nonces < self.config.max_bad_nonce_retries
            {
                self.outputs
                    .push_back(Output::Event(Event::BadNonceRetry { url: r.url.clone() }));
                if let Some(r) = self.req.as_mut() {
                    r.bad_nonces += 1;
                }
                return self.send();
            }
            let retry_after = self.retry_after(&resp);
            return self.fail(AcmeError::Server {
                url: r.url,
                problem,
                retry_after,
            });
        }
        let url = r.url.clone();
        let bad = |why: String| AcmeError::Protocol {
            url: url.clone(),
            why,
        };
        let result = match r.step {
            Step::Download => self.downloaded(&resp).map_err(bad),
            step => match serde_json::from_slice::<Value>(&resp.body) {
                Err(e) => Err(bad(format!("not JSON: {e}"))),
                Ok(v) => self.step_done(step, &resp, &v, &url),
            },
        };
        if let Err(e) = result {
            self.fail(e);
        }
    }

    fn step_done(
        &mut self,
        step: Step,
        resp: &Response,
        v: &Value,
        url: &str,
    ) -> Result<(), AcmeError> {
        let bad = |why: String| AcmeError::Protocol {
            url: url.to_string(),
            why,
        };
        let field = |name: &str| -> Result<String, AcmeError> {
            v.get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad(format!("no {name:?}")))
        };
        let status = || field("status");
        match step {
            Step::Directory => {
                self.dir = Directory {
                    new_nonce: field("newNonce")?,
                    new_account: field("newAccount")?,
                    new_order: field("newOrder")?,
                };
                let mut payload = serde_json::json!({ "termsOfServiceAgreed": true });
                if !self.config.contact.is_empty() {
                    payload["contact"] = serde_json::json!(self.config.contact);
                }
                let u = self.dir.new_account.clone();
                self.start(Step::Account, u, Some(payload.to_string()));
            }
            Step::Account => {
                let Some(loc) = crate::http::codec::header(&resp.headers, "location") else {
                    return Err(bad("no Location (the account URL)".into()));
                };
                let st = status()?;
                if st != "valid" {
                    return Err(bad(format!("account status {st:?}")));
                }
                self.account_url = Some(loc.to_string());
                self.outputs.push_back(Output::Event(Event::Account {
                    url: loc.to_string(),
                    created: resp.status == 201,
                }));
                let ids: Vec<Value> = self
                    .names
                    .iter()
                    .map(|n| serde_json::json!({"type": "dns", "value": n}))
                    .collect();
                let payload = serde_json::json!({ "identifiers": ids }).to_string();
                let u = self.dir.new_order.clone();
                self.start(Step::NewOrder, u, Some(payload));
            }
            Step::NewOrder => {
                let Some(loc) = crate::http::codec::header(&resp.headers, "location") else {
                    return Err(bad("no Location (the order URL)".into()));
                };
                self.order_url = loc.to_string();
                self.finalize_url = field("finalize")?;
                self.authorizations = v
                    .get("authorizations")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                self.outputs.push_back(Output::Event(Event::Order {
                    url: self.order_url.clone(),
                }));
                self.order_status(v, url)?;
            }
            Step::Authz(i) => {
                let st = status()?;
                let identifier = identifier(v);
                match st.as_str() {
                    "valid" => self.next_authz(i + 1),
                    "pending" => {
                        let kind = self.config.challenge;
                        let challenges = v
                            .get("challenges")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        let Some(ch) = challenges
                            .iter()
                            .find(|c| c.get("type").and_then(Value::as_str) == Some(kind.name()))
                        else {
                            let offered: Vec<&str> = challenges
                                .iter()
                                .filter_map(|c| c.get("type").and_then(Value::as_str))
                                .collect();
                            return Err(AcmeError::NoChallenge {
                                identifier,
                                wanted: kind.name(),
                                offered: offered.join(", "),
                            });
                        };
                        let (Some(curl), Some(token)) = (
                            ch.get("url").and_then(Value::as_str),
                            ch.get("token").and_then(Value::as_str),
                        ) else {
                            return Err(bad("challenge without url or token".into()));
                        };
                        if token.is_empty()
                            || !token
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                        {
                            return Err(bad(format!("challenge token {token:?}")));
                        }
                        let c = Challenge {
                            kind,
                            identifier,
                            token: token.to_string(),
                            key_authorization: self.key.key_authorization(token),
                        };
                        // Published first; the challenge's response goes out once it is.
                        let t = self.token();
                        self.published.push(c.clone());
                        self.outputs
                            .push_back(Output::Effect(t, Effect::Publish(c)));
                        self.req = Some(Request {
                            step: Step::Respond(i),
                            url: curl.to_string(),
                            payload: Some("{}".into()),
                            phase: Phase::Publishing(t),
                            bad_nonces: 0,
                        });
                    }
                    _ => {
                        return Err(AcmeError::Authorization {
                            identifier,
                            status: st,
                            detail: challenge_error(v),
                        })
                    }
                }
            }
            Step::Respond(i) => {
                let delay = self.poll_delay(resp);
                let u = self.authorizations[i].clone();
                self.wait(Step::PollAuthz(i), u, delay);
            }
            Step::PollAuthz(i) => {
                let st = status()?;
                let identifier = identifier(v);
                match st.as_str() {
                    "valid" => {
                        self.unpublish(&identifier);
                        self.outputs
                            .push_back(Output::Event(Event::Validated { identifier }));
                        self.next_authz(i + 1);
                    }
                    "pending" | "processing" => {
                        let delay = self.poll_delay(resp);
                        self.wait(Step::PollAuthz(i), url.to_string(), delay);
                    }
                    _ => {
                        return Err(AcmeError::Authorization {
                            identifier,
                            status: st,
                            detail: challenge_error(v),
                        })
                    }
                }
            }
            Step::Finalize | Step::PollOrder => {
                let st = status()?;
                // `ready` after finalize: the CA has not started yet.
                if st == "processing" || st == "ready" {
                    let delay = self.poll_delay(resp);
                    let u = self.order_url.clone();
                    self.wait(Step::PollOrder, u, delay);
                } else {
                    self.order_status(v, url)?;
                }
            }
            Step::Download => {}
        }
        Ok(())
    }

    /// Goes on from an order object: its authorizations, finalize or the download.
    fn order_status(&mut self, v: &Value, url: &str) -> Result<(), AcmeError> {
        let st = v.get("status").and_then(Value::as_str).unwrap_or_default();
        match st {
            "pending" => self.next_authz(0),
            "ready" => self.finalize(),
            "processing" => {
                let u = self.order_url.clone();
                self.wait(Step::PollOrder, u, self.config.poll_interval);
            }
            "valid" => {
                let Some(cert) = v.get("certificate").and_then(Value::as_str) else {
                    return Err(AcmeError::Protocol {
                        url: url.to_string(),
                        why: "valid order without \"certificate\"".into(),
                    });
                };
                self.start(Step::Download, cert.to_string(), Some(String::new()));
            }
            _ => {
                return Err(AcmeError::Order {
                    url: self.order_url.clone(),
                    detail: problem_detail(v.get("error"))
                        .unwrap_or_else(|| format!("status {st:?}")),
                })
            }
        }
        Ok(())
    }

    /// Looks at authorization `i`, or finalizes after the last.
    fn next_authz(&mut self, i: usize) {
        match self.authorizations.get(i) {
            Some(u) => {
                let u = u.clone();
                self.start(Step::Authz(i), u, Some(String::new()));
            }
            None => self.finalize(),
        }
    }

    fn finalize(&mut self) {
        let payload = serde_json::json!({ "csr": jws::b64(&self.csr) }).to_string();
        let u = self.finalize_url.clone();
        self.start(Step::Finalize, u, Some(payload));
    }

    fn poll_delay(&self, resp: &Response) -> Duration {
        self.retry_after(resp)
            .unwrap_or(self.config.poll_interval)
            .min(self.config.max_poll_interval)
    }

    /// Sends a POST-as-GET of `url` for `step` after `delay`.
    fn wait(&mut self, step: Step, url: String, delay: Duration) {
        self.req = Some(Request {
            step,
            url,
            payload: Some(String::new()),
            phase: Phase::Waiting,
            bad_nonces: 0,
        });
        self.timers.set(Timer::Poll, self.last_mono + delay);
    }

    fn downloaded(&mut self, resp: &Response) -> Result<(), String> {
        let text = std::str::from_utf8(&resp.body).map_err(|_| "chain is not text".to_string())?;
        if !text.contains("-----BEGIN CERTIFICATE-----") {
            return Err("no PEM certificate in the response".into());
        }
        let url = self.req.as_ref().map(|r| r.url.clone()).unwrap_or_default();
        self.outputs.push_back(Output::Event(Event::Issued { url }));
        self.finish(Ok(Issued {
            chain_pem: text.to_string(),
            account_url: self.account_url.clone().unwrap_or_default(),
        }));
        Ok(())
    }

    fn unpublish(&mut self, identifier: &str) {
        let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.published)
            .into_iter()
            .partition(|c| c.identifier == identifier);
        self.published = keep;
        for c in gone {
            let t = self.token();
            self.outputs
                .push_back(Output::Effect(t, Effect::Unpublish(c)));
        }
    }

    fn fail(&mut self, e: AcmeError) {
        self.finish(Err(e));
    }

    fn finish(&mut self, outcome: Result<Issued, AcmeError>) {
        // Effects not yet handed out are dropped; published challenges are taken away.
        self.outputs
            .retain(|o| !matches!(o, Output::Effect(_, Effect::Fetch(_) | Effect::Sign(_))));
        for c in std::mem::take(&mut self.published) {
            let t = self.token();
            self.outputs
                .push_back(Output::Effect(t, Effect::Unpublish(c)));
        }
        self.req = None;
        self.timers.clear();
        if self.result.is_none() {
            self.result = Some(outcome);
        }
    }

    /// The next output; call until it returns `Idle` or `Done` after every `handle`.
    pub fn poll(&mut self, now: Now) -> Output {
        self.guard(now);
        if let Some(o) = self.outputs.pop_front() {
            return o;
        }
        if self.result.is_some() {
            return Output::Done;
        }
        let next = self.timers.next();
        Output::Idle {
            deadline: next.map(|(_, at)| at),
            timer: next.map(|(t, _)| t),
        }
    }
}

/// The `identifier.value` of an authorization.
fn identifier(v: &Value) -> String {
    v.get("identifier")
        .and_then(|i| i.get("value"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `type: detail` of a problem object.
fn problem_detail(p: Option<&Value>) -> Option<String> {
    let p = p?;
    let kind = p.get("type").and_then(Value::as_str).unwrap_or_default();
    let kind = kind
        .strip_prefix("urn:ietf:params:acme:error:")
        .unwrap_or(kind);
    let detail = p.get("detail").and_then(Value::as_str).unwrap_or_default();
    Some(format!("{kind}: {detail}"))
}

/// The errors of an authorization's challenges.
fn challenge_error(v: &Value) -> String {
    let errors: Vec<String> = v
        .get("challenges")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    let kind = c.get("type").and_then(Value::as_str).unwrap_or("?");
                    problem_detail(c.get("error")).map(|d| format!("{kind}: {d}"))
                })
                .collect()
        })
        .unwrap_or_default();
    if errors.is_empty() {
        "no error given".into()
    } else {
        errors.join("; ")
    }
}

/// The problem document of an error response (a generic one when the body is not one).
fn problem(resp: &Response) -> Problem {
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Problem {
        status: resp.status,
        kind: s("type").unwrap_or_default(),
        detail: s("detail").unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&resp.body);
            let text: String = text.chars().take(200).collect();
            if text.trim().is_empty() {
                "no detail".into()
            } else {
                text.trim().to_string()
            }
        }),
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), as `Retry-After` may carry.
pub fn parse_http_date(v: &str) -> Option<UnixTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_, rest) = v.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [d, mon, y, hms, "GMT"] = parts.as_slice() else {
        return None;
    };
    let m = MONTHS.iter().position(|x| x == mon)? as u32 + 1;
    let hms: Vec<u32> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [hh, mm, ss] = hms.as_slice() else {
        return None;
    };
    UnixTime::from_civil(y.parse().ok()?, m, d.parse().ok()?, *hh, *mm, *ss)
}

// ---- The renewal schedule ----

/// When a certificate valid until `not_after` is renewed: `renew_before` ahead of its
/// expiry, but not before `min_interval` after it was issued (`issued`): a
/// `renew_before` longer than the CA's lifetimes must not make a renewal loop.
pub fn renew_at(
    issued: UnixTime,
    not_after: UnixTime,
    renew_before: Duration,
    min_interval: Duration,
) -> UnixTime {
    let due = UnixTime(
        not_after
            .0
            .saturating_sub(i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX)),
    );
    due.max(issued.add(min_interval))
}

/// The first wait after a failure.
pub const RETRY_FIRST: Duration = Duration::from_secs(60);

/// The longest wait between attempts after failures.
pub const RETRY_MAX: Duration = Duration::from_secs(6 * 3600);

/// The wait before the next attempt after `failures` failed attempts in a row (1 for the
/// first): one minute, doubling, at most six hours; at least what the server asked for
/// with `Retry-After` (a rate limit).
pub fn retry_delay(failures: u32, retry_after: Option<Duration>) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let backoff = RETRY_FIRST.saturating_mul(1 << exp).min(RETRY_MAX);
    backoff.max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests;
