//! Incoming TLS reports (RFC 8460; mox's TestTLSReport, seed 000) through the `rmox serve`
//! binary on each runtime, DNS from a zone file. Python's email package builds the report
//! messages (the seed's JSON body, and a multipart/report with a gzip attachment), dkimpy
//! signs them for example.org, smtplib delivers them to the domain's `tls_reports` address
//! (mjl@mox.example) or the host's (`host_tls_reports`: mjl@mailhost.mox.example), as the
//! seed does.
//! Only the DKIM-signed reports about our domain or our host name are stored (the seed's
//! 0, 1, 2 records, plus the gzip one); an unsigned one, a broken one, one about someone
//! else's domain and one to another address are delivered as mail only. `rmox tlsrpt
//! list`, `list --json` and `show` read them back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use rmox_tests::dkimpy::{dkimpy, have_dkimpy, txt_line};
use rmox_tests::*;

const SMTP: u16 = 2025;

fn config(ip: Ipv4Addr) -> String {
    format!(
        r#"hostname = "mailhost.mox.example"
data_dir = "data"
resolver = ["zonefile:zone"]

[[listener]]
name = "test"
ip = "{ip}"
smtp = {{ port = {SMTP} }}

[domain."mox.example"]
tls_reports = "mjl@mox.example"

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}}, "other@mox.example" = {{ mailbox = "Other" }} }}

[host_tls_reports]
localpart = "mjl"
account = "mjl"
mailbox = "TLSRPT"

[incoming]
checks = true
"#
    )
}

/// The client is client.example (forward and reverse DNS agree); example.org allows it by
/// SPF, publishes DMARC p=reject and the DKIM key (selector testsel).
fn zone(dkim_record: &str) -> String {
    format!(
        "client.example. A 127.0.0.1\n\
         1.0.0.127.in-addr.arpa. PTR client.example.\n\
         example.org. A 127.0.0.1\n\
         example.org. TXT \"v=spf1 ip4:127.0.0.0/8 -all\"\n\
         _dmarc.example.org. TXT \"v=DMARC1;p=reject;rua=mailto:dmarcrpt@example.org\"\n\
         {}",
        txt_line("testsel._domainkey.example.org", dkim_record)
    )
}

/// The report of mox's TestTLSReport (policy domain xmox.nl).
const TLSRPT: &str = r#"{"organization-name":"Example.org","date-range":{"start-datetime":"2022-01-07T00:00:00Z","end-datetime":"2022-01-07T23:59:59Z"},"contact-info":"tlsrpt@example.org","report-id":"1","policies":[{"policy":{"policy-type":"no-policy-found","policy-domain":"xmox.nl"},"summary":{"total-successful-session-count":1,"total-failure-session-count":0}}]}"#;

/// Builds a report message: argv rcpt, subject, mode (`json`: the JSON as the whole body,
/// as the seed sends it; `gzip`: multipart/report with an application/tlsrpt+gzip
/// attachment), JSON on stdin; the message on stdout.
const PY_BUILD: &str = r#"
import gzip, sys
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
rcpt, subject, mode = sys.argv[1:4]
js = sys.stdin.buffer.read()
if mode == "json":
    m = EmailMessage()
    m.set_content(js, maintype="application", subtype="tlsrpt+json", cte="7bit")
else:
    m = MIMEMultipart("report", report_type="tlsrpt")
    m.attach(MIMEText("A TLS report.\n"))
    a = MIMEApplication(gzip.compress(js), "tlsrpt+gzip")
    a.add_header("Content-Disposition", "attachment", filename="example.org!mox.example!1641513600!1641599999!2.json.gz")
    m.attach(a)
m["From"] = "remote@example.org"
m["To"] = rcpt
m["Subject"] = subject
sys.stdout.buffer.write(m.as_bytes(policy=m.policy.clone(linesep="\r\n")))
"#;

/// Sends stdin with smtplib: argv host, port, rcpt.
const PY_SEND: &str = r#"
import smtplib, sys
host, port, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
msg = sys.stdin.buffer.read()
with smtplib.SMTP(host, port, local_hostname="client.example", timeout=30) as s:
    s.sendmail("remote@example.org", [rcpt], msg)
"#;

fn python(script: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn tlsrpt(srv: &Server, args: &[&str]) -> String {
    let cfg = srv.config_path();
    let mut all = vec!["tlsrpt"];
    all.extend_from_slice(args);
    all.extend(["--config", cfg.to_str().unwrap()]);
    let out = rmox(&all, None);
    assert!(
        out.status.success(),
        "rmox {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Regression: incoming TLS reports were delivered as mail only, never parsed, stored or
/// listed (issue 13). The seed's three reports give 0, 1 and 2 stored records.
fn tls_reports_stored_and_listed(rt: &str) {
    if !have_dkimpy() {
        return;
    }
    let dir = TempDir::new(&format!("tlsrpt-{rt}"));
    let key = dir.path().join("testsel.pem");
    let out = rmox(
        &[
            "dkim",
            "gened25519",
            "example.org",
            "testsel",
            key.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "gened25519: {out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let record = line
        .split_once('"')
        .and_then(|(_, r)| r.trim_end().strip_suffix('"'))
        .unwrap_or_else(|| panic!("no quoted record in {line:?}"))
        .to_string();
    let ip = unique_ip();
    std::fs::write(dir.path().join("rmox.toml"), config(ip)).unwrap();
    std::fs::write(dir.path().join("zone"), zone(&record)).unwrap();
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    let ips = ip.to_string();
    let port = SMTP.to_string();
    let send = |rcpt: &str, subject: &str, mode: &str, json: &str, sign: bool| {
        let mut msg = python(PY_BUILD, &[rcpt, subject, mode], json.as_bytes());
        if sign {
            let args = [
                "sign",
                "--domain",
                "example.org",
                "--selector",
                "testsel",
                "--key",
                key.to_str().unwrap(),
                "--algo",
                "ed25519",
            ];
            let (code, sig, err) = dkimpy(&args, &msg);
            assert_eq!(code, 0, "dkimpy sign: {err}");
            msg = [sig, msg].concat();
        }
        python(PY_SEND, &[&ips, &port, rcpt], &msg);
    };
    let to = "mjl@mox.example";
    let ours = TLSRPT.replace("xmox.nl", "mox.example");
    send(to, "report xmox.nl", "json", TLSRPT, true);
    send(to, "report mox.example", "json", &ours, true);
    let host = TLSRPT.replace("xmox.nl", "mailhost.mox.example");
    send(
        "mjl@mailhost.mox.example",
        "report host",
        "json",
        &host,
        true,
    );
    send(to, "report unsigned", "json", &ours, false);
    let broken = ours.replace("\"policies\"", "\"nopolicies\"");
    send(to, "report broken", "json", &broken, true);
    send(
        "other@mox.example",
        "report other address",
        "json",
        &ours,
        true,
    );
    let gz = ours.replace("\"report-id\":\"1\"", "\"report-id\":\"2\"");
    send(to, "report gzip", "gzip", &gz, true);
    // The running server answers the listing itself (it owns the database); the same
    // listing comes from the stopped server's data directory below.
    let out = rmox(
        &[
            "tlsrpt",
            "list",
            "--config",
            srv.config_path().to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(live.lines().count(), 3, "{live}");
    srv.stop_clean();

    // Every message was delivered.
    let mbox = srv.export_mbox("mjl");
    assert_eq!(mbox_messages(&mbox).len(), 7, "{mbox}");
    for s in [
        "report xmox.nl",
        "report unsigned",
        "report broken",
        "report other address",
        "report gzip",
    ] {
        assert_eq!(count_subject(&mbox, s), 1, "{s}: {mbox}");
    }

    let list = tlsrpt(&srv, &["list"]);
    assert_eq!(list, live, "the same listing live and stopped");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}\n{}", srv.stderr());
    assert!(
        lines[0].contains(" domain mailhost.mox.example (host) from example.org organization \"Example.org\" report-id \"1\" start 1641513600 end 1641599999 success 1 failure 0"),
        "{list}"
    );
    assert!(
        lines[1].contains(" domain mox.example from example.org ")
            && lines[1].contains("report-id \"1\""),
        "{list}"
    );
    assert!(
        lines[2].contains(" domain mox.example from example.org ")
            && lines[2].contains("report-id \"2\""),
        "{list}"
    );
    let json = tlsrpt(&srv, &["list", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&json).unwrap();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 3, "{json}");
    assert_eq!(all[2]["mail_from"], "remote@example.org", "{json}");
    let id = lines[2].split(' ').next().unwrap();
    let shown: serde_json::Value = serde_json::from_str(&tlsrpt(&srv, &["show", id])).unwrap();
    assert_eq!(shown["id"], id);
    assert_eq!(shown["policy_domain"], "mox.example");
    assert_eq!(
        shown["report"]["policies"][0]["policy"]["policy-type"],
        "no-policy-found"
    );
    let out = rmox(
        &[
            "tlsrpt",
            "show",
            "1-0-mox.example",
            "--config",
            srv.config_path().to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls report 1-0-mox.example not found"),
        "{err}"
    );
    let stderr = srv.stderr();
    assert!(
        stderr.contains("tls report not stored"),
        "refusals are logged: {stderr}"
    );
}

rmox_tests::on_every_runtime!(tls_reports_stored_and_listed,);
