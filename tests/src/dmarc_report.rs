//! Reading the DMARC aggregate reports rmox sends: the `.xml.gz` attachment of a report
//! message, and Debian's `dmarc-cat` (a report parser we did not write) run on it.

use std::path::Path;

/// Decodes base64, ignoring whitespace; `None` on another character.
pub fn unbase64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\r' | b'\n' | b' ' | b'\t' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The base64 `.xml.gz` attachment of a report message as rmox composes it: (file name,
/// bytes).
pub fn xml_gz_attachment(msg: &str) -> Option<(String, Vec<u8>)> {
    let (_, rest) = msg.split_once("Content-Disposition: attachment; filename=\"")?;
    let (name, rest) = rest.split_once('"')?;
    let (_, body) = rest.split_once("\r\n\r\n")?;
    let body = body.split("\r\n--").next()?;
    Some((name.to_string(), unbase64(body)?))
}

/// `dmarc-cat -N FILE` (no reverse DNS): `Some((success, output))`, or `None` with a
/// printed reason when dmarc-cat is not installed outside CI (panics in CI).
pub fn dmarc_cat(file: &Path) -> Option<(bool, String)> {
    match std::process::Command::new("dmarc-cat")
        .arg("-N")
        .arg(file)
        .output()
    {
        Ok(o) => Some((
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "dmarc-cat missing in CI (.ci/run installs it): {e}"
            );
            eprintln!("SKIP dmarc-cat check: dmarc-cat not runnable ({e}); apt install dmarc-cat");
            None
        }
    }
}

/// Whether dmarc-cat's table has a row for `ip` with `count`.
pub fn dmarc_cat_has_row(out: &str, ip: &str, count: u64) -> bool {
    let count = count.to_string();
    out.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.first() == Some(&ip) && w.get(1) == Some(&count.as_str())
    })
}
