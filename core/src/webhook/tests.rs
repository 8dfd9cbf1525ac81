use super::*;

#[test]
fn codes() {
    assert_eq!(smtp_codes("550 5.1.1 no such user"), (550, "5.1.1".into()));
    assert_eq!(smtp_codes("451 try later"), (451, String::new()));
    assert_eq!(smtp_codes("connection refused"), (0, String::new()));
    assert_eq!(smtp_codes("999 9.9.9 x"), (0, String::new()));
    assert_eq!(smtp_codes(""), (0, String::new()));
}

#[test]
fn retries() {
    assert_eq!(retry_after(0, RETRY_INTERVALS), None);
    assert_eq!(retry_after(1, RETRY_INTERVALS), Some(60));
    assert_eq!(retry_after(11, RETRY_INTERVALS), Some(57600));
    assert_eq!(retry_after(12, RETRY_INTERVALS), None);
    assert_eq!(retry_after(1, &[]), None);
}

/// The HMAC-SHA256 of "UNIX." and the body, as Python's hmac module computes it:
/// `hmac.new(b"secret", b'1700000000.{"a":1}', "sha256").hexdigest()`.
#[test]
fn signature_is_hmac_sha256() {
    let s = signature(b"secret", 1_700_000_000, b"{\"a\":1}");
    assert_eq!(
        s,
        "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
    );
    assert_ne!(s, signature(b"other", 1_700_000_000, b"{\"a\":1}"));
    assert_ne!(s, signature(b"secret", 1_700_000_001, b"{\"a\":1}"));
}

#[test]
fn outgoing_shape() {
    let o = Outgoing {
        event: Event::Delivered.as_str().into(),
        queue_msg_id: 7,
        ..Default::default()
    };
    let v: serde_json::Value = serde_json::to_value(&o).unwrap();
    for k in [
        "Version",
        "Event",
        "DSN",
        "Suppressing",
        "QueueMsgID",
        "FromID",
        "MessageID",
        "Subject",
        "WebhookQueued",
        "SMTPCode",
        "SMTPEnhancedCode",
        "Error",
        "Extra",
    ] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    assert_eq!(v["Event"], "delivered");
    assert!(accepted(204) && !accepted(301) && !accepted(500));
}

/// A DSN about `rcpts` (action, status, Diagnostic-Code line or "").
fn dsn(rcpts: &[(&str, &str, &str)]) -> Vec<u8> {
    let mut status = String::from("Reporting-MTA: dns; mx.example.net\r\n");
    for (i, (action, st, diag)) in rcpts.iter().enumerate() {
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; r{i}@example.net\r\nAction: {action}\r\nStatus: {st}\r\n{diag}"
        ));
    }
    format!(
        "From: MAILER-DAEMON@mx.example.net\r\nSubject: report\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n\
         --x\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n\
         --x\r\nContent-Type: message/delivery-status\r\n\r\n{status}\r\n--x--\r\n"
    )
    .into_bytes()
}

/// What came back to a unique return address, read as mox reads it: each DSN action its
/// event, codes from the Diagnostic-Code or else the Status, suppression for a failure
/// about the address (not for a full mailbox), and the rest unrecognized.
#[test]
fn returned_messages() {
    let r = returned(&dsn(&[(
        "failed",
        "5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1 <r0@example.net>: no such user\r\n",
    )]));
    assert_eq!(
        (
            r.event,
            r.dsn,
            r.smtp_code,
            r.smtp_enhanced_code.as_str(),
            r.suppressing
        ),
        (Event::Failed, true, 550, "5.1.1", true)
    );
    assert_eq!(
        r.note,
        "dsn: failed 5.1.1: smtp; 550 5.1.1 <r0@example.net>: no such user"
    );
    let r = returned(&dsn(&[(
        "Failed",
        "5.2.2",
        "Diagnostic-Code: smtp; 552 mailbox full\r\n",
    )]));
    assert_eq!(
        (
            r.event,
            r.smtp_code,
            r.smtp_enhanced_code.as_str(),
            r.suppressing
        ),
        (Event::Failed, 552, "5.2.2", false)
    );
    let r = returned(&dsn(&[("delayed", "4.4.1", "")]));
    assert_eq!(
        (
            r.event,
            r.smtp_code,
            r.smtp_enhanced_code.as_str(),
            r.suppressing
        ),
        (Event::Delayed, 400, "4.4.1", false)
    );
    for (action, event) in [
        ("delivered", Event::Delivered),
        ("relayed", Event::Relayed),
        ("expanded", Event::Expanded),
    ] {
        let r = returned(&dsn(&[(action, "2.0.0", "")]));
        assert_eq!((r.event, r.dsn), (event, true), "{action}");
        assert_eq!(r.event.as_str(), action);
    }
    let r = returned(&dsn(&[("bounced", "5.0.0", "")]));
    assert_eq!((r.event, r.dsn), (Event::Unrecognized, true));
    assert!(r.note.contains("bounced"), "{}", r.note);
    let r = returned(&dsn(&[("failed", "5.1.1", ""), ("failed", "5.1.1", "")]));
    assert_eq!((r.event, r.dsn), (Event::Unrecognized, true));
    assert_eq!(r.note, "incoming dsn has 2 recipients, expecting 1");
    let r = returned(b"Subject: out of office\r\n\r\nBack on monday.\r\n");
    assert_eq!((r.event, r.dsn), (Event::Unrecognized, false));
    assert_eq!(r.note, "incoming message not a dsn");
    let r = returned(&dsn(&[]));
    assert_eq!((r.event, r.dsn), (Event::Unrecognized, true));
    assert!(!r.suppressing);
}
