//! `rmox quickstart EMAIL [--hostname HOST] [--dir DIR]`: a working configuration for a new
//! domain, written into DIR: the listeners (SMTP 25, submission 587, submissions 465, the
//! MTA-STS policy on 443), the domain with DKIM keys of both kinds (RSA 2048 and Ed25519,
//! both signing, as mox does), the account for EMAIL with a generated password, addresses
//! for DMARC and TLS reports, and a self-signed certificate for HOST and mta-sts.DOMAIN
//! (replace it with one from a CA; the MTA-STS policy starts in `testing` mode for that
//! reason). It then prints every DNS record to create.

use std::path::Path;

use crate::config::Config;
use crate::Fail;

/// TXT record data in zone file syntax: quoted strings of at most 255 octets (an RSA DKIM
/// key is longer than one string may be; receivers join the strings).
fn txt(text: &str) -> String {
    text.as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A password of 20 letters and digits.
fn password() -> Result<String, Fail> {
    use ring::rand::SecureRandom;
    const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut raw = [0u8; 20];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| Fail("no random source for the password".into()))?;
    Ok(raw
        .iter()
        .map(|b| char::from(CHARS[usize::from(*b) % CHARS.len()]))
        .collect())
}

/// The configuration file for `account` (`localpart@domain`) on `host`, DKIM selectors
/// `rsa` and `ed`.
fn config_text(
    host: &str,
    domain: &str,
    account: &str,
    address: &str,
    rsa: &str,
    ed: &str,
    acme: Option<&str>,
) -> String {
    let tls = match acme {
        None => format!(
            "# Self-signed until you put a certificate from a CA for {host} and mta-sts.{domain} here.\n\
             tls = {{ cert_file = \"tls/cert.pem\", key_file = \"tls/key.pem\" }}"
        ),
        Some(url) => format!(
            "# Certificates from an ACME CA for both names, validated on port 443 (tls-alpn-01),\n\
             # kept in data/acme/ and renewed 30 days before they expire.\n\
             acme = {{ directory_url = \"{url}\", contact = [\"mailto:{address}\"], challenge = \"tls-alpn-01\", hostnames = [\"{host}\", \"mta-sts.{domain}\"] }}"
        ),
    };
    format!(
        r#"# rmox configuration written by `rmox quickstart` for {address}. See `rmox config
# example` for every key. Paths are relative to this file.
hostname = "{host}"
data_dir = "data"

[[listener]]
name = "public"
ip = "0.0.0.0"
smtp = {{ port = 25 }}
submission = {{ port = 587 }}
submissions = {{ port = 465 }}
{tls}
mta_sts = {{ port = 443 }}

[domain."{domain}"]
# Both keys sign every message (RSA for every verifier, Ed25519 for those that know it).
dkim = {{ selectors = {{ "{rsa}" = "dkim/{rsa}.rsa.pem", "{ed}" = "dkim/{ed}.ed25519.pem" }}, sign = ["{rsa}", "{ed}"] }}
dmarc_reports = "dmarc-reports@{domain}"
tls_reports = "tls-reports@{domain}"

# "testing" until the certificate above comes from a CA; then "enforce".
[domain."{domain}".mta_sts]
mode = "testing"
max_age = 86400
mx = ["{host}"]

[account.{account}]
domain = "{domain}"
destinations = {{ "{address}" = {{}}, "dmarc-reports@{domain}" = {{ mailbox = "DMARC" }}, "tls-reports@{domain}" = {{ mailbox = "TLSRPT" }} }}

[host_tls_reports]
localpart = "tls-reports"
account = "{account}"
mailbox = "TLSRPT"

[postmaster]
account = "{account}"
mailbox = "Postmaster"
"#
    )
}

/// `rmox quickstart EMAIL [--hostname HOST] [--dir DIR]`.
/// Let's Encrypt's ACME directory, for `--acme letsencrypt`.
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Writes the configuration for `email`'s domain into `dir` and prints the DNS records.
/// `acme`: an ACME directory URL (`letsencrypt` for Let's Encrypt) to get certificates
/// from, instead of a self-signed one.
pub fn run(
    email: &str,
    hostname: Option<&str>,
    dir: &Path,
    acme: Option<&str>,
) -> Result<(), Fail> {
    let acme = match acme {
        Some("letsencrypt") => Some(LETSENCRYPT.to_string()),
        Some(u) if u.starts_with("https://") => Some(u.to_string()),
        Some(u) => {
            return Err(Fail(format!(
                "--acme {u:?}: give an https:// ACME directory URL or \"letsencrypt\""
            )))
        }
        None => None,
    };
    let a = rmox_core::smtp::Address::parse(email)
        .map_err(|e| Fail(format!("address {email:?}: {e}")))?;
    let rmox_core::smtp::Host::Domain(d) = &a.host else {
        return Err(Fail(format!("address {email:?}: needs a domain")));
    };
    let domain = d.ascii.to_ascii_lowercase();
    let localpart = a.localpart.0.clone();
    let account: String = localpart
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if account.is_empty() {
        return Err(Fail(format!(
            "address {email:?}: the local part makes no account name (use letters or digits)"
        )));
    }
    let host = match hostname {
        Some(h) => rmox_core::smtp::Domain::parse(h)
            .map_err(|e| Fail(format!("--hostname {h:?}: {e}")))?
            .ascii
            .to_ascii_lowercase(),
        None => format!("mail.{domain}"),
    };
    let address = format!("{localpart}@{domain}");
    let config_path = dir.join("rmox.toml");
    if config_path.exists() {
        return Err(Fail(format!(
            "{}: exists; quickstart writes a new configuration only",
            config_path.display()
        )));
    }
    for sub in ["tls", "dkim"] {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| Fail(format!("creating {}: {e}", dir.join(sub).display())))?;
    }
    // Selectors by date, so the next keys get new names.
    let (y, m, day, ..) = rmox_driver::now().wall.civil();
    let rsa = format!("{y:04}{m:02}{day:02}r");
    let ed = format!("{y:04}{m:02}{day:02}e");
    let rsa_record = crate::tools::write_rsa_key(&dir.join(format!("dkim/{rsa}.rsa.pem")), 2048)?;
    let ed_record = crate::tools::write_ed25519_key(&dir.join(format!("dkim/{ed}.ed25519.pem")))?;
    let ck = rcgen::generate_simple_self_signed(vec![host.clone(), format!("mta-sts.{domain}")])
        .map_err(|e| Fail(format!("generating certificate: {e}")))?;
    if acme.is_none() {
        crate::localserve::write_private(
            &dir.join("tls/key.pem"),
            ck.key_pair.serialize_pem().as_bytes(),
        )?;
        std::fs::write(dir.join("tls/cert.pem"), ck.cert.pem())
            .map_err(|e| Fail(format!("writing certificate: {e}")))?;
    }
    std::fs::write(
        &config_path,
        config_text(
            &host,
            &domain,
            &account,
            &address,
            &rsa,
            &ed,
            acme.as_deref(),
        ),
    )
    .map_err(|e| Fail(format!("writing {}: {e}", config_path.display())))?;
    // What `rmox serve` will check, now.
    let c = Config::load(&config_path)?;
    crate::serve::check(&c)?;
    let pw = password()?;
    let store = crate::storage::open(&c, crate::storage::Opener::Offline)?;
    crate::storage::ensure_account(store.as_ref(), &account, &domain)?;
    crate::admin::set_password(store.as_ref(), &account, &pw)?;
    drop(store);
    let sts = crate::web::Web::new(&c)?
        .policies()
        .find(|(d, _)| *d == domain)
        .map(|(_, p)| p.record())
        .unwrap_or_default();
    let tlsa = rmox_core::tls::Tlsa::for_certificate(3, 1, 1, ck.cert.der())
        .map(|t| t.to_string())
        .unwrap_or_default();
    println!("rmox quickstart: wrote {}", config_path.display());
    println!();
    println!("Account {account}: log in as {address} with password:");
    println!();
    println!("    {pw}");
    println!();
    println!("(shown once; change it with `rmox account setpassword {account}`). Submission");
    println!("on {host} port 587 (STARTTLS) or 465 (TLS), login {address}.");
    println!();
    println!("DNS records to create (zone file syntax):");
    println!();
    println!("; mail for {domain} goes to {host}");
    println!("{domain}. IN MX 10 {host}.");
    println!("; {host} must resolve to this machine's public addresses:");
    println!("{host}. IN A <your IPv4 address>");
    println!("{host}. IN AAAA <your IPv6 address, if it has one>");
    println!("; SPF: only the MX hosts send for {domain}; the host's own name for HELO");
    println!("{domain}. IN TXT \"v=spf1 mx ~all\"");
    println!("{host}. IN TXT \"v=spf1 a ~all\"");
    println!("; DKIM: both keys sign");
    println!("{rsa}._domainkey.{domain}. IN TXT {}", txt(&rsa_record));
    println!("{ed}._domainkey.{domain}. IN TXT {}", txt(&ed_record));
    println!("; DMARC: reject what fails, aggregate reports to the account");
    println!("_dmarc.{domain}. IN TXT \"v=DMARC1; p=reject; rua=mailto:dmarc-reports@{domain}\"");
    println!("; MTA-STS: the policy is served by rmox on port 443 of mta-sts.{domain}");
    println!("mta-sts.{domain}. IN CNAME {host}.");
    println!("_mta-sts.{domain}. IN TXT \"{sts}\"");
    println!("; TLS reports (RFC 8460) for the domain and for the host (DANE)");
    println!("_smtp._tls.{domain}. IN TXT \"v=TLSRPTv1; rua=mailto:tls-reports@{domain}\"");
    println!("_smtp._tls.{host}. IN TXT \"v=TLSRPTv1; rua=mailto:tls-reports@{host}\"");
    if acme.is_some() {
        println!("; DANE: not with ACME certificates as written here (each renewal has a new");
        println!("; key); publish a TLSA record only for a key that stays.");
    } else {
        println!("; DANE (only with DNSSEC on the zone of {host}): the certificate's key");
        println!("_25._tcp.{host}. IN TLSA {tlsa}");
    }
    println!();
    println!("PTR: ask your hosting provider to set the reverse DNS (PTR) of each address of");
    println!("{host} to {host}. Many receivers refuse mail from addresses without one.");
    println!();
    if acme.is_some() {
        println!("Then start: rmox serve --config {}", config_path.display());
        println!("It serves a self-signed certificate until the CA's arrives (port 443 must be");
        println!("reachable from the internet for tls-alpn-01); then set the MTA-STS mode to");
        println!("\"enforce\" and update the _mta-sts id that `rmox serve` logs.");
    } else {
        println!("Then: put a certificate from a CA for {host} and mta-sts.{domain} in");
        println!(
            "{}/tls (then set the MTA-STS mode to \"enforce\" and update the _mta-sts id that",
            dir.display()
        );
        println!(
            "`rmox serve` logs), and start: rmox serve --config {}",
            config_path.display()
        );
    }
    Ok(())
}
