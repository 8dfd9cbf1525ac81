//! `rmox dns check DOMAIN [--config FILE] [--resolver ...]`: what is published in DNS for a
//! domain against what the configuration needs, one line per record: `OK`, `WARN` (works,
//! but should be fixed) or `ERROR` (mail will fail or be refused), with what is wrong.
//! Checked: MX (to the host name), the host's addresses, their PTR records, SPF (the
//! domain's record passes the host's addresses), every signing DKIM selector (the published
//! key is the configured key's), DMARC, the MTA-STS record's id against the policy rmox
//! serves, TLSRPT for the domain and the host, and TLSA for the listener's certificate. The
//! lookups go through the same resolver code as the server's; the checks are core's.

use std::net::IpAddr;
use std::path::Path;

use rmox_core::dns::{Lookup, LookupResult, Record, RecordType};

use crate::config::Config;
use crate::resolve::Dns;
use crate::Fail;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// OK, WARN or ERROR.
    pub level: &'static str,
    /// What was checked.
    pub what: String,
    /// What was found.
    pub text: String,
}

fn look(d: &Dns, name: &str, rtype: RecordType) -> LookupResult {
    d.lookup_many(&[Lookup {
        name: name.trim_end_matches('.').to_ascii_lowercase(),
        rtype,
    }])
    .into_iter()
    .next()
    .unwrap_or(LookupResult::TempFail("no answer".into()))
}

fn records(r: &LookupResult) -> &[Record] {
    match r {
        LookupResult::Records { records, .. } => records,
        _ => &[],
    }
}

fn txts(r: &LookupResult) -> Vec<String> {
    records(r)
        .iter()
        .filter_map(|x| match x {
            Record::Txt(parts) => Some(String::from_utf8_lossy(&parts.concat()).into_owned()),
            _ => None,
        })
        .collect()
}

/// The `p=` value of a DKIM key record, without spaces.
fn dkim_key(record: &str) -> Option<String> {
    record.split(';').find_map(|t| {
        let (k, v) = t.split_once('=')?;
        (k.trim() == "p").then(|| v.chars().filter(|c| !c.is_whitespace()).collect())
    })
}

/// Checks `domain` against `c`, through `d`.
pub fn check(c: &Config, domain: &str, d: &Dns) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut say = |level: &'static str, what: String, text: String| {
        out.push(Finding { level, what, text });
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let host = c.hostname.to_ascii_lowercase();
    let Some(dc) = c.domain.get(&domain) else {
        say(
            "ERROR",
            "config".into(),
            format!("{domain} is not a domain of {}", c.path.display()),
        );
        return out;
    };
    // MX (a failing lookup says so: the lines after it would only repeat it).
    let mx = look(d, &domain, RecordType::Mx);
    if let LookupResult::TempFail(e) = &mx {
        say(
            "ERROR",
            format!("DNS {domain}"),
            format!("lookups fail ({e}): check the resolver"),
        );
        return out;
    }
    let hosts: Vec<(u16, String)> = records(&mx)
        .iter()
        .filter_map(|r| match r {
            Record::Mx { preference, host } => Some((*preference, host.clone())),
            _ => None,
        })
        .collect();
    match hosts.iter().find(|(_, h)| *h == host) {
        Some((p, _)) => say(
            "OK",
            format!("MX {domain}"),
            format!("{host} (preference {p})"),
        ),
        None if hosts.is_empty() => say(
            "ERROR",
            format!("MX {domain}"),
            format!("no MX record: add `{domain}. MX 10 {host}.`"),
        ),
        None => say(
            "ERROR",
            format!("MX {domain}"),
            format!(
                "the MX hosts are {:?}, not {host}",
                hosts.iter().map(|(_, h)| h.as_str()).collect::<Vec<_>>()
            ),
        ),
    }
    // The host's addresses and their PTR records.
    let mut ips: Vec<IpAddr> = Vec::new();
    for t in [RecordType::A, RecordType::Aaaa] {
        for r in records(&look(d, &host, t)) {
            match r {
                Record::A(a) => ips.push(IpAddr::V4(*a)),
                Record::Aaaa(a) => ips.push(IpAddr::V6(*a)),
                _ => {}
            }
        }
    }
    if ips.is_empty() {
        say(
            "ERROR",
            format!("A/AAAA {host}"),
            "no address: the host name must resolve to this machine".into(),
        );
    } else {
        say(
            "OK",
            format!("A/AAAA {host}"),
            ips.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    for ip in &ips {
        let name = rmox_core::dns::reverse_name(*ip);
        let ptrs: Vec<String> = records(&look(d, &name, RecordType::Ptr))
            .iter()
            .filter_map(|r| match r {
                Record::Ptr(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        if ptrs.contains(&host) {
            say("OK", format!("PTR {ip}"), host.clone());
        } else {
            say(
                "ERROR",
                format!("PTR {ip}"),
                format!(
                    "{}: ask the provider of {ip} to set its reverse DNS to {host}",
                    if ptrs.is_empty() {
                        "no PTR record".to_string()
                    } else {
                        format!("points to {ptrs:?}")
                    }
                ),
            );
        }
    }
    // SPF: the domain's record must pass the host's addresses.
    let spf: Vec<String> = txts(&look(d, &domain, RecordType::Txt))
        .into_iter()
        .filter(|t| t.to_ascii_lowercase().starts_with("v=spf1"))
        .collect();
    if spf.is_empty() {
        say(
            "ERROR",
            format!("SPF {domain}"),
            "no SPF record: add `v=spf1 mx ~all`".into(),
        );
    }
    for ip in ips.iter().filter(|_| !spf.is_empty()) {
        let args = rmox_core::spf::SpfArgs::mail_from(
            *ip,
            &format!("postmaster@{domain}"),
            &host,
            "rmox.invalid",
            rmox_driver::now().wall,
        );
        let mut chk = rmox_core::spf::SpfCheck::new(args);
        match d.run_check(&mut chk, 256) {
            Some(r) if r.result == rmox_core::spf::SpfStatus::Pass => {
                say("OK", format!("SPF {domain}"), format!("passes {ip}"))
            }
            Some(r) => say(
                "ERROR",
                format!("SPF {domain}"),
                format!(
                    "{} for {ip}: the record must allow the host's addresses",
                    r.result
                ),
            ),
            None => say(
                "ERROR",
                format!("SPF {domain}"),
                "check did not finish".into(),
            ),
        }
    }
    // DKIM: every signing selector's published key is the configured one.
    for sel in &dc.dkim.sign {
        let name = format!("{sel}._domainkey.{domain}");
        let want = dc
            .dkim
            .selectors
            .get(sel)
            .and_then(|p| std::fs::read_to_string(c.resolve_path(p)).ok())
            .and_then(|pem| rmox_core::dkim::SigningKey::from_pem(&pem).ok())
            .and_then(|k| dkim_key(&k.dns_record()));
        let published: Vec<String> = txts(&look(d, &name, RecordType::Txt))
            .iter()
            .filter_map(|t| dkim_key(t))
            .collect();
        match (&want, published.is_empty()) {
            (None, _) => say(
                "ERROR",
                format!("DKIM {name}"),
                "the configured key file cannot be read".into(),
            ),
            (Some(_), true) => say(
                "ERROR",
                format!("DKIM {name}"),
                "no key published: messages signed with this selector fail DKIM".into(),
            ),
            (Some(w), false) if published.contains(w) => say(
                "OK",
                format!("DKIM {name}"),
                "the published key is the configured key".into(),
            ),
            (Some(_), false) => say(
                "ERROR",
                format!("DKIM {name}"),
                "the published key is not the configured key".into(),
            ),
        }
    }
    // DMARC.
    let dmarc: Vec<String> = txts(&look(d, &format!("_dmarc.{domain}"), RecordType::Txt))
        .into_iter()
        .filter(|t| rmox_core::dmarc::DmarcRecord::is_dmarc(t))
        .collect();
    match dmarc.as_slice() {
        [] => say(
            "WARN",
            format!("DMARC _dmarc.{domain}"),
            "no record: receivers apply no policy to mail forged as from the domain".into(),
        ),
        [one] => match rmox_core::dmarc::DmarcRecord::parse(one) {
            Ok(r) => say(
                "OK",
                format!("DMARC _dmarc.{domain}"),
                format!("p={}", r.policy.as_str()),
            ),
            Err(e) => say("ERROR", format!("DMARC _dmarc.{domain}"), e.to_string()),
        },
        _ => say(
            "ERROR",
            format!("DMARC _dmarc.{domain}"),
            "more than one record".into(),
        ),
    }
    // MTA-STS: the record's id is the served policy's.
    let sts = txts(&look(d, &format!("_mta-sts.{domain}"), RecordType::Txt));
    let served = crate::web::Web::new(c).ok().and_then(|w| {
        w.policies()
            .find(|(dd, _)| *dd == domain)
            .map(|(_, p)| p.id.clone())
    });
    let published_id = sts.iter().find_map(|t| {
        t.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == "id").then(|| v.trim().to_string())
        })
    });
    match (served, published_id) {
        (Some(s), Some(p)) if s == p => say(
            "OK",
            format!("MTA-STS _mta-sts.{domain}"),
            format!("id {p}"),
        ),
        (Some(s), Some(p)) => say(
            "WARN",
            format!("MTA-STS _mta-sts.{domain}"),
            format!(
                "id {p}, but the policy served now has id {s}: publish id={s} so senders fetch it"
            ),
        ),
        (Some(s), None) => say(
            "WARN",
            format!("MTA-STS _mta-sts.{domain}"),
            format!("no record: publish `v=STSv1; id={s}`"),
        ),
        (None, Some(p)) => say(
            "WARN",
            format!("MTA-STS _mta-sts.{domain}"),
            format!("a record (id {p}) but no [domain.\"{domain}\".mta_sts] policy served here"),
        ),
        (None, None) => say(
            "WARN",
            format!("MTA-STS _mta-sts.{domain}"),
            "none: senders cannot require TLS to the domain".into(),
        ),
    }
    // TLSRPT for the domain and the host.
    for (name, what) in [(domain.clone(), "domain"), (host.clone(), "host")] {
        let n = format!("_smtp._tls.{name}");
        let ok = txts(&look(d, &n, RecordType::Txt))
            .iter()
            .any(|t| t.starts_with("v=TLSRPTv1"));
        if ok {
            say(
                "OK",
                format!("TLSRPT {n}"),
                format!("reports for the {what}"),
            );
        } else {
            say(
                "WARN",
                format!("TLSRPT {n}"),
                format!("no record: no TLS failure reports for the {what}"),
            );
        }
    }
    // TLSA for the first listener certificate.
    let cert = c
        .listener
        .iter()
        .find_map(|l| l.tls.as_ref())
        .and_then(|t| std::fs::read(c.resolve_path(&t.cert_file)).ok())
        .and_then(|pem| {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .next()
                .and_then(Result::ok)
                .map(|c| c.as_ref().to_vec())
        });
    let n = format!("_25._tcp.{host}");
    let tlsa: Vec<rmox_core::tls::Tlsa> = records(&look(d, &n, RecordType::Tlsa))
        .iter()
        .filter_map(|r| match r {
            Record::Tlsa {
                usage,
                selector,
                matching,
                data,
            } => Some(rmox_core::tls::Tlsa {
                usage: *usage,
                selector: *selector,
                matching: *matching,
                data: data.clone(),
            }),
            _ => None,
        })
        .collect();
    match (cert, tlsa.is_empty()) {
        (_, true) => say(
            "WARN",
            format!("TLSA {n}"),
            "none: DANE senders use opportunistic TLS (publish one with DNSSEC)".into(),
        ),
        (None, false) => say(
            "WARN",
            format!("TLSA {n}"),
            "published, but no listener certificate to compare with".into(),
        ),
        (Some(cert), false) => {
            let mine = rmox_core::tls::Tlsa::for_certificate(3, 1, 1, &cert);
            if mine.as_ref().is_some_and(|m| tlsa.iter().any(|t| t == m)) {
                say(
                    "OK",
                    format!("TLSA {n}"),
                    "3 1 1 matches the certificate".into(),
                );
            } else if tlsa.iter().any(|t| t.usage == 2) {
                say(
                    "WARN",
                    format!("TLSA {n}"),
                    "DANE-TA records only: not compared with the certificate here".into(),
                );
            } else {
                say(
                    "ERROR",
                    format!("TLSA {n}"),
                    "no record matches the listener's certificate: DANE senders will not deliver"
                        .into(),
                );
            }
        }
    }
    out
}

/// `rmox dns check DOMAIN`: prints the findings; fails when one is an ERROR.
pub fn run(config: &Path, domain: &str, resolver: &Option<String>) -> Result<(), Fail> {
    let c = Config::load(config)?;
    let d = match resolver {
        Some(r) => {
            let list = vec![r.clone()];
            let r = crate::config::Resolver::parse(&list)
                .map_err(|e| Fail(format!("--resolver {e}")))?;
            Dns::from_config(&r, crate::config::TrustAd::default(), Path::new("."))?
        }
        None => Dns::from_config(
            &c.resolver,
            c.resolver_trust_ad,
            c.path.parent().unwrap_or(Path::new(".")),
        )?,
    };
    let findings = check(&c, domain, &d);
    let mut errors = 0;
    for f in &findings {
        if f.level == "ERROR" {
            errors += 1;
        }
        println!("{:<5} {}: {}", f.level, f.what, f.text);
    }
    if errors > 0 {
        return Err(Fail(format!(
            "{errors} problem(s) that break mail for {domain}"
        )));
    }
    Ok(())
}
