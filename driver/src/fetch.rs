//! The loop of one HTTPS request ([`HttpsFetch`]) on any runtime: MTA-STS policy fetches
//! (and, for the report sender, https `rua` posts).
//!
//! The machine asks for a connection by host **name**; this loop resolves it through the
//! caller's asynchronous DNS callback (A, then AAAA), tries the addresses in that order
//! with [`Net::connect`] (each bounded by the time the machine has left), and then moves
//! bytes between the stream and the machine (TLS and HTTP live in core) until it is done,
//! through [`crate::machine::drive`].
//! The machine's own deadline bounds the whole fetch; this loop adds none of its own
//! except the write timeout.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use rmox_core::dns::{Lookup, LookupResult, Record, RecordType};
use rmox_core::http::fetch::{
    Completion, Effect, FetchConfig, FetchError, FetchRequest, HttpsFetch, Input, Output,
};
use rmox_core::http::Response;
use rmox_core::{Now, Token};

use crate::machine::{
    drive, Answer, Answers, ConnId, Connecting, End, Eof, In, IoOp, Machine, Overflow, Step,
};
use crate::now;
use crate::outbound::Net;

/// Asynchronous DNS for the fetch loop: the answers to `lookups`, one per lookup, in order.
pub type Resolve = Arc<dyn Fn(Vec<Lookup>) -> Pin<Box<dyn Future<Output = Vec<LookupResult>>>>>;

/// Longest a write may block (the server not reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Input the machine has not taken yet, kept before the connection is treated as broken.
const MAX_UNCONSUMED: usize = 1 << 20;

/// The addresses of `host` (A first, then AAAA); an IP literal is its own address.
async fn addresses(resolve: &Resolve, host: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let lookups = vec![
        Lookup {
            name: host.to_string(),
            rtype: RecordType::A,
        },
        Lookup {
            name: host.to_string(),
            rtype: RecordType::Aaaa,
        },
    ];
    let mut ips = Vec::new();
    let mut errors = Vec::new();
    for r in resolve(lookups).await {
        match r {
            LookupResult::Records { records, .. } => {
                ips.extend(records.iter().filter_map(|r| match r {
                    Record::A(a) => Some(IpAddr::V4(*a)),
                    Record::Aaaa(a) => Some(IpAddr::V6(*a)),
                    _ => None,
                }))
            }
            other => errors.push(format!("{other:?}")),
        }
    }
    if ips.is_empty() {
        return Err(format!("no address for {host}: {}", errors.join(", ")));
    }
    Ok(ips)
}

/// Connects to the first of `host`'s addresses on `port` that accepts, before `deadline`.
async fn connect<R: Net>(
    rt: &R,
    resolve: &Resolve,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<R::Stream, String> {
    let ips = addresses(resolve, host).await?;
    let mut last = String::new();
    for ip in ips {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        match rt.connect(SocketAddr::new(ip, port), None, left).await {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("{ip}: {e}"),
        }
    }
    Err(last)
}

/// The connection of a fetch (its only one).
const CONN: ConnId = ConnId(0);

/// Fetches `request` with `config` on `rt`, resolving host names through `resolve`: the
/// response (any status) or why not ([`crate::machine::drive`] over [`Fetch`]).
pub async fn fetch<R: Net>(
    rt: R,
    config: Arc<FetchConfig>,
    request: &FetchRequest,
    resolve: Resolve,
) -> Result<Response, FetchError> {
    let start = now();
    let deadline = start.mono + config.timeout;
    let machine = Fetch {
        m: HttpsFetch::new(config, request, start),
        deadline,
    };
    let answers = FetchAnswers {
        rt: rt.clone(),
        resolve,
        deadline,
    };
    match drive(&rt, machine, &answers, None, None).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// The HTTPS fetch as a [`Machine`]: one connection, opened by host name when the machine
/// asks; the end of stream, an I/O error or 1 MiB of unconsumed input drops it; the
/// machine's deadline (or the fetch's) bounds every wait.
struct Fetch {
    m: HttpsFetch,
    /// When the whole fetch times out.
    deadline: Instant,
}

/// A connection the fetch asks for: the effect's token, the host name and the port.
struct Dial {
    token: Token,
    host: String,
    port: u16,
}

impl Machine for Fetch {
    type Token = Token;
    type Effect = std::convert::Infallible;
    type Completion = std::convert::Infallible;
    type Event = std::convert::Infallible;
    type Dial = Dial;
    type Outcome = Result<Response, FetchError>;
    type Error = std::convert::Infallible;

    const MAX_UNCONSUMED: usize = MAX_UNCONSUMED;
    const OVERFLOW: Overflow = Overflow::Drop;
    const EOF: Eof = Eof::Drop;
    const WRITE_TIMEOUT: Option<Duration> = Some(WRITE_TIMEOUT);

    fn poll(&mut self, now: Now, tx: &mut Vec<u8>) -> Step<Self> {
        match self.m.poll(now, tx) {
            Output::Transmit => Step::Transmit(CONN),
            Output::Effect(token, Effect::Connect { host, port, .. }) => {
                Step::Connect(CONN, Dial { token, host, port })
            }
            Output::Close => Step::Close(CONN),
            Output::Idle { deadline, .. } => Step::Idle(Some(deadline.unwrap_or(self.deadline))),
            Output::Done => Step::Done,
        }
    }

    fn handle(&mut self, now: Now, input: In<'_, Self>) -> Result<usize, Self::Error> {
        let input = match input {
            In::Received(_, bytes) => return Ok(self.m.handle(now, Input::Received(bytes))),
            In::Closed(_) | In::Overflow(_) => Input::Closed,
            In::Failed(_, IoOp::Flush, _) => return Ok(0),
            In::Failed(_, _, _) => Input::Closed,
            In::Connected(_, dial, r) => Input::Completed(
                dial.token,
                match r {
                    Ok(()) => Completion::Connected,
                    Err(e) => Completion::ConnectFailed(e.to_string()),
                },
            ),
            In::Completed(_, never) => match never {},
            In::Timeout => Input::Timeout,
            In::Shutdown => return Ok(0),
        };
        Ok(self.m.handle(now, input))
    }

    fn end(mut self, _: End) -> Self::Outcome {
        self.m
            .take_result()
            // Done means the result is set; never without one (and a fetch always has a
            // deadline, so it never stalls).
            .unwrap_or(Err(FetchError::Timeout))
    }
}

/// Opens the fetch's connection: the host's addresses through the DNS callback, each tried
/// within the time the fetch has left.
struct FetchAnswers<R> {
    rt: R,
    resolve: Resolve,
    deadline: Instant,
}

impl<R: Net> Answers<Fetch, R::Stream> for FetchAnswers<R> {
    fn answer(&self, effect: std::convert::Infallible) -> Answer<std::convert::Infallible> {
        match effect {}
    }

    fn connect(&self, dial: &Dial) -> Connecting<R::Stream> {
        let (rt, resolve, deadline) = (self.rt.clone(), Arc::clone(&self.resolve), self.deadline);
        let (host, port) = (dial.host.clone(), dial.port);
        Box::pin(async move {
            connect(&rt, &resolve, &host, port, deadline)
                .or(async {
                    rt.sleep_until(deadline).await;
                    Err("timed out".to_string())
                })
                .await
                .map_err(io::Error::other)
        })
    }

    fn event(&self, event: std::convert::Infallible) {
        match event {}
    }
}
