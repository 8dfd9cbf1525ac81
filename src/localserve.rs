//! `rmox localserve`: a local development server that behaves like a real one.

use std::net::IpAddr;
use std::path::Path;

use crate::config::Config;
use crate::{Fail, RuntimeChoice};

/// Account, address and password created on first run.
pub const ACCOUNT: &str = "rmox";
/// The account's address.
pub const ADDRESS: &str = "rmox@localhost";
/// The account's password.
pub const PASSWORD: &str = "rmoxrmox";

fn config_text(ip: IpAddr) -> String {
    format!(
        r#"# rmox localserve configuration, written on first run. Edit freely.
hostname = "localhost"
data_dir = "data"
# Development mode: every recipient is accepted into account "rmox"; local parts ending in
# temperror, permerror, timeout or a 3-digit code fail at DATA (or at MAIL/RCPT when they
# start with "mailfrom"/"rcptto"). Submitted messages go through the queue and come back
# into the sender's account; recipients starting with queuetemperror, queuepermerror or
# queuetimeout fail there (DSNs arrive in the Inbox). Submission follows the same rules as
# serve: MAIL FROM and the From header must be the account's (any address @localhost).
localserve = true

[[listener]]
name = "local"
ip = "{ip}"
smtp = {{ port = 1025 }}
submission = {{ port = 1587 }}
submissions = {{ port = 1465 }}
# The webapi (mox's /webapi/v0/ methods, e.g. Send) as mox localserve serves it: plain HTTP
# on port 1080 of this loopback address, HTTP basic auth with the account's address and
# password.
webapi = {{ port = 1080, tls = false }}
tls = {{ cert_file = "tls/cert.pem", key_file = "tls/key.pem" }}
# As mox localserve: submission on 1587 does not require STARTTLS (AUTH and MAIL in plain
# text are fine on loopback); STARTTLS is offered.
no_require_starttls = true

[domain."localhost"]
localpart_catchall_separator = "+"

[account.{ACCOUNT}]
domain = "localhost"
destinations = {{ "{ADDRESS}" = {{}}, "@localhost" = {{}} }}

[postmaster]
account = "{ACCOUNT}"
mailbox = "Inbox"
"#
    )
}

/// Creates `dir` with config, certificate and account on first run, then serves.
pub fn run(dir: &Path, ip_arg: Option<IpAddr>, runtime: RuntimeChoice) -> Result<(), Fail> {
    crate::serve::ensure_runtime(runtime)?;
    let config_path = dir.join("rmox.toml");
    if !config_path.exists() {
        let ip = ip_arg.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        std::fs::create_dir_all(dir.join("tls"))
            .map_err(|e| Fail(format!("creating {}: {e}", dir.display())))?;
        let names = vec!["localhost".to_string(), ip.to_string()];
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|e| Fail(format!("generating certificate: {e}")))?;
        write_private(
            &dir.join("tls/key.pem"),
            ck.key_pair.serialize_pem().as_bytes(),
        )?;
        std::fs::write(dir.join("tls/cert.pem"), ck.cert.pem())
            .map_err(|e| Fail(format!("writing certificate: {e}")))?;
        std::fs::write(&config_path, config_text(ip))
            .map_err(|e| Fail(format!("writing {}: {e}", config_path.display())))?;
        let c = Config::load(&config_path)?;
        let store = rmox_storage::Store::open(&c.data_dir())?;
        store.account_add(ACCOUNT, "localhost")?;
        crate::admin::set_password(&store, ACCOUNT, PASSWORD)?;
        eprintln!(
            "rmox: created {} with account {ADDRESS}, password {PASSWORD}",
            dir.display()
        );
    }
    let mut c = Config::load(&config_path)?;
    // --ip on an existing directory: listen where the user asked (and say so), not where the
    // directory was first created for.
    if let Some(ip) = ip_arg {
        for l in &mut c.listener {
            if l.ip != ip {
                tracing::info!(configured = %l.ip, ip = %ip, "localserve: --ip replaces the configured address");
                l.ip = ip;
            }
        }
    }
    let ip = c
        .listener
        .first()
        .map_or(IpAddr::from([127, 0, 0, 1]), |l| l.ip);
    let banner = format!(
        "rmox localserve: SMTP {ip}:1025, submission {ip}:1587 (STARTTLS), submissions {ip}:1465 (TLS),\n\
         webapi http://{ip}:1080/webapi/v0/\n\
         account {ADDRESS}, password {PASSWORD}; data in {}",
        c.data_dir().display()
    );
    crate::serve::run(c, runtime, Some(banner))
}

/// Writes a private file (keys): mode 0600, whatever the umask.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<(), Fail> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Fail(format!("writing {}: {e}", path.display())))?;
    f.write_all(data)
        .map_err(|e| Fail(format!("writing {}: {e}", path.display())))
}
