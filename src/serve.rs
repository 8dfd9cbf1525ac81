//! `rmox serve`: listeners from the config, the store, a runtime, signals.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rmox_core::server::ServerConfig;
use rmox_driver::accept::{ListenerSpec, Service};
use rmox_driver::Shutdown;
use rmox_storage::MailStore;

use crate::config::Config;
use crate::world::World;
use crate::{Fail, RuntimeChoice};

/// A bound listener and what it serves.
pub struct Bound {
    /// The socket.
    pub listener: TcpListener,
    /// SMTP with its session settings, or HTTP.
    pub service: Service,
}

impl Bound {
    /// The SMTP session settings, for an SMTP listener.
    #[cfg(test)]
    pub fn smtp_config(&self) -> Option<&ServerConfig> {
        match &self.service {
            Service::Smtp(c) => Some(c),
            Service::Http { .. } | Service::Floor => None,
        }
    }
}

/// 64 bits from the operating system's random source.
pub fn os_seed() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // SystemRandom only fails when the OS has no random source at all; a fixed seed is
    // then still unique per process through the pid and time.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return u64::from(std::process::id()) ^ rmox_driver::now().wall.0 as u64;
    }
    u64::from_le_bytes(b)
}

/// Binds `addr` with SO_REUSEADDR (restart while old connections linger in TIME_WAIT) but
/// not SO_REUSEPORT: a second server on the same address must fail with "address in use"
/// instead of silently taking part of the mail. The runtimes share this one socket among
/// their workers (glommio rebinds per worker only after closing it, see its crate docs).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, Fail> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| Fail(format!("cannot listen on {addr}: {e}")))?;
    let setup = || -> std::io::Result<()> {
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        s.set_nonblocking(true)?;
        Ok(())
    };
    setup().map_err(|e| Fail(format!("cannot listen on {addr}: {e}")))?;
    Ok(s.into())
}

/// Session settings shared by all ports of a config.
fn base_config(c: &Config, seed: u64) -> ServerConfig {
    let mut sc = ServerConfig::new(c.hostname.clone());
    sc.max_message_size = c.limits.max_message_size;
    sc.spool_threshold = c.limits.spool_threshold_bytes;
    sc.max_recipients = c.limits.max_recipients;
    sc.seed = seed;
    sc.command_timeout = std::time::Duration::from_secs(c.limits.command_timeout_secs.max(1));
    sc.data_timeout = std::time::Duration::from_secs(c.limits.data_timeout_secs.max(1));
    sc.auth_failure_delay = std::time::Duration::from_secs(c.limits.auth_failure_delay_secs);
    sc.unknown_recipient_delay =
        std::time::Duration::from_secs(c.limits.unknown_recipient_delay_secs);
    sc.max_received_headers = c.limits.max_received_headers;
    sc.max_errors = c.limits.max_errors;
    sc.max_auth_failures = c.limits.max_auth_failures_per_connection;
    sc.tls_handshake_timeout =
        std::time::Duration::from_secs(c.limits.tls_handshake_timeout_secs.max(1));
    sc.effect_timeout = std::time::Duration::from_secs(c.limits.effect_timeout_secs.max(1));
    sc.checks_timeout = std::time::Duration::from_secs(c.limits.checks_timeout_secs.max(1));
    sc
}

/// The session settings of one port of listener `l`: `submission` for 587/465, `implicit`
/// for 465.
pub fn port_config(
    c: &Config,
    l: &crate::config::Listener,
    submission: bool,
    implicit: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
    seed: u64,
) -> ServerConfig {
    let mut sc = base_config(c, seed);
    sc.listener = Arc::from(l.name.as_str());
    sc.submission = submission;
    sc.implicit_tls = implicit;
    sc.tls = tls;
    if submission {
        // mox: TLS before AUTH and MAIL unless NoRequireSTARTTLS.
        sc.require_tls_for_auth = !l.no_require_starttls;
        sc.require_tls_for_delivery = !l.no_require_starttls;
    } else {
        sc.require_tls_for_delivery = l.require_starttls;
        sc.checks = c.incoming_checks();
    }
    sc
}

/// The settings of HTTP connections (`limits.http_*`), with implicit TLS when `tls` is set.
pub fn http_config(
    c: &Config,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> rmox_core::http::ServerConfig {
    use std::time::Duration;
    let l = &c.limits;
    let mut hc = rmox_core::http::ServerConfig::new();
    hc.tls = tls;
    hc.limits = rmox_core::http::Limits {
        max_head: l.http_max_head_size,
        max_headers: l.http_max_headers,
        max_body: l.http_max_body_size,
    };
    hc.request_timeout = Duration::from_secs(l.http_request_timeout_secs.max(1));
    hc.idle_timeout = Duration::from_secs(l.http_idle_timeout_secs.max(1));
    hc.handler_timeout = Duration::from_secs(l.http_handler_timeout_secs.max(1));
    hc.tls_handshake_timeout = Duration::from_secs(l.tls_handshake_timeout_secs.max(1));
    hc.max_pipelined = l.http_max_pipelined.max(1);
    hc
}

/// The TLS configuration of each listener (`None` without `tls`), read from its files.
fn listener_tls(c: &Config) -> Result<Vec<Option<Arc<rustls::ServerConfig>>>, Fail> {
    let mut out = Vec::new();
    for (i, l) in c.listener.iter().enumerate() {
        let tls = match &l.tls {
            None => None,
            Some(t) => {
                let cert_path = c.resolve_path(&t.cert_file);
                let key_path = c.resolve_path(&t.key_file);
                let cert = std::fs::read(&cert_path).map_err(|e| {
                    Fail(format!(
                        "{}: listener[{i}].tls.cert_file: {}: {e}",
                        c.path.display(),
                        cert_path.display()
                    ))
                })?;
                let key = std::fs::read(&key_path).map_err(|e| {
                    Fail(format!(
                        "{}: listener[{i}].tls.key_file: {}: {e}",
                        c.path.display(),
                        key_path.display()
                    ))
                })?;
                Some(
                    rmox_core::tls::server_config_from_pem(&cert, &key).map_err(|e| {
                        Fail(format!("{}: listener[{i}].tls: {e}", c.path.display()))
                    })?,
                )
            }
        };
        out.push(tls);
    }
    Ok(out)
}

/// What differs between `old` and `new` that a running server applies only at its next
/// start (listeners and their session settings, the queue, reports, DNS, served MTA-STS
/// policies): one line per setting, for the reload's answer and log.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut differs = |key: &str, changed: bool| {
        if changed {
            out.push(format!("{key} changed: applied at the next restart"));
        }
    };
    differs("hostname", old.hostname != new.hostname);
    differs("data_dir", old.data_dir() != new.data_dir());
    differs(
        "storage_cache_mb",
        old.storage_cache_mb != new.storage_cache_mb,
    );
    differs("threads", old.threads != new.threads);
    differs("storage", old.storage != new.storage);
    differs(
        "resolver",
        old.resolver != new.resolver || old.resolver_trust_ad != new.resolver_trust_ad,
    );
    differs("listener", old.listener != new.listener);
    differs("limits", old.limits != new.limits);
    differs("incoming", old.incoming != new.incoming);
    differs("localserve", old.localserve != new.localserve);
    differs("queue", old.queue != new.queue);
    differs("reports", old.reports != new.reports);
    differs(
        "transport/route",
        old.transport != new.transport || old.route != new.route,
    );
    let policies = |c: &Config| -> Vec<(String, String)> {
        c.domain
            .iter()
            .map(|(d, dc)| (d.clone(), format!("{:?}", dc.mta_sts)))
            .collect()
    };
    differs("domain.*.mta_sts", policies(old) != policies(new));
    out
}

/// Files readable by other users than the server's: private keys and the data directory
/// should be 0600/0700. Returns one line per such file, for a warning at start.
pub fn exposed_files(c: &Config) -> Vec<String> {
    let mut paths: Vec<(PathBuf, &str)> = vec![(c.data_dir(), "data directory")];
    for l in &c.listener {
        if let Some(t) = &l.tls {
            paths.push((c.resolve_path(&t.key_file), "TLS private key"));
        }
    }
    for dc in c.domain.values() {
        for p in dc.dkim.selectors.values() {
            paths.push((c.resolve_path(p), "DKIM private key"));
        }
    }
    let mut out = Vec::new();
    #[cfg(unix)]
    for (p, what) in paths {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(&p) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                out.push(format!(
                    "{what} {} is readable by other users (mode {mode:o}): chmod {} it",
                    p.display(),
                    if m.is_dir() { "700" } else { "600" }
                ));
            }
        }
    }
    out
}

/// Everything `serve` reads besides the config text, checked the same way for
/// `rmox config check` and at start: certificates and keys, DKIM keys, transports and their
/// password files, the resolver's zone file, the queue settings. A config that passes here does not fail later.
pub fn check(c: &Config) -> Result<(), Fail> {
    c.transports()?;
    c.zonefile()?;
    listener_tls(c)?;
    for (i, l) in c.listener.iter().enumerate() {
        if let Some(f) = l.acme.as_ref().and_then(|a| a.ca_file.as_ref()) {
            let p = c.resolve_path(f);
            std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|pem| rmox_core::tls::pkix_config_from_pem(&pem))
                .map_err(|e| {
                    Fail(format!(
                        "{}: listener[{i}].acme.ca_file: {}: {e}",
                        c.path.display(),
                        p.display()
                    ))
                })?;
        }
    }
    crate::world::load_dkim(c)?;
    c.queue.queue_config(&c.path)?;
    Ok(())
}

/// Binds every enabled port of every listener.
pub fn bind_all(c: &Config) -> Result<Vec<Bound>, Fail> {
    bind_with(c, &crate::acme::Acme::setup(c)?, &Arc::default())
}

/// Binds every enabled port of every listener; the certificates of ACME listeners come
/// from `acme`'s resolvers, its `http-01` answers from the `http` ports.
/// The webapi ports answer through `webapi` (given its server once that exists).
pub fn bind_with(
    c: &Config,
    acme: &crate::acme::Acme,
    webapi: &Arc<crate::webapi::Late>,
) -> Result<Vec<Bound>, Fail> {
    let tls = listener_tls(c)?;
    let mut out = Vec::new();
    let seed = os_seed();
    let web: Arc<dyn rmox_driver::http::HttpAnswerer> =
        Arc::new(crate::web::Web::new(c)?.with_http01(Arc::clone(&acme.http01)));
    for (i, l) in c.listener.iter().enumerate() {
        // ACME: one resolver for every TLS port; HTTPS also negotiates http/1.1.
        let (tls, https_tls) = match acme.listener(i) {
            Some(a) => {
                let cfg = |alpn: &[&[u8]]| {
                    rmox_core::tls::server_config_with_resolver(Arc::clone(&a.resolver), alpn)
                        .map_err(|e| Fail(format!("{}: acme: tls: {e}", a.label())))
                };
                (Some(cfg(&[])?), Some(cfg(&[b"http/1.1"])?))
            }
            None => (tls[i].clone(), tls[i].clone()),
        };
        let ports = [
            (&l.smtp, false, false),
            (&l.submission, true, false),
            (&l.submissions, true, true),
        ];
        for (n, (port, submission, implicit)) in ports.into_iter().enumerate() {
            let Some(p) = port.as_ref().filter(|p| p.enabled) else {
                continue;
            };
            let sc = port_config(
                c,
                l,
                submission,
                implicit,
                tls.clone(),
                seed.wrapping_add((i * 3 + n) as u64),
            );
            let addr = SocketAddr::new(l.ip, p.port);
            let listener = bind(addr)?;
            tracing::info!(listener = %l.name, %addr, submission, implicit_tls = implicit, "listening");
            out.push(Bound {
                listener,
                service: Service::Smtp(Arc::new(sc)),
            });
        }
        if let Some(p) = l.mta_sts.as_ref().filter(|p| p.enabled) {
            let addr = SocketAddr::new(l.ip, p.port);
            let listener = bind(addr)?;
            tracing::info!(listener = %l.name, %addr, "listening (https, mta-sts policies)");
            out.push(Bound {
                listener,
                service: Service::Http {
                    config: Arc::new(http_config(c, https_tls.clone())),
                    answerer: Arc::clone(&web),
                },
            });
        }
        if let Some(p) = l.http.as_ref().filter(|p| p.enabled) {
            let addr = SocketAddr::new(l.ip, p.port);
            let listener = bind(addr)?;
            tracing::info!(listener = %l.name, %addr, "listening (http, acme http-01)");
            out.push(Bound {
                listener,
                service: Service::Http {
                    config: Arc::new(http_config(c, None)),
                    answerer: Arc::clone(&web),
                },
            });
        }
        if let Some(w) = l.webapi.as_ref().filter(|w| w.enabled) {
            let addr = SocketAddr::new(l.ip, w.port);
            let listener = bind(addr)?;
            let tls = if w.tls { https_tls.clone() } else { None };
            tracing::info!(listener = %l.name, %addr, tls = w.tls, "listening (webapi)");
            out.push(Bound {
                listener,
                service: Service::Http {
                    config: Arc::new({
                        let mut hc = http_config(c, tls);
                        hc.json_errors = true;
                        hc
                    }),
                    answerer: Arc::clone(webapi) as Arc<dyn rmox_driver::http::HttpAnswerer>,
                },
            });
        }
    }
    if out.is_empty() {
        return Err(Fail(format!(
            "{}: listener: no enabled ports",
            c.path.display()
        )));
    }
    Ok(out)
}

/// The listeners' metrics ports (plain HTTP, `GET /metrics`).
fn bind_metrics(c: &Config, store: &Arc<dyn MailStore>) -> Result<Vec<Bound>, Fail> {
    let answerer: Arc<dyn rmox_driver::http::HttpAnswerer> = Arc::new(crate::metrics::MetricsWeb {
        store: Arc::clone(store),
    });
    let mut out = Vec::new();
    for l in &c.listener {
        if let Some(p) = l.metrics.as_ref().filter(|p| p.enabled) {
            let addr = SocketAddr::new(l.ip, p.port);
            let listener = bind(addr)?;
            tracing::info!(listener = %l.name, %addr, "listening (http, metrics)");
            out.push(Bound {
                listener,
                service: Service::Http {
                    config: Arc::new(http_config(c, None)),
                    answerer: Arc::clone(&answerer),
                },
            });
        }
    }
    Ok(out)
}

/// `rmox serve --config FILE`.
pub fn run_config(path: &Path, runtime: RuntimeChoice) -> Result<(), Fail> {
    let c = Config::load(path)?;
    run(c, runtime, None)
}

/// Runs the server for a loaded config until SIGINT/SIGTERM; `banner` is printed once the
/// ports are bound.
pub fn run(c: Config, runtime: RuntimeChoice, banner: Option<String>) -> Result<(), Fail> {
    // Before anything is opened or bound: a runtime this build lacks is a usage error.
    let rt = pick_runtime(runtime)?;
    // The same checks as `rmox config check`, before anything is created or bound.
    check(&c)?;
    for w in exposed_files(&c) {
        tracing::warn!("{w}");
    }
    let store = crate::storage::open(&c, crate::storage::Opener::Server)?;
    tracing::info!(
        storage = crate::storage::kind_name(&c),
        node = %c.storage_node(),
        "storage opened"
    );
    remove_queue_orphans(store.as_ref());
    for (name, a) in &c.account {
        crate::storage::ensure_account(store.as_ref(), name, &a.domain)?;
    }
    // Signals before the ports open: a SIGTERM as soon as the port answers is a graceful
    // stop, not the default action (death with the database unclosed).
    let shutdown = Shutdown::new();
    let on_hup: Arc<std::sync::OnceLock<Reload>> = Arc::new(std::sync::OnceLock::new());
    install_signals(Arc::clone(&shutdown), Arc::clone(&on_hup))?;
    let acme = crate::acme::Acme::setup(&c)?;
    let webapi = Arc::new(crate::webapi::Late::default());
    let mut bound = bind_with(&c, &acme, &webapi)?;
    bound.extend(bind_metrics(&c, &store)?);
    for (domain, p) in crate::web::Web::new(&c)?.policies() {
        tracing::info!(
            domain,
            record = %format!("_mta-sts.{domain}. TXT \"{}\"", p.record()),
            "mta-sts policy served; publish this record"
        );
    }
    // One DNS loop for the server (sessions and deliveries share its cache), run as a task
    // of the chosen runtime next to the queue runner (`queue_task`); the sessions' blocking
    // callers reach it through its channel.
    let (dns, dns_loop) = if c.localserve && c.resolver == crate::config::Resolver::System {
        (None, None)
    } else {
        let base = c.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let (d, l) =
            crate::resolve::for_runtime(&c.resolver, c.resolver_trust_ad, &base, os_seed())?;
        (Some(d), l)
    };
    let c = Arc::new(c);
    let wakeup = Arc::new(crate::queue::Wakeup::default());
    let connector = crate::queue::Runner::connector_for(&c, &store, dns.clone(), os_seed())?;
    let runner = crate::queue::Runner::new(
        Arc::clone(&store),
        Arc::clone(&c),
        connector,
        os_seed(),
        crate::queue::wall_clock(),
    )
    .with_wakeup(Arc::clone(&wakeup))
    .with_queue_config(c.queue.queue_config(&c.path)?);
    let workers = c.queue.workers;
    // The report senders run as a task of the runtime, next to the queue runner; TLS
    // reports look up `_smtp._tls` records through the server's DNS loop.
    let reporters = if c.localserve {
        None
    } else {
        let tls_dns = if c.reports.send_tls_reports && c.reports.tls_interval_secs > 0 {
            dns.clone()
        } else {
            None
        };
        let r = crate::reports::Reporters::new(
            Arc::clone(&store),
            Arc::clone(&c),
            tls_dns,
            Some(Arc::clone(&wakeup)),
        )?;
        r.any().then(|| Arc::new(r))
    };
    // Our own addresses looked up in the DNSBL zones, a task beside the report senders.
    let dnsbl_monitor = dns
        .clone()
        .and_then(|d| crate::dnsblmon::DnsblMonitor::new(&c, d))
        .map(Arc::new);
    // MTA-STS policies refreshed in the background, a task beside the report senders.
    let refresher = match (&dns, c.localserve) {
        (Some(d), false) => crate::queue::StsRefresher::new(
            Arc::clone(&store),
            d.clone(),
            c.queue.mtasts_refresh_interval_secs,
        )
        .map(Arc::new),
        _ => None,
    };
    let acme_dns = dns.clone();
    let webhook_dns = dns.clone();
    let world = Arc::new(
        World::new(Arc::clone(&c), Arc::clone(&store), dns)?.with_queue_wakeup(Arc::clone(&wakeup)),
    );
    // Webhooks are POSTed by a task of the runtime (always: a reload may add an account's
    // hooks), reading the configuration current at each POST.
    let webhooks = Some({
        let w = Arc::downgrade(&world);
        let first = Arc::clone(&c);
        Arc::new(crate::webhooks::Sender::new(
            Arc::clone(&store),
            Arc::new(move || match w.upgrade() {
                Some(world) => world.config(),
                None => Arc::clone(&first),
            }),
            webhook_dns,
        ))
    });
    webapi.set({
        let w = crate::webapi::Webapi::new(Arc::clone(&world), Arc::clone(&store));
        match (c.localserve, &c.postmaster) {
            // localserve's web inbox shows the account everything is delivered to.
            (true, Some(p)) => {
                w.with_inbox(crate::inbox::Inbox::new(Arc::clone(&store), &p.account))
            }
            _ => w,
        }
    });
    let answerer: Arc<dyn rmox_driver::Answerer> = Arc::clone(&world) as _;
    // Reloads go through a weak handle: neither the admin thread nor the signal thread
    // keeps the world (and its store) alive past the shutdown.
    let reload: Reload = {
        let w = Arc::downgrade(&world);
        let path = c.path.clone();
        Arc::new(move || {
            let Some(world) = w.upgrade() else {
                return Err(Fail("the server is stopping".into()));
            };
            let new = Config::load(&path)?;
            let notes = world.reload(new)?;
            tracing::info!(config = %path.display(), "configuration reloaded");
            for n in &notes {
                tracing::warn!("reload: {n}");
            }
            Ok(notes)
        })
    };
    let _ = on_hup.set(Arc::clone(&reload));
    let control = {
        let w = Arc::downgrade(&world);
        let first = Arc::clone(&c);
        let r = Arc::clone(&reload);
        crate::ctl::start(
            Arc::clone(&store),
            crate::ctl::Live {
                wakeup: Arc::clone(&wakeup),
                reload: Box::new(move || r()),
                config: Box::new(move || match w.upgrade() {
                    Some(world) => world.config(),
                    None => Arc::clone(&first),
                }),
                sendmail: {
                    let w = Arc::downgrade(&world);
                    Box::new(move |from, name, rcpts, msg| match w.upgrade() {
                        Some(world) => world.sendmail(from, name, rcpts, msg),
                        None => Err(Fail("the server is stopping".into())),
                    })
                },
            },
        )?
    };
    if let Some(b) = banner {
        println!("{b}");
    }
    // The queue runner runs on the chosen runtime, started by `run_on` on one worker.
    let queue = Background {
        runner: Arc::new(runner.with_runtime(rt)),
        workers,
        reporters,
        dns_loop,
        refresher,
        dnsbl_monitor,
        counts: Arc::clone(&world),
        acme: acme.any().then(|| (Arc::new(acme), acme_dns)),
        webhooks,
    };
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = match c.threads {
        Some(t) => usize::try_from(t).unwrap_or(usize::MAX),
        None => rt.default_threads(cpus),
    };
    tracing::info!(runtime = rt.name(), threads, cpus, "starting");
    // The ports are bound and listening (connections wait in their backlogs until the
    // runtime accepts them): ready for the service manager.
    crate::sdnotify::notify("READY=1");
    let result = run_on(rt, bound, answerer, threads, shutdown, queue);
    webapi.clear();
    // Every session has ended: the counts they added since the last write, then the last
    // user of storage besides `store` lets go, so that it can be closed cleanly.
    world.flush_delivery_counts();
    drop(world);
    control.stop();
    close_store(store);
    result.map_err(|e| Fail(format!("server: {e}")))?;
    tracing::info!("stopped");
    Ok(())
}

/// Removes the queue message files no queue entry references, before the queue runs: a
/// crash between the commit that retired a message's last entry and the removal of its file
/// leaves one (issue 15). One log line per file.
fn remove_queue_orphans(store: &dyn MailStore) {
    match store.queue_remove_orphans() {
        Ok(ids) => {
            for msg_id in ids {
                tracing::info!(
                    msg_id,
                    "removed orphan queue message file (no queue entry refers to it)"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "looking for orphan queue message files"),
    }
}

/// Closes the database cleanly once every user has let go of it (a report sender's work on
/// the blocking pool may take a moment after shutdown), so that the next open needs no
/// recovery.
fn close_store(store: Arc<dyn MailStore>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Arc::strong_count(&store) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let users = Arc::strong_count(&store);
    drop(store);
    if users > 1 {
        tracing::warn!(
            users,
            "storage still in use at exit: the next start recovers the database"
        );
    } else {
        tracing::debug!("storage closed");
    }
}

use crate::rt::Runtime;

/// The error for a runtime this build lacks.
#[cfg_attr(
    all(
        feature = "tokio",
        feature = "smol",
        feature = "glommio",
        target_os = "linux"
    ),
    allow(dead_code)
)]
fn missing(name: &str, why: &str) -> Fail {
    Fail(format!(
        "--runtime {name}: this build of rmox has no {name} runtime ({why}); available: {}",
        compiled_runtimes().join(", ")
    ))
}

/// The runtime for `choice` in this build, or why there is none; resolves `auto` (glommio
/// where io_uring works, else smol, else tokio, among the runtimes compiled in) and logs why.
fn pick_runtime(choice: RuntimeChoice) -> Result<Runtime, Fail> {
    match choice {
        #[cfg(feature = "tokio")]
        RuntimeChoice::Tokio => Ok(Runtime::Tokio),
        #[cfg(not(feature = "tokio"))]
        RuntimeChoice::Tokio => Err(missing("tokio", "rebuild with `--features tokio`")),
        #[cfg(feature = "smol")]
        RuntimeChoice::Smol => Ok(Runtime::Smol),
        #[cfg(not(feature = "smol"))]
        RuntimeChoice::Smol => Err(missing("smol", "rebuild with `--features smol`")),
        #[cfg(all(feature = "glommio", target_os = "linux"))]
        RuntimeChoice::Glommio => Ok(Runtime::Glommio),
        #[cfg(not(all(feature = "glommio", target_os = "linux")))]
        RuntimeChoice::Glommio => Err(missing(
            "glommio",
            "the io_uring runtime needs Linux and a build with `--features glommio`",
        )),
        RuntimeChoice::Auto => Ok(pick_auto()),
    }
}

/// Fails when `choice` names a runtime this build lacks (checked before anything is created).
pub fn ensure_runtime(choice: RuntimeChoice) -> Result<(), Fail> {
    match choice {
        RuntimeChoice::Auto => Ok(()),
        _ => pick_runtime(choice).map(|_| ()),
    }
}

/// `auto`: glommio when compiled in and io_uring works, else smol, else tokio.
fn pick_auto() -> Runtime {
    #[cfg(all(feature = "glommio", target_os = "linux"))]
    match rmox_runtime_glommio::io_uring_available() {
        Ok(()) => {
            tracing::info!("runtime auto: io_uring works, using glommio");
            return Runtime::Glommio;
        }
        Err(why) => tracing::info!(reason = %why, "runtime auto: io_uring unavailable"),
    }
    #[cfg(not(all(feature = "glommio", target_os = "linux")))]
    tracing::info!("runtime auto: this build has no io_uring runtime (glommio)");
    #[cfg(feature = "smol")]
    {
        tracing::info!("runtime auto: using smol");
        Runtime::Smol
    }
    #[cfg(all(not(feature = "smol"), feature = "tokio"))]
    {
        tracing::info!("runtime auto: using tokio");
        Runtime::Tokio
    }
    #[cfg(all(not(feature = "smol"), not(feature = "tokio")))]
    {
        // The crate refuses to build without a runtime unless glommio is in (lib.rs).
        Runtime::Glommio
    }
}

/// The names of the runtimes compiled into this build.
fn compiled_runtimes() -> Vec<&'static str> {
    [
        (cfg!(feature = "tokio"), "tokio"),
        (cfg!(feature = "smol"), "smol"),
        (
            cfg!(all(feature = "glommio", target_os = "linux")),
            "glommio",
        ),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

/// Runs the listeners on `rt` until shutdown.
/// The queue runner, the report senders, the MTA-STS refresher and the writer of the
/// per-day delivery counts as the runtime's background task: they stop on shutdown, the
/// runner after the deliveries in flight. The DNS loop runs beside them as a task of the
/// same runtime, until they are done. No wait after shutdown is unbounded: each is logged
/// when it takes long and given up after [`STOP_GRACE`] (see [`bounded_after`]).
fn queue_task<R: rmox_driver::outbound::Net + rmox_driver::dns::UdpRuntime>(
    b: Background,
    shutdown: Arc<Shutdown>,
) -> rmox_driver::Background<R> {
    Box::new(move |rt: R| {
        Box::pin(async move {
            let _dns = b.dns_loop.map(|l| rt.spawn(l.run(rt.clone())));
            let reports = b
                .reporters
                .map(|r| rt.spawn(r.run(rt.clone(), Arc::clone(&shutdown))));
            let refresh = b
                .refresher
                .map(|r| rt.spawn(r.run(rt.clone(), Arc::clone(&shutdown))));
            let dnsbl = b
                .dnsbl_monitor
                .map(|m| rt.spawn(m.run(rt.clone(), Arc::clone(&shutdown))));
            let acme = b
                .acme
                .map(|(a, dns)| rt.spawn(a.run(rt.clone(), dns, Arc::clone(&shutdown))));
            let webhooks = b
                .webhooks
                .map(|w| rt.spawn(w.run(rt.clone(), Arc::clone(&shutdown))));
            let counts = rt.spawn(crate::world::flush_counts(
                b.counts,
                rt.clone(),
                Arc::clone(&shutdown),
            ));
            let runner = b
                .runner
                .run(rt.clone(), b.workers, Some(Arc::clone(&shutdown)));
            bounded_after(&rt, &shutdown, "queue runner", QUEUE_STOP_GRACE, runner).await;
            if let Some(r) = reports {
                bounded_after(&rt, &shutdown, "report senders", STOP_GRACE, r).await;
            }
            if let Some(r) = refresh {
                bounded_after(&rt, &shutdown, "MTA-STS refresher", STOP_GRACE, r).await;
            }
            if let Some(a) = acme {
                bounded_after(&rt, &shutdown, "ACME renewal", STOP_GRACE, a).await;
            }
            if let Some(d) = dnsbl {
                bounded_after(&rt, &shutdown, "DNSBL monitor", STOP_GRACE, d).await;
            }
            if let Some(w) = webhooks {
                bounded_after(&rt, &shutdown, "webhook sender", STOP_GRACE, w).await;
            }
            bounded_after(&rt, &shutdown, "delivery counts writer", STOP_GRACE, counts).await;
        })
    })
}

/// How long a background task other than the queue runner may take to end after shutdown.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the queue runner may take to end after shutdown (its deliveries in flight
/// finish first; a delivery given up is sent again at the next start).
const QUEUE_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Awaits `task` (`what`); once `shutdown` has triggered it may take `grace` more, with a
/// log line every second after the first, and is then given up with a warning (dropped:
/// on tokio it runs on detached until the worker ends, elsewhere it is cancelled).
async fn bounded_after<R: rmox_driver::Runtime, F: std::future::Future<Output = ()>>(
    rt: &R,
    shutdown: &Shutdown,
    what: &str,
    grace: std::time::Duration,
    task: F,
) {
    use futures_lite::FutureExt;
    use std::time::{Duration, Instant};
    let limit = async {
        shutdown.wait().await;
        let start = Instant::now();
        let mut next = start + Duration::from_secs(1);
        loop {
            rt.sleep_until(next.min(start + grace)).await;
            let waited = start.elapsed();
            if waited >= grace {
                tracing::warn!(
                    task = what,
                    waited_ms = waited.as_millis() as u64,
                    "stop: given up waiting for a background task"
                );
                return;
            }
            tracing::info!(
                task = what,
                waited_ms = waited.as_millis() as u64,
                "stop: still waiting for a background task"
            );
            next += Duration::from_secs(1);
        }
    };
    task.or(limit).await;
}

/// What [`queue_task`] runs.
struct Background {
    /// The queue runner.
    runner: Arc<crate::queue::Runner>,
    /// Its deliveries in flight at most.
    workers: usize,
    /// The report senders, when any report is on.
    reporters: Option<Arc<crate::reports::Reporters>>,
    /// The DNS loop, when the server resolves names.
    dns_loop: Option<crate::resolve::DnsLoop>,
    /// The MTA-STS policy refresher, when on.
    refresher: Option<Arc<crate::queue::StsRefresher>>,
    /// The DNSBL monitor of our own addresses, when on.
    dnsbl_monitor: Option<Arc<crate::dnsblmon::DnsblMonitor>>,
    /// The effect answerer whose per-day delivery counts are written to storage.
    counts: Arc<World>,
    /// The ACME renewal loop and its DNS, when a listener uses ACME.
    acme: Option<(Arc<crate::acme::Acme>, Option<crate::resolve::Dns>)>,
    /// The webhook sender, when an account has webhooks.
    webhooks: Option<Arc<crate::webhooks::Sender>>,
}

fn run_on(
    rt: Runtime,
    bound: Vec<Bound>,
    world: Arc<dyn rmox_driver::Answerer>,
    threads: usize,
    shutdown: Arc<Shutdown>,
    queue: Background,
) -> std::io::Result<()> {
    match rt {
        #[cfg(feature = "tokio")]
        Runtime::Tokio => rmox_runtime_tokio::run_with_background(
            bound
                .into_iter()
                .map(|b| ListenerSpec {
                    listener: b.listener,
                    service: b.service,
                })
                .collect(),
            world,
            threads,
            Arc::clone(&shutdown),
            Some(queue_task(queue, shutdown)),
        ),
        #[cfg(all(feature = "glommio", target_os = "linux"))]
        Runtime::Glommio => rmox_runtime_glommio::run_with_background(
            bound
                .into_iter()
                .map(|b| ListenerSpec {
                    listener: b.listener,
                    service: b.service,
                })
                .collect(),
            world,
            threads,
            Arc::clone(&shutdown),
            Some(queue_task(queue, shutdown)),
        ),
        #[cfg(feature = "smol")]
        Runtime::Smol => rmox_runtime_smol::run_with_background(
            bound
                .into_iter()
                .map(|b| ListenerSpec {
                    listener: b.listener,
                    service: b.service,
                })
                .collect(),
            world,
            threads,
            Arc::clone(&shutdown),
            Some(queue_task(queue, shutdown)),
        ),
    }
}

/// Reloads the configuration of the running server: what waits for a restart, or why the
/// new configuration was refused (the old one stays).
type Reload = Arc<dyn Fn() -> Result<Vec<String>, Fail> + Send + Sync>;

/// First SIGINT/SIGTERM: graceful shutdown; second: exit at once. SIGHUP: reload the
/// configuration (once the server is up).
fn install_signals(
    shutdown: Arc<Shutdown>,
    on_hup: Arc<std::sync::OnceLock<Reload>>,
) -> Result<(), Fail> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| Fail(format!("installing signal handlers: {e}")))?;
    std::thread::Builder::new()
        .name("rmox-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    match on_hup.get() {
                        Some(reload) => {
                            if let Err(Fail(e)) = reload() {
                                tracing::error!(
                                    "SIGHUP: configuration not reloaded, the old one stays: {e}"
                                );
                            }
                        }
                        None => tracing::warn!("SIGHUP before the server is up: ignored"),
                    }
                    continue;
                }
                if shutdown.is_triggered() {
                    tracing::warn!(sig, "second signal, exiting now");
                    std::process::exit(1);
                }
                tracing::info!(sig, "shutting down: finishing open sessions");
                crate::sdnotify::notify("STOPPING=1");
                shutdown.trigger();
            }
        })
        .map_err(|e| Fail(format!("starting signal thread: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `limits.unknown_recipient_delay_secs` reaches the sessions (default 5 s, 0 turns the
    /// delay off); the machine's tests show what the delay does.
    #[test]
    fn unknown_recipient_delay_from_config() {
        let parse = |limits: &str| {
            let text = format!("hostname = \"mox.example\"\ndata_dir = \"data\"\n{limits}");
            Config::parse(&text, Path::new("rmox.toml")).unwrap()
        };
        let sc = base_config(&parse(""), 0);
        assert_eq!(
            sc.unknown_recipient_delay,
            std::time::Duration::from_secs(5)
        );
        let sc = base_config(&parse("[limits]\nunknown_recipient_delay_secs = 0\n"), 0);
        assert!(sc.unknown_recipient_delay.is_zero());
        let sc = base_config(&parse("[limits]\nunknown_recipient_delay_secs = 2\n"), 0);
        assert_eq!(
            sc.unknown_recipient_delay,
            std::time::Duration::from_secs(2)
        );
    }

    /// A reload cannot resize the open database's cache: the change is reported as waiting
    /// for a restart, not silently dropped.
    #[test]
    fn storage_cache_change_needs_restart() {
        let parse = |extra: &str| {
            let text = format!("hostname = \"mox.example\"\ndata_dir = \"data\"\n{extra}");
            Config::parse(&text, Path::new("rmox.toml")).unwrap()
        };
        assert!(restart_needed(&parse(""), &parse("storage_cache_mb = 64\n")).is_empty());
        assert_eq!(
            restart_needed(&parse(""), &parse("threads = 1\n")),
            vec!["threads changed: applied at the next restart".to_string()]
        );
        assert_eq!(
            restart_needed(&parse(""), &parse("storage_cache_mb = 128\n")),
            vec!["storage_cache_mb changed: applied at the next restart".to_string()]
        );
    }

    /// `limits.http_*` (and `tls_handshake_timeout_secs`) reach the HTTP sessions of the
    /// `mta_sts` listeners; the defaults are core's, but for the shared TLS handshake
    /// timeout. What each limit does is shown by core's `http::server` tests.
    #[test]
    fn http_limits_from_config() {
        use std::time::Duration;
        let parse = |limits: &str| {
            let text = format!("hostname = \"mox.example\"\ndata_dir = \"data\"\n{limits}");
            Config::parse(&text, Path::new("rmox.toml")).unwrap()
        };
        let d = http_config(&parse(""), None);
        let core = rmox_core::http::ServerConfig::new();
        assert_eq!(d.limits, core.limits);
        assert_eq!(d.request_timeout, core.request_timeout);
        assert_eq!(d.idle_timeout, core.idle_timeout);
        assert_eq!(d.handler_timeout, core.handler_timeout);
        assert_eq!(d.max_pipelined, core.max_pipelined);
        assert_eq!(d.tls_handshake_timeout, Duration::from_secs(30));
        let h = http_config(
            &parse(
                "[limits]\nhttp_max_head_size = 1000\nhttp_max_headers = 7\nhttp_max_body_size = 5\n\
                 http_request_timeout_secs = 2\nhttp_idle_timeout_secs = 3\n\
                 http_handler_timeout_secs = 4\nhttp_max_pipelined = 1\ntls_handshake_timeout_secs = 6\n",
            ),
            None,
        );
        assert_eq!(
            h.limits,
            rmox_core::http::Limits {
                max_head: 1000,
                max_headers: 7,
                max_body: 5
            }
        );
        assert_eq!(h.request_timeout, Duration::from_secs(2));
        assert_eq!(h.idle_timeout, Duration::from_secs(3));
        assert_eq!(h.handler_timeout, Duration::from_secs(4));
        assert_eq!(h.max_pipelined, 1);
        assert_eq!(h.tls_handshake_timeout, Duration::from_secs(6));
        assert!(h.tls.is_none());
    }
}
