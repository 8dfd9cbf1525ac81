//! The rmox mail server binary: command line, configuration, wiring of storage and a
//! runtime to the core machines.

mod admin;
mod config;
mod creds;
mod localserve;
mod resolve;
mod serve;
mod tools;
mod world;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// rmox: a complete mail server.
#[derive(Parser, Debug)]
#[command(name = "rmox", version, about = "rmox: a complete mail server (MTA)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Which runtime drives the machines.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeChoice {
    /// glommio where io_uring works, else smol.
    Auto,
    /// tokio, one current-thread runtime per core.
    Tokio,
    /// smol, one local executor per core.
    Smol,
    /// glommio (io_uring), one executor per core.
    Glommio,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Local development server on 127.0.0.1: SMTP 1025, submission 1587, submissions 1465.
    Localserve {
        /// Directory for config, certificate and data (created on first run).
        #[arg(long, default_value = "rmox-localserve")]
        dir: PathBuf,
        /// IP address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        ip: std::net::IpAddr,
        /// Runtime.
        #[arg(long, value_enum, default_value_t = RuntimeChoice::Auto)]
        runtime: RuntimeChoice,
    },
    /// Run the server.
    Serve {
        /// Configuration file.
        #[arg(long, default_value = "rmox.toml")]
        config: PathBuf,
        /// Runtime.
        #[arg(long, value_enum, default_value_t = RuntimeChoice::Auto)]
        runtime: RuntimeChoice,
    },
    /// Configuration: check a file, or print a commented example.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Accounts.
    Account {
        #[command(subcommand)]
        cmd: AccountCmd,
    },
    /// Domains.
    Domain {
        #[command(subcommand)]
        cmd: DomainCmd,
    },
    /// Write an account's messages to an mbox file or a maildir.
    Export {
        /// Format.
        #[arg(value_enum)]
        format: admin::ExportFormat,
        /// Account name.
        account: String,
        /// Destination file (mbox) or directory (maildir).
        dest: PathBuf,
        /// Configuration file.
        #[arg(long, default_value = "rmox.toml")]
        config: PathBuf,
    },
    /// Consistent copy of the data directory into DIR.
    Backup {
        /// Destination directory (must not exist).
        dir: PathBuf,
        /// Configuration file.
        #[arg(long, default_value = "rmox.toml")]
        config: PathBuf,
    },
    /// Check a data directory: database against message files.
    Verifydata {
        /// The data directory.
        datadir: PathBuf,
    },
    /// SPF: evaluate or look up records.
    Spf {
        #[command(subcommand)]
        cmd: SpfCmd,
    },
    /// DNS blocklists.
    Dnsbl {
        #[command(subcommand)]
        cmd: DnsblCmd,
    },
    /// DKIM: keys, signing, verification.
    Dkim {
        #[command(subcommand)]
        cmd: DkimCmd,
    },
    /// DMARC: evaluate a message, parse aggregate reports.
    Dmarc {
        #[command(subcommand)]
        cmd: DmarcCmd,
    },
}

#[derive(Subcommand, Debug)]
enum SpfCmd {
    /// Evaluate SPF for DOMAIN and IP.
    Check {
        /// Sender domain.
        domain: String,
        /// Client IP.
        ip: std::net::IpAddr,
        /// EHLO name.
        #[arg(long, default_value = "")]
        helo: String,
        /// DNS server ip:port or zonefile:PATH (default: /etc/resolv.conf).
        #[arg(long)]
        resolver: Option<String>,
    },
    /// Print and parse a domain's SPF record.
    Lookup {
        /// Domain.
        domain: String,
        /// DNS server ip:port or zonefile:PATH.
        #[arg(long)]
        resolver: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum DnsblCmd {
    /// Is IP listed in ZONE? Also checks the list's health.
    Check {
        /// DNSBL zone.
        zone: String,
        /// IP address.
        ip: std::net::IpAddr,
        /// DNS server ip:port or zonefile:PATH.
        #[arg(long)]
        resolver: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum DkimCmd {
    /// Generate an ed25519 key into KEYFILE and print its DNS record.
    Gened25519 {
        /// Domain.
        domain: String,
        /// Selector.
        selector: String,
        /// Where to write the private key (PEM).
        keyfile: PathBuf,
    },
    /// Sign FILE (or - for stdin) and print the signed message.
    Sign {
        /// Domain.
        domain: String,
        /// Selector.
        selector: String,
        /// Private key (PKCS#8 or PKCS#1 PEM).
        keyfile: PathBuf,
        /// Message file, or -.
        file: PathBuf,
    },
    /// Verify the signatures of FILE (or - for stdin).
    Verify {
        /// Message file, or -.
        file: PathBuf,
        /// DNS server ip:port or zonefile:PATH.
        #[arg(long)]
        resolver: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum DmarcCmd {
    /// SPF, DKIM and DMARC for a message on stdin.
    Verify {
        /// The client's IP.
        remoteip: std::net::IpAddr,
        /// MAIL FROM address.
        mailfrom: String,
        /// EHLO name.
        helo: String,
        /// DNS server ip:port or zonefile:PATH.
        #[arg(long)]
        resolver: Option<String>,
    },
    /// Parse an aggregate report (XML, gzip or zip).
    Parsereport {
        /// Report file.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Validate a configuration file.
    Check {
        /// Configuration file.
        #[arg(long, default_value = "rmox.toml")]
        config: PathBuf,
    },
    /// Print a fully commented example configuration.
    Example,
}

#[derive(Subcommand, Debug)]
enum AccountCmd {
    /// Add an account with its first address.
    Add {
        /// Account name.
        name: String,
        /// Its address, e.g. user@example.org (the domain must be configured).
        address: String,
        /// Configuration file.
        #[arg(long, default_value = "rmox.toml")]
        config: PathBuf,
    },
    /// Set the password (read from stdin when it is not a terminal).
    Setpassword {
        /// Account name.
        name: String,
        /// Configuration file.
        #[arg(long, default_value = "rmox.toml")]
        config: PathBuf,
    },
    /// Refuse logins, showing MESSAGE.
    Disable {
        /// Account name.
        name: String,
        /// Shown to the user in the refusal.
        #[arg(default_value = "account disabled by the administrator")]
        message: String,
        /// Configuration file.
        #[arg(long, default_value = "rmox.toml")]
        config: PathBuf,
    },
    /// Allow logins again.
    Enable {
        /// Account name.
        name: String,
        /// Configuration file.
        #[arg(long, default_value = "rmox.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum DomainCmd {
    /// Add a domain.
    Add {
        /// Domain name.
        domain: String,
        /// Configuration file.
        #[arg(long, default_value = "rmox.toml")]
        config: PathBuf,
    },
    /// Disable a domain (mail refused temporarily).
    Disable {
        /// Domain name.
        domain: String,
        /// Configuration file.
        #[arg(long, default_value = "rmox.toml")]
        config: PathBuf,
    },
    /// Enable a domain.
    Enable {
        /// Domain name.
        domain: String,
        /// Configuration file.
        #[arg(long, default_value = "rmox.toml")]
        config: PathBuf,
    },
}

/// A user-facing failure: printed as one line, exit code 1.
#[derive(Debug)]
pub struct Fail(pub String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RMOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Cmd::Localserve { dir, ip, runtime } => localserve::run(&dir, ip, runtime),
        Cmd::Serve { config, runtime } => serve::run_config(&config, runtime),
        Cmd::Config {
            cmd: ConfigCmd::Check { config },
        } => config::Config::load(&config)
            .map(|c| {
                println!(
                    "{}: ok ({} domains, {} accounts, {} listeners)",
                    config.display(),
                    c.domain.len(),
                    c.account.len(),
                    c.listener.len()
                );
            })
            .map_err(Fail::from),
        Cmd::Config {
            cmd: ConfigCmd::Example,
        } => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
        Cmd::Account { cmd } => match cmd {
            AccountCmd::Add {
                name,
                address,
                config,
            } => admin::account_add(&config, &name, &address),
            AccountCmd::Setpassword { name, config } => admin::account_setpassword(&config, &name),
            AccountCmd::Disable {
                name,
                message,
                config,
            } => admin::account_disable(&config, &name, Some(message)),
            AccountCmd::Enable { name, config } => admin::account_disable(&config, &name, None),
        },
        Cmd::Domain { cmd } => match cmd {
            DomainCmd::Add { domain, config } => admin::domain_add(&config, &domain),
            DomainCmd::Disable { domain, config } => {
                admin::domain_set_disabled(&config, &domain, true)
            }
            DomainCmd::Enable { domain, config } => {
                admin::domain_set_disabled(&config, &domain, false)
            }
        },
        Cmd::Export {
            format,
            account,
            dest,
            config,
        } => admin::export(&config, format, &account, &dest),
        Cmd::Backup { dir, config } => admin::backup(&config, &dir),
        Cmd::Verifydata { datadir } => admin::verifydata(&datadir),
        Cmd::Spf {
            cmd:
                SpfCmd::Check {
                    domain,
                    ip,
                    helo,
                    resolver,
                },
        } => tools::spf_check(&domain, ip, &helo, &resolver),
        Cmd::Spf {
            cmd: SpfCmd::Lookup { domain, resolver },
        } => tools::spf_lookup(&domain, &resolver),
        Cmd::Dnsbl {
            cmd: DnsblCmd::Check { zone, ip, resolver },
        } => tools::dnsbl_check(&zone, ip, &resolver),
        Cmd::Dkim {
            cmd:
                DkimCmd::Gened25519 {
                    domain,
                    selector,
                    keyfile,
                },
        } => tools::dkim_gen_ed25519(&domain, &selector, &keyfile),
        Cmd::Dkim {
            cmd:
                DkimCmd::Sign {
                    domain,
                    selector,
                    keyfile,
                    file,
                },
        } => tools::dkim_sign(&domain, &selector, &keyfile, &file),
        Cmd::Dkim {
            cmd: DkimCmd::Verify { file, resolver },
        } => tools::dkim_verify(&file, &resolver),
        Cmd::Dmarc {
            cmd:
                DmarcCmd::Verify {
                    remoteip,
                    mailfrom,
                    helo,
                    resolver,
                },
        } => tools::dmarc_verify(remoteip, &mailfrom, &helo, &resolver),
        Cmd::Dmarc {
            cmd: DmarcCmd::Parsereport { file },
        } => tools::dmarc_parsereport(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg)) => {
            eprintln!("rmox: {msg}");
            ExitCode::FAILURE
        }
    }
}
