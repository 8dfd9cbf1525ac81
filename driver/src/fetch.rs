//! The loop of one HTTPS request ([`HttpsFetch`]) on any runtime: MTA-STS policy fetches
//! (and, for the report sender, https `rua` posts).
//!
//! The machine asks for a connection by host **name**; this loop resolves it through the
//! caller's asynchronous DNS callback (A, then AAAA), tries the addresses in that order
//! with [`Net::connect`] (each bounded by the time the machine has left), and then moves
//! bytes between the stream and the machine (TLS and HTTP live in core) until it is done.
//! The machine's own deadline bounds the whole fetch; this loop adds none of its own
//! except the write timeout.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWriteExt, FutureExt};
use rmox_core::dns::{Lookup, LookupResult, Record, RecordType};
use rmox_core::http::fetch::{
    Completion, Effect, FetchConfig, FetchError, FetchRequest, HttpsFetch, Input, Output,
};
use rmox_core::http::Response;

use crate::now;
use crate::outbound::Net;

/// Asynchronous DNS for the fetch loop: the answers to `lookups`, one per lookup, in order.
pub type Resolve = Arc<dyn Fn(Vec<Lookup>) -> Pin<Box<dyn Future<Output = Vec<LookupResult>>>>>;

/// Longest a write may block (the server not reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Size of one socket read.
const READ_CHUNK: usize = 16 * 1024;

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

/// Fetches `request` with `config` on `rt`, resolving host names through `resolve`: the
/// response (any status) or why not.
pub async fn fetch<R: Net>(
    rt: R,
    config: Arc<FetchConfig>,
    request: &FetchRequest,
    resolve: Resolve,
) -> Result<Response, FetchError> {
    let start = now();
    let deadline = start.mono + config.timeout;
    let mut m = HttpsFetch::new(config, request, start);
    let mut stream: Option<R::Stream> = None;
    let mut tx = Vec::with_capacity(1024);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut inbuf: Vec<u8> = Vec::new();
    loop {
        let idle = loop {
            match m.poll(now(), &mut tx) {
                Output::Transmit => {
                    let r = match stream.as_mut() {
                        Some(s) => {
                            let limit = rt.sleep_until(Instant::now() + WRITE_TIMEOUT);
                            s.write_all(&tx)
                                .or(async {
                                    limit.await;
                                    Err(io::Error::from(io::ErrorKind::TimedOut))
                                })
                                .await
                        }
                        None => Err(io::Error::from(io::ErrorKind::NotConnected)),
                    };
                    tx.clear();
                    if r.is_err() {
                        stream = None;
                        m.handle(now(), Input::Closed);
                    }
                }
                Output::Effect(token, Effect::Connect { host, port, .. }) => {
                    let c = connect(&rt, &resolve, &host, port, deadline)
                        .or(async {
                            rt.sleep_until(deadline).await;
                            Err("timed out".to_string())
                        })
                        .await;
                    let completion = match c {
                        Ok(s) => {
                            stream = Some(s);
                            Completion::Connected
                        }
                        Err(e) => Completion::ConnectFailed(e),
                    };
                    m.handle(now(), Input::Completed(token, completion));
                }
                Output::Close => {
                    if let Some(mut s) = stream.take() {
                        let _ = s.flush().await;
                        let _ = s.close().await;
                    }
                }
                Output::Idle { deadline, .. } => break deadline,
                Output::Done => {
                    return m
                        .take_result()
                        // Done means the result is set; never without one.
                        .unwrap_or(Err(FetchError::Timeout));
                }
            }
        };
        if let Some(s) = stream.as_mut() {
            let _ = s.flush().await;
        }
        let d = idle.unwrap_or(deadline);
        if Instant::now() >= d {
            m.handle(now(), Input::Timeout);
            continue;
        }
        let Some(s) = stream.as_mut() else {
            // Not connected and idle: only the deadline can move the machine.
            rt.sleep_until(d).await;
            m.handle(now(), Input::Timeout);
            continue;
        };
        let mut timer = rt.sleep_until(d);
        let read = futures_lite::future::poll_fn(|cx| {
            if let Poll::Ready(r) = Pin::new(&mut *s).poll_read(cx, &mut chunk) {
                return Poll::Ready(Some(r));
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        match read {
            None => {
                m.handle(now(), Input::Timeout);
            }
            Some(Ok(n)) if n > 0 => {
                inbuf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                let used = m.handle(now(), Input::Received(&inbuf));
                inbuf.drain(..used.min(inbuf.len()));
                if inbuf.len() > MAX_UNCONSUMED {
                    stream = None;
                    m.handle(now(), Input::Closed);
                }
            }
            Some(_) => {
                stream = None;
                m.handle(now(), Input::Closed);
            }
        }
    }
}
