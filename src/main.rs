//! The rmox mail server binary: the command line over the `rmox` library (configuration,
//! wiring of storage and a runtime to the core machines).

use rmox::{admin, config, localserve, queue, serve, tools, Fail, RuntimeChoice};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc instead of glibc's malloc on Linux: sessions allocate on a runtime thread and
/// storage frees on the blocking pool (and back), and glibc's per-thread arenas spent about
/// 10 % of the server's CPU per message in `malloc`, `free` and `malloc_consolidate`; with
/// jemalloc the server uses about 8 % less CPU per message (README, Performance).
#[cfg(target_os = "linux")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// rmox: a complete mail server.
#[derive(Parser, Debug)]
#[command(name = "rmox", version, about = "rmox: a complete mail server (MTA)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Local development server on 127.0.0.1: SMTP 1025, submission 1587, submissions 1465.
    Localserve {
        /// Directory for config, certificate and data (created on first run).
        #[arg(long, default_value = "rmox-localserve")]
        dir: PathBuf,
        /// IP address to listen on (default: the one in DIR/rmox.toml, 127.0.0.1 for a new
        /// directory); given for an existing directory, it replaces the configured one.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// Runtime.
        #[arg(long, value_enum, default_value_t = RuntimeChoice::Auto)]
        runtime: RuntimeChoice,
    },
    /// Write a configuration for a new domain (an account for EMAIL, DKIM keys, a
    /// certificate) into DIR and print the DNS records to create.
    Quickstart {
        /// The first account's address, e.g. you@example.org.
        email: String,
        /// The mail server's host name (default mail.DOMAIN).
        #[arg(long)]
        hostname: Option<String>,
        /// Where to write the configuration (created).
        #[arg(long, default_value = "rmox")]
        dir: PathBuf,
        /// Get certificates from this ACME directory (an https:// URL, or "letsencrypt")
        /// instead of writing a self-signed one.
        #[arg(long)]
        acme: Option<String>,
    },
    /// The sendmail interface (cron, PHP's mail(), git send-email): the message on stdin,
    /// submitted through the running server as the `[sendmail]` account. Options as
    /// sendmail's: -t, -i/-oi, -f ADDR, -F NAME, --config FILE (or RMOX_CONFIG).
    Sendmail {
        /// Options and recipients.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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
    /// Import an mbox file or a maildir into an account's mailbox (resumable).
    Import {
        /// Format.
        #[arg(value_enum)]
        format: rmox::import::Format,
        /// Account name.
        account: String,
        /// The mbox file or maildir.
        path: PathBuf,
        /// The mailbox to import into.
        #[arg(long, default_value = "Inbox")]
        mailbox: String,
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
    /// DNS: check what is published for a domain against the configuration.
    Dns {
        #[command(subcommand)]
        cmd: DnsCmd,
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
    /// DANE: the TLSA record for our certificate.
    Dane {
        #[command(subcommand)]
        cmd: DaneCmd,
    },
    /// The outgoing queue (through the running server, or on the data directory when it is
    /// stopped).
    Queue {
        #[command(subcommand)]
        cmd: QueueCmd,
        /// Configuration file.
        #[arg(long, global = true, default_value = "rmox.toml")]
        config: PathBuf,
        /// Print the answer as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// An account's messages, and classifying them as junk or not (what reputation reads).
    Message {
        #[command(subcommand)]
        cmd: MessageCmd,
        /// Configuration file.
        #[arg(long, global = true, default_value = "rmox.toml")]
        config: PathBuf,
        /// Print the answer as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// An account's junk filter: train it from a corpus or from its classified messages,
    /// check a message (through the running server, or on the data directory when it is
    /// stopped).
    Junk {
        #[command(subcommand)]
        cmd: JunkCmd,
        /// Configuration file.
        #[arg(long, global = true, default_value = "rmox.toml")]
        config: PathBuf,
        /// Print the answer as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Incoming TLS reports (RFC 8460) that were stored.
    Tlsrpt {
        #[command(subcommand)]
        cmd: TlsrptCmd,
        /// Configuration file.
        #[arg(long, global = true, default_value = "rmox.toml")]
        config: PathBuf,
    },
    /// Webhooks: those waiting to be POSTed, and the retired ones with every attempt.
    Webhook {
        #[command(subcommand)]
        cmd: WebhookCmd,
        /// Configuration file.
        #[arg(long, global = true, default_value = "rmox.toml")]
        config: PathBuf,
        /// Print JSON instead.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum WebhookCmd {
    /// The webhooks waiting (id, account, event, attempts, next attempt, url).
    List,
    /// The retired webhooks, newest first (success or failure, attempts, last result).
    Retired,
    /// Stop POSTing a waiting webhook (it is retired as failed).
    Drop {
        /// The id as `list` prints it.
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
enum MessageCmd {
    /// List an account's messages, newest first: id, mailbox, received, flags, size, From.
    List {
        /// The account.
        account: String,
        /// Only this mailbox.
        #[arg(long)]
        mailbox: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Classify a message as junk: later mail from its sender counts against it.
    Junk {
        /// The account.
        account: String,
        /// The message id (from `message list`).
        id: u64,
    },
    /// Classify a message as not junk.
    Notjunk {
        /// The account.
        account: String,
        /// The message id (from `message list`).
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
enum JunkCmd {
    /// Train from a corpus: every message of --spam as spam, of --ham as ham. Each is an
    /// mbox file, a maildir or a directory with one message per file. Shows progress when
    /// the server is stopped (a running server logs the result).
    Train {
        /// The account.
        account: String,
        /// Spam messages.
        #[arg(long)]
        spam: Option<PathBuf>,
        /// Ham (wanted) messages.
        #[arg(long)]
        ham: Option<PathBuf>,
    },
    /// Retrain from the account's stored messages: marked junk or in Junk as spam, marked
    /// not junk or in mailboxes other than Inbox/Junk/rejects as ham.
    Retrain {
        /// The account.
        account: String,
    },
    /// The junk probability (0 to 1) of a message on the first line, then the verdict at
    /// the account's threshold and the words that decided.
    Check {
        /// The account.
        account: String,
        /// The message file ("-": standard input).
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum TlsrptCmd {
    /// List stored reports, one line each (ID, domain, sender, counts).
    List {
        /// Print one JSON array instead, the reports included.
        #[arg(long)]
        json: bool,
    },
    /// Print one stored report as JSON.
    Show {
        /// The ID as `list` prints it.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum QueueCmd {
    /// List queued messages (one line per recipient).
    List {
        /// Only this sender account.
        #[arg(long)]
        account: Option<String>,
        /// Only this recipient domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only held entries.
        #[arg(long)]
        held: bool,
    },
    /// Hold an entry.
    Hold {
        /// Entry id.
        id: u64,
    },
    /// Release a held entry.
    Release {
        /// Entry id.
        id: u64,
    },
    /// Fail an entry now, sending a DSN to the sender.
    Fail {
        /// Entry id.
        id: u64,
    },
    /// Remove an entry without a DSN.
    Drop {
        /// Entry id.
        id: u64,
    },
    /// Attempt delivery of an entry now.
    Kick {
        /// Entry id.
        id: u64,
    },
    /// Print the queued message of an entry.
    Show {
        /// Entry id.
        id: u64,
    },
    /// Rules that hold new messages.
    Holdrule {
        #[command(subcommand)]
        cmd: HoldruleCmd,
    },
    /// Entries that left the queue.
    Retired {
        #[command(subcommand)]
        cmd: RetiredCmd,
    },
    /// Per-account lists of addresses never to send to.
    Suppression {
        #[command(subcommand)]
        cmd: SuppressionCmd,
    },
}

#[derive(Subcommand, Debug)]
enum HoldruleCmd {
    /// Add a rule; every given field must match, none given holds everything.
    Add {
        /// Sender account.
        #[arg(long)]
        account: Option<String>,
        /// MAIL FROM domain.
        #[arg(long)]
        sender_domain: Option<String>,
        /// Recipient domain.
        #[arg(long)]
        recipient_domain: Option<String>,
    },
    /// List rules.
    List,
    /// Remove a rule.
    Remove {
        /// Rule id.
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
enum RetiredCmd {
    /// List retired entries, newest first.
    List,
}

#[derive(Subcommand, Debug)]
enum SuppressionCmd {
    /// An account's suppressed addresses.
    List {
        /// Account name.
        account: String,
    },
    /// Suppress an address for an account.
    Add {
        /// Account name.
        account: String,
        /// Address.
        address: String,
    },
    /// Remove an address from an account's list.
    Remove {
        /// Account name.
        account: String,
        /// Address.
        address: String,
    },
}

fn queue_op(cmd: QueueCmd) -> queue::cli::Op {
    use queue::cli::Op;
    match cmd {
        QueueCmd::List {
            account,
            domain,
            held,
        } => Op::List {
            account,
            domain,
            held,
        },
        QueueCmd::Hold { id } => Op::Hold(id),
        QueueCmd::Release { id } => Op::Release(id),
        QueueCmd::Fail { id } => Op::Fail(id),
        QueueCmd::Drop { id } => Op::Drop(id),
        QueueCmd::Kick { id } => Op::Kick(id),
        QueueCmd::Show { id } => Op::Show(id),
        QueueCmd::Holdrule { cmd } => match cmd {
            HoldruleCmd::Add {
                account,
                sender_domain,
                recipient_domain,
            } => Op::HoldruleAdd {
                account,
                sender_domain,
                recipient_domain,
            },
            HoldruleCmd::List => Op::HoldruleList,
            HoldruleCmd::Remove { id } => Op::HoldruleRemove(id),
        },
        QueueCmd::Retired {
            cmd: RetiredCmd::List,
        } => Op::RetiredList,
        QueueCmd::Suppression { cmd } => match cmd {
            SuppressionCmd::List { account } => Op::SuppressionList(account),
            SuppressionCmd::Add { account, address } => Op::SuppressionAdd(account, address),
            SuppressionCmd::Remove { account, address } => Op::SuppressionRemove(account, address),
        },
    }
}

#[derive(Subcommand, Debug)]
enum DnsCmd {
    /// MX, addresses, PTR, SPF, DKIM, DMARC, MTA-STS, TLSRPT and TLSA of DOMAIN against the
    /// configuration: one line per record, OK/WARN/ERROR; exit 1 on an ERROR.
    Check {
        /// The domain (one of the configuration's).
        domain: String,
        /// Configuration file.
        #[arg(long, default_value = "rmox.toml")]
        config: PathBuf,
        /// DNS server ip:port or zonefile:PATH (default: the configuration's resolver).
        #[arg(long)]
        resolver: Option<String>,
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
    /// Generate an RSA key into KEYFILE and print its DNS record.
    Genrsa {
        /// Domain.
        domain: String,
        /// Selector.
        selector: String,
        /// Where to write the private key (PKCS#8 PEM).
        keyfile: PathBuf,
        /// Key size in bits (2048 to 4096).
        #[arg(long, default_value_t = 2048)]
        bits: usize,
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
        /// Canonicalization HEADER/BODY: relaxed or simple each (default relaxed/relaxed).
        #[arg(long, default_value = "relaxed/relaxed")]
        canon: String,
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
enum DaneCmd {
    /// Print the TLSA record (`_25._tcp.HOST. IN TLSA 3 1 1 HEX`) for a certificate.
    Makerecord {
        /// Certificate file: PEM (one certificate, or a chain with the leaf first) or DER.
        certfile: PathBuf,
        /// 3 (DANE-EE: the first certificate) or 2 (DANE-TA: the last certificate, the
        /// issuing CA).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=3))]
        usage: u8,
        /// 1: the public key (SubjectPublicKeyInfo); 0: the full certificate.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
        selector: u8,
        /// 1: SHA-256; 2: SHA-512; 0: the selected data itself.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
        matching: u8,
        /// The host name the record is for (default: the certificate's first DNS name).
        #[arg(long)]
        host: Option<String>,
        /// The port (25 for SMTP).
        #[arg(long, default_value_t = 25)]
        port: u16,
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
    /// Make the running server read its configuration file again (as SIGHUP does); an
    /// invalid file is refused with its error and the server keeps the old configuration.
    Reload {
        /// Configuration file.
        #[arg(long, default_value = "rmox.toml")]
        config: PathBuf,
    },
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
    /// Set an account's quota: total size of its stored messages in octets (0: none);
    /// edits the configuration file, then a running server reloads it.
    Quota {
        /// Account name.
        name: String,
        /// Octets; 0 for no quota.
        bytes: u64,
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RMOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn main() -> ExitCode {
    // Invoked as `sendmail` (a link, /usr/sbin/sendmail for cron and mail(1)): the
    // sendmail interface, whose options are not rmox's.
    let mut argv = std::env::args();
    let invoked = argv.next().unwrap_or_default();
    if std::path::Path::new(&invoked)
        .file_name()
        .is_some_and(|n| n == "sendmail")
    {
        return rmox::sendmail::run(&argv.collect::<Vec<_>>());
    }
    let cli = Cli::parse();
    init_logging();
    if let Cmd::Sendmail { args } = &cli.command {
        return rmox::sendmail::run(args);
    }
    let result = match cli.command {
        Cmd::Sendmail { .. } => Ok(()),
        Cmd::Localserve { dir, ip, runtime } => localserve::run(&dir, ip, runtime),
        Cmd::Serve { config, runtime } => serve::run_config(&config, runtime),
        Cmd::Quickstart {
            email,
            hostname,
            dir,
            acme,
        } => rmox::quickstart::run(&email, hostname.as_deref(), &dir, acme.as_deref()),
        Cmd::Config {
            cmd: ConfigCmd::Check { config },
        } => config::Config::load(&config)
            .map_err(Fail::from)
            // What serve reads at start: certificates, DKIM keys, transports' password files.
            .and_then(|c| serve::check(&c).map(|()| c))
            .map(|c| {
                println!(
                    "{}: ok ({} domains, {} accounts, {} listeners)",
                    config.display(),
                    c.domain.len(),
                    c.account.len(),
                    c.listener.len()
                );
            }),
        Cmd::Config {
            cmd: ConfigCmd::Reload { config },
        } => config::Config::load(&config).map_err(Fail::from).and_then(
            |c| match rmox::ctl::request(&c.data_dir(), &rmox::ctl::Request::Reload) {
                Some(r) => r.map(|a| a.print(false)),
                None => Err(Fail(format!(
                    "no server is running for {} (nothing to reload)",
                    c.data_dir().display()
                ))),
            },
        ),
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
            AccountCmd::Quota {
                name,
                bytes,
                config,
            } => admin::account_quota(&config, &name, bytes),
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
        Cmd::Import {
            format,
            account,
            path,
            mailbox,
            config,
        } => std::path::absolute(&path)
            .map_err(|e| Fail(format!("{}: {e}", path.display())))
            .and_then(|path| {
                rmox::ctl::run(
                    &config,
                    rmox::ctl::Request::Import {
                        format,
                        account,
                        mailbox,
                        path,
                    },
                    false,
                )
            }),
        Cmd::Verifydata { datadir } => admin::verifydata(&datadir),
        Cmd::Dns {
            cmd:
                DnsCmd::Check {
                    domain,
                    config,
                    resolver,
                },
        } => rmox::dnscheck::run(&config, &domain, &resolver),
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
                DkimCmd::Genrsa {
                    domain,
                    selector,
                    keyfile,
                    bits,
                },
        } => tools::dkim_gen_rsa(&domain, &selector, &keyfile, bits),
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
                    canon,
                },
        } => tools::dkim_sign(&domain, &selector, &keyfile, &file, &canon),
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
        Cmd::Dane {
            cmd:
                DaneCmd::Makerecord {
                    certfile,
                    usage,
                    selector,
                    matching,
                    host,
                    port,
                },
        } => tools::dane_makerecord(&certfile, usage, selector, matching, host.as_deref(), port),
        Cmd::Queue { cmd, config, json } => queue::cli::run(&config, queue_op(cmd), json),
        Cmd::Message { cmd, config, json } => {
            use rmox::ctl::Request;
            let request = match cmd {
                MessageCmd::List {
                    account,
                    mailbox,
                    limit,
                } => Request::MessageList {
                    account,
                    mailbox,
                    limit,
                },
                MessageCmd::Junk { account, id } => Request::MessageClassify {
                    account,
                    id,
                    junk: true,
                },
                MessageCmd::Notjunk { account, id } => Request::MessageClassify {
                    account,
                    id,
                    junk: false,
                },
            };
            rmox::ctl::run(&config, request, json)
        }
        Cmd::Junk { cmd, config, json } => {
            junk_request(cmd).and_then(|request| rmox::ctl::run(&config, request, json))
        }
        Cmd::Webhook { cmd, config, json } => {
            let request = match cmd {
                WebhookCmd::List => rmox::ctl::Request::WebhookList { retired: false },
                WebhookCmd::Retired => rmox::ctl::Request::WebhookList { retired: true },
                WebhookCmd::Drop { id } => rmox::ctl::Request::WebhookDrop { id },
            };
            rmox::ctl::run(&config, request, json)
        }
        Cmd::Tlsrpt { cmd, config } => match cmd {
            TlsrptCmd::List { json } => {
                rmox::ctl::run(&config, rmox::ctl::Request::TlsrptList, json)
            }
            TlsrptCmd::Show { id } => {
                rmox::ctl::run(&config, rmox::ctl::Request::TlsrptShow { id }, false)
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg)) => {
            eprintln!("rmox: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The admin request of a `rmox junk` command (paths made absolute, the message read).
fn junk_request(cmd: JunkCmd) -> Result<rmox::ctl::Request, Fail> {
    use rmox::ctl::Request;
    let abs = |p: Option<PathBuf>| {
        p.map(|p| std::path::absolute(&p).map_err(|e| Fail(format!("{}: {e}", p.display()))))
            .transpose()
    };
    Ok(match cmd {
        JunkCmd::Train { account, spam, ham } => {
            if spam.is_none() && ham.is_none() {
                return Err(Fail("junk train: give --spam DIR and/or --ham DIR".into()));
            }
            Request::JunkTrain {
                account,
                spam: abs(spam)?,
                ham: abs(ham)?,
            }
        }
        JunkCmd::Retrain { account } => Request::JunkRetrain { account },
        JunkCmd::Check { account, file } => {
            use base64::Engine;
            let bytes = if file.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                    .map_err(|e| Fail(format!("standard input: {e}")))?;
                b
            } else {
                std::fs::read(&file).map_err(|e| Fail(format!("{}: {e}", file.display())))?
            };
            Request::JunkCheck {
                account,
                message: base64::engine::general_purpose::STANDARD.encode(bytes),
            }
        }
    })
}
