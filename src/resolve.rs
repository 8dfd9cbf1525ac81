//! DNS for the binary: core's sans-IO resolver machine driven by the one DNS loop of the
//! driver ([`rmox_driver::dns::run_resolver`]) over a runtime's UDP and TCP sockets, or
//! static zone data (`zonefile:PATH`) for offline testing.
//!
//! Who runs the loop: a runtime task ([`start_on`], the caller spawns the returned future),
//! or, for CLI tools, tests and the blocking parts of the server, a small thread running the
//! same loop on smol ([`Dns::from_config`]). Blocking callers use [`Dns::lookup_many`],
//! tasks [`Dns::lookup_many_async`]; every caller of one [`Dns`] shares the machine's cache.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use rmox_core::dns::{
    Check, CheckInput, CheckLimits, CheckOutput, CheckSession, Lookup, LookupResult,
    ResolverConfig, StaticZone,
};
use rmox_driver::dns::{run_resolver, DnsClient, DnsRequests, UdpRuntime};

use crate::config::{Resolver, TrustAd};
use crate::Fail;

/// Where answers come from.
#[derive(Clone)]
pub enum Dns {
    /// Real DNS through a resolver loop.
    Net(DnsClient),
    /// Static zone data.
    Zone(StaticZone),
}

/// What the config's `resolver` list asks for.
pub enum Source {
    /// Real DNS with these settings.
    Net(ResolverConfig),
    /// Static zone data.
    Zone(StaticZone),
}

/// From the config's `resolver`: a zone file (relative to `base`), servers, or the
/// system's /etc/resolv.conf; the AD bit believed as `trust` says.
pub fn source(resolver: &Resolver, trust: TrustAd, base: &std::path::Path) -> Result<Source, Fail> {
    let servers: Vec<SocketAddr> = match resolver {
        Resolver::Zonefile(path) => {
            let zone = crate::config::read_zone(&base.join(path))
                .map_err(|e| Fail(format!("resolver zonefile {e}")))?;
            return Ok(Source::Zone(zone));
        }
        Resolver::Servers(servers) => servers.clone(),
        Resolver::System => {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            rmox_core::dns::parse_resolv_conf(&text)
        }
    };
    if servers.is_empty() {
        return Err(Fail(
            "no DNS servers: set `resolver` in the config or fill /etc/resolv.conf".into(),
        ));
    }
    // By default the AD bit is believed only from loopback resolvers (a validating
    // resolver on this machine); others could be spoofed on the way.
    let trust_ad = match trust {
        TrustAd::Loopback => servers.iter().all(|s| s.ip().is_loopback()),
        TrustAd::Always => true,
        TrustAd::Never => false,
    };
    Ok(Source::Net(ResolverConfig {
        servers,
        trust_ad,
        timeout: Duration::from_secs(3),
        ..ResolverConfig::default()
    }))
}

/// A [`Dns`] whose loop runs on `rt`: the caller spawns the returned future as a task of
/// that runtime (it ends when every clone of the handle is dropped and no question is open).
pub fn start_on<R: UdpRuntime>(
    rt: R,
    config: ResolverConfig,
    seed: u64,
) -> (Dns, impl Future<Output = ()>) {
    let (client, requests) = DnsClient::channel();
    (Dns::Net(client), run_resolver(rt, config, seed, requests))
}

/// The loop of a [`Dns`] made by [`for_runtime`], not started yet: the server runs it as a
/// task of its runtime ([`DnsLoop::run`]).
pub struct DnsLoop {
    config: ResolverConfig,
    seed: u64,
    requests: DnsRequests,
}

impl DnsLoop {
    /// The loop on `rt`: spawn it as a task of that runtime. It ends when every clone of
    /// the handle is dropped and no question is open (or when its task is dropped: then
    /// every question is answered with a temporary failure).
    pub fn run<R: UdpRuntime>(self, rt: R) -> impl Future<Output = ()> {
        run_resolver(rt, self.config, self.seed, self.requests)
    }
}

/// From the config's `resolver` list (see [`source`]): the handle, and for real DNS the
/// loop to run as a runtime task. Until the loop runs, questions wait (blocking callers
/// block): start it before anything asks.
pub fn for_runtime(
    resolver: &Resolver,
    trust: TrustAd,
    base: &std::path::Path,
    seed: u64,
) -> Result<(Dns, Option<DnsLoop>), Fail> {
    match source(resolver, trust, base)? {
        Source::Zone(z) => Ok((Dns::Zone(z), None)),
        Source::Net(config) => {
            let (client, requests) = DnsClient::channel();
            Ok((
                Dns::Net(client),
                Some(DnsLoop {
                    config,
                    seed,
                    requests,
                }),
            ))
        }
    }
}

/// A [`Dns`] whose loop runs on its own thread on smol, for callers without a runtime.
pub fn start_thread(config: ResolverConfig, seed: u64) -> Result<Dns, Fail> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("rmox-dns".into())
        .spawn(move || {
            // The loop is not `Send` (glommio's would not be): it is made on its thread.
            let _ = rmox_runtime_smol::block_on(|rt| async move {
                let (dns, run) = start_on(rt, config, seed);
                if tx.send(dns).is_ok() {
                    run.await;
                }
            });
        })
        .map_err(|e| Fail(format!("starting DNS thread: {e}")))?;
    rx.recv()
        .map_err(|_| Fail("the DNS thread exited at start".into()))
}

impl Dns {
    /// From the config's `resolver` list and AD trust (see [`source`]); real DNS runs on a
    /// resolver thread ([`start_thread`]).
    pub fn from_config(
        resolver: &Resolver,
        trust: TrustAd,
        base: &std::path::Path,
    ) -> Result<Dns, Fail> {
        match source(resolver, trust, base)? {
            Source::Zone(z) => Ok(Dns::Zone(z)),
            Source::Net(config) => start_thread(config, crate::serve::os_seed()),
        }
    }

    /// Answers every lookup (in order), waiting for all of them: for tasks.
    pub async fn lookup_many_async(&self, lookups: &[Lookup]) -> Vec<LookupResult> {
        let started = std::time::Instant::now();
        let answers = match self {
            Dns::Zone(z) => lookups.iter().map(|l| z.lookup(l)).collect(),
            Dns::Net(c) => c.lookup_many(lookups).await,
        };
        crate::metrics::get().dns(&answers, started.elapsed());
        answers
    }

    /// Answers every lookup (in order), blocking until all are answered: for blocking
    /// callers only (never inside a runtime task).
    pub fn lookup_many(&self, lookups: &[Lookup]) -> Vec<LookupResult> {
        futures_lite::future::block_on(self.lookup_many_async(lookups))
    }

    /// Runs a DNS check (SPF, DKIM, DMARC, iprev, DNSBL, MX) to its verdict as a
    /// [`CheckSession`]: each effect (one round's questions) goes to the resolver as one
    /// batch and comes back with its token; `None` after `max_questions` questions or when
    /// the check is stuck. For tasks.
    pub async fn run_check_async<C: Check>(
        &self,
        check: &mut C,
        max_questions: usize,
    ) -> Option<C::Verdict>
    where
        C::Verdict: Clone,
    {
        // One round's questions go out together however many there are.
        let limits = CheckLimits {
            max_questions,
            max_batch: max_questions,
            ..CheckLimits::default()
        };
        let mut session = CheckSession::new(check, limits);
        loop {
            match session.poll(rmox_driver::now()) {
                CheckOutput::Effect(token, lookups) => {
                    let answers = self.lookup_many_async(&lookups).await;
                    session.handle(rmox_driver::now(), CheckInput::Answered(token, answers));
                }
                CheckOutput::Done(v) => return Some(v),
                CheckOutput::GaveUp(_) => return None,
                // Not reached: every effect is answered (the resolver bounds its own wait)
                // before the session is polled again.
                CheckOutput::Idle { .. } => return None,
            }
        }
    }

    /// [`Dns::run_check_async`] for blocking callers.
    pub fn run_check<C: Check>(&self, check: &mut C, max_questions: usize) -> Option<C::Verdict>
    where
        C::Verdict: Clone,
    {
        futures_lite::future::block_on(self.run_check_async(check, max_questions))
    }

    /// One lookup (blocking).
    pub fn lookup(&self, l: &Lookup) -> LookupResult {
        self.lookup_many(std::slice::from_ref(l))
            .pop()
            .unwrap_or(LookupResult::TempFail("no answer".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmox_driver::testing_dns::{a, config, responder, Behaviour, ANSWER};
    use std::path::Path;
    use std::sync::atomic::Ordering;

    fn answered(r: &LookupResult, authentic: bool) -> bool {
        *r == LookupResult::Records {
            records: vec![rmox_core::dns::Record::A(ANSWER)],
            authentic,
        }
    }

    /// By default (`resolver_trust_ad = "loopback"`) the AD bit is trusted only when every
    /// configured resolver is on loopback; "always" and "never" override that.
    #[test]
    fn trust_ad_by_setting() {
        let trust = |t: TrustAd, list: &[&str]| {
            let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
            let r = Resolver::parse(&list).unwrap();
            match source(&r, t, Path::new(".")).unwrap() {
                Source::Net(c) => c.trust_ad,
                Source::Zone(_) => panic!("not a zone"),
            }
        };
        let l = TrustAd::default();
        assert_eq!(l, TrustAd::Loopback);
        assert!(trust(l, &["127.53.0.2:53"]));
        assert!(trust(l, &["127.0.0.1:53", "[::1]:53"]));
        assert!(!trust(l, &["192.0.2.53:53"]));
        assert!(!trust(l, &["127.0.0.1:53", "192.0.2.53:53"]));
        assert!(trust(TrustAd::Always, &["192.0.2.53:53"]));
        assert!(trust(TrustAd::Always, &["127.0.0.1:53"]));
        assert!(!trust(TrustAd::Never, &["127.0.0.1:53"]));
        assert!(!trust(TrustAd::Never, &["192.0.2.53:53"]));
        let r = Resolver::Zonefile("/nonexistent/zone".into());
        assert!(source(&r, l, Path::new(".")).is_err());
    }

    /// Blocking callers on several threads share the resolver thread and its cache; the
    /// thread's loop is the driver's (a truncated answer is retried over TCP).
    #[test]
    fn blocking_callers_share_the_resolver_thread() {
        let server = responder(Behaviour::Truncate);
        let dns = Dns::from_config(
            &Resolver::Servers(vec![server.addr]),
            TrustAd::default(),
            Path::new("."),
        )
        .unwrap();
        let dns = std::sync::Arc::new(dns);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let d = std::sync::Arc::clone(&dns);
                std::thread::spawn(move || d.lookup_many(&[a("same.test"), a("other.test")]))
            })
            .collect();
        for t in threads {
            let got = t.join().unwrap();
            assert!(got.iter().all(|r| answered(r, false)), "{got:?}");
        }
        // Each name went out once (in flight or cached for the other callers), truncated
        // over UDP and answered over TCP.
        let tcp = server.tcp_queries.load(Ordering::SeqCst);
        assert_eq!(tcp, 2, "one query per name, shared by every caller");
        assert_eq!(server.udp_queries.load(Ordering::SeqCst), tcp);
        // Now cached: no new question.
        assert!(answered(&dns.lookup(&a("same.test")), false));
        assert_eq!(server.udp_queries.load(Ordering::SeqCst), tcp);
    }

    /// Asks three names at once, then concludes with how many it had asked when the
    /// first answer came.
    #[derive(Default)]
    struct Three {
        asked: usize,
        answered: usize,
        asked_at_first_answer: Option<usize>,
    }

    impl Check for Three {
        type Verdict = Option<usize>;
        fn poll(&mut self) -> rmox_core::dns::CheckStep<Option<usize>> {
            use rmox_core::dns::CheckStep;
            if self.asked < 3 {
                self.asked += 1;
                return CheckStep::Lookup(a(["a.test", "b.test", "c.test"][self.asked - 1]));
            }
            if self.answered < 3 {
                return CheckStep::Wait;
            }
            CheckStep::Done(self.asked_at_first_answer)
        }
        fn answer(&mut self, _: &Lookup, r: LookupResult) {
            assert!(answered(&r, false), "{r:?}");
            self.asked_at_first_answer.get_or_insert(self.asked);
            self.answered += 1;
        }
    }

    /// A check's questions go to the resolver as one batch, in flight together (the CLI
    /// tools asked them one after the other, each waiting for the previous answer): the
    /// responder answers only once it holds all three.
    #[test]
    fn run_check_asks_each_round_at_once() {
        let server = responder(Behaviour::Gather(3));
        let dns = Dns::from_config(
            &Resolver::Servers(vec![server.addr]),
            TrustAd::default(),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(dns.run_check(&mut Three::default(), 10), Some(Some(3)));
        assert_eq!(server.udp_queries.load(Ordering::SeqCst), 3);
        // Bounded: a budget below the check's questions gives no verdict.
        let mut t = Three::default();
        assert_eq!(dns.run_check(&mut t, 2), None);
    }

    /// Tasks use `lookup_many_async` on a loop started with `start_on` on their runtime.
    #[test]
    fn start_on_a_runtime_task() {
        let server = responder(Behaviour::Answer { ad: true });
        let ex = std::rc::Rc::new(async_executor::LocalExecutor::new());
        let rt = rmox_runtime_smol::SmolRt::new(std::rc::Rc::clone(&ex));
        let got = async_io::block_on(ex.run(async {
            let (dns, run) = start_on(rt, config(vec![server.addr], true), 3);
            let task = ex.spawn(run);
            let got = dns.lookup_many_async(&[a("x.test")]).await;
            drop(dns);
            // The loop ends once its last handle is gone.
            task.await;
            got
        }));
        assert!(answered(&got[0], true), "{got:?}");
    }
}
