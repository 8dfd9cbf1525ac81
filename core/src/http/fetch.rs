//! [`HttpsFetch`]: one HTTPS request (GET, or POST with a body) as a sans-IO machine.
//!
//! Used for MTA-STS policy fetches (RFC 8461 3.3) and TLS reports to https `rua` URIs
//! (RFC 8460 3). It follows the crate's driving contract:
//!
//! * The TCP connection is asked for as [`Effect::Connect`] with the URL's host **name**
//!   and port: the driver resolves the name (A/AAAA), connects to the addresses in order
//!   until one accepts, and answers [`Completion::Connected`] or
//!   [`Completion::ConnectFailed`]. A host name rather than addresses because nothing in
//!   the fetch depends on which address answered (the certificate is checked against the
//!   name), and it keeps the machine to a single connection.
//! * TLS runs inside the machine ([`crate::tls::TlsLayer`]) with the caller's
//!   `rustls::ClientConfig` ([`FetchConfig::tls`]: WebPKI roots), the URL host as SNI and
//!   as the name the certificate must be valid for.
//! * The request is sent with `Connection: close`; the response head and body are parsed
//!   with [`crate::http::codec`] under [`FetchConfig::limits`]; a body over
//!   [`Limits::max_body`] ends the fetch with [`FetchError::TooLarge`].
//! * Redirects are not followed (RFC 8461 3.3): a 3xx is returned as a response like any
//!   other status, and the caller decides (for MTA-STS, [`sts_policy`] refuses it).
//! * One deadline covers everything, connecting included ([`FetchConfig::timeout`]).
//!
//! When [`Output::Done`] is returned, [`HttpsFetch::result`] holds the response or the error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::codec::{
    encode_request, parse_response, BodyDecoder, Header, HttpError, Limits, RequestHead,
    ResponseHead,
};
use super::Response;
use crate::time::Now;
use crate::timer::TimerTable;
use crate::tls::{TlsError, TlsLayer};
use crate::tlspolicy::{self, ResultType, StsPolicy};
use crate::Token;

/// How fetches behave.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// The TLS client config: WebPKI verification against the configured roots (a
    /// `rustls::ClientConfig` built with `with_root_certificates`).
    pub tls: Arc<rustls::ClientConfig>,
    /// Limits on the response: head size and header count, and the largest body.
    pub limits: Limits,
    /// The whole fetch, connecting included, must finish within this.
    pub timeout: Duration,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Also `http://` URLs, in plain text (webhooks to the operator's applications);
    /// MTA-STS, ACME and reports never set it.
    pub allow_http: bool,
}

impl FetchConfig {
    /// For MTA-STS policy fetches: bodies of at most [`tlspolicy::MAX_POLICY_SIZE`]
    /// (64 KiB), one minute in total.
    pub fn mta_sts(tls: Arc<rustls::ClientConfig>) -> FetchConfig {
        FetchConfig {
            tls,
            limits: Limits {
                max_body: tlspolicy::MAX_POLICY_SIZE,
                ..Limits::default()
            },
            timeout: Duration::from_secs(60),
            user_agent: "rmox".to_string(),
            allow_http: false,
        }
    }
}

/// The request method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET, no body.
    Get,
    /// POST with a body.
    Post,
}

/// What to fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// GET or POST.
    pub method: Method,
    /// An `https://host[:port]/path` URL.
    pub url: String,
    /// More request header fields (Content-Type for a POST, for example).
    pub headers: Vec<Header>,
    /// The body of a POST.
    pub body: Vec<u8>,
}

impl FetchRequest {
    /// A GET of `url`.
    pub fn get(url: &str) -> FetchRequest {
        FetchRequest {
            method: Method::Get,
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A POST of `body` with this content type (e.g. `application/tlsrpt+gzip`).
    pub fn post(url: &str, content_type: &str, body: Vec<u8>) -> FetchRequest {
        FetchRequest {
            method: Method::Post,
            url: url.to_string(),
            headers: vec![Header::new("Content-Type", content_type)],
            body,
        }
    }
}

/// Why a fetch failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The caller's URL is not an `https://host[:port]/path` URL.
    #[error("https fetch: invalid url: {0}")]
    InvalidUrl(String),
    /// The connection could not be made (the driver's reason).
    #[error("https fetch: connect: {0}")]
    Connect(String),
    /// The server's certificate did not verify (untrusted, wrong name, expired).
    #[error("https fetch: certificate: {0}")]
    Certificate(String),
    /// Another TLS failure (handshake, alert, bad record).
    #[error("https fetch: tls: {0}")]
    Tls(String),
    /// The response is not valid HTTP, or the connection closed inside it.
    #[error("https fetch: {0}")]
    Protocol(HttpError),
    /// The response body is larger than the limit (bytes).
    #[error("https fetch: response body larger than {0} bytes")]
    TooLarge(usize),
    /// The fetch did not finish within [`FetchConfig::timeout`].
    #[error("https fetch: timed out")]
    Timeout,
}

impl FetchError {
    /// Whether the server's certificate was the problem.
    pub fn is_certificate(&self) -> bool {
        matches!(self, FetchError::Certificate(_))
    }

    /// The RFC 8460 result type of this failure when fetching an MTA-STS policy:
    /// `sts-webpki-invalid` for certificate errors, else `sts-policy-fetch-error`.
    pub fn sts_result_type(&self) -> ResultType {
        self.to_sts().result_type()
    }

    /// The MTA-STS fetch error for this failure.
    pub fn to_sts(&self) -> tlspolicy::FetchError {
        match self {
            FetchError::Certificate(d) => tlspolicy::FetchError::WebPki(d.clone()),
            e => tlspolicy::FetchError::Fetch(e.to_string()),
        }
    }
}

/// The MTA-STS policy from a fetch's outcome (RFC 8461 3.3): a 200 with a `text/plain` body
/// that parses; every failure with its RFC 8460 result type
/// ([`tlspolicy::FetchError::result_type`]).
pub fn sts_policy(
    outcome: &Result<Response, FetchError>,
) -> Result<StsPolicy, tlspolicy::FetchError> {
    match outcome {
        Ok(r) => tlspolicy::policy_from_response(r.status, r.content_type(), &r.body),
        Err(e) => Err(e.to_sts()),
    }
}

/// Requests for the outside world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Resolve `host` and open a TCP connection to `port`; answer with
    /// [`Completion::Connected`] or [`Completion::ConnectFailed`].
    Connect {
        /// The host name (or IP address literal) of the URL.
        host: String,
        /// The port (443 unless the URL says otherwise).
        port: u16,
        /// The time left for the whole fetch (the driver may give up after it).
        timeout: Duration,
    },
}

/// Answers to effects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The connection is open.
    Connected,
    /// No connection, why.
    ConnectFailed(String),
}

/// Inputs to [`HttpsFetch::handle`].
#[derive(Debug)]
pub enum Input<'a> {
    /// The answer to an earlier effect.
    Completed(Token, Completion),
    /// Bytes from the server.
    Received(&'a [u8]),
    /// The server closed the connection (EOF or error).
    Closed,
    /// A deadline may have passed.
    Timeout,
}

/// The machine's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// The whole fetch.
    Total,
}

/// Outputs of [`HttpsFetch::poll`].
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Bytes were appended to the transmit buffer: write them.
    Transmit,
    /// Perform this effect and answer with [`Input::Completed`].
    Effect(Token, Effect),
    /// Flush what was transmitted and close the connection (or abandon the attempt).
    Close,
    /// Nothing more now: wait for input, a completion or the deadline.
    Idle {
        /// The deadline, if any.
        deadline: Option<Instant>,
        /// Its timer.
        timer: Option<Timer>,
    },
    /// The fetch is over: [`HttpsFetch::result`] holds the outcome. Returned from then on.
    Done,
}

#[derive(Debug)]
enum State {
    /// The connect effect is queued or outstanding.
    Connecting(Token),
    /// Connected: TLS, request, response.
    Exchanging(Box<Exchange>),
    /// The result is set.
    Finished,
}

#[derive(Debug)]
struct Exchange {
    /// `None` for plain `http://`.
    tls: Option<TlsLayer>,
    /// Plaintext received and not parsed yet.
    plain: Vec<u8>,
    head: Option<(ResponseHead, BodyDecoder)>,
    body: Vec<u8>,
}

/// One HTTPS request; see the module docs.
#[derive(Debug)]
pub struct HttpsFetch {
    config: Arc<FetchConfig>,
    host: String,
    port: u16,
    /// `https://` (else plain `http://`).
    https: bool,
    method: &'static str,
    request: Vec<u8>,
    state: State,
    /// Ciphertext to transmit.
    out: Vec<u8>,
    outputs: VecDeque<Output>,
    timers: TimerTable<Timer>,
    result: Option<Result<Response, FetchError>>,
    last_now: Instant,
}

/// Host, port and path-and-query of an `https` URL.
fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .get(..8)
        .filter(|s| s.eq_ignore_ascii_case("https://"))
        .map(|_| &url[8..])
        .ok_or("not an https url")?;
    parse_rest(rest, 443)
}

/// Host, port, path-and-query and whether TLS is used, of an `https` or `http` URL.
fn parse_any_url(url: &str) -> Result<(String, u16, String, bool), String> {
    if let Some(rest) = url
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| &url[7..])
    {
        let (h, p, path) = parse_rest(rest, 80)?;
        return Ok((h, p, path, false));
    }
    let (h, p, path) = parse_url(url).map_err(|_| "not an http or https url".to_string())?;
    Ok((h, p, path, true))
}

/// The part of a URL after its scheme; `default_port` when it names none.
fn parse_rest(rest: &str, default_port: u16) -> Result<(String, u16, String), String> {
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err("user information in url".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed [ in host")?;
        match after {
            "" => (h, None),
            a => (h, Some(a.strip_prefix(':').ok_or("junk after host")?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?,
        None => default_port,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
    {
        return Err(format!("bad host {host:?}"));
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("bad path".into());
    }
    Ok((host, port, path))
}

impl HttpsFetch {
    /// A fetch of `request`; the first output is the connect effect (or `Done` with an
    /// [`FetchError::InvalidUrl`]).
    pub fn new(config: Arc<FetchConfig>, request: &FetchRequest, now: Now) -> HttpsFetch {
        let mut timers = TimerTable::default();
        timers.set(Timer::Total, now.mono + config.timeout);
        let mut f = HttpsFetch {
            host: String::new(),
            port: 443,
            https: true,
            method: match request.method {
                Method::Get => "GET",
                Method::Post => "POST",
            },
            request: Vec::new(),
            state: State::Finished,
            out: Vec::new(),
            outputs: VecDeque::new(),
            timers,
            result: None,
            last_now: now.mono,
            config,
        };
        let parsed = if f.config.allow_http {
            parse_any_url(&request.url)
        } else {
            parse_url(&request.url).map(|(h, p, path)| (h, p, path, true))
        };
        let (host, port, path, https) = match parsed {
            Ok(v) => v,
            Err(e) => {
                f.finish(Err(FetchError::InvalidUrl(e)));
                return f;
            }
        };
        f.https = https;
        let default_port = if https { 443 } else { 80 };
        let mut headers = vec![
            Header::new(
                "Host",
                &match (host.contains(':'), port) {
                    (false, p) if p == default_port => host.clone(),
                    (true, p) if p == default_port => format!("[{host}]"),
                    (false, p) => format!("{host}:{p}"),
                    (true, p) => format!("[{host}]:{p}"),
                },
            ),
            Header::new("User-Agent", &f.config.user_agent),
            Header::new("Connection", "close"),
        ];
        headers.extend(request.headers.iter().cloned());
        let head = RequestHead {
            method: f.method.to_string(),
            target: path,
            minor: 1,
            headers,
        };
        if let Err(e) = encode_request(&head, &request.body, &mut f.request) {
            f.finish(Err(FetchError::InvalidUrl(e.to_string())));
            return f;
        }
        let token = Token(1);
        f.outputs.push_back(Output::Effect(
            token,
            Effect::Connect {
                host: host.clone(),
                port,
                timeout: f.config.timeout,
            },
        ));
        f.host = host;
        f.port = port;
        f.state = State::Connecting(token);
        f
    }

    /// The outcome, once [`Output::Done`] was returned.
    pub fn result(&self) -> Option<&Result<Response, FetchError>> {
        self.result.as_ref()
    }

    /// Takes the outcome out.
    pub fn take_result(&mut self) -> Option<Result<Response, FetchError>> {
        self.result.take()
    }

    /// The URL's host and port.
    pub fn target(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    fn guard(&mut self, now: Now) -> Instant {
        if now.mono > self.last_now {
            self.last_now = now.mono;
        }
        self.last_now
    }

    /// Takes one input. `Received` returns how many bytes were consumed; offer the rest
    /// again later. Never fails: every failure ends the fetch with an error result.
    pub fn handle(&mut self, now: Now, input: Input<'_>) -> usize {
        let now = self.guard(now);
        match input {
            Input::Completed(token, c) => {
                if !matches!(self.state, State::Connecting(t) if t == token) {
                    return 0;
                }
                match c {
                    Completion::Connected => self.connected(),
                    Completion::ConnectFailed(why) => self.finish(Err(FetchError::Connect(why))),
                }
                0
            }
            Input::Received(bytes) => self.received(bytes),
            Input::Closed => {
                self.closed();
                0
            }
            Input::Timeout => {
                if self.timers.expired(now) == Some(Timer::Total) {
                    self.finish(Err(FetchError::Timeout));
                }
                0
            }
        }
    }

    fn connected(&mut self) {
        let tls = if self.https {
            let mut tls = match TlsLayer::client(Arc::clone(&self.config.tls), &self.host) {
                Ok(t) => t,
                Err(e) => return self.finish(Err(tls_error(e))),
            };
            tls.write_plain(&self.request);
            tls.take_ciphertext(&mut self.out);
            Some(tls)
        } else {
            self.out.extend_from_slice(&self.request);
            None
        };
        self.state = State::Exchanging(Box::new(Exchange {
            tls,
            plain: Vec::new(),
            head: None,
            body: Vec::new(),
        }));
    }

    fn received(&mut self, bytes: &[u8]) -> usize {
        let State::Exchanging(x) = &mut self.state else {
            // Nothing is expected: drop the bytes.
            return bytes.len();
        };
        let used = match &mut x.tls {
            None => {
                x.plain.extend_from_slice(bytes);
                bytes.len()
            }
            Some(tls) => {
                let used = match tls.feed(bytes, &mut x.plain) {
                    Ok(n) => n,
                    Err(e) => {
                        tls.take_ciphertext(&mut self.out);
                        self.finish(Err(tls_error(e)));
                        return bytes.len();
                    }
                };
                tls.take_ciphertext(&mut self.out);
                used
            }
        };
        match self.parse() {
            Ok(Some(r)) => self.finish(Ok(r)),
            Ok(None) => {}
            Err(e) => self.finish(Err(e)),
        }
        used
    }

    /// Parses what was received: the response once complete.
    fn parse(&mut self) -> Result<Option<Response>, FetchError> {
        let State::Exchanging(x) = &mut self.state else {
            return Ok(None);
        };
        let limits = &self.config.limits;
        loop {
            if x.head.is_none() {
                let Some((head, n)) = parse_response(&x.plain, limits).map_err(http_error)? else {
                    return Ok(None);
                };
                x.plain.drain(..n);
                // Interim responses (100 Continue) come before the real one.
                if (100..200).contains(&head.status) && head.status != 101 {
                    continue;
                }
                let framing = head.framing(self.method).map_err(http_error)?;
                let dec = BodyDecoder::new(framing, limits).map_err(http_error)?;
                x.head = Some((head, dec));
            }
            let Some((head, dec)) = &mut x.head else {
                return Ok(None);
            };
            let n = dec.decode(&x.plain, &mut x.body).map_err(http_error)?;
            x.plain.drain(..n);
            if !dec.is_done() {
                return Ok(None);
            }
            return Ok(Some(Response {
                status: head.status,
                headers: std::mem::take(&mut head.headers),
                body: std::mem::take(&mut x.body),
            }));
        }
    }

    fn closed(&mut self) {
        let State::Exchanging(x) = &mut self.state else {
            if let State::Connecting(_) = self.state {
                self.finish(Err(FetchError::Connect("connection closed".into())));
            }
            return;
        };
        let outcome = match &mut x.head {
            Some((head, dec)) => match dec.finish() {
                Ok(()) => Ok(Response {
                    status: head.status,
                    headers: std::mem::take(&mut head.headers),
                    body: std::mem::take(&mut x.body),
                }),
                Err(e) => Err(http_error(e)),
            },
            None if x.tls.as_ref().is_some_and(TlsLayer::is_handshaking) => Err(FetchError::Tls(
                "connection closed during the handshake".into(),
            )),
            None => Err(FetchError::Protocol(HttpError::UnexpectedEof)),
        };
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Result<Response, FetchError>) {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Exchanging(mut x) => {
                if let Some(tls) = &mut x.tls {
                    tls.close();
                    tls.take_ciphertext(&mut self.out);
                }
                self.outputs.push_back(Output::Close);
            }
            State::Connecting(_) => {
                // The connect effect may still be queued: drop it, or abandon the attempt.
                let queued = self.outputs.len();
                self.outputs.retain(|o| !matches!(o, Output::Effect(..)));
                if self.outputs.len() == queued {
                    self.outputs.push_back(Output::Close);
                }
            }
            State::Finished => {}
        }
        self.timers.clear();
        if self.result.is_none() {
            self.result = Some(outcome);
        }
    }

    /// The next output; call until it returns `Idle` or `Done` after every `handle`.
    pub fn poll(&mut self, now: Now, tx: &mut Vec<u8>) -> Output {
        self.guard(now);
        if !self.out.is_empty() {
            tx.append(&mut self.out);
            return Output::Transmit;
        }
        if let Some(o) = self.outputs.pop_front() {
            return o;
        }
        if self.result.is_some() || matches!(self.state, State::Finished) {
            return Output::Done;
        }
        let next = self.timers.next();
        Output::Idle {
            deadline: next.map(|(_, at)| at),
            timer: next.map(|(t, _)| t),
        }
    }
}

fn http_error(e: HttpError) -> FetchError {
    match e {
        HttpError::BodyTooLarge(n) => FetchError::TooLarge(n),
        e => FetchError::Protocol(e),
    }
}

fn tls_error(e: TlsError) -> FetchError {
    match &e {
        TlsError::Protocol(rustls::Error::InvalidCertificate(_)) => {
            FetchError::Certificate(e.to_string())
        }
        _ => FetchError::Tls(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
