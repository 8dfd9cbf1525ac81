//! The validity period of an X.509 certificate (RFC 5280 4.1.2.5), read from its DER with
//! a small DER walker: what renewal needs, nothing more. Certificates come from files and
//! from the CA: every malformed input is `None`, never a panic.

use crate::time::UnixTime;

/// One DER element: (tag, contents, rest after it).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// A UTCTime (tag 0x17, `YYMMDDHHMMSSZ`) or GeneralizedTime (0x18, `YYYYMMDDHHMMSSZ`).
fn time(tag: u8, v: &[u8]) -> Option<UnixTime> {
    let s = std::str::from_utf8(v).ok()?;
    let s = s.strip_suffix('Z')?;
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, s.len()) {
        (0x17, 12) => {
            let yy: i64 = s[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
        }
        (0x18, 14) => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    let n = |i: usize| rest[i..i + 2].parse::<u32>().ok();
    UnixTime::from_civil(year, n(0)?, n(2)?, n(4)?, n(6)?, n(8)?)
}

/// `(notBefore, notAfter)` of a DER certificate; `None` when it does not parse.
pub fn validity(cert_der: &[u8]) -> Option<(UnixTime, UnixTime)> {
    let (0x30, cert, _) = element(cert_der)? else {
        return None;
    };
    let (0x30, tbs, _) = element(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature, issuer, then validity.
    let (tag, _, r) = element(rest)?;
    rest = if tag == 0xa0 { element(r)?.2 } else { r };
    rest = element(rest)?.2; // signature algorithm
    rest = element(rest)?.2; // issuer
    let (0x30, validity, _) = element(rest)? else {
        return None;
    };
    let (t1, v1, r) = element(validity)?;
    let (t2, v2, _) = element(r)?;
    Some((time(t1, v1)?, time(t2, v2)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The validity of rcgen certificates, with UTCTime (before 2050) and GeneralizedTime
    /// (from 2050) dates; junk and truncations are `None`.
    #[test]
    fn validity_of_certificates() {
        for (from, to) in [
            ((2024, 1, 2), (2024, 4, 1)),
            ((1999, 12, 31), (2049, 12, 31)),
            ((2030, 6, 15), (2051, 1, 1)),
        ] {
            let mut p = rcgen::CertificateParams::new(vec!["mail.example.org".into()]).unwrap();
            p.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
            p.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
            let key = rcgen::KeyPair::generate().unwrap();
            let der = p.self_signed(&key).unwrap().der().to_vec();
            let want = (
                UnixTime::from_civil(from.0.into(), from.1.into(), from.2.into(), 0, 0, 0).unwrap(),
                UnixTime::from_civil(to.0.into(), to.1.into(), to.2.into(), 0, 0, 0).unwrap(),
            );
            assert_eq!(validity(&der), Some(want), "{from:?} {to:?}");
            for cut in [0, 1, 10, der.len() / 3, der.len() / 2] {
                assert_eq!(validity(&der[..cut]), None, "cut at {cut}");
            }
        }
        assert_eq!(validity(b""), None);
        assert_eq!(validity(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(validity(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
    }

    /// Both time forms parse; other lengths, a missing Z and non-digits do not.
    #[test]
    fn time_forms() {
        assert_eq!(
            time(0x17, b"240102030405Z"),
            UnixTime::from_civil(2024, 1, 2, 3, 4, 5)
        );
        assert_eq!(
            time(0x17, b"990102030405Z"),
            UnixTime::from_civil(1999, 1, 2, 3, 4, 5)
        );
        assert_eq!(
            time(0x18, b"20510102030405Z"),
            UnixTime::from_civil(2051, 1, 2, 3, 4, 5)
        );
        for (t, v) in [
            (0x17, &b"240102030405"[..]),
            (0x17, b"2401020304Z"),
            (0x18, b"240102030405Z"),
            (0x17, b"24010203040aZ"),
            (0x17, b"241302030405Z"),
            (0x04, b"240102030405Z"),
        ] {
            assert_eq!(time(t, v), None, "{v:?}");
        }
    }
}
