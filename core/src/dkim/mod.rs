//! DKIM (RFC 6376) signing and verification, with Ed25519 (RFC 8463) and the RSA
//! algorithm updates of RFC 8301.
//!
//! * [`DkimVerify`] is a [`crate::dns::Check`]: create it with the whole message (CRLF line
//!   endings, as received), poll it for key lookups, answer them; the verdict has one
//!   [`DkimResult`] per signature (at most [`VerifyLimits::max_signatures`]), each with its
//!   own [`Status`] and an Authentication-Results fragment ([`DkimResult::auth_results`]).
//! * [`sign`] returns the DKIM-Signature header fields to prepend, one per [`SignConfig`].
//!
//! Crypto is `ed25519-dalek` for ed25519-sha256 and `ring` for RSA and the hashes (see
//! [`crypto`] for why not the `rsa` crate for signing): rsa-sha256 and ed25519-sha256 sign
//! and verify, rsa-sha1 verify only (refused by default, RFC 8301). RSA keys of 1024 to 8192 bits verify; RSA key generation is left to
//! the binary; Ed25519 keys come from a 32-byte seed the caller draws.
//!
//! Header fields are found with a small splitter ([`canon::split_message`]); no MIME
//! parse is needed.

pub mod canon;
pub mod crypto;
pub mod sig;
pub mod sign;
pub(crate) mod tags;
pub mod verify;

pub use canon::{to_crlf, Canon};
pub use crypto::{ed25519_pkcs8_from_seed, pem_encode, KeyError, SigningKey};
pub use sig::{
    Algorithm, Canonicalization, KeyRecord, KeyRecordError, KeyType, Signature, SignatureError,
};
pub use sign::{sign, sign_parts, SignConfig, SignError, DEFAULT_HEADERS, DEFAULT_OVERSIGN};
pub use tags::TagError;
pub use verify::{DkimResult, DkimVerify, Status, VerifyError, VerifyLimits};

/// Where the shared test material lives: `shared/vectors` next to the repository (CI),
/// or `/work/shared/vectors` (worktrees).
#[cfg(test)]
pub(crate) fn test_vectors_dir() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        manifest.join("../../shared/vectors"),
        manifest.join("../shared/vectors"),
        std::path::PathBuf::from("/work/shared/vectors"),
    ]
    .into_iter()
    .find(|p| p.is_dir())
    .expect("shared/vectors not found next to the repository")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{run_sync, Lookup, LookupResult, Record, RecordType};
    use crate::time::UnixTime;
    use base64::Engine as _;
    use std::collections::HashMap;

    const RFC8463_PUB: &str = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(test_vectors_dir().join("dkim-dkimpy/data").join(name)).unwrap()
    }

    fn txt(name: &str) -> String {
        String::from_utf8(read(name)).unwrap().trim().to_string()
    }

    fn zone(entries: &[(&str, &str)]) -> HashMap<String, LookupResult> {
        let mut m: HashMap<String, LookupResult> = HashMap::new();
        for (name, value) in entries {
            // Split long values into 255-byte strings, as a DNS server would.
            let strings = value.as_bytes().chunks(255).map(<[u8]>::to_vec).collect();
            m.insert(
                name.to_string(),
                LookupResult::Records {
                    records: vec![Record::Txt(strings)],
                    authentic: false,
                },
            );
        }
        m
    }

    fn verify_with(
        msg: &[u8],
        z: &HashMap<String, LookupResult>,
        now: i64,
        limits: &VerifyLimits,
    ) -> Vec<DkimResult> {
        let mut v = DkimVerify::new(msg, UnixTime(now), limits);
        run_sync(
            &mut v,
            |q: &Lookup| {
                assert_eq!(q.rtype, RecordType::Txt);
                z.get(&q.name).cloned().unwrap_or(LookupResult::NxDomain)
            },
            50,
        )
        .unwrap()
    }

    fn statuses(r: &[DkimResult]) -> Vec<Status> {
        r.iter().map(|x| x.status).collect()
    }

    const NOW: i64 = 1_700_000_000;

    /// The dkimpy data files: RFC 6376 Appendix A message signed with the RFC 8463 key
    /// (ed25519) and the dkimpy RSA test key, the exim ed25519 message, and broken inputs.
    #[test]
    fn dkimpy_vectors() {
        let z = zone(&[
            ("brisbane._domainkey.football.example.com", RFC8463_PUB),
            ("test._domainkey.football.example.com", &txt("test.txt")),
            ("sed._domainkey.test.ex", &txt("eximtest.dns")),
            (
                "test._domainkey.legitimate.com(.attacker.com",
                &txt("test.txt"),
            ),
        ]);
        let l = VerifyLimits::default();
        let table: &[(&str, &[Status])] = &[
            ("rfc6376.signed.msg", &[Status::Pass, Status::Pass]),
            ("rfc6376.signed.rsa.msg", &[Status::Pass]),
            // Same b= as the one above but t= replaced by x=: the header hash differs.
            ("rfc6376.signed.no_t.msg", &[Status::Fail]),
            ("ed25519test2.msg", &[Status::Pass]),
            ("test.message.baddomain", &[Status::Permerror]),
            ("rfc6376.msg", &[]),
            ("test.message", &[]),
        ];
        for (file, want) in table {
            let msg = to_crlf(&read(file));
            let r = verify_with(&msg, &z, NOW, &l);
            assert_eq!(statuses(&r), want.to_vec(), "{file}: {r:?}");
        }
        let r = verify_with(&to_crlf(&read("rfc6376.signed.msg")), &z, NOW, &l);
        assert_eq!(r[0].key_bits, Some(256));
        assert_eq!(r[1].key_bits, Some(1024));
        assert_eq!(
            r[0].auth_results(),
            "dkim=pass header.d=football.example.com header.i=@football.example.com header.s=brisbane header.a=ed25519-sha256 header.b=\"9/dsDChY\""
        );
        let r = verify_with(&to_crlf(&read("rfc6376.signed.no_t.msg")), &z, NOW, &l);
        assert_eq!(r[0].error, Some(VerifyError::SignatureMismatch));
        let r = verify_with(&to_crlf(&read("test.message.baddomain")), &z, NOW, &l);
        assert!(matches!(
            r[0].error,
            Some(VerifyError::Signature(SignatureError::Domain(_)))
        ));

        // A tampered body fails on the body hash; a tampered signed header on the signature.
        let msg = String::from_utf8(to_crlf(&read("rfc6376.signed.rsa.msg"))).unwrap();
        let r = verify_with(msg.replace("We lost", "We won").as_bytes(), &z, NOW, &l);
        assert_eq!(r[0].error, Some(VerifyError::BodyHashMismatch));
        let r = verify_with(msg.replace("dinner", "lunch").as_bytes(), &z, NOW, &l);
        assert_eq!(r[0].error, Some(VerifyError::SignatureMismatch));
        // Adding a From anywhere breaks the oversigned From.
        let r = verify_with(
            format!("From: x@y.example\r\n{msg}").as_bytes(),
            &z,
            NOW,
            &l,
        );
        assert_eq!(r[0].status, Status::Fail);
        let extra = msg.replace("To: Suzie", "From: evil@example.com\r\nTo: Suzie");
        assert_eq!(
            verify_with(extra.as_bytes(), &z, NOW, &l)[0].status,
            Status::Fail
        );
    }

    /// Signatures whose parameters are fine but whose key record or DNS answer is not.
    #[test]
    fn key_record_outcomes() {
        let msg = to_crlf(&read("rfc6376.signed.rsa.msg"));
        let name = "test._domainkey.football.example.com";
        let l = VerifyLimits::default();
        let one = |rec: &str| verify_with(&msg, &zone(&[(name, rec)]), NOW, &l).remove(0);
        let table: Vec<(String, Status, Option<VerifyError>)> = vec![
            (txt("test.txt"), Status::Pass, None),
            (txt("test2.txt"), Status::Pass, None),
            (
                txt("badk.txt"),
                Status::Permerror,
                Some(VerifyError::KeyRecord(KeyRecordError::KeyType(
                    "ed25519-sha256".into(),
                ))),
            ),
            (
                txt("badversion.txt"),
                Status::Permerror,
                Some(VerifyError::KeyRecord(KeyRecordError::Version)),
            ),
            (
                txt("test_bad.txt"),
                Status::Permerror,
                Some(VerifyError::BadKey),
            ),
            (
                txt("test_tlsrpt.txt"),
                Status::Permerror,
                Some(VerifyError::NotForEmail),
            ),
            (
                txt("1024_testkey_wo_markers.pub.txt"),
                Status::Fail,
                Some(VerifyError::SignatureMismatch),
            ),
            (
                "v=DKIM1; p=".into(),
                Status::Permerror,
                Some(VerifyError::KeyRevoked),
            ),
            (
                format!("{}; h=sha1", txt("test.txt")),
                Status::Permerror,
                Some(VerifyError::HashNotAllowed),
            ),
            (
                RFC8463_PUB.into(),
                Status::Permerror,
                Some(VerifyError::BadKey),
            ),
            (
                format!("{}; t=y", txt("1024_testkey_wo_markers.pub.txt")),
                Status::None,
                Some(VerifyError::SignatureMismatch),
            ),
            (format!("{}; t=s", txt("test.txt")), Status::Pass, None),
        ];
        for (rec, status, err) in table {
            let r = one(&rec);
            assert_eq!((r.status, r.error), (status, err), "{rec}");
        }
        // The raw PKCS#1 form of p= (which dkimpy accepts) works too.
        let pkcs1 = verify_with(
            &to_crlf(&read("rfc6376.signed.rsa.msg")),
            &zone(&[(name, &txt("test.txt"))]),
            NOW,
            &l,
        );
        assert_eq!(pkcs1[0].status, Status::Pass);
        let z = |r: LookupResult| {
            let mut m = HashMap::new();
            m.insert(name.to_string(), r);
            verify_with(&msg, &m, NOW, &l).remove(0)
        };
        assert_eq!(z(LookupResult::NxDomain).error, Some(VerifyError::NoKey));
        assert_eq!(z(LookupResult::NoData).status, Status::Permerror);
        assert_eq!(
            z(LookupResult::TempFail("timeout".into())).status,
            Status::Temperror
        );
        let multi = LookupResult::Records {
            records: vec![
                Record::Txt(vec![b"junk".to_vec()]),
                Record::Txt(vec![txt("test.txt").into_bytes()]),
            ],
            authentic: true,
        };
        assert_eq!(z(multi).status, Status::Pass);
    }

    fn ed_key() -> SigningKey {
        let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(txt("ed25519test.key"))
            .unwrap()
            .try_into()
            .unwrap();
        SigningKey::ed25519_from_seed(&seed).unwrap()
    }

    fn rsa_key() -> SigningKey {
        SigningKey::from_pem(&txt("2048_testkey.key")).unwrap()
    }

    /// Sign then verify for both key types and all four canonicalisation pairs.
    #[test]
    fn sign_verify_round_trip() {
        let ed = ed_key();
        assert_eq!(
            ed.dns_record(),
            format!("v=DKIM1; {}", txt("ed25519test.dns"))
        );
        let rsa = rsa_key();
        let rng = ring::rand::SystemRandom::new();
        let msg = to_crlf(&read("test.message"));
        let z = zone(&[
            ("ed._domainkey.example.com", &ed.dns_record()),
            ("rsa._domainkey.example.com", &rsa.dns_record()),
        ]);
        for hc in [Canon::Simple, Canon::Relaxed] {
            for bc in [Canon::Simple, Canon::Relaxed] {
                let mut cfgs = vec![
                    SignConfig::new("example.com", "ed", ed.clone()),
                    SignConfig::new("Example.COM", "rsa", rsa.clone()),
                ];
                for c in &mut cfgs {
                    c.canonicalization = Canonicalization {
                        header: hc,
                        body: bc,
                    };
                    c.expiry = Some(std::time::Duration::from_secs(3600));
                }
                let hdr = sign(&msg, &cfgs, UnixTime(NOW), &rng).unwrap();
                assert!(hdr.lines().all(|l| l.len() <= 80), "{hdr}");
                let signed = [hdr.as_bytes(), &msg].concat();
                let r = verify_with(&signed, &z, NOW + 10, &VerifyLimits::default());
                assert_eq!(
                    statuses(&r),
                    vec![Status::Pass, Status::Pass],
                    "{hc:?}/{bc:?}: {hdr}"
                );
                // Expired an hour later.
                let r = verify_with(&signed, &z, NOW + 3601, &VerifyLimits::default());
                assert_eq!(r[0].error, Some(VerifyError::Expired));
                // Adding a second Subject breaks the oversigned Subject.
                let s = String::from_utf8(signed.clone())
                    .unwrap()
                    .replace("Subject: Testing", "Subject: Testing\r\nSubject: Buy now");
                let r = verify_with(s.as_bytes(), &z, NOW, &VerifyLimits::default());
                assert_eq!(statuses(&r), vec![Status::Fail, Status::Fail]);
                // Relaxed header canonicalisation survives refolding and case changes.
                let s = String::from_utf8(signed.clone())
                    .unwrap()
                    .replace("Subject: Testing", "subject:   Testing ");
                let r = verify_with(s.as_bytes(), &z, NOW, &VerifyLimits::default());
                let want = if hc == Canon::Relaxed {
                    Status::Pass
                } else {
                    Status::Fail
                };
                assert_eq!(statuses(&r), vec![want, want]);
            }
        }
        // ed25519 is deterministic: a fixed input gives a fixed header.
        let a = sign(
            &msg,
            &[SignConfig::new("example.com", "ed", ed.clone())],
            UnixTime(NOW),
            &rng,
        )
        .unwrap();
        let b = sign(
            &msg,
            &[SignConfig::new("example.com", "ed", ed)],
            UnixTime(NOW),
            &rng,
        )
        .unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; d=example.com; s=ed; c=relaxed/relaxed;\r\n\tt=1700000000;"), "{a}");
        let value = a.split_once(':').unwrap().1;
        let parsed = Signature::parse(value.trim_end().as_bytes()).unwrap();
        assert_eq!(
            parsed.signed_headers.join(":"),
            "From:From:To:To:Cc:Reply-To:Subject:Subject:Date:Date:Message-Id"
        );
    }

    #[test]
    fn sign_errors() {
        let rng = ring::rand::SystemRandom::new();
        let nofrom = to_crlf(&read("test_nofrom.message"));
        let cfg = SignConfig::new("example.com", "ed", ed_key());
        assert_eq!(
            sign(&nofrom, std::slice::from_ref(&cfg), UnixTime(NOW), &rng).unwrap_err(),
            SignError::NoFrom
        );
        let mut bad = cfg.clone();
        bad.domain = "exa mple.com".into();
        let msg = to_crlf(&read("test.message"));
        assert!(matches!(
            sign(&msg, &[bad], UnixTime(NOW), &rng).unwrap_err(),
            SignError::BadName(_)
        ));
        assert!(matches!(
            sign(b" x\r\n", &[cfg], UnixTime(NOW), &rng).unwrap_err(),
            SignError::Header(_)
        ));
    }

    #[test]
    fn limits_and_policy() {
        let rng = ring::rand::SystemRandom::new();
        let ed = ed_key();
        let msg = to_crlf(&read("test.message"));
        let z = zone(&[("ed._domainkey.example.com", &ed.dns_record())]);
        let cfg = SignConfig::new("example.com", "ed", ed.clone());
        let one = sign(&msg, std::slice::from_ref(&cfg), UnixTime(NOW), &rng).unwrap();
        let seven = [one.repeat(7).as_bytes(), &msg].concat();
        let r = verify_with(&seven, &z, NOW, &VerifyLimits::default());
        assert_eq!(r.len(), 5);
        let r = verify_with(
            &seven,
            &z,
            NOW,
            &VerifyLimits {
                max_signatures: 2,
                ..Default::default()
            },
        );
        assert_eq!(r.len(), 2);

        // Subject not signed: policy by default, pass when allowed.
        let mut nosubj = cfg.clone();
        nosubj.headers = vec!["From".into()];
        nosubj.oversign = vec![];
        let signed = [
            sign(&msg, &[nosubj], UnixTime(NOW), &rng)
                .unwrap()
                .as_bytes(),
            &msg,
        ]
        .concat();
        let r = verify_with(&signed, &z, NOW, &VerifyLimits::default());
        assert_eq!(
            (r[0].status, r[0].error.clone()),
            (Status::Policy, Some(VerifyError::SubjectNotSigned))
        );
        let r = verify_with(
            &signed,
            &z,
            NOW,
            &VerifyLimits {
                require_subject: false,
                ..Default::default()
            },
        );
        assert_eq!(r[0].status, Status::Pass);

        // A public suffix as signing domain.
        let mut tld = cfg.clone();
        tld.domain = "com".into();
        let signed = [
            sign(&msg, &[tld], UnixTime(NOW), &rng).unwrap().as_bytes(),
            &msg,
        ]
        .concat();
        let r = verify_with(&signed, &z, NOW, &VerifyLimits::default());
        assert_eq!(r[0].error, Some(VerifyError::PublicSuffix));

        // Broken message header with a signature: one permerror.
        let r = verify_with(
            b"DKIM-Signature: v=1\r\nno colon here\r\n\r\nbody",
            &z,
            NOW,
            &VerifyLimits::default(),
        );
        assert_eq!(statuses(&r), vec![Status::Permerror]);
    }

    const SHA1_SIG: &str = "kP6vmcKaT1I118G+SAMVoQ8tOK7+2bFIoTAVEPQBN7BXUnUYWzux/E3w1ztt1J1kIneID6kpjV+btbEW8BXPJHflLTv48zttGh55IJH56KpC9oYxhPtknzYiu1sucD4K2TC2MIZCKQ7dU5HuejO11KR+tK2Lm00bFQPlNaHd2e7JLf00Y/5bK3mvaQqTxsgUA9MZxOLS5PGiRBlV7UEdvUQ38vrezHfHU10bSrULktw79mBc31zWKN8mpY0rcZ8ct1AmVfzL68Luj9UifLACN8ayU6s8eTvBQ8ZJ2aF2D89Six49M9ChZxx4GyRGXoBbs3VbJpYqxTdbwUxi6XjCgw==";

    /// l= and rsa-sha1, hand-built: sign the canonical data ourselves with ring.
    #[test]
    fn length_and_sha1() {
        use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
        let rng = ring::rand::SystemRandom::new();
        let (_, der) = crypto::pem_decode(&txt("2048_testkey.key")).unwrap();
        let kp = RsaKeyPair::from_der(&der).unwrap();
        let body = "hello\r\nworld\r\n";
        let bh = |data: &[u8], sha1: bool| {
            let alg = if sha1 {
                &ring::digest::SHA1_FOR_LEGACY_USE_ONLY
            } else {
                &ring::digest::SHA256
            };
            base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(alg, data))
        };
        let build = |extra: &str, a: &str, bhv: &str, body: &str| -> Vec<u8> {
            let hdr = format!("DKIM-Signature: v=1; a={a}; c=simple/simple; d=example.com; s=test; h=from:subject;{extra} bh={bhv}; b=");
            let mut data = b"From: a@example.com\r\nSubject: hi\r\n".to_vec();
            data.extend_from_slice(hdr.as_bytes());
            let b = if a == "rsa-sha1" {
                // ring cannot sign with SHA-1: made once with `openssl dgst -sha1 -sign 2048_testkey.key`.
                SHA1_SIG.to_string()
            } else {
                let mut sig = vec![0u8; kp.public().modulus_len()];
                kp.sign(&RSA_PKCS1_SHA256, &rng, &data, &mut sig).unwrap();
                base64::engine::general_purpose::STANDARD.encode(sig)
            };
            format!("{hdr}{b}\r\nFrom: a@example.com\r\nSubject: hi\r\n\r\n{body}").into_bytes()
        };
        let z = zone(&[(
            "test._domainkey.example.com",
            &txt("2048_testkey_wo_markers.pub.txt"),
        )]);
        let l = VerifyLimits::default();
        let allow = VerifyLimits {
            accept_length: true,
            accept_sha1: true,
            ..Default::default()
        };
        // l=5 covers "hello"; appended text does not matter.
        let m = build(
            " l=5;",
            "rsa-sha256",
            &bh(b"hello", false),
            "hello\r\nworld\r\nappended\r\n",
        );
        assert_eq!(verify_with(&m, &z, NOW, &l)[0].status, Status::Policy);
        assert_eq!(verify_with(&m, &z, NOW, &allow)[0].status, Status::Pass);
        let m = build(" l=500;", "rsa-sha256", &bh(b"hello", false), body);
        assert_eq!(
            verify_with(&m, &z, NOW, &allow)[0].error,
            Some(VerifyError::LengthBeyondBody)
        );
        let m = build("", "rsa-sha1", &bh(body.as_bytes(), true), body);
        assert_eq!(
            verify_with(&m, &z, NOW, &l)[0].error,
            Some(VerifyError::Sha1Refused)
        );
        assert_eq!(verify_with(&m, &z, NOW, &allow)[0].status, Status::Pass);
    }

    /// Real signatures in dkimpy's data whose keys are gone: they must at least parse.
    #[test]
    fn parse_real_signatures() {
        for (file, d, nh) in [
            ("test2.message", "gmail.com", 9),
            ("message.mbox", "kitterman.com", 0),
        ] {
            let msg = to_crlf(&read(file));
            let split = canon::split_message(&msg).unwrap();
            let f = split
                .fields
                .iter()
                .find(|f| msg[f.name.clone()].eq_ignore_ascii_case(b"dkim-signature"))
                .unwrap();
            let s = Signature::parse(&msg[f.value.clone()]).unwrap();
            assert_eq!(s.domain, d);
            if nh > 0 {
                assert_eq!(s.signed_headers.len(), nh);
            }
        }
    }
}
