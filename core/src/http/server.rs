//! [`HttpServerSession`]: one HTTP/1.1 server connection as a sans-IO machine.
//!
//! It follows the crate's driving contract (see the crate docs):
//!
//! * Bytes from the client come in with [`Input::Received`] (ciphertext when
//!   [`ServerConfig::tls`] is set: implicit TLS runs inside the machine, as in the SMTP
//!   server session). The return value is how many bytes were consumed; with
//!   [`ServerConfig::max_pipelined`] requests waiting for answers, nothing more is consumed
//!   (backpressure).
//! * Each complete request (head and decoded body) is given to the caller as
//!   [`Effect::Request`] with a [`Token`]; the caller routes it (by path) and answers with
//!   [`Input::Completed`] and a [`Response`], in any order. Responses are sent in request
//!   order (pipelining, RFC 9112 9.3.2).
//! * The machine adds `Date`, `Content-Length` (no body for HEAD, 1xx, 204, 304) and
//!   `Connection: close` when the connection ends after that response.
//! * Bad input is answered by the machine, then the connection closes: 400 (malformed
//!   request, bad framing), 431 (head over [`Limits::max_head`] or more than
//!   [`Limits::max_headers`] fields), 413 (body over [`Limits::max_body`]), 501 (a transfer
//!   coding other than chunked), 408 (the request did not arrive within
//!   [`ServerConfig::request_timeout`]), 503 (the caller did not answer within
//!   [`ServerConfig::handler_timeout`]).
//! * Every response sent is an [`Event::Responded`] (the access log); refused requests and
//!   TLS failures are events too.
//! * `Expect: 100-continue` gets `100 Continue` when nothing is waiting to be sent before it.
//! * An idle keep-alive connection is closed after [`ServerConfig::idle_timeout`]. When the
//!   client closes its sending half, the complete requests it sent are still answered.
//! * [`Output::Close`] says to flush and close the connection; it is returned from then on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::codec::{
    encode_response, parse_request, BodyDecoder, Header, HttpError, Limits, RequestHead,
    ResponseHead,
};
use super::Response;
use crate::time::{Now, UnixTime};
use crate::timer::TimerTable;
use crate::tls::{TlsError, TlsLayer};
use crate::Token;

/// How a server connection behaves; shared by the connections of a listener.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Implicit TLS with this config (HTTPS); `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Head and body size limits of requests.
    pub limits: Limits,
    /// How long a keep-alive connection may wait for the next request.
    pub idle_timeout: Duration,
    /// How long a request may take to arrive, from its first byte to the end of its body.
    pub request_timeout: Duration,
    /// How long the caller may take to answer a request (then 503).
    pub handler_timeout: Duration,
    /// How long the TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// The most requests waiting for an answer or to be sent before the session stops
    /// reading.
    pub max_pipelined: usize,
    /// Refusals (400, 408, 413, 431, 501, 503, 500) as JSON `{"Code": "protocol",
    /// "Message": ...}` (webapi listeners) instead of plain text.
    pub json_errors: bool,
}

impl ServerConfig {
    /// Plain HTTP with default limits: 16 KiB heads, 1 MiB bodies, 60 s idle, 30 s per
    /// request, 60 s per answer, 10 s TLS handshake, 8 pipelined requests.
    pub fn new() -> ServerConfig {
        ServerConfig {
            tls: None,
            limits: Limits::default(),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            handler_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            max_pipelined: 8,
            json_errors: false,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig::new()
    }
}

/// Requests for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Answer this request with [`Completion::Response`].
    Request {
        /// The request head.
        head: RequestHead,
        /// The decoded body.
        body: Vec<u8>,
    },
}

/// Answers to effects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The response to an [`Effect::Request`].
    Response(Response),
}

/// Inputs to [`HttpServerSession::handle`].
#[derive(Debug)]
pub enum Input<'a> {
    /// Bytes from the client.
    Received(&'a [u8]),
    /// The answer to an earlier effect. Answers to requests the session gave up on are
    /// ignored.
    Completed(Token, Completion),
    /// The client closed the connection (or its sending half).
    Closed,
    /// A deadline may have passed.
    Timeout,
}

/// What happened, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A response was sent (the access log line).
    Responded {
        /// The request method (empty for a request that could not be read).
        method: String,
        /// The request target (empty for a request that could not be read).
        target: String,
        /// The status sent.
        status: u16,
        /// The body length.
        body_len: usize,
    },
    /// A request could not be read or was not answered in time; the session answers with
    /// `status` and closes.
    Refused {
        /// The status it is answered with (400, 408, 413, 431, 501, 503).
        status: u16,
        /// Why.
        reason: String,
    },
    /// The TLS layer failed (handshake or record); the session closes.
    TlsFailed(String),
}

/// The session's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// The TLS handshake.
    TlsHandshake,
    /// Waiting for the next request on a keep-alive connection.
    Idle,
    /// A request being received.
    Request,
    /// The oldest unanswered request.
    Handler,
}

/// Outputs of [`HttpServerSession::poll`].
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Bytes were appended to the transmit buffer: write them.
    Transmit,
    /// Perform this effect and answer with [`Input::Completed`].
    Effect(Token, Effect),
    /// Log or count this.
    Event(Event),
    /// Nothing more now: wait for input, a completion or the deadline.
    Idle {
        /// The earliest deadline, if any.
        deadline: Option<Instant>,
        /// Its timer.
        timer: Option<Timer>,
    },
    /// Flush what was transmitted and close the connection. Returned from then on.
    Close,
}

enum Reading {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Reading a body.
    Body {
        head: RequestHead,
        dec: BodyDecoder,
        body: Vec<u8>,
    },
    /// No more requests are read (error, `Connection: close`, client closed).
    Stopped,
}

struct Pending {
    token: Token,
    /// The request was HEAD (the response has no body).
    head_only: bool,
    /// The connection stays open after the response.
    keep_alive: bool,
    /// Give up on the answer at this time.
    deadline: Instant,
    response: Option<Response>,
    /// For the log: method and target.
    method: String,
    target: String,
}

/// One server connection; see the module docs.
pub struct HttpServerSession {
    config: Arc<ServerConfig>,
    tls: Option<TlsLayer>,
    /// Plaintext received and not parsed yet.
    plain: Vec<u8>,
    reading: Reading,
    pending: VecDeque<Pending>,
    next_token: u64,
    effects: VecDeque<(Token, Effect)>,
    events: VecDeque<Event>,
    /// Bytes to transmit.
    out: Vec<u8>,
    timers: TimerTable<Timer>,
    /// Close once the responses due are sent (and no more requests will be read).
    closing: bool,
    /// The client closed its sending half.
    peer_closed: bool,
    closed: bool,
    last_now: Instant,
    wall: UnixTime,
}

impl std::fmt::Debug for HttpServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServerSession")
            .field("pending", &self.pending.len())
            .field("closing", &self.closing)
            .finish()
    }
}

/// An IMF-fixdate (RFC 9110 5.6.7), e.g. `Sun, 22 Nov 2026 02:41:08 GMT`.
pub fn http_date(t: UnixTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, hh, mm, ss, wd) = t.civil();
    format!(
        "{}, {d:02} {} {y:04} {hh:02}:{mm:02}:{ss:02} GMT",
        DAYS[wd as usize % 7],
        MONTHS[(m as usize + 11) % 12]
    )
}

/// The status for a request that could not be read.
fn error_status(e: &HttpError) -> u16 {
    match e {
        HttpError::HeadTooLarge(_) | HttpError::TooManyHeaders(_) => 431,
        HttpError::BodyTooLarge(_) => 413,
        HttpError::UnsupportedTransferEncoding(_) => 501,
        _ => 400,
    }
}

fn error_response(status: u16, json: bool) -> Response {
    let text = format!("{status} {}", super::codec::reason(status));
    if json {
        let code = if status >= 500 { "server" } else { "protocol" };
        let e = crate::webapi::ApiError::new(code, text);
        return Response::new(status, "application/json; charset=utf-8", e.to_json());
    }
    Response::new(status, "text/plain; charset=utf-8", text + "\n")
}

impl HttpServerSession {
    /// A session for a new connection. Fails only when the TLS layer cannot be set up.
    pub fn new(config: Arc<ServerConfig>, now: Now) -> Result<HttpServerSession, TlsError> {
        let tls = match &config.tls {
            Some(tc) => Some(TlsLayer::server(Arc::clone(tc))?),
            None => None,
        };
        let mut timers = TimerTable::default();
        if tls.is_some() {
            timers.set(Timer::TlsHandshake, now.mono + config.tls_handshake_timeout);
        }
        timers.set(Timer::Idle, now.mono + config.idle_timeout);
        Ok(HttpServerSession {
            config,
            tls,
            plain: Vec::new(),
            reading: Reading::Head,
            pending: VecDeque::new(),
            next_token: 1,
            effects: VecDeque::new(),
            events: VecDeque::new(),
            out: Vec::new(),
            timers,
            closing: false,
            peer_closed: false,
            closed: false,
            last_now: now.mono,
            wall: now.wall,
        })
    }

    fn guard(&mut self, now: Now) -> Instant {
        if now.mono > self.last_now {
            self.last_now = now.mono;
            self.wall = now.wall;
        }
        self.last_now
    }

    /// Takes one input; `Received` returns how many bytes were consumed (offer the rest
    /// again once the session has sent responses). A client's error is answered, never
    /// returned.
    pub fn handle(&mut self, now: Now, input: Input<'_>) -> usize {
        let now = self.guard(now);
        let used = match input {
            Input::Received(bytes) => self.received(now, bytes),
            Input::Completed(token, Completion::Response(r)) => {
                if let Some(p) = self
                    .pending
                    .iter_mut()
                    .find(|p| p.token == token && p.response.is_none())
                {
                    p.response = Some(r);
                }
                0
            }
            Input::Closed => {
                // Complete requests already received are still answered (see `parse`).
                self.peer_closed = true;
                self.closing = true;
                0
            }
            Input::Timeout => {
                self.timeout(now);
                0
            }
        };
        self.flush();
        // Room in the pipeline again: requests already received are read now.
        self.parse(now);
        self.flush();
        self.set_timers(now);
        used
    }

    fn received(&mut self, now: Instant, bytes: &[u8]) -> usize {
        if self.closed || self.peer_closed || matches!(self.reading, Reading::Stopped) {
            return bytes.len();
        }
        if self.pending.len() >= self.config.max_pipelined.max(1) {
            return 0;
        }
        let used = match &mut self.tls {
            Some(tls) => {
                let r = tls.feed(bytes, &mut self.plain);
                tls.take_ciphertext(&mut self.out);
                match r {
                    Ok(n) => {
                        if !tls.is_handshaking() {
                            self.timers.stop(Timer::TlsHandshake);
                        }
                        n
                    }
                    Err(e) => {
                        // The alert (if any) was taken above; nothing else can be said.
                        self.events.push_back(Event::TlsFailed(e.to_string()));
                        self.reading = Reading::Stopped;
                        self.pending.clear();
                        self.effects.clear();
                        self.closing = true;
                        return bytes.len();
                    }
                }
            }
            None => {
                self.plain.extend_from_slice(bytes);
                bytes.len()
            }
        };
        self.parse(now);
        used
    }

    /// Reads requests from the plaintext while the pipeline has room.
    fn parse(&mut self, now: Instant) {
        let limits = self.config.limits;
        // Once the client closed its half, what was received is all there is: every
        // complete request in it is handed out, whatever the pipeline limit.
        while self.peer_closed || self.pending.len() < self.config.max_pipelined.max(1) {
            match std::mem::replace(&mut self.reading, Reading::Stopped) {
                Reading::Stopped => return,
                Reading::Head => {
                    if self.plain.is_empty() {
                        self.reading = Reading::Head;
                        break;
                    }
                    let (head, n) = match parse_request(&self.plain, &limits) {
                        Ok(Some(v)) => v,
                        Ok(None) => {
                            self.reading = Reading::Head;
                            break;
                        }
                        Err(e) => return self.fail(now, error_status(&e), e.to_string()),
                    };
                    self.plain.drain(..n);
                    let dec = match head.framing().and_then(|f| BodyDecoder::new(f, &limits)) {
                        Ok(d) => d,
                        Err(e) => return self.fail(now, error_status(&e), e.to_string()),
                    };
                    let expects = head
                        .header("expect")
                        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
                    if expects && !dec.is_done() && self.plain.is_empty() && self.pending.is_empty()
                    {
                        self.write(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    self.reading = Reading::Body {
                        head,
                        dec,
                        body: Vec::new(),
                    };
                }
                Reading::Body {
                    head,
                    mut dec,
                    mut body,
                } => {
                    let n = match dec.decode(&self.plain, &mut body) {
                        Ok(n) => n,
                        Err(e) => return self.fail(now, error_status(&e), e.to_string()),
                    };
                    self.plain.drain(..n);
                    if !dec.is_done() {
                        self.reading = Reading::Body { head, dec, body };
                        break;
                    }
                    let keep_alive = head.is_keep_alive();
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    self.pending.push_back(Pending {
                        token,
                        head_only: head.method.eq_ignore_ascii_case("HEAD"),
                        keep_alive,
                        deadline: now + self.config.handler_timeout,
                        response: None,
                        method: head.method.clone(),
                        target: head.target.clone(),
                    });
                    self.effects
                        .push_back((token, Effect::Request { head, body }));
                    self.timers.stop(Timer::Request);
                    self.reading = if keep_alive {
                        Reading::Head
                    } else {
                        Reading::Stopped
                    };
                }
            }
        }
        if self.peer_closed && !matches!(self.reading, Reading::Stopped) {
            // The client sent all it will: what is left is a partial request, dropped.
            self.reading = Reading::Stopped;
            self.plain.clear();
        }
    }

    /// Answers the request being read with `status` and stops reading.
    fn fail(&mut self, now: Instant, status: u16, reason: String) {
        self.events.push_back(Event::Refused { status, reason });
        self.reading = Reading::Stopped;
        self.plain.clear();
        self.pending.push_back(Pending {
            token: Token(0),
            head_only: false,
            keep_alive: false,
            deadline: now,
            response: Some(error_response(status, self.config.json_errors)),
            method: String::new(),
            target: String::new(),
        });
    }

    fn timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.expired(now) {
            match t {
                Timer::TlsHandshake | Timer::Idle => {
                    self.reading = Reading::Stopped;
                    self.closing = true;
                }
                Timer::Request => {
                    if !matches!(self.reading, Reading::Stopped) {
                        self.fail(now, 408, "request not received in time".into());
                    }
                }
                Timer::Handler => {
                    for p in self.pending.iter_mut() {
                        if p.response.is_none() && p.deadline <= now {
                            self.events.push_back(Event::Refused {
                                status: 503,
                                reason: format!("no answer in time for {} {}", p.method, p.target),
                            });
                            p.response = Some(error_response(503, self.config.json_errors));
                            p.keep_alive = false;
                        }
                    }
                }
            }
        }
    }

    fn write(&mut self, plain: &[u8]) {
        match &mut self.tls {
            Some(tls) => {
                tls.write_plain(plain);
                tls.take_ciphertext(&mut self.out);
            }
            None => self.out.extend_from_slice(plain),
        }
    }

    /// The bytes of a response: the caller's headers without the framing ones, `Date`,
    /// `Content-Length`, and `Connection: close` when `close`.
    fn encode(&self, r: &Response, head_only: bool, close: bool) -> Option<Vec<u8>> {
        let mut headers: Vec<Header> = r
            .headers
            .iter()
            .filter(|h| {
                !["connection", "date", "content-length", "transfer-encoding"]
                    .iter()
                    .any(|n| h.name.eq_ignore_ascii_case(n))
            })
            .cloned()
            .collect();
        headers.push(Header::new("Date", &http_date(self.wall)));
        if close {
            headers.push(Header::new("Connection", "close"));
        }
        let no_body = (100..200).contains(&r.status) || r.status == 204 || r.status == 304;
        if head_only && !no_body {
            headers.push(Header::new("Content-Length", &r.body.len().to_string()));
        }
        let head = ResponseHead {
            minor: 1,
            status: r.status,
            reason: super::codec::reason(r.status).to_string(),
            headers,
        };
        let mut bytes = Vec::new();
        let body: &[u8] = if head_only { b"" } else { &r.body };
        encode_response(&head, body, &mut bytes).ok()?;
        Some(bytes)
    }

    /// Sends the answered responses at the front of the pipeline.
    fn flush(&mut self) {
        if self.closed {
            return;
        }
        while self.pending.front().is_some_and(|p| p.response.is_some()) {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            let Some(r) = p.response else { break };
            let last =
                self.closing && self.pending.is_empty() && matches!(self.reading, Reading::Stopped);
            let close = !p.keep_alive
                || last
                || super::codec::header(&r.headers, "connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            // A response the caller made that cannot be encoded (a CR or LF in a header,
            // a status out of range) is answered with 500 rather than sent otherwise.
            let (status, body_len, bytes) = match self.encode(&r, p.head_only, close) {
                Some(b) => (r.status, r.body.len(), b),
                None => {
                    let e = error_response(500, self.config.json_errors);
                    let b = self.encode(&e, p.head_only, close).unwrap_or_default();
                    (500, e.body.len(), b)
                }
            };
            self.write(&bytes);
            self.events.push_back(Event::Responded {
                method: p.method,
                target: p.target,
                status,
                body_len,
            });
            if close {
                // Later requests are not answered: the connection ends here.
                self.pending.clear();
                self.effects.clear();
                self.reading = Reading::Stopped;
                self.closing = true;
            }
        }
        if self.closing && self.pending.is_empty() && matches!(self.reading, Reading::Stopped) {
            if let Some(tls) = &mut self.tls {
                tls.close();
                tls.take_ciphertext(&mut self.out);
            }
            self.closed = true;
            self.timers.clear();
        }
    }

    fn set_timers(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        // A request held back by a full pipeline is not being read yet.
        let room = self.pending.len() < self.config.max_pipelined.max(1);
        let reading_request = match &self.reading {
            Reading::Head => room && !self.plain.is_empty(),
            Reading::Body { .. } => true,
            Reading::Stopped => false,
        };
        if reading_request {
            if self.timers.deadline(Timer::Request).is_none() {
                self.timers
                    .set(Timer::Request, now + self.config.request_timeout);
            }
        } else {
            self.timers.stop(Timer::Request);
        }
        if self.pending.is_empty() && !reading_request && !self.closing {
            if self.timers.deadline(Timer::Idle).is_none() {
                self.timers.set(Timer::Idle, now + self.config.idle_timeout);
            }
        } else {
            self.timers.stop(Timer::Idle);
        }
        match self
            .pending
            .iter()
            .filter(|p| p.response.is_none())
            .map(|p| p.deadline)
            .min()
        {
            Some(d) => self.timers.set(Timer::Handler, d),
            None => self.timers.stop(Timer::Handler),
        }
    }

    /// The next output; call until it returns `Idle` (or `Close`) after every `handle`.
    pub fn poll(&mut self, now: Now, tx: &mut Vec<u8>) -> Output {
        self.guard(now);
        if !self.out.is_empty() {
            tx.append(&mut self.out);
            return Output::Transmit;
        }
        if let Some((t, e)) = self.effects.pop_front() {
            return Output::Effect(t, e);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        if self.closed {
            return Output::Close;
        }
        let next = self.timers.next();
        Output::Idle {
            deadline: next.map(|(_, at)| at),
            timer: next.map(|(t, _)| t),
        }
    }

    /// Whether the connection is TLS and its handshake is done.
    pub fn is_secure(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| !t.is_handshaking())
    }
}

#[cfg(test)]
mod tests;
