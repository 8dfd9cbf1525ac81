use super::*;
use mail_parser::MimeHeaders;
use proptest::prelude::*;

fn cx() -> ComposeContext {
    ComposeContext {
        default_from: NameAddress {
            name: "Mjl".into(),
            address: "mjl@mox.example".into(),
        },
        hostname: "mail.mox.example".into(),
        now: UnixTime(1_800_000_000),
        random: 0x1234,
        max_size: 1 << 20,
    }
}

fn send(json: &str) -> Result<Composed, ApiError> {
    compose(&parse::<SendRequest>(json)?, &cx())
}

fn read(m: &[u8]) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default().parse(m).unwrap()
}

/// mox's clients post `request=<json>` form-encoded; a JSON body works too; anything else
/// is a `protocol` error that says what to send.
#[test]
fn request_bodies() {
    let form = "x=1&request=%7B%22To%22%3A+%5B%5D%7D&y=2";
    assert_eq!(
        request_json(Some("application/x-www-form-urlencoded"), form.as_bytes()).unwrap(),
        "{\"To\": []}"
    );
    assert_eq!(
        request_json(Some("application/json; charset=utf-8"), b"{}").unwrap(),
        "{}"
    );
    let cases: &[(Option<&str>, &[u8], &str)] = &[
        (None, b"{}", "missing content-type"),
        (Some("text/plain"), b"{}", "unknown content-type text/plain"),
        (
            Some("multipart/form-data; boundary=x"),
            b"",
            "multipart/form-data",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            b"x=1",
            "missing/empty",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            b"request=%zz",
            "%-escape",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            b"request=%ff",
            "UTF-8",
        ),
        (Some("application/json"), b"  ", "missing/empty"),
        (Some("application/json"), b"\xff", "UTF-8"),
    ];
    for (ct, body, want) in cases {
        let e = request_json(*ct, body).unwrap_err();
        assert_eq!(e.code, "protocol");
        assert!(e.message.contains(want), "{ct:?}: {}", e.message);
    }
}

/// multipart/form-data as curl sends it (`-F request=... -F attachedfile=@...`): the JSON
/// from the field `request`, files from alternativefile/inlinefile/attachedfile in order
/// with their names, types (application/octet-stream: none, guessed from the name later)
/// and Content-IDs; files go after the request's own, and compose into the message.
#[test]
fn multipart_requests() {
    let ct = "multipart/form-data; boundary=------------------------b0c9f1d2";
    let body = b"--------------------------b0c9f1d2\r\n\
Content-Disposition: form-data; name=\"request\"\r\n\r\n\
{\"To\": [{\"Address\": \"x@example.org\"}], \"Text\": \"hi\", \"AttachedFiles\": [{\"Name\": \"first.txt\", \"Data\": \"MQ==\"}]}\r\n\
--------------------------b0c9f1d2\r\n\
Content-Disposition: form-data; name=\"attachedfile\"; filename=\"report.csv\"\r\n\
Content-Type: text/csv\r\n\r\n\
a,b\r\n1,2\r\n\r\n\
--------------------------b0c9f1d2\r\n\
Content-Disposition: form-data; name=\"inlinefile\"; filename=\"logo.png\"\r\n\
Content-Type: application/octet-stream\r\n\
Content-ID: <logo@example.org>\r\n\r\n\
\x89PNG\x00\r\n\
--------------------------b0c9f1d2\r\n\
Content-Disposition: form-data; name=\"comment\"\r\n\r\n\
ignored\r\n\
--------------------------b0c9f1d2--\r\n";
    let r = read_request(Some(ct), body).unwrap();
    assert!(r.json.starts_with("{\"To\""));
    assert_eq!(r.files.attached.len(), 1);
    assert_eq!(r.files.attached[0].name, "report.csv");
    assert_eq!(r.files.attached[0].content_type, "text/csv");
    assert_eq!(r.files.attached[0].data, "YSxiDQoxLDINCg==");
    assert_eq!(
        r.files.inline[0].content_type, "",
        "octet-stream: from the name"
    );
    assert_eq!(r.files.inline[0].content_id, "<logo@example.org>");
    assert!(r.files.alternative.is_empty());
    assert_eq!(request_json(Some(ct), body).unwrap(), r.json);
    let mut req: SendRequest = parse(&r.json).unwrap();
    r.files.add_to(&mut req);
    let names: Vec<&str> = req.attached_files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["first.txt", "report.csv"]);
    let c = compose(&req, &cx()).unwrap();
    let m = read(&c.message);
    let attachment = m
        .attachments()
        .find(|a| a.attachment_name() == Some("report.csv"))
        .unwrap();
    assert_eq!(attachment.contents(), b"a,b\r\n1,2\r\n");
    let inline = m
        .attachments()
        .find(|a| a.attachment_name() == Some("logo.png"))
        .unwrap();
    assert_eq!(inline.content_type().map(|t| t.ctype()), Some("image"));

    // JSON bodies and url-encoded forms carry no files.
    assert!(read_request(Some("application/json"), b"{}")
        .unwrap()
        .files
        .is_empty());
    let cases: &[(&[u8], &str)] = &[
        (
            b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n",
            "missing/empty request",
        ),
        (
            b"--b\r\nContent-Disposition: form-data; name=\"request\"\r\n\r\n{}",
            "parsing form",
        ),
        (
            b"--b\r\nContent-Disposition: form-data; name=\"request\"\r\n\r\n\xff\r\n--b--\r\n",
            "UTF-8",
        ),
    ];
    for (body, want) in cases {
        let e = read_request(Some("multipart/form-data; boundary=b"), body).unwrap_err();
        assert_eq!(e.code, "protocol");
        assert!(e.message.contains(want), "{}", e.message);
    }
}

/// Malformed JSON, wrong types and unknown fields are refused naming the problem.
#[test]
fn parse_errors() {
    for (text, want) in [
        ("{", "EOF"),
        ("{\"To\": 1}", "invalid type"),
        ("{\"Bogus\": 1}", "unknown field `Bogus`"),
    ] {
        let e = parse::<SendRequest>(text).unwrap_err();
        assert_eq!(e.code, "protocol");
        assert!(e.message.contains(want), "{text}: {}", e.message);
    }
    let e = parse::<MessageRequest>("{\"MsgID\": -1}").unwrap_err();
    assert!(e.message.contains("invalid value"), "{}", e.message);
    let r: AddressRequest =
        parse("{\"EmailAddress\": \"a@b.example\", \"Manual\": true, \"Reason\": \"x\"}").unwrap();
    assert!(r.manual);
    assert!(parse::<Empty>("{}").is_ok());
    assert!(parse::<Empty>("{\"X\": 1}").is_err());
}

#[test]
fn query_params() {
    let t = "/api/v1/search?query=from%3Aalice+invoice&limit=5#x";
    assert_eq!(
        query_param(t, "query").as_deref(),
        Some("from:alice invoice")
    );
    assert_eq!(query_param(t, "limit").as_deref(), Some("5"));
    assert_eq!(query_param(t, "start"), None);
    assert_eq!(query_param("/x", "query"), None);
    assert_eq!(query_param("/x?query=%zz", "query"), None);
}

#[test]
fn basic_credentials() {
    // "mjl@mox.example:test:pass" (the password may contain ':').
    let h = "Basic bWpsQG1veC5leGFtcGxlOnRlc3Q6cGFzcw==";
    assert_eq!(
        basic_auth(Some(h)),
        Some(("mjl@mox.example".into(), "test:pass".into()))
    );
    assert_eq!(
        basic_auth(Some("basic bWpsOg==")),
        Some(("mjl".into(), String::new()))
    );
    for bad in [
        None,
        Some("Bearer x"),
        Some("Basic !!!"),
        Some("Basic bWps"),
        Some("Basic"),
    ] {
        assert_eq!(basic_auth(bad), None, "{bad:?}");
    }
}

/// A text message: the header fields from the request, the default From, a Message-ID and
/// Date made, 7bit text with CRLF lines; mail-parser reads back what was asked.
#[test]
fn compose_text() {
    let c = send(
        r#"{"To": [{"Name": "Bob \"B\"", "Address": "bob@example.org"}],
            "CC": [{"Address": "carol@example.org"}], "BCC": [{"Address": "dave@example.org"}],
            "Subject": "hi", "Text": "line 1\nline 2\n", "Headers": [["X-Tag", "t1"]],
            "References": ["<a@x>", "<b@x>"], "RequireTLS": false}"#,
    )
    .unwrap();
    assert_eq!(c.from, "mjl@mox.example");
    assert_eq!(
        c.recipients,
        ["bob@example.org", "carol@example.org", "dave@example.org"]
    );
    assert_eq!(c.message_id, "<0000000000001234.webapi@mail.mox.example>");
    assert_eq!(c.require_tls, Some(false));
    let text = String::from_utf8(c.message.clone()).unwrap();
    assert!(
        text.starts_with(
            "From: \"Mjl\" <mjl@mox.example>\r\nTo: \"Bob \\\"B\\\"\" <bob@example.org>\r\n"
        ),
        "{text}"
    );
    assert!(!text.contains("dave"), "Bcc is not in the header");
    assert!(text.contains("\r\nIn-Reply-To: <b@x>\r\n"));
    assert!(text.contains("\r\nX-Tag: t1\r\nUser-Agent: rmox-webapi\r\n"));
    assert!(
        text.ends_with("\r\n\r\nline 1\r\nline 2\r\n\r\n"),
        "{text:?}"
    );
    let m = read(&c.message);
    assert_eq!(m.subject(), Some("hi"));
    assert_eq!(m.to().unwrap().first().unwrap().name(), Some("Bob \"B\""));
    assert_eq!(m.body_text(0).unwrap(), "line 1\r\nline 2\r\n\r\n");
    assert_eq!(m.date().unwrap().to_timestamp(), 1_800_000_000);
    assert_eq!(
        m.message_id(),
        Some("0000000000001234.webapi@mail.mox.example")
    );
}

/// Text and HTML with inline and attached files: alternative inside related inside mixed;
/// non-ASCII subject, names and long lines survive the encodings.
#[test]
fn compose_multipart() {
    let long = "é".repeat(100);
    let req = format!(
        r#"{{"From": [{{"Name": "Zoë", "Address": "mjl@mox.example"}}],
            "To": [{{"Address": "bob@example.org"}}], "Subject": "Grüße {long}",
            "Text": "{long}\n.dot", "HTML": "<p>hi <img src=\"cid:i1@x\"></p>",
            "InlineFiles": [{{"Name": "i.png", "ContentID": "<i1@x>", "Data": "iVBORw0KGgo="}}],
            "AttachedFiles": [{{"Name": "résumé.pdf", "Data": "JVBERi0xLjQK"}},
                              {{"Name": "a.bin", "ContentType": "application/x-thing", "Data": "AAEC"}}],
            "FutureRelease": "2027-01-15T10:00:00Z", "RequireTLS": true}}"#
    );
    let c = send(&req).unwrap();
    assert_eq!(
        c.hold_until,
        UnixTime::parse_rfc3339("2027-01-15T10:00:00Z")
    );
    assert!(c.message.is_ascii());
    for l in c.message.split(|&b| b == b'\n') {
        assert!(
            l.len() <= 78,
            "line too long: {}",
            String::from_utf8_lossy(l)
        );
    }
    let m = read(&c.message);
    assert_eq!(m.subject().unwrap(), format!("Grüße {long}"));
    assert_eq!(m.from().unwrap().first().unwrap().name(), Some("Zoë"));
    // The CRLF before a boundary belongs to the boundary: the text as given.
    assert_eq!(m.body_text(0).unwrap(), format!("{long}\r\n.dot"));
    assert!(m.body_html(0).unwrap().contains("cid:i1@x"));
    let names: Vec<_> = m
        .attachments()
        .map(|a| a.attachment_name().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["i.png", "résumé.pdf", "a.bin"]);
    let pdf = m.attachments().nth(1).unwrap();
    assert_eq!(pdf.contents(), b"%PDF-1.4\n");
    assert_eq!(pdf.content_type().unwrap().subtype(), Some("pdf"));
    let text = String::from_utf8_lossy(&c.message);
    assert!(
        text.contains("multipart/mixed")
            && text.contains("multipart/related")
            && text.contains("multipart/alternative")
    );
    assert!(text.contains("Content-ID: <i1@x>"));
}

/// Every refusal, with mox's code where mox has one.
#[test]
fn compose_errors() {
    let to = r#""To": [{"Address": "bob@example.org"}]"#;
    let cases = [
        (
            r#"{"To": [{"Address": "bob@example.org"}]}"#.to_string(),
            "missingBody",
        ),
        (
            format!(
                r#"{{"Text": "x", "From": [{{"Address": "a@x"}}, {{"Address": "b@x"}}], {to}}}"#
            ),
            "multipleFrom",
        ),
        (r#"{"Text": "x"}"#.into(), "noRecipients"),
        (
            r#"{"Text": "x", "To": [{"Address": "no-at"}]}"#.into(),
            "badAddress",
        ),
        (
            format!(r#"{{"Text": "x", "From": [{{"Address": "a b@x"}}], {to}}}"#),
            "badAddress",
        ),
        (
            format!(r#"{{"Text": "x", "ReplyTo": [{{"Address": "@"}}], {to}}}"#),
            "badAddress",
        ),
        (
            format!(r#"{{"Text": "x", "Extra": {{"a b": "v"}}, {to}}}"#),
            "user",
        ),
        (
            format!(r#"{{"Text": "x", "Extra": {{"k": "v\r\nBcc: x"}}, {to}}}"#),
            "user",
        ),
        (
            format!(r#"{{"Text": "x", "Extra": {{"k": "1", "K": "2"}}, {to}}}"#),
            "user",
        ),
        (
            format!(r#"{{"Text": "x", "FutureRelease": "2020-01-01T00:00:00Z", {to}}}"#),
            "user",
        ),
        (
            format!(r#"{{"Text": "x", "FutureRelease": "tomorrow", {to}}}"#),
            "user",
        ),
        (
            format!(r#"{{"Text": "x", "Date": "2020-13-01", {to}}}"#),
            "user",
        ),
        (
            format!(r#"{{"Text": "x", "MessageID": "no-brackets@x", {to}}}"#),
            "user",
        ),
        (
            format!(r#"{{"Text": "x", "References": ["<a>"], {to}}}"#),
            "user",
        ),
        (
            format!(r#"{{"Text": "x", "Headers": [["X-A", "v\r\nBcc: evil@x"]], {to}}}"#),
            "user",
        ),
        (
            format!(r#"{{"Text": "x", "Headers": [["Bad Name", "v"]], {to}}}"#),
            "user",
        ),
        (
            format!(r#"{{"Text": "x", "Headers": [["Subject", "v"]], {to}}}"#),
            "user",
        ),
        (
            format!(r#"{{"Text": "x", "AttachedFiles": [{{"Data": "***"}}], {to}}}"#),
            "user",
        ),
        (
            format!(
                r#"{{"Text": "x", "AttachedFiles": [{{"Data": "", "ContentType": "bad"}}], {to}}}"#
            ),
            "user",
        ),
        (
            format!(r#"{{"Text": "x", "InlineFiles": [{{"Data": "", "ContentID": "x"}}], {to}}}"#),
            "user",
        ),
    ];
    for (req, code) in cases {
        let e = send(&req).unwrap_err();
        assert_eq!(e.code, code, "{req}: {}", e.message);
    }
    let mut small = cx();
    small.max_size = 100;
    let r = parse::<SendRequest>(&format!(r#"{{"Text": "{}", {to}}}"#, "x".repeat(200))).unwrap();
    assert_eq!(compose(&r, &small).unwrap_err().code, "messageTooLarge");
    // The error's JSON is mox's shape.
    assert_eq!(
        ApiError::new("user", "m").to_json(),
        b"{\"Code\":\"user\",\"Message\":\"m\"}\n"
    );
}

/// Extra travels as X-Mox-Extra- headers with mox's canonical keys and is read back.
#[test]
fn extra_headers() {
    let c = send(r#"{"To": [{"Address": "b@example.org"}], "Text": "x", "Extra": {"customer-ID": "42", "plan": "gold"}}"#).unwrap();
    let text = String::from_utf8_lossy(&c.message);
    assert!(
        text.contains("\r\nX-Mox-Extra-Customer-Id: 42\r\n"),
        "{text}"
    );
    let got = extra_from_header(&c.message);
    assert_eq!(got.get("Customer-Id").map(String::as_str), Some("42"));
    assert_eq!(got.get("Plan").map(String::as_str), Some("gold"));
    assert_eq!(got.len(), 2);
    assert_eq!(canonical_extra_key("a--b"), Some("A--B".into()));
    assert_eq!(canonical_extra_key(""), None);
    assert!(extra_from_header(b"Subject: x\r\n\r\nX-Mox-Extra-A: body\r\n").is_empty());
}

#[test]
fn quoted_printable() {
    assert_eq!(quoted_printable_line(b"a=b "), "a=3Db=20\r\n");
    assert_eq!(quoted_printable_line(b".x"), "=2Ex\r\n");
    let long = quoted_printable_line(&[b'a'; 200]);
    assert!(long.split("\r\n").all(|l| l.len() <= 76));
}

proptest! {
    /// Any request body is read or refused, never a panic.
    #[test]
    fn request_json_never_panics(ct in prop::sample::select(vec!["application/json", "application/x-www-form-urlencoded", "text/plain"]), body in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = request_json(Some(ct), &body);
    }

    /// Any text, subject, names and header values compose into a message that mail-parser
    /// reads back with the same subject and text, with lines of at most 78 characters.
    #[test]
    fn compose_round_trips(subject in "\\PC{0,120}", text in "[\\PC\n]{1,300}", name in "\\PC{0,40}", hv in "[^\r\n]{0,100}") {
        let req = SendRequest {
            to: vec![NameAddress { name: name.clone(), address: "bob@example.org".into() }],
            subject: subject.clone(),
            text: text.clone(),
            headers: vec![["X-V".into(), hv]],
            ..Default::default()
        };
        let c = compose(&req, &cx()).unwrap();
        prop_assert!(c.message.split(|&b| b == b'\n').all(|l| l.len() <= 998));
        let m = read(&c.message);
        if !subject.trim().is_empty() {
            let want = subject.replace(['\r', '\n'], " ");
            prop_assert_eq!(m.subject().unwrap_or("").trim(), want.trim());
        }
        let want = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect::<Vec<_>>().join("\r\n") + "\r\n";
        let got = m.body_text(0).unwrap().into_owned();
        prop_assert_eq!(got, want);
    }
}
