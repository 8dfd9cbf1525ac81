//! `rmox serve`: listeners from the config, the store, a runtime, signals.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use rmox_core::server::ServerConfig;
use rmox_driver::Shutdown;
use rmox_storage::Store;

use crate::config::Config;
use crate::world::World;
use crate::{Fail, RuntimeChoice};

/// A bound listener and the session settings for its connections.
pub struct Bound {
    /// The socket.
    pub listener: TcpListener,
    /// Settings.
    pub config: Arc<ServerConfig>,
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

/// Binds `addr` with SO_REUSEADDR and SO_REUSEPORT (so per-core runtimes can share it).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, Fail> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| Fail(format!("cannot listen on {addr}: {e}")))?;
    let setup = || -> std::io::Result<()> {
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
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
    sc.max_recipients = c.limits.max_recipients;
    sc.seed = seed;
    sc.command_timeout = std::time::Duration::from_secs(c.limits.command_timeout_secs.max(1));
    sc.data_timeout = std::time::Duration::from_secs(c.limits.data_timeout_secs.max(1));
    sc.auth_failure_delay = std::time::Duration::from_secs(c.limits.auth_failure_delay_secs);
    sc
}

/// Binds every enabled port of every listener.
pub fn bind_all(c: &Config) -> Result<Vec<Bound>, Fail> {
    let mut out = Vec::new();
    let seed = os_seed();
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
        let ports = [
            (&l.smtp, false, false),
            (&l.submission, true, false),
            (&l.submissions, true, true),
        ];
        for (n, (port, submission, implicit)) in ports.into_iter().enumerate() {
            let Some(p) = port.as_ref().filter(|p| p.enabled) else {
                continue;
            };
            let mut sc = base_config(c, seed.wrapping_add((i * 3 + n) as u64));
            sc.submission = submission;
            sc.implicit_tls = implicit;
            sc.tls = tls.clone();
            sc.require_tls_for_auth = l.require_tls_for_auth;
            if !submission && c.incoming.checks && !c.localserve {
                sc.checks = Some(rmox_core::server::IncomingChecks {
                    dnsbl: c.incoming.dnsbl.clone(),
                    ..Default::default()
                });
            }
            let addr = SocketAddr::new(l.ip, p.port);
            let listener = bind(addr)?;
            tracing::info!(listener = %l.name, %addr, submission, implicit_tls = implicit, "listening");
            out.push(Bound {
                listener,
                config: Arc::new(sc),
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

/// `rmox serve --config FILE`.
pub fn run_config(path: &Path, runtime: RuntimeChoice) -> Result<(), Fail> {
    let c = Config::load(path)?;
    run(c, runtime, None)
}

/// Runs the server for a loaded config until SIGINT/SIGTERM; `banner` is printed once the
/// ports are bound.
pub fn run(c: Config, runtime: RuntimeChoice, banner: Option<String>) -> Result<(), Fail> {
    let data = c.data_dir();
    let store = Store::open(&data)
        .map_err(|e| Fail(format!("opening data directory {}: {e}", data.display())))?;
    let store = Arc::new(store);
    for (name, a) in &c.account {
        if store.account(name)?.is_none() {
            store.account_add(name, &a.domain)?;
        }
    }
    let bound = bind_all(&c)?;
    crate::ctl::start(Arc::clone(&store))?;
    if let Some(b) = banner {
        println!("{b}");
    }
    let dns = if c.localserve && c.resolver.is_empty() {
        None
    } else {
        let base = c.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Some(crate::resolve::Dns::from_config(&c.resolver, &base)?)
    };
    let c = Arc::new(c);
    let wakeup = Arc::new(crate::queue::Wakeup::default());
    let connector = crate::queue::Runner::connector_for(&c, &store, None, os_seed())?;
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
    let reporter = Arc::new(crate::reports::Trigger::default());
    if !c.localserve && c.reports.dmarc_interval_secs > 0 {
        crate::reports::spawn_reporter(
            Arc::clone(&store),
            Arc::clone(&c),
            std::time::Duration::from_secs(c.reports.dmarc_interval_secs),
            Arc::clone(&reporter),
            Some(Arc::clone(&wakeup)),
        )?;
    }
    let world = Arc::new(
        World::new(
            Arc::clone(&c),
            Arc::clone(&store) as Arc<dyn rmox_storage::MailStore>,
            dns,
        )?
        .with_queue_wakeup(wakeup),
    );
    let flusher = crate::world::Flusher::spawn(Arc::clone(&world))?;
    let world: Arc<dyn rmox_driver::Answerer> = world;
    let queue = Arc::new(runner).spawn(workers)?;
    let shutdown = Shutdown::new();
    install_signals(Arc::clone(&shutdown))?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let rt = pick_runtime(runtime);
    tracing::info!(runtime = rt, threads, "starting");
    let result = match rt {
        "tokio" => rmox_runtime_tokio::run(
            bound
                .into_iter()
                .map(|b| rmox_runtime_tokio::ListenerSpec {
                    listener: b.listener,
                    config: b.config,
                })
                .collect(),
            world,
            threads,
            shutdown,
        ),
        "glommio" => rmox_runtime_glommio::run(
            bound
                .into_iter()
                .map(|b| rmox_runtime_glommio::ListenerSpec {
                    listener: b.listener,
                    config: b.config,
                })
                .collect(),
            world,
            threads,
            shutdown,
        ),
        _ => rmox_runtime_smol::run(
            bound
                .into_iter()
                .map(|b| rmox_runtime_smol::ListenerSpec {
                    listener: b.listener,
                    config: b.config,
                })
                .collect(),
            world,
            threads,
            shutdown,
        ),
    };
    queue.stop();
    reporter.stop();
    flusher.stop();
    result.map_err(|e| Fail(format!("server: {e}")))?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves `auto` and logs why.
fn pick_runtime(choice: RuntimeChoice) -> &'static str {
    match choice {
        RuntimeChoice::Tokio => "tokio",
        RuntimeChoice::Smol => "smol",
        RuntimeChoice::Glommio => "glommio",
        RuntimeChoice::Auto => match rmox_runtime_glommio::io_uring_available() {
            Ok(()) => {
                tracing::info!("runtime auto: io_uring works, using glommio");
                "glommio"
            }
            Err(why) => {
                tracing::info!(reason = %why, "runtime auto: io_uring unavailable, using smol");
                "smol"
            }
        },
    }
}

/// First SIGINT/SIGTERM: graceful shutdown; second: exit at once.
fn install_signals(shutdown: Arc<Shutdown>) -> Result<(), Fail> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Fail(format!("installing signal handlers: {e}")))?;
    std::thread::Builder::new()
        .name("rmox-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if shutdown.is_triggered() {
                    tracing::warn!(sig, "second signal, exiting now");
                    std::process::exit(1);
                }
                tracing::info!(sig, "shutting down: finishing open sessions");
                shutdown.trigger();
            }
        })
        .map_err(|e| Fail(format!("starting signal thread: {e}")))?;
    Ok(())
}
