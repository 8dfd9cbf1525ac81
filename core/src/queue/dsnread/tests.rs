use super::*;
use crate::queue::dsn::{compose_dsn, Action, DsnInput, DsnKind, DsnRecipient};
use crate::smtp::{Reply, Ret};
use crate::UnixTime;
use proptest::prelude::*;

const ORIGINAL: &[u8] = b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hello\r\nMessage-ID: <m1@example.org>\r\n\r\nHi Bob,\r\nthe body.\r\n";

fn recipient(addr: &str) -> DsnRecipient {
    DsnRecipient {
        final_recipient: addr.into(),
        original_recipient: Some(("rfc822".into(), addr.to_uppercase())),
        action: Action::Failed,
        status: Enhanced::new(5, 1, 1),
        remote_mta: Some("mx.example.net".into()),
        diagnostic: Some(Reply::new(
            550,
            Enhanced::parse("5.1.1"),
            "The email account that you tried to reach does not exist.\nPlease try double-checking the recipient's email address for typos or\nunnecessary spaces. https://support.example.net/mail/?p=NoSuchUser",
        )),
        detail: None,
        last_attempt: Some(UnixTime(1_795_315_268)),
        will_retry_until: None,
    }
}

fn input(kind: DsnKind, recipients: Vec<DsnRecipient>) -> DsnInput<'static> {
    DsnInput {
        reporting_mta: "mail.example.org".into(),
        from: "postmaster@example.org".into(),
        to: "alice@example.org".into(),
        kind,
        recipients,
        original: ORIGINAL,
        ret: Ret::Hdrs,
        envid: Some("env-123".into()),
        arrival_date: Some(UnixTime(1_795_300_000)),
        message_id: "dsn-42".into(),
    }
}

/// What the writer makes of a text: control characters become spaces, words are joined by
/// one space (the folding in `dsn::field`).
fn words(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `Diagnostic-Code` value the writer makes of a reply: `smtp;` and every wire line.
fn diagnostic_of(r: &Reply) -> String {
    let mut w = Vec::new();
    r.render(&mut w);
    words(&format!("smtp; {}", String::from_utf8_lossy(&w)))
}

/// What reading a DSN composed from `r` gives back for it.
fn expected(r: &DsnRecipient) -> DsnRecipientStatus {
    DsnRecipientStatus {
        final_recipient: r.final_recipient.clone(),
        original_recipient: r.original_recipient.as_ref().map(|(_, a)| a.clone()),
        action: r.action.into(),
        status: r.status.to_string(),
        remote_mta: r.remote_mta.clone(),
        diagnostic_code: r.diagnostic.as_ref().map(diagnostic_of),
    }
}

fn read_vector(name: &str) -> Vec<u8> {
    let path = crate::dkim::test_vectors_dir()
        .join("python-email-testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn malformed(msg: &[u8]) -> String {
    match read_dsn(msg) {
        Err(DsnReadError::Malformed(m)) => m,
        other => panic!("want Malformed, got {other:?}"),
    }
}

/// A `multipart/report` around `status` as a `content_type` part (extra part header lines
/// in `part_header`).
fn report(content_type: &str, part_header: &str, status: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "From: <mailer-daemon@example.net>\r\nTo: <bounce@example.org>\r\nSubject: failure\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"BB\"\r\n\r\n--BB\r\nContent-Type: text/plain\r\n\r\nIt failed.\r\n\r\n--BB\r\nContent-Type: {content_type}\r\n{part_header}\r\n"
    )
    .into_bytes();
    m.extend_from_slice(status);
    m.extend_from_slice(
        b"\r\n--BB\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: hello\r\n\r\n--BB--\r\n",
    );
    m
}

fn delivery_status(status: &[u8]) -> Vec<u8> {
    report("message/delivery-status", "", status)
}

fn to_crlf(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + s.len() / 16);
    for &b in s {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

// Round trips through compose_dsn.

#[test]
fn round_trip_failure_several_recipients() {
    let mut second = recipient("carol@example.com");
    second.original_recipient = None;
    second.remote_mta = None;
    second.status = Enhanced::new(5, 4, 4);
    second.diagnostic = None;
    second.detail = Some("no MX or A record (NXDOMAIN)".into());
    let mut third = recipient("dave@example.com");
    third.diagnostic = Some(Reply::new(552, None, "mailbox full"));
    third.status = Enhanced::new(5, 2, 2);
    let rcpts = vec![recipient("bob@example.net"), second, third];
    let msg = compose_dsn(
        &input(DsnKind::Failure, rcpts.clone()),
        UnixTime(1_795_315_300),
    );
    let r = read_dsn(&msg).unwrap();
    assert!(!r.utf8);
    assert_eq!(r.reporting_mta.as_deref(), Some("mail.example.org"));
    assert_eq!(r.original_envelope_id.as_deref(), Some("env-123"));
    let want: Vec<_> = rcpts.iter().map(expected).collect();
    assert_eq!(r.recipients, want);
    assert_eq!(
        r.recipients[0].original_recipient.as_deref(),
        Some("BOB@EXAMPLE.NET")
    );
    assert_eq!(
        r.recipients[0].diagnostic_code.as_deref(),
        Some("smtp; 550-5.1.1 The email account that you tried to reach does not exist. 550-5.1.1 Please try double-checking the recipient's email address for typos or 550 5.1.1 unnecessary spaces. https://support.example.net/mail/?p=NoSuchUser")
    );
    assert_eq!(r.recipients[0].action, DsnAction::Failed);
    assert_eq!(r.recipients[0].codes(), (550, Some("5.1.1".into())));
    assert_eq!(r.recipients[1].status, "5.4.4");
    assert_eq!(r.recipients[1].diagnostic_code, None);
    assert_eq!(r.recipients[1].codes(), (500, Some("5.4.4".into())));
    assert_eq!(
        r.recipients[2].diagnostic_code.as_deref(),
        Some("smtp; 552 mailbox full")
    );
    assert_eq!(r.recipients[2].codes(), (552, Some("5.2.2".into())));
}

#[test]
fn round_trip_delay_and_full_message() {
    let mut d = recipient("bob@example.net");
    d.action = Action::Delayed;
    d.status = Enhanced::new(4, 4, 1);
    d.diagnostic = None;
    d.detail = Some("connection refused (port 25)".into());
    d.will_retry_until = Some(UnixTime(1_795_400_000));
    let mut inp = input(DsnKind::Delay, vec![d.clone()]);
    inp.envid = None;
    inp.ret = Ret::Full;
    let r = read_dsn(&compose_dsn(&inp, UnixTime(1))).unwrap();
    assert_eq!(r.original_envelope_id, None);
    assert_eq!(r.recipients, vec![expected(&d)]);
    assert_eq!(r.recipients[0].action, DsnAction::Delayed);
    assert_eq!(r.recipients[0].status, "4.4.1");
    assert_eq!(r.recipients[0].codes(), (400, Some("4.4.1".into())));

    let mut t = recipient("bob@example.net");
    t.status = Enhanced::new(4, 2, 2);
    t.action = Action::Delayed;
    t.diagnostic = Some(Reply::new(452, Some(Enhanced::new(4, 2, 2)), "full"));
    let r = read_dsn(&compose_dsn(&input(DsnKind::Delay, vec![t]), UnixTime(1))).unwrap();
    assert_eq!(r.recipients[0].codes(), (452, Some("4.2.2".into())));
}

#[test]
fn round_trip_success_actions() {
    let rcpts: Vec<_> = [Action::Delivered, Action::Relayed, Action::Expanded]
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let mut r = recipient(&format!("r{i}@example.net"));
            r.action = a;
            r.status = Enhanced::new(2, 0, 0);
            r.diagnostic = Some(Reply::new(
                250,
                Some(Enhanced::new(2, 0, 0)),
                "OK queued as 42",
            ));
            r
        })
        .collect();
    let r = read_dsn(&compose_dsn(
        &input(DsnKind::Success, rcpts.clone()),
        UnixTime(1),
    ))
    .unwrap();
    let want: Vec<_> = rcpts.iter().map(expected).collect();
    assert_eq!(r.recipients, want);
    let actions: Vec<_> = r.recipients.iter().map(|r| r.action.clone()).collect();
    assert_eq!(
        actions,
        [
            DsnAction::Delivered,
            DsnAction::Relayed,
            DsnAction::Expanded
        ]
    );
    assert_eq!(r.recipients[0].codes(), (250, Some("2.0.0".into())));
}

#[test]
fn round_trip_utf8() {
    let mut b = recipient("björn@bücher.example");
    b.original_recipient = Some(("utf-8".into(), "Björn@bücher.example".into()));
    b.diagnostic = Some(Reply::new(
        550,
        Enhanced::parse("5.1.1"),
        "Postfach „björn“ unbekannt",
    ));
    let msg = compose_dsn(&input(DsnKind::Failure, vec![b.clone()]), UnixTime(1));
    assert!(String::from_utf8_lossy(&msg).contains("message/global-delivery-status"));
    let r = read_dsn(&msg).unwrap();
    assert!(r.utf8);
    assert_eq!(r.recipients, vec![expected(&b)]);
    assert_eq!(r.recipients[0].final_recipient, "björn@bücher.example");
    assert_eq!(
        r.recipients[0].diagnostic_code.as_deref(),
        Some("smtp; 550 5.1.1 Postfach „björn“ unbekannt")
    );
}

/// RFC 6533 3: `utf-8` addresses carry non-ASCII as `\x{HHHH}` in a 7-bit status part, or
/// as UTF-8 in a global one; both decode to the same address. A base64 status part is
/// decoded by mail-parser.
#[test]
fn utf8_addresses_and_transfer_encodings() {
    let status = b"Reporting-MTA: dns; mx.example.net\r\n\r\nOriginal-Recipient: utf-8; j\\x{F6}rg@example.net\r\nFinal-Recipient: utf-8; j\\x{f6}rg+\\x{1F600}@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n";
    let r = read_dsn(&delivery_status(status)).unwrap();
    assert!(!r.utf8);
    assert_eq!(r.recipients[0].final_recipient, "jörg+😀@example.net");
    assert_eq!(
        r.recipients[0].original_recipient.as_deref(),
        Some("jörg@example.net")
    );

    let global = "Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: utf-8; jörg@例え.jp\r\nAction: Failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 \"jörg\" unbekannt\r\n";
    let r = read_dsn(&report(
        "message/global-delivery-status",
        "",
        global.as_bytes(),
    ))
    .unwrap();
    assert!(r.utf8);
    assert_eq!(r.recipients[0].final_recipient, "jörg@例え.jp");
    assert_eq!(
        r.recipients[0].diagnostic_code.as_deref(),
        Some("smtp; 550 5.1.1 \"jörg\" unbekannt")
    );

    let b64 = crate::codec::base64_lines(global.as_bytes());
    let msg = report(
        "message/global-delivery-status",
        "Content-Transfer-Encoding: base64\r\n",
        b64.as_bytes(),
    );
    assert_eq!(read_dsn(&msg).unwrap(), r);

    let qp = "Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: utf-8; j=C3=B6rg@=E4=BE=8B=E3=81=88.jp\r\nAction: Failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 \"j=C3=B6rg\" unbek=\r\nannt\r\n";
    let msg = report(
        "message/global-delivery-status",
        "Content-Transfer-Encoding: quoted-printable\r\n",
        qp.as_bytes(),
    );
    assert_eq!(read_dsn(&msg).unwrap(), r);
}

// Real DSNs nobody here wrote.

/// CPython's msg_43.txt: a Barracuda DSN with 25 recipient groups, an mbox `From ` line
/// before the header and LF line endings.
#[test]
fn python_msg_43() {
    let r = read_dsn(&read_vector("msg_43.txt")).unwrap();
    assert!(!r.utf8);
    assert_eq!(r.reporting_mta.as_deref(), Some("sacspam01.dot.ca.gov"));
    assert_eq!(r.original_envelope_id, None);
    let lens = [
        7, 13, 10, 8, 10, 6, 10, 6, 6, 16, 11, 10, 10, 12, 12, 7, 9, 10, 6, 3, 7, 7, 15, 10, 7,
    ];
    assert_eq!(r.recipients.len(), lens.len());
    for (got, n) in r.recipients.iter().zip(lens) {
        let want = DsnRecipientStatus {
            final_recipient: format!("{}@dot.ca.gov", "x".repeat(n)),
            original_recipient: None,
            action: DsnAction::Failed,
            status: "5.7.1".into(),
            remote_mta: None,
            diagnostic_code: Some(
                "smtp; 550 5.7.1 Message content rejected, id=01956-02-2 - BANNED: auto__mail.python.bat"
                    .into(),
            ),
        };
        assert_eq!(got, &want);
        assert_eq!(got.codes(), (550, Some("5.7.1".into())));
    }
}

/// CPython's msg_16.txt: a Sun Internet Mail Server DSN: no `report-type`, the part type in
/// upper case (`message/DELIVERY-STATUS`), lower-case field names, `Action` before
/// `Final-Recipient`, a comment after `Status`, no space after `rfc822;`.
#[test]
fn python_msg_16() {
    let r = read_dsn(&read_vector("msg_16.txt")).unwrap();
    assert_eq!(r.reporting_mta.as_deref(), Some("cougar.noc.ucla.edu"));
    assert_eq!(
        r.original_envelope_id.as_deref(),
        Some("0GK500B4HD0888@cougar.noc.ucla.edu")
    );
    assert_eq!(
        r.recipients,
        vec![DsnRecipientStatus {
            final_recipient: "jangel1@cougar.noc.ucla.edu".into(),
            original_recipient: Some("jangel1@cougar.noc.ucla.edu".into()),
            action: DsnAction::Failed,
            status: "5.0.0".into(),
            remote_mta: None,
            diagnostic_code: None,
        }]
    );
    assert_eq!(r.recipients[0].codes(), (500, Some("5.0.0".into())));
}

/// CPython's msg_05.txt is a `multipart/report` of delivery-status type without a status
/// part (its second part has no Content-Type, so it is text/plain).
#[test]
fn python_msg_05_has_no_status_part() {
    assert_eq!(
        read_dsn(&read_vector("msg_05.txt")),
        Err(DsnReadError::NotReport)
    );
}

/// msg_25.txt as stored in shared/vectors has its folded header lines cut after two
/// characters: `Content-Type: multipart/report; report-type=delivery-status;` continues
/// with `bo` only, so there is no boundary and no part can be found.
#[test]
fn python_msg_25_lost_its_boundary() {
    let msg = read_vector("msg_25.txt");
    assert!(String::from_utf8_lossy(&msg).contains("report-type=delivery-status;\n\tbo\n"));
    assert_eq!(read_dsn(&msg), Err(DsnReadError::NotReport));
    // Its status part, taken out by hand, reads.
    let s = String::from_utf8_lossy(&msg);
    let start = s.find("Reporting-MTA:").unwrap();
    let end = start + s[start..].find("\n--").unwrap();
    let r = read_delivery_status(s[start..end].as_bytes(), false).unwrap();
    assert_eq!(r.reporting_mta.as_deref(), Some("zinfandel.lacita.com"));
    assert_eq!(
        r.recipients,
        vec![DsnRecipientStatus {
            final_recipient: "scoffman@wellpartner.com".into(),
            original_recipient: None,
            action: DsnAction::Failed,
            status: "5.4.6".into(),
            remote_mta: None,
            diagnostic_code: None,
        }]
    );
}

// RFC 3464 appendix C, the examples (LF as in the RFC text, the RFC's indentation removed).

/// C.1: a simple DSN.
const RFC3464_SIMPLE: &[u8] = b"Date: Thu, 7 Jul 1994 17:16:05 -0400
From: Mail Delivery Subsystem <MAILER-DAEMON@CS.UTK.EDU>
Message-Id: <199407072116.RAA14128@CS.UTK.EDU>
Subject: Returned mail: Cannot send message for 5 days
To: <owner-info-mime@cs.utk.edu>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
      boundary=\"RAA14128.773615765/CS.UTK.EDU\"

--RAA14128.773615765/CS.UTK.EDU

The original message was received at Sat, 2 Jul 1994 17:10:28 -0400
from root@localhost

   ----- The following addresses had delivery problems -----
<louisl@larry.slip.umd.edu>  (unrecoverable error)

   ----- Transcript of session follows -----
<louisl@larry.slip.umd.edu>... Deferred: Connection timed out
    with larry.slip.umd.edu.
Message could not be delivered for 5 days
Message will be deleted from queue

--RAA14128.773615765/CS.UTK.EDU
content-type: message/delivery-status

Reporting-MTA: dns; cs.utk.edu

Original-Recipient: rfc822;louisl@larry.slip.umd.edu
Final-Recipient: rfc822;louisl@larry.slip.umd.edu
Action: failed
Status: 4.0.0
Diagnostic-Code: smtp; 426 connection timed out
Last-Attempt-Date: Thu, 7 Jul 1994 17:15:49 -0400

--RAA14128.773615765/CS.UTK.EDU
content-type: message/rfc822

[original message goes here]

--RAA14128.773615765/CS.UTK.EDU--
";

/// C.2: a multi-recipient DSN, a folded Diagnostic-Code.
const RFC3464_MULTI: &[u8] = b"Date: Fri, 8 Jul 1994 09:21:47 -0400
From: Mail Delivery Subsystem <MAILER-DAEMON@CS.UTK.EDU>
Subject: Returned mail: User unknown
To: <owner-ups-mib@CS.UTK.EDU>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
      boundary=\"JAA13167.773673707/CS.UTK.EDU\"

--JAA13167.773673707/CS.UTK.EDU
content-type: text/plain; charset=us-ascii

   ----- The following addresses had delivery problems -----
<arathib@vnet.IBM.COM>  (unrecoverable error)
<wsnell@sdcc13.ucsd.edu>  (unrecoverable error)

[human-readable explanation goes here]

--JAA13167.773673707/CS.UTK.EDU
content-type: message/delivery-status

Reporting-MTA: dns; cs.utk.edu

Original-Recipient: rfc822;arathib@vnet.ibm.com
Final-Recipient: rfc822;arathib@vnet.ibm.com
Action: failed
Status: 5.0.0 (permanent failure)
Diagnostic-Code: smtp;  550 'arathib@vnet.IBM.COM' is not a
    registered gateway user
Remote-MTA: dns; vnet.ibm.com

Original-Recipient: rfc822;johnh@hpnjld.njd.hp.com
Final-Recipient: rfc822;johnh@hpnjld.njd.hp.com
Action: delayed
Status: 4.0.0 (hpnjld.njd.jp.com: host name lookup failure)

Original-Recipient: rfc822;wsnell@sdcc13.ucsd.edu
Final-Recipient: rfc822;wsnell@sdcc13.ucsd.edu
Action: failed
Status: 5.0.0
Diagnostic-Code: smtp; 550 user unknown
Remote-MTA: dns; sdcc13.ucsd.edu

--JAA13167.773673707/CS.UTK.EDU
content-type: message/rfc822

[original message goes here]

--JAA13167.773673707/CS.UTK.EDU--
";

/// C.3: a DSN from a gateway: non-DNS MTA and address types.
const RFC3464_GATEWAY: &[u8] = b"Date: Wed, 20 Jul 1994 12:27:05 -0400
From: <postmaster@mailbus.rhosystems.com>
To: <owner-info-mime@cs.utk.edu>
Subject: Undeliverable mail
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
      boundary=\"GATEWAY-BOUNDARY\"

--GATEWAY-BOUNDARY
content-type: text/plain

[human-readable explanation goes here]

--GATEWAY-BOUNDARY
content-type: message/delivery-status

Reporting-MTA: mailbus; SYS30

Final-Recipient: unknown; nair_s
Status: 5.0.0 (unknown permanent failure)
Action: failed

--GATEWAY-BOUNDARY--
";

/// C.4: a delayed DSN.
const RFC3464_DELAYED: &[u8] = b"MIME-Version: 1.0
From: <postmaster@nsfnet-relay.ac.uk>
Message-Id: <199407092338.TAA23293@CS.UTK.EDU>
Received: from nsfnet-relay.ac.uk by sun2.nsfnet-relay.ac.uk
       id <g.12954-0@sun2.nsfnet-relay.ac.uk>;
       Sun, 10 Jul 1994 00:36:51 +0100
To: owner-info-mime@cs.utk.edu
Date: Sun, 10 Jul 1994 00:36:51 +0100
Subject: WARNING: message delayed at \"nsfnet-relay.ac.uk\"
content-type: multipart/report; report-type=delivery-status;
      boundary=foobar

--foobar
content-type: text/plain

The following message:

UA-ID:   Reliable PC (...
Q-ID:    sun2.nsf:77/msg.11820-0

has not been delivered to the intended recipient:

  thomas@de-montfort.ac.uk

despite repeated delivery attempts over the past 24 hours.

--foobar
content-type: message/delivery-status

Reporting-MTA: dns; sun2.nsfnet-relay.ac.uk

Final-Recipient: rfc822;thomas@de-montfort.ac.uk
Status: 4.0.0 (unknown temporary failure)
Action: delayed

--foobar--
";

fn rfc3464_expected() -> Vec<(&'static [u8], DsnReport)> {
    let r = |f: &str, o: Option<&str>, a, s: &str, m: Option<&str>, d: Option<&str>| {
        DsnRecipientStatus {
            final_recipient: f.into(),
            original_recipient: o.map(String::from),
            action: a,
            status: s.into(),
            remote_mta: m.map(String::from),
            diagnostic_code: d.map(String::from),
        }
    };
    let report = |mta: &str, recipients| DsnReport {
        utf8: false,
        reporting_mta: Some(mta.into()),
        original_envelope_id: None,
        recipients,
    };
    vec![
        (
            RFC3464_SIMPLE,
            report(
                "cs.utk.edu",
                vec![r(
                    "louisl@larry.slip.umd.edu",
                    Some("louisl@larry.slip.umd.edu"),
                    DsnAction::Failed,
                    "4.0.0",
                    None,
                    Some("smtp; 426 connection timed out"),
                )],
            ),
        ),
        (
            RFC3464_MULTI,
            report(
                "cs.utk.edu",
                vec![
                    r(
                        "arathib@vnet.ibm.com",
                        Some("arathib@vnet.ibm.com"),
                        DsnAction::Failed,
                        "5.0.0",
                        Some("vnet.ibm.com"),
                        // Unfolding removes the line break only.
                        Some(
                            "smtp;  550 'arathib@vnet.IBM.COM' is not a    registered gateway user",
                        ),
                    ),
                    r(
                        "johnh@hpnjld.njd.hp.com",
                        Some("johnh@hpnjld.njd.hp.com"),
                        DsnAction::Delayed,
                        "4.0.0",
                        None,
                        None,
                    ),
                    r(
                        "wsnell@sdcc13.ucsd.edu",
                        Some("wsnell@sdcc13.ucsd.edu"),
                        DsnAction::Failed,
                        "5.0.0",
                        Some("sdcc13.ucsd.edu"),
                        Some("smtp; 550 user unknown"),
                    ),
                ],
            ),
        ),
        (
            RFC3464_GATEWAY,
            report(
                "SYS30",
                vec![r("nair_s", None, DsnAction::Failed, "5.0.0", None, None)],
            ),
        ),
        (
            RFC3464_DELAYED,
            report(
                "sun2.nsfnet-relay.ac.uk",
                vec![r(
                    "thomas@de-montfort.ac.uk",
                    None,
                    DsnAction::Delayed,
                    "4.0.0",
                    None,
                    None,
                )],
            ),
        ),
    ]
}

/// The four examples of RFC 3464 appendix C, with LF (as printed) and with CRLF.
#[test]
fn rfc3464_examples() {
    for (msg, want) in rfc3464_expected() {
        assert_eq!(
            read_dsn(msg).as_ref(),
            Ok(&want),
            "{}",
            String::from_utf8_lossy(msg)
        );
        assert_eq!(read_dsn(&to_crlf(msg)), Ok(want));
    }
    let multi = read_dsn(RFC3464_MULTI).unwrap();
    let codes: Vec<_> = multi.recipients.iter().map(|r| r.codes()).collect();
    assert_eq!(
        codes,
        [
            (550, Some("5.0.0".into())),
            (400, Some("4.0.0".into())),
            (550, Some("5.0.0".into())),
        ]
    );
    let simple = read_dsn(RFC3464_SIMPLE).unwrap();
    assert_eq!(simple.recipients[0].codes(), (426, Some("4.0.0".into())));
}

// Codes.

fn with_diagnostic(status: &str, diagnostic: Option<&str>) -> DsnRecipientStatus {
    DsnRecipientStatus {
        final_recipient: "x@y".into(),
        original_recipient: None,
        action: DsnAction::Failed,
        status: status.into(),
        remote_mta: None,
        diagnostic_code: diagnostic.map(String::from),
    }
}

#[test]
fn codes() {
    /// Status, Diagnostic-Code, expected codes.
    type Row = (
        &'static str,
        Option<&'static str>,
        (u16, Option<&'static str>),
    );
    let table: &[Row] = &[
        (
            "5.1.1",
            Some("smtp; 550 5.1.1 <x@y>... User unknown"),
            (550, Some("5.1.1")),
        ),
        // No enhanced code in the diagnostic: Status.
        (
            "4.2.2",
            Some("smtp; 452 mailbox full"),
            (452, Some("4.2.2")),
        ),
        // Not an smtp diagnostic: Status alone.
        (
            "4.4.1",
            Some("X-Postfix; host unreachable"),
            (400, Some("4.4.1")),
        ),
        ("5.0.0", None, (500, Some("5.0.0"))),
        ("2.0.0", None, (200, Some("2.0.0"))),
        (
            "2.0.0",
            Some("smtp; 250 2.0.0 Ok: queued as 4F"),
            (250, Some("2.0.0")),
        ),
        // Type case, no space after the semicolon, a multi-line reply's first line.
        (
            "5.0.0",
            Some("SMTP;550 5.2.1 <k@example.jp>... User Unknown"),
            (550, Some("5.2.1")),
        ),
        (
            "5.0.0",
            Some("smtp; 550-5.7.1 first line 550 5.7.1 last"),
            (550, Some("5.7.1")),
        ),
        (
            "5.0.0",
            Some("smtp;  550 'a@b' is not a registered gateway user"),
            (550, Some("5.0.0")),
        ),
        // The code alone.
        ("5.0.0", Some("smtp; 554"), (554, Some("5.0.0"))),
        // An enhanced code of another class than the reply code is not taken.
        ("5.0.0", Some("smtp; 550 4.2.2 odd"), (550, Some("5.0.0"))),
        // Not a reply code: Status.
        ("5.0.0", Some("smtp; 5500 x"), (500, Some("5.0.0"))),
        ("5.0.0", Some("smtp; 650 x"), (500, Some("5.0.0"))),
        ("5.0.0", Some("smtp; 55"), (500, Some("5.0.0"))),
        (
            "5.0.0",
            Some("smtp; host said: 550 no"),
            (500, Some("5.0.0")),
        ),
        ("5.0.0", Some("smtp 550 no semicolon"), (500, Some("5.0.0"))),
        ("4.0.0", Some("x-unix; 550 not smtp"), (400, Some("4.0.0"))),
        // Neither (cannot come from read_dsn, which checks Status).
        ("bogus", Some("X-Postfix; x"), (0, None)),
        ("", None, (0, None)),
        ("bogus", Some("smtp; 421 try later"), (421, None)),
    ];
    for (status, diag, (code, enhanced)) in table {
        let got = with_diagnostic(status, *diag).codes();
        assert_eq!(
            got,
            (*code, enhanced.map(String::from)),
            "{status} {diag:?}"
        );
    }
}

// Not a DSN, malformed, limits.

#[test]
fn not_a_report() {
    let plain = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nReporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; b@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n";
    assert_eq!(read_dsn(plain), Err(DsnReadError::NotReport));

    let mdn = b"From: b@example.net\r\nTo: a@example.org\r\nSubject: Read: hi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification;\r\n boundary=\"MDN\"\r\n\r\n--MDN\r\nContent-Type: text/plain\r\n\r\nYour message was displayed.\r\n\r\n--MDN\r\nContent-Type: message/disposition-notification\r\n\r\nReporting-UA: mail.example.net; rmox\r\nFinal-Recipient: rfc822; b@example.net\r\nOriginal-Message-ID: <m1@example.org>\r\nDisposition: manual-action/MDN-sent-manually; displayed\r\n\r\n--MDN--\r\n";
    assert_eq!(read_dsn(mdn), Err(DsnReadError::NotReport));

    // A status part outside a multipart/report (here multipart/mixed) is not a DSN.
    let mixed = String::from_utf8(delivery_status(b"Reporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@b\r\nAction: failed\r\nStatus: 5.0.0\r\n"))
        .unwrap()
        .replace("multipart/report", "multipart/mixed");
    assert_eq!(read_dsn(mixed.as_bytes()), Err(DsnReadError::NotReport));

    // A forwarded DSN (as an attached message) is not a DSN about this message.
    let inner = compose_dsn(
        &input(DsnKind::Failure, vec![recipient("bob@example.net")]),
        UnixTime(1),
    );
    let mut fwd = b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"FWD\"\r\n\r\n--FWD\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--FWD\r\nContent-Type: message/rfc822\r\n\r\n".to_vec();
    fwd.extend_from_slice(&inner);
    fwd.extend_from_slice(b"\r\n--FWD--\r\n");
    assert_eq!(read_dsn(&fwd), Err(DsnReadError::NotReport));

    assert_eq!(read_dsn(b""), Err(DsnReadError::NotReport));
}

#[test]
fn malformed_status_parts() {
    let table: &[(&[u8], &str)] = &[
        (b"Reporting-MTA: dns; mx.example.net\r\n", "no recipient fields"),
        (b"", "no recipient fields"),
        (b"\r\n\r\n", "no recipient fields"),
        (
            b"Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; a@b\r\nStatus: 5.1.1\r\n",
            "the recipient fields at line 3 have no Action field",
        ),
        (
            b"Reporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@b\r\nAction: failed\r\nStatus: 5.0.0\r\n\r\nX-Note: only this\r\nAction: failed\r\n",
            "the recipient fields at line 7 have no Final-Recipient and no Status field",
        ),
        (
            b"Reporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822;\r\nAction: failed\r\nStatus: 5.0.0\r\n",
            "Final-Recipient without address in the recipient fields at line 3",
        ),
        (
            b"Reporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@b\r\nAction: (none)\r\nStatus: 5.0.0\r\n",
            "empty Action",
        ),
        (
            b"Reporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@b\r\nAction: failed\r\nStatus: 550 (user unknown)\r\n",
            "Status that is not a status code in the recipient fields at line 3: \"550 (user unknown)\"",
        ),
        (
            b"Reporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@b\r\nno colon here\r\n",
            "line 4 is not a field: \"no colon here\"",
        ),
        (b": no name\r\n", "line 1 is not a field"),
        (b"Bad Name: x\r\n", "line 1 is not a field"),
        (b"\r\n continued\r\n", "line 2 continues a field but follows no field"),
    ];
    for (status, want) in table {
        let m = malformed(&delivery_status(status));
        assert!(
            m.contains(want),
            "{m:?} for {:?}",
            String::from_utf8_lossy(status)
        );
    }
    // A base64 status part that does not decode.
    let msg = report(
        "message/delivery-status",
        "Content-Transfer-Encoding: base64\r\n",
        b"!!!! not base64 !!!!",
    );
    assert!(malformed(&msg).contains("transfer encoding"));
    // The error reads as one line.
    let e = read_dsn(&delivery_status(b"Reporting-MTA: dns; x\r\n")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "malformed delivery status notification: no recipient fields (Final-Recipient, Action, Status) in the status part"
    );
}

#[test]
fn limits() {
    let one = b"Final-Recipient: rfc822; a@b\nAction: failed\nStatus: 5.0.0\n\n";
    let mut status = b"Reporting-MTA: dns; x\n\n".to_vec();
    for _ in 0..MAX_RECIPIENTS {
        status.extend_from_slice(one);
    }
    assert_eq!(
        read_delivery_status(&status, false)
            .unwrap()
            .recipients
            .len(),
        MAX_RECIPIENTS
    );
    status.extend_from_slice(one);
    assert_eq!(
        read_delivery_status(&status, false),
        Err(DsnReadError::TooLarge(DsnLimit::Recipients))
    );

    // A field at the limit reads; one octet more does not, in one line or folded, kept or
    // not.
    for name in ["Diagnostic-Code", "X-Unknown"] {
        let head = format!("Reporting-MTA: dns; x\n\nFinal-Recipient: rfc822; a@b\nAction: failed\nStatus: 5.0.0\n{name}: smtp; 550");
        let pad = MAX_FIELD_LEN - (name.len() + ": smtp; 550".len());
        let ok = format!("{head}{}\n", " x".repeat(pad / 2));
        assert!(read_delivery_status(ok.as_bytes(), false).is_ok(), "{name}");
        let long = format!("{head}{}\n", " x".repeat(pad / 2 + 1));
        assert_eq!(
            read_delivery_status(long.as_bytes(), false),
            Err(DsnReadError::TooLarge(DsnLimit::Field)),
            "{name}"
        );
        let folded = format!("{head}{}\n", "\n x".repeat(pad / 2 + 1));
        assert_eq!(
            read_delivery_status(folded.as_bytes(), false),
            Err(DsnReadError::TooLarge(DsnLimit::Field)),
            "{name}"
        );
    }
    let long_line = format!("{}\n", "a".repeat(MAX_FIELD_LEN + 1));
    assert!(matches!(
        read_delivery_status(long_line.as_bytes(), false),
        Err(DsnReadError::Malformed(m)) if m.len() < 200
    ));

    let big = vec![b'\n'; MAX_STATUS_LEN + 1];
    assert_eq!(
        read_delivery_status(&big, false),
        Err(DsnReadError::TooLarge(DsnLimit::StatusPart))
    );
    assert_eq!(
        read_dsn(&delivery_status(&big)),
        Err(DsnReadError::TooLarge(DsnLimit::StatusPart))
    );
    let huge = vec![b'a'; MAX_MESSAGE_LEN + 1];
    assert_eq!(
        read_dsn(&huge),
        Err(DsnReadError::TooLarge(DsnLimit::Message))
    );
    assert_eq!(
        DsnReadError::TooLarge(DsnLimit::Recipients).to_string(),
        "delivery status notification too large: more than 1000 recipient groups"
    );
}

// The grammar, form by form.

#[test]
fn status_part_forms() {
    let table: &[(&str, &[u8], DsnRecipientStatus)] = &[
        (
            "folded values, tabs, comments on tokens, upper-case type and action",
            b"Reporting-MTA: DNS; mx.example.net (Postfix)\n\nFinal-Recipient:\n\tRFC822; <a@example.net>\nAction: (what) FAILED\nStatus:\n 5.1.1\n  (bad destination mailbox address)\nRemote-MTA: dns; mx2.example.net ([192.0.2.1])\nDiagnostic-Code: smtp; 550 5.1.1\n\t<a@example.net>: Recipient address rejected\n",
            DsnRecipientStatus {
                final_recipient: "a@example.net".into(),
                original_recipient: None,
                action: DsnAction::Failed,
                status: "5.1.1".into(),
                remote_mta: Some("mx2.example.net".into()),
                diagnostic_code: Some(
                    "smtp; 550 5.1.1\t<a@example.net>: Recipient address rejected".into(),
                ),
            },
        ),
        (
            "a missing blank line after the per-message fields, names in any case, repeated fields",
            b"reporting-mta: dns; mx.example.net\r\nFINAL-RECIPIENT: rfc822; first@example.net\r\nfinal-recipient: rfc822; second@example.net\r\naction: Expanded\r\nstatus: 2.0.0\r\n\r\n\r\n",
            DsnRecipientStatus {
                final_recipient: "first@example.net".into(),
                original_recipient: None,
                action: DsnAction::Expanded,
                status: "2.0.0".into(),
                remote_mta: None,
                diagnostic_code: None,
            },
        ),
        (
            "unknown fields and actions, no address type, parentheses inside addresses and diagnostics, white space before the colon",
            b"\n\nReporting-MTA: x-local\nX-Postfix-Queue-ID: 3354017BFA8\n\nFinal-Recipient: \"a(b)\"@example.net\nOriginal-Recipient : rfc822; (c)@example.net\nAction: deferred\nStatus: 4.7.0\nX-Extra: y\n more\nDiagnostic-Code: X-Postfix; delivery (temporarily) suspended\nWill-Retry-Until: Sat, 5 Jul 2026 10:00:00 +0000\n",
            DsnRecipientStatus {
                final_recipient: "\"a(b)\"@example.net".into(),
                original_recipient: Some("(c)@example.net".into()),
                action: DsnAction::Other("deferred".into()),
                status: "4.7.0".into(),
                remote_mta: None,
                diagnostic_code: Some("X-Postfix; delivery (temporarily) suspended".into()),
            },
        ),
    ];
    for (what, status, want) in table {
        let r = read_dsn(&delivery_status(status)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.recipients, vec![want.clone()], "{what}");
        assert_eq!(read_delivery_status(status, false).unwrap(), r, "{what}");
    }
    let r = read_delivery_status(table[0].1, false).unwrap();
    assert_eq!(r.reporting_mta.as_deref(), Some("mx.example.net"));
    let r = read_delivery_status(table[2].1, false).unwrap();
    assert_eq!(r.reporting_mta.as_deref(), Some("x-local"));
}

/// A status part with no closing boundary (a truncated DSN): mail-parser gives its raw
/// text; it still reads.
#[test]
fn unterminated_status_part() {
    let msg = b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"BB\"\r\n\r\n--BB\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--BB\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; a@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n";
    let r = read_dsn(msg).unwrap();
    assert_eq!(r.recipients[0].final_recipient, "a@example.net");
}

#[test]
fn helpers() {
    for (input, want) in [
        ("5.0.0 (permanent failure)", "5.0.0  "),
        ("a (b (c) d) e", "a   e"),
        ("a (b \\) c) d", "a   d"),
        ("\"q (x)\" (c)", "\"q (x)\"  "),
        ("\"q \\\" (x)\" y", "\"q \\\" (x)\" y"),
        ("open (never closed", "open  "),
        ("close ) only", "close ) only"),
        ("none", "none"),
    ] {
        assert_eq!(strip_comments(input), want, "{input}");
    }
    for (input, want) in [
        ("rfc822; a@b", Some("a@b")),
        ("rfc822;<a@b>", Some("a@b")),
        (" RFC822 (c) ; a@b ", Some("a@b")),
        ("utf-8; \\x{E9}t\\x{E9}@b", Some("été@b")),
        ("utf-8; bad\\x{110000}@b", Some("bad\\x{110000}@b")),
        (
            "utf-8; bad\\x{D800}\\x{}\\x{1234567}\\x{zz}\\x{41@b",
            Some("bad\\x{D800}\\x{}\\x{1234567}\\x{zz}\\x{41@b"),
        ),
        ("rfc822; \\x{41}@b", Some("\\x{41}@b")),
        ("unknown; nair_s", Some("nair_s")),
        ("a@b", Some("a@b")),
        ("rfc822;", None),
        ("rfc822; <>", None),
        ("", None),
    ] {
        assert_eq!(address(input).as_deref(), want, "{input}");
    }
    for (input, want) in [
        ("dns; mx.example.net", Some("mx.example.net")),
        ("dns;mx.example.net (1.2.3.4)", Some("mx.example.net")),
        ("x-local; host (kept)", Some("host (kept)")),
        ("mailbus; SYS30", Some("SYS30")),
        ("dns;", None),
        ("dns; (only a comment)", None),
    ] {
        assert_eq!(mta_name(input).as_deref(), want, "{input}");
    }
    for (input, want) in [
        ("5.1.1", Some("5.1.1")),
        (" 4.0.0 (x) ", Some("4.0.0")),
        ("(x) 2.1.5", Some("2.1.5")),
        ("5.1.10", Some("5.1.10")),
        ("5.1", None),
        ("3.1.1", None),
        ("5.1.1.1", None),
        ("", None),
    ] {
        assert_eq!(status_code(input).as_deref(), want, "{input}");
    }
    for (input, want) in [
        ("failed", DsnAction::Failed),
        ("FAILED", DsnAction::Failed),
        ("Delayed", DsnAction::Delayed),
        ("delivered", DsnAction::Delivered),
        ("RELAYED", DsnAction::Relayed),
        ("expanded", DsnAction::Expanded),
        ("Bounced", DsnAction::Other("Bounced".into())),
    ] {
        assert_eq!(DsnAction::parse(input), want, "{input}");
    }
    assert_eq!(DsnAction::Other("Bounced".into()).as_str(), "Bounced");
    assert_eq!(DsnAction::from(Action::Relayed), DsnAction::Relayed);
    assert_eq!(excerpt(&"é".repeat(100)).chars().count(), 63);
}

fn action_strategy() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Failed),
        Just(Action::Delayed),
        Just(Action::Delivered),
        Just(Action::Relayed),
        Just(Action::Expanded),
    ]
}

prop_compose! {
    fn recipient_strategy()(
        local in "[a-zA-Z0-9._+-]{1,20}|[a-zé中ß]{1,8}",
        domain in "[a-z0-9-]{1,10}\\.(example|bücher)",
        action in action_strategy(),
        class in prop_oneof![Just(2u8), Just(4u8), Just(5u8)],
        subject in 0u16..1000,
        detail_code in 0u16..1000,
        orcpt in proptest::option::of(("rfc822|utf-8", "[!-;=?-\\[\\]-~é]{1,30}")),
        remote in proptest::option::of("[a-z0-9.-]{1,30}"),
        diag in proptest::option::of((
            0u16..100,
            proptest::bool::ANY,
            proptest::collection::vec("[a-zA-Z][ -~\t\u{e9}\u{4e2d}]{0,100}", 1..4),
        )),
        detail in proptest::option::of("[ -~\t\r\n()\\\\\u{e9}]{0,60}"),
    ) -> DsnRecipient {
        let status = Enhanced::new(class, subject, detail_code);
        DsnRecipient {
            final_recipient: format!("{local}@{domain}"),
            original_recipient: orcpt,
            action,
            status,
            remote_mta: remote,
            diagnostic: diag.map(|(n, enhanced, lines)| Reply {
                code: u16::from(class) * 100 + n,
                enhanced: enhanced.then_some(status),
                lines,
            }),
            detail,
            last_attempt: Some(UnixTime(1_795_315_268)),
            will_retry_until: (class == 4).then_some(UnixTime(1_795_400_000)),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever recipients, statuses and diagnostic texts compose_dsn writes, read_dsn
    /// reads them back.
    #[test]
    fn composed_dsns_read_back(
        rcpts in proptest::collection::vec(recipient_strategy(), 1..5),
        envid in proptest::option::of("[ -~]{0,40}"),
        kind in prop_oneof![Just(DsnKind::Failure), Just(DsnKind::Delay), Just(DsnKind::Success)],
        full in proptest::bool::ANY,
    ) {
        let mut inp = input(kind, rcpts.clone());
        inp.envid = envid.clone();
        inp.ret = if full { Ret::Full } else { Ret::Hdrs };
        let msg = compose_dsn(&inp, UnixTime(1));
        let r = read_dsn(&msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let global = String::from_utf8_lossy(&msg).contains("message/global-delivery-status");
        prop_assert_eq!(r.utf8, global);
        prop_assert_eq!(r.reporting_mta.as_deref(), Some("mail.example.org"));
        let want_envid = envid.map(|e| words(&e)).filter(|e| !e.is_empty());
        prop_assert_eq!(r.original_envelope_id, want_envid);
        let want: Vec<_> = rcpts.iter().map(expected).collect();
        prop_assert_eq!(&r.recipients, &want);
        for (got, sent) in r.recipients.iter().zip(&rcpts) {
            let status = Some(sent.status.to_string());
            let want_codes = match &sent.diagnostic {
                Some(d) => (d.code, d.enhanced.map(|e| e.to_string()).or(status)),
                None => (u16::from(sent.status.class) * 100, status),
            };
            prop_assert_eq!(got.codes(), want_codes);
        }
    }

    /// Arbitrary bytes, as a message, as a status part on its own and inside a
    /// multipart/report: an answer, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = read_dsn(&data);
        for utf8 in [false, true] {
            if let Ok(r) = read_delivery_status(&data, utf8) {
                prop_assert!(!r.recipients.is_empty());
                for rcpt in &r.recipients {
                    let _ = rcpt.codes();
                }
            }
        }
        let _ = read_dsn(&delivery_status(&data));
    }

    /// Status parts made of field-like lines: an answer, never a panic, and every recipient
    /// read has its three fields.
    #[test]
    fn field_soup_never_panics(
        lines in proptest::collection::vec(
            prop_oneof![
                Just(String::new()),
                "(Final-Recipient|Action|Status|Diagnostic-Code|Remote-MTA|Reporting-MTA|Original-Recipient|X-Y): [ -~\u{e9}\\\\(){}]{0,30}",
                "[ \t][ -~]{0,20}",
                "[ -~]{0,20}",
            ],
            0..30,
        ),
        crlf in proptest::bool::ANY,
    ) {
        let body = lines.join(if crlf { "\r\n" } else { "\n" });
        if let Ok(r) = read_delivery_status(body.as_bytes(), false) {
            for rcpt in &r.recipients {
                prop_assert!(!rcpt.final_recipient.is_empty());
                prop_assert!(Enhanced::parse(&rcpt.status).is_some());
                let _ = rcpt.codes();
            }
        }
    }
}
