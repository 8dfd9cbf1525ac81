//! `rmox sendmail`: the sendmail command-line interface that cron, PHP's mail(), git
//! send-email and mail(1) use. The message comes on standard input; the recipients are the
//! arguments, or (`-t`) the To, Cc and Bcc fields (Bcc removed). The message goes to the
//! running server over its admin socket ([`crate::ctl`]), which submits it as the
//! configured `[sendmail]` account with the submission's checks, limits, DKIM signing and
//! queue: the command exits 0 only once the message is durably queued. Invoked through a
//! link named `sendmail`, `rmox` behaves as `rmox sendmail`.
//!
//! Options: `-t`; `-i`/`-oi` (a line with a single dot does not end the message); `-f ADDR`
//! and `-r ADDR` (envelope sender, an address of the account); `-F NAME` (the name of a From
//! field rmox adds when the message has none); `--config FILE` (else `RMOX_CONFIG`, else
//! `/etc/rmox/rmox.toml`). Accepted and ignored, as other MTAs do: `-bm`, `-oXXX` (other
//! than `-oi`), `-em`, `-ee`, `-v`, `-U`, `-n`, `-m`, and `-N`, `-R`, `-V`, `-B`, `-O`,
//! `-X` with their argument. Other modes (`-bs`, `-bp`, `-bd`, ...) are refused.
//!
//! Exit status as sendmail's: 0 queued; 64 a usage error; 65 a message or address the
//! server refuses; 75 a temporary failure (the server not running, a 4xx), to try again.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit statuses (sysexits.h).
const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_TEMPFAIL: u8 = 75;

/// What the command line says.
#[derive(Debug, Default, PartialEq)]
struct Args {
    recipients: Vec<String>,
    from_headers: bool,
    ignore_dots: bool,
    sender: Option<String>,
    name: Option<String>,
    config: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut i = 0;
    let value = |i: &mut usize, flag: &str, rest: &str| -> Result<String, String> {
        if !rest.is_empty() {
            return Ok(rest.to_string());
        }
        *i += 1;
        args.get(*i)
            .cloned()
            .ok_or_else(|| format!("option {flag} needs a value"))
    };
    while let Some(arg) = args.get(i) {
        if arg == "--" {
            a.recipients.extend(args.iter().skip(i + 1).cloned());
            break;
        }
        if arg == "--config" {
            a.config = Some(PathBuf::from(value(&mut i, "--config", "")?));
        } else if let Some(f) = arg.strip_prefix("--config=") {
            a.config = Some(PathBuf::from(f));
        } else if let Some(opt) = arg.strip_prefix('-').filter(|o| !o.is_empty()) {
            let (flag, rest) = opt.split_at(1);
            match flag {
                "t" if rest.is_empty() => a.from_headers = true,
                "i" if rest.is_empty() => a.ignore_dots = true,
                "f" | "r" => a.sender = Some(value(&mut i, arg, rest)?),
                "F" => a.name = Some(value(&mut i, arg, rest)?),
                "o" if rest == "i" => a.ignore_dots = true,
                "o" => {}
                "b" if rest == "m" => {}
                "b" => return Err(format!("mode -b{rest} is not supported (only -bm)")),
                "e" | "v" | "U" | "n" | "m" => {}
                "N" | "R" | "V" | "B" | "O" | "X" => {
                    value(&mut i, arg, rest)?;
                }
                _ => return Err(format!("unknown option {arg}")),
            }
        } else {
            a.recipients.push(arg.clone());
        }
        i += 1;
    }
    Ok(a)
}

/// The message from `input`: CRLF line endings; without `ignore_dots`, a line with only a
/// dot ends it.
fn read_message(input: &[u8], ignore_dots: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    for line in input.split_inclusive(|b| *b == b'\n') {
        let bare = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if !ignore_dots && bare == b"." {
            break;
        }
        out.extend_from_slice(bare);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The addresses of an address-list field value: `a@b, "N" <c@d>` gives a@b and c@d.
fn addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
            }
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.iter()
        .filter_map(|p| {
            let p = p.trim();
            let a = match (p.rfind('<'), p.rfind('>')) {
                (Some(s), Some(e)) if s < e => &p[s + 1..e],
                _ => p,
            };
            let a = a.trim();
            a.contains('@').then(|| a.to_string())
        })
        .collect()
}

/// `-t`: the recipients of the To, Cc and Bcc fields, and the message without its Bcc
/// fields.
fn header_recipients(msg: &[u8]) -> (Vec<String>, Vec<u8>) {
    let body_at = rmox_core::message::body_offset(msg).unwrap_or(msg.len());
    let (header, body) = msg.split_at(body_at);
    let mut rcpts = Vec::new();
    for name in ["To", "Cc", "Bcc"] {
        for v in rmox_core::message::values(header, name) {
            rcpts.extend(addresses(&String::from_utf8_lossy(v)));
        }
    }
    // Without Bcc fields (with their continuation lines).
    let mut out = Vec::with_capacity(msg.len());
    let mut skipping = false;
    for line in header.split_inclusive(|b| *b == b'\n') {
        let cont = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if cont && skipping {
            continue;
        }
        skipping = !cont && line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(body);
    (rcpts, out)
}

/// Runs `rmox sendmail ARGS`; the exit status.
pub fn run(args: &[String]) -> ExitCode {
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let config = a
        .config
        .clone()
        .or_else(|| std::env::var_os("RMOX_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/rmox/rmox.toml"));
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("sendmail: reading the message: {e}");
        return ExitCode::from(EX_TEMPFAIL);
    }
    let mut message = read_message(&input, a.ignore_dots);
    let mut recipients = a.recipients.clone();
    if a.from_headers {
        let (more, without_bcc) = header_recipients(&message);
        recipients.extend(more);
        message = without_bcc;
    }
    if recipients.is_empty() {
        eprintln!("sendmail: no recipients (give them as arguments, or -t)");
        return ExitCode::from(EX_USAGE);
    }
    let c = match crate::config::Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    let req = crate::ctl::Request::Sendmail {
        mail_from: a.sender.clone(),
        from_name: a.name.clone(),
        recipients,
        message: rmox_core::codec::base64(&message),
    };
    match crate::ctl::request(&c.data_dir(), &req) {
        None => {
            eprintln!(
                "sendmail: rmox is not running for {} (message not sent; try again)",
                c.data_dir().display()
            );
            ExitCode::from(EX_TEMPFAIL)
        }
        Some(Ok(_)) => ExitCode::SUCCESS,
        Some(Err(crate::Fail(e))) => {
            eprintln!("sendmail: {e}");
            // A 4xx from the server, or no answer in time: try again later.
            if e.starts_with('4') || e.contains("admin socket") || e.contains("stopping") {
                ExitCode::from(EX_TEMPFAIL)
            } else {
                ExitCode::from(EX_DATAERR)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options() {
        let a = parse(&s(&[
            "-oi", "-f", "a@b", "-FJoe", "-t", "-odi", "-oem", "x@y",
        ]))
        .unwrap();
        assert_eq!(a.sender.as_deref(), Some("a@b"));
        assert_eq!(a.name.as_deref(), Some("Joe"));
        assert!(a.ignore_dots && a.from_headers);
        assert_eq!(a.recipients, ["x@y"]);
        let a = parse(&s(&["-i", "-fa@b", "--", "-odd@x"])).unwrap();
        assert_eq!(a.sender.as_deref(), Some("a@b"));
        assert_eq!(a.recipients, ["-odd@x"]);
        assert!(parse(&s(&["-bs"])).is_err());
        assert!(parse(&s(&["-f"])).is_err());
        assert!(parse(&s(&["-Z"])).is_err());
        let a = parse(&s(&["--config", "/x.toml", "-N", "never", "r@x"])).unwrap();
        assert_eq!(a.config, Some(PathBuf::from("/x.toml")));
        assert_eq!(a.recipients, ["r@x"]);
    }

    #[test]
    fn dots_line_endings_and_bcc() {
        assert_eq!(read_message(b"a\nb\n.\nc\n", false), b"a\r\nb\r\n");
        assert_eq!(read_message(b"a\r\n.\r\nc", true), b"a\r\n.\r\nc\r\n");
        let msg = read_message(
            b"To: A <a@x>, \"B, C\" <b@x>\nBcc: secret@x,\n  other@x\nCc: c@x\nSubject: s\n\nbody\n",
            true,
        );
        let (r, out) = header_recipients(&msg);
        assert_eq!(r, ["a@x", "b@x", "c@x", "secret@x", "other@x"]);
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("secret") && !text.contains("other@x"),
            "{text}"
        );
        assert!(
            text.contains("Cc: c@x\r\nSubject: s\r\n\r\nbody\r\n"),
            "{text}"
        );
    }
}
