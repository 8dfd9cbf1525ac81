//! The checks as command-line tools, for people testing their DNS and mail: `rmox spf`,
//! `rmox dnsbl`, `rmox dkim`, `rmox dmarc`, `rmox dane`. Each runs the same core check the
//! server runs.

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

use rmox_core::dns::{Check, Lookup, RecordType};
use rmox_core::UnixTime;

use crate::resolve::Dns;
use crate::Fail;

fn dns(resolver: &Option<String>) -> Result<Dns, Fail> {
    let list: Vec<String> = resolver.iter().cloned().collect();
    let r = crate::config::Resolver::parse(&list).map_err(|e| Fail(format!("--resolver {e}")))?;
    Dns::from_config(&r, crate::config::TrustAd::default(), Path::new("."))
}

/// Runs a check against real DNS (or a zone file), bounded in questions.
fn run<C: Check>(check: &mut C, d: &Dns) -> Result<C::Verdict, Fail>
where
    C::Verdict: Clone,
{
    // Each round's questions go out together; 256 questions is far above any check's limit.
    d.run_check(check, 256)
        .ok_or_else(|| Fail("check did not finish".into()))
}

fn now() -> UnixTime {
    rmox_driver::now().wall
}

/// `rmox spf check DOMAIN IP [--helo NAME]`: evaluate SPF for a sender domain and IP.
pub fn spf_check(
    domain: &str,
    ip: IpAddr,
    helo: &str,
    resolver: &Option<String>,
) -> Result<(), Fail> {
    let d = dns(resolver)?;
    let args = rmox_core::spf::SpfArgs::mail_from(
        ip,
        &format!("postmaster@{domain}"),
        helo,
        "rmox.invalid",
        now(),
    );
    let mut c = rmox_core::spf::SpfCheck::new(args.clone());
    let r = run(&mut c, &d)?;
    println!("result: {}", r.result);
    if let Some(m) = &r.mechanism {
        println!("mechanism: {m}");
    }
    if let Some(e) = &r.explanation {
        println!("explanation: {e}");
    }
    if let Some(p) = &r.problem {
        println!("problem: {p}");
    }
    println!("dns lookups: {} (void: {})", r.lookups, r.void_lookups);
    println!("{}", rmox_core::spf::received_spf_header(&r, &args));
    Ok(())
}

/// `rmox spf lookup DOMAIN`: print and parse the SPF record.
pub fn spf_lookup(domain: &str, resolver: &Option<String>) -> Result<(), Fail> {
    let d = dns(resolver)?;
    let r = d.lookup(&Lookup {
        name: domain.trim_end_matches('.').to_ascii_lowercase(),
        rtype: RecordType::Txt,
    });
    let rmox_core::dns::LookupResult::Records { records, .. } = r else {
        return Err(Fail(format!("{domain}: no TXT records ({r:?})")));
    };
    let mut found = 0;
    for rec in records {
        if let rmox_core::dns::Record::Txt(parts) = rec {
            let text: String = parts
                .iter()
                .map(|p| String::from_utf8_lossy(p).to_string())
                .collect();
            if text.to_ascii_lowercase().starts_with("v=spf1") {
                found += 1;
                println!("{text}");
                match rmox_core::spf::SpfRecord::parse(&text) {
                    Ok(_) => println!("valid"),
                    Err(e) => println!("invalid: {e}"),
                }
            }
        }
    }
    if found == 0 {
        return Err(Fail(format!("{domain}: no SPF record")));
    }
    Ok(())
}

/// `rmox dnsbl check ZONE IP`.
pub fn dnsbl_check(zone: &str, ip: IpAddr, resolver: &Option<String>) -> Result<(), Fail> {
    let d = dns(resolver)?;
    let zones = vec![zone.to_string()];
    let mut c = rmox_core::dnsbl::DnsblCheck::new(ip, &zones);
    for (z, status) in run(&mut c, &d)? {
        println!("{z}: {status:?}");
    }
    let mut h = rmox_core::dnsbl::DnsblHealthCheck::new(&zones);
    for (z, health) in run(&mut h, &d)? {
        println!("{z} health: {health:?}");
    }
    Ok(())
}

fn read_message(file: &Path) -> Result<Vec<u8>, Fail> {
    let raw = if file == Path::new("-") {
        let mut v = Vec::new();
        std::io::stdin()
            .read_to_end(&mut v)
            .map_err(|e| Fail(format!("reading stdin: {e}")))?;
        v
    } else {
        std::fs::read(file).map_err(|e| Fail(format!("{}: {e}", file.display())))?
    };
    Ok(rmox_core::dkim::to_crlf(&raw))
}

/// `rmox dkim verify FILE`.
pub fn dkim_verify(file: &Path, resolver: &Option<String>) -> Result<(), Fail> {
    let msg = read_message(file)?;
    let d = dns(resolver)?;
    let mut c =
        rmox_core::dkim::DkimVerify::new(&msg, now(), &rmox_core::dkim::VerifyLimits::default());
    let results = run(&mut c, &d)?;
    if results.is_empty() {
        println!("dkim=none (no signatures)");
    }
    for r in &results {
        println!("{}", r.auth_results());
        if let Some(e) = &r.error {
            println!("  error: {e}");
        }
    }
    Ok(())
}

/// `rmox dkim gened25519 DOMAIN SELECTOR KEYFILE`: writes a key, prints the DNS record.
pub fn dkim_gen_ed25519(domain: &str, selector: &str, keyfile: &Path) -> Result<(), Fail> {
    let record = write_ed25519_key(keyfile)?;
    println!("{selector}._domainkey.{domain}. IN TXT \"{record}\"");
    Ok(())
}

/// Writes a new Ed25519 DKIM key (PKCS#8 PEM, mode 0600) to `keyfile` (which must not
/// exist); its DNS record's text.
pub fn write_ed25519_key(keyfile: &Path) -> Result<String, Fail> {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| Fail("no random source".into()))?;
    let der = rmox_core::dkim::ed25519_pkcs8_from_seed(&seed);
    let pem = rmox_core::dkim::pem_encode("PRIVATE KEY", &der);
    if keyfile.exists() {
        return Err(Fail(format!(
            "{}: exists, not overwriting",
            keyfile.display()
        )));
    }
    crate::localserve::write_private(keyfile, pem.as_bytes())?;
    let key =
        rmox_core::dkim::SigningKey::ed25519_from_seed(&seed).map_err(|e| Fail(e.to_string()))?;
    Ok(key.dns_record())
}

/// Parses `HEADER/BODY` canonicalization names (`relaxed/simple`; a lone name is the
/// header's, with a simple body, as in a `c=` tag).
fn parse_canon(s: &str) -> Result<rmox_core::dkim::Canonicalization, Fail> {
    use rmox_core::dkim::Canon;
    let one = |n: &str| match n.trim().to_ascii_lowercase().as_str() {
        "relaxed" => Ok(Canon::Relaxed),
        "simple" => Ok(Canon::Simple),
        _ => Err(Fail(format!(
            "canonicalization {s:?}: want relaxed or simple"
        ))),
    };
    let (h, b) = s.split_once('/').unwrap_or((s, "simple"));
    Ok(rmox_core::dkim::Canonicalization {
        header: one(h)?,
        body: one(b)?,
    })
}

/// `rmox dkim genrsa DOMAIN SELECTOR KEYFILE [--bits N]`: writes a PKCS#8 RSA key and prints
/// its DNS record. Key generation uses the `rsa` crate (its timing advisory concerns
/// private-key operations, which rmox leaves to ring); signing uses ring.
pub fn dkim_gen_rsa(domain: &str, selector: &str, keyfile: &Path, bits: usize) -> Result<(), Fail> {
    let record = write_rsa_key(keyfile, bits)?;
    println!("{selector}._domainkey.{domain}. IN TXT \"{record}\"");
    Ok(())
}

/// Writes a new RSA DKIM key of `bits` (PKCS#8 PEM, mode 0600) to `keyfile` (which must not
/// exist); its DNS record's text.
pub fn write_rsa_key(keyfile: &Path, bits: usize) -> Result<String, Fail> {
    use rsa::pkcs8::EncodePrivateKey;
    if !(2048..=4096).contains(&bits) {
        return Err(Fail(format!(
            "--bits {bits}: must be 2048 to 4096 (ring signs with 2048 and more)"
        )));
    }
    if keyfile.exists() {
        return Err(Fail(format!(
            "{}: exists, not overwriting",
            keyfile.display()
        )));
    }
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
        .map_err(|e| Fail(format!("generating RSA key: {e}")))?;
    let pem = key
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|e| Fail(format!("encoding RSA key: {e}")))?;
    let signing = rmox_core::dkim::SigningKey::from_pem(&pem)
        .map_err(|e| Fail(format!("generated key: {e}")))?;
    crate::localserve::write_private(keyfile, pem.as_bytes())?;
    Ok(signing.dns_record())
}

/// `rmox dkim sign DOMAIN SELECTOR KEYFILE FILE [--canon H/B]`: prints the message with a
/// signature.
pub fn dkim_sign(
    domain: &str,
    selector: &str,
    keyfile: &Path,
    file: &Path,
    canon: &str,
) -> Result<(), Fail> {
    let canonicalization = parse_canon(canon)?;
    let msg = read_message(file)?;
    let pem = std::fs::read_to_string(keyfile)
        .map_err(|e| Fail(format!("{}: {e}", keyfile.display())))?;
    let key = rmox_core::dkim::SigningKey::from_pem(&pem)
        .map_err(|e| Fail(format!("{}: {e}", keyfile.display())))?;
    let mut cfg = rmox_core::dkim::SignConfig::new(domain, selector, key);
    cfg.canonicalization = canonicalization;
    let rng = ring::rand::SystemRandom::new();
    let h = rmox_core::dkim::sign(&msg, &[cfg], now(), &rng)
        .map_err(|e| Fail(format!("signing: {e}")))?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(h.as_bytes())
        .and_then(|_| out.write_all(&msg))
        .map_err(|e| Fail(e.to_string()))
}

/// `rmox dmarc verify REMOTEIP MAILFROM HELO < message`: SPF, DKIM and DMARC as the server
/// would evaluate them.
pub fn dmarc_verify(
    ip: IpAddr,
    mail_from: &str,
    helo: &str,
    resolver: &Option<String>,
) -> Result<(), Fail> {
    let msg = read_message(Path::new("-"))?;
    let d = dns(resolver)?;
    let args = rmox_core::spf::SpfArgs::mail_from(ip, mail_from, helo, "rmox.invalid", now());
    let spf = run(&mut rmox_core::spf::SpfCheck::new(args.clone()), &d)?;
    println!("spf={} smtp.mailfrom={}", spf.result, args.domain);
    let dkim = run(
        &mut rmox_core::dkim::DkimVerify::new(
            &msg,
            now(),
            &rmox_core::dkim::VerifyLimits::default(),
        ),
        &d,
    )?;
    for r in &dkim {
        println!("{}", r.auth_results());
    }
    let header_end = rmox_core::message::body_offset(&msg).unwrap_or(msg.len());
    let from = rmox_core::message::from_addresses(&msg[..header_end]);
    let Some(from_domain) = from
        .first()
        .and_then(|a| a.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()))
    else {
        return Err(Fail("message has no From address".into()));
    };
    let spf_pass = (spf.result == rmox_core::spf::SpfStatus::Pass).then_some(args.domain.as_str());
    let input = rmox_core::dmarc::DmarcInput::new(&from_domain, spf_pass, &dkim);
    let r = run(&mut rmox_core::dmarc::DmarcVerify::new(input), &d)?;
    println!("{}", r.auth_results(&from_domain));
    println!(
        "disposition: {:?}{}",
        r.disposition,
        if r.is_reject() {
            " (would be rejected)"
        } else {
            ""
        }
    );
    Ok(())
}

/// `rmox dmarc parsereport FILE`: XML, gzip or zip.
pub fn dmarc_parsereport(file: &Path) -> Result<(), Fail> {
    let data = std::fs::read(file).map_err(|e| Fail(format!("{}: {e}", file.display())))?;
    let f = rmox_core::dmarc::parse_report_file(&data)
        .map_err(|e| Fail(format!("{}: {e}", file.display())))?;
    println!("{f:#?}");
    Ok(())
}

/// `rmox dane makerecord CERTFILE`: prints the TLSA record that publishes a certificate for
/// DANE (RFC 7672): `_PORT._tcp.HOST. IN TLSA USAGE SELECTOR MATCHING HEX`. CERTFILE is PEM
/// (one certificate or a chain, leaf first) or one DER certificate. Usage 3 (DANE-EE)
/// describes the first certificate (the server's own), usage 2 (DANE-TA) the last one (the
/// issuing CA at the top of the chain). HOST defaults to the first DNS name of the first
/// certificate.
pub fn dane_makerecord(
    certfile: &Path,
    usage: u8,
    selector: u8,
    matching: u8,
    host: Option<&str>,
    port: u16,
) -> Result<(), Fail> {
    let bytes =
        std::fs::read(certfile).map_err(|e| Fail(format!("{}: {e}", certfile.display())))?;
    let mut certs: Vec<Vec<u8>> = Vec::new();
    {
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&bytes) {
            let c = c.map_err(|e| Fail(format!("{}: {e:?}", certfile.display())))?;
            certs.push(c.as_ref().to_vec());
        }
    }
    if certs.is_empty() && bytes.first() == Some(&0x30) {
        certs.push(bytes.clone());
    }
    let (Some(first), Some(last)) = (certs.first(), certs.last()) else {
        return Err(Fail(format!(
            "{}: no certificate found",
            certfile.display()
        )));
    };
    let cert = match usage {
        3 => first,
        2 => last,
        u => {
            return Err(Fail(format!(
                "usage {u}: only 2 (DANE-TA) and 3 (DANE-EE) are used for SMTP"
            )))
        }
    };
    let record = rmox_core::tls::Tlsa::for_certificate(usage, selector, matching, cert)
        .ok_or_else(|| {
            Fail(format!(
                "{}: not a certificate, or selector {selector} / matching type {matching} unknown",
                certfile.display()
            ))
        })?;
    let host = match host {
        Some(h) => h.trim_end_matches('.').to_ascii_lowercase(),
        None => rmox_core::tls::certificate_dns_names(first)
            .into_iter()
            .find(|n| !n.starts_with('*'))
            .ok_or_else(|| {
                Fail("the certificate names no host: give one with --host".to_string())
            })?,
    };
    println!("_{port}._tcp.{host}. IN TLSA {record}");
    Ok(())
}
