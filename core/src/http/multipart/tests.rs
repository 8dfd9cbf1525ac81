//! Tests of the multipart/form-data reader: bodies captured from real clients (curl,
//! urllib3, requests), a table per grammar form, and proptests (no panic on any input;
//! composed bodies read back to the parts they were composed from).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;

/// A request body captured from a client, sent to a loopback listener that recorded it.
struct Vector {
    /// The request's Content-Type as the client sent it.
    content_type: &'static str,
    /// The request's Content-Length, to check that the body below is the capture, whole.
    content_length: usize,
    /// The body, byte for byte.
    body: &'static [u8],
}

/// curl 7.88.1 (the files: hello.txt, text with CRLF, LF and a `--` line; dot.png, bytes of
/// a PNG header with CR, LF, NUL and `--`):
///
/// ```text
/// curl -F 'request={"To":[{"Address":"rcpt@example.org"}],"Text":"hi"}' \
///   -F 'attachedfile=@hello.txt;type=text/plain' \
///   -F 'inlinefile=@dot.png;type=image/png;headers="Content-ID: <logo@example.org>"' \
///   -F 'alternativefile=@hello.txt;filename=alt.txt;type=text/plain' URL
/// ```
const CURL_SEND: Vector = Vector {
    content_type: "multipart/form-data; boundary=------------------------97934d0fe6085207",
    content_length: 763,
    body: b"\
--------------------------97934d0fe6085207\r\n\
Content-Disposition: form-data; name=\"request\"\r\n\
\r\n\
{\"To\":[{\"Address\":\"rcpt@example.org\"}],\"Text\":\"hi\"}\r\n\
--------------------------97934d0fe6085207\r\n\
Content-Disposition: form-data; name=\"attachedfile\"; filename=\"hello.txt\"\r\n\
Content-Type: text/plain\r\n\
\r\n\
Hello,\r\n\
world.\n\
--not a boundary\r\n\
\r\n\
--------------------------97934d0fe6085207\r\n\
Content-Disposition: form-data; name=\"inlinefile\"; filename=\"dot.png\"\r\n\
Content-Type: image/png\r\n\
Content-ID: <logo@example.org>\r\n\
\r\n\
\x89PNG\r\n\
\x1a\n\
\x00\x00\x00\rIHDR\r\n\
--\r\n\
-----\xff\xfe\r\n\
--------------------------97934d0fe6085207\r\n\
Content-Disposition: form-data; name=\"alternativefile\"; filename=\"alt.txt\"\r\n\
Content-Type: text/plain\r\n\
\r\n\
Hello,\r\n\
world.\n\
--not a boundary\r\n\
\r\n\
--------------------------97934d0fe6085207--\r\n\
",
};

/// curl 7.88.1 with a file named `a"b €.txt`: curl writes `"` as %22 and the UTF-8 raw.
///
/// ```text
/// curl -F 'request={}' -F 'attachedfile=@a"b €.txt' URL
/// ```
const CURL_PERCENT: Vector = Vector {
    content_type: "multipart/form-data; boundary=------------------------b585ca52801210fb",
    content_length: 302,
    body: b"\
--------------------------b585ca52801210fb\r\n\
Content-Disposition: form-data; name=\"request\"\r\n\
\r\n\
{}\r\n\
--------------------------b585ca52801210fb\r\n\
Content-Disposition: form-data; name=\"attachedfile\"; filename=\"a%22b \xe2\x82\xac.txt\"\r\n\
Content-Type: text/plain\r\n\
\r\n\
euro\n\
\r\n\
--------------------------b585ca52801210fb--\r\n\
",
};

/// curl 7.88.1 with backslash escapes instead of percent-encoding, a Windows path as the
/// file name:
///
/// ```text
/// curl --form-escape -F 'request={}' -F 'attachedfile=@a"b €.txt;filename=C:\x\a.txt' URL
/// ```
const CURL_FORM_ESCAPE: Vector = Vector {
    content_type: "multipart/form-data; boundary=------------------------547f884ad6dee652",
    content_length: 301,
    body: b"\
--------------------------547f884ad6dee652\r\n\
Content-Disposition: form-data; name=\"request\"\r\n\
\r\n\
{}\r\n\
--------------------------547f884ad6dee652\r\n\
Content-Disposition: form-data; name=\"attachedfile\"; filename=\"C:\\\\x\\\\a.txt\"\r\n\
Content-Type: text/plain\r\n\
\r\n\
euro\n\
\r\n\
--------------------------547f884ad6dee652--\r\n\
",
};

/// Python urllib3 2.7.0 (it writes `"` as %22 and leaves backslashes and UTF-8 raw):
///
/// ```text
/// inline = RequestField("inlinefile", b"\x00\x01\r\n--\xff", filename="logo.png",
///                       headers={"Content-ID": "<logo@example.org>"})
/// inline.make_multipart(content_type="image/png")
/// PoolManager().request("POST", url, fields=[
///     ("request", '{"Subject":"urllib3"}'),
///     ("attachedfile", ("dir\\r\u00e9sum\u00e9 \"v2\".csv", b"a,b\r\n1,2\r\n", "text/csv")),
///     inline])
/// ```
const URLLIB3: Vector = Vector {
    content_type: "multipart/form-data; boundary=311d3411153de386c05f8dee6909da5f",
    content_length: 488,
    body: b"\
--311d3411153de386c05f8dee6909da5f\r\n\
Content-Disposition: form-data; name=\"request\"\r\n\
\r\n\
{\"Subject\":\"urllib3\"}\r\n\
--311d3411153de386c05f8dee6909da5f\r\n\
Content-Disposition: form-data; name=\"attachedfile\"; filename=\"dir\\r\xc3\xa9sum\xc3\xa9 %22v2%22.csv\"\r\n\
Content-Type: text/csv\r\n\
\r\n\
a,b\r\n\
1,2\r\n\
\r\n\
--311d3411153de386c05f8dee6909da5f\r\n\
Content-Disposition: form-data; name=\"inlinefile\"; filename=\"logo.png\"\r\n\
Content-Type: image/png\r\n\
Content-ID: <logo@example.org>\r\n\
\r\n\
\x00\x01\r\n\
--\xff\r\n\
--311d3411153de386c05f8dee6909da5f--\r\n\
",
};

/// Python requests 2.34.2 (a file field repeated, an empty file without a type):
///
/// ```text
/// requests.post(url, data={"request": '{"Subject":"requests"}'}, files=[
///     ("attachedfile", ("notes.txt", b"line 1\nline 2\n", "text/plain")),
///     ("attachedfile", ("empty.bin", b"")),
///     ("inlinefile", ("pic.gif", b"GIF89a\r\n", "image/gif", {"Content-ID": "<pic@x>"}))])
/// ```
const REQUESTS: Vector = Vector {
    content_type: "multipart/form-data; boundary=b4620058142b3615d748edb4a7594679",
    content_length: 583,
    body: b"\
--b4620058142b3615d748edb4a7594679\r\n\
Content-Disposition: form-data; name=\"request\"\r\n\
\r\n\
{\"Subject\":\"requests\"}\r\n\
--b4620058142b3615d748edb4a7594679\r\n\
Content-Disposition: form-data; name=\"attachedfile\"; filename=\"notes.txt\"\r\n\
Content-Type: text/plain\r\n\
\r\n\
line 1\n\
line 2\n\
\r\n\
--b4620058142b3615d748edb4a7594679\r\n\
Content-Disposition: form-data; name=\"attachedfile\"; filename=\"empty.bin\"\r\n\
\r\n\
\r\n\
--b4620058142b3615d748edb4a7594679\r\n\
Content-Disposition: form-data; name=\"inlinefile\"; filename=\"pic.gif\"\r\n\
Content-Type: image/gif\r\n\
Content-ID: <pic@x>\r\n\
\r\n\
GIF89a\r\n\
\r\n\
--b4620058142b3615d748edb4a7594679--\r\n\
",
};

/// A part as expected: name, file name, content type, content ID, data.
type Expected<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    &'a [u8],
);

fn assert_parts(parts: &[FormPart<'_>], expected: &[Expected<'_>]) {
    let got: Vec<Expected<'_>> = parts
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.filename.as_deref(),
                p.content_type.as_deref(),
                p.content_id.as_deref(),
                p.data,
            )
        })
        .collect();
    assert_eq!(got, expected);
}

/// The parts of a captured body, after checking that it is the whole capture and that every
/// part's data is borrowed from it.
fn parse_vector(v: &Vector) -> Vec<FormPart<'static>> {
    assert_eq!(v.body.len(), v.content_length);
    let parts = parse_form_data(v.content_type, v.body, &FormLimits::default()).unwrap();
    check_invariants(v.body, &parts, &FormLimits::default());
    parts
}

/// What holds for every body that reads: parts within the limit, data inside the body, file
/// names without a directory.
fn check_invariants(body: &[u8], parts: &[FormPart<'_>], limits: &FormLimits) {
    assert!(parts.len() <= limits.max_parts);
    let range = body.as_ptr_range();
    for p in parts {
        let data = p.data.as_ptr_range();
        assert!(range.start <= data.start && data.end <= range.end);
        if let Some(f) = &p.filename {
            assert!(!f.contains(['/', '\\']), "{f:?}");
        }
    }
}

#[test]
fn curl_send_with_files() {
    let hello: &[u8] = b"Hello,\r\nworld.\n--not a boundary\r\n";
    assert_parts(
        &parse_vector(&CURL_SEND),
        &[
            (
                "request",
                None,
                None,
                None,
                br#"{"To":[{"Address":"rcpt@example.org"}],"Text":"hi"}"#,
            ),
            (
                "attachedfile",
                Some("hello.txt"),
                Some("text/plain"),
                None,
                hello,
            ),
            (
                "inlinefile",
                Some("dot.png"),
                Some("image/png"),
                Some("<logo@example.org>"),
                b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\r\n--\r\n-----\xff\xfe",
            ),
            (
                "alternativefile",
                Some("alt.txt"),
                Some("text/plain"),
                None,
                hello,
            ),
        ],
    );
}

#[test]
fn curl_percent_encoded_quote_and_raw_utf8() {
    assert_parts(
        &parse_vector(&CURL_PERCENT),
        &[
            ("request", None, None, None, b"{}"),
            (
                "attachedfile",
                Some("a\"b \u{20ac}.txt"),
                Some("text/plain"),
                None,
                b"euro\n",
            ),
        ],
    );
}

#[test]
fn curl_form_escape_windows_path() {
    assert_parts(
        &parse_vector(&CURL_FORM_ESCAPE),
        &[
            ("request", None, None, None, b"{}"),
            (
                "attachedfile",
                Some("a.txt"),
                Some("text/plain"),
                None,
                b"euro\n",
            ),
        ],
    );
}

#[test]
fn urllib3_unescaped_backslash_and_percent_quote() {
    assert_parts(
        &parse_vector(&URLLIB3),
        &[
            ("request", None, None, None, br#"{"Subject":"urllib3"}"#),
            (
                "attachedfile",
                Some("r\u{e9}sum\u{e9} \"v2\".csv"),
                Some("text/csv"),
                None,
                b"a,b\r\n1,2\r\n",
            ),
            (
                "inlinefile",
                Some("logo.png"),
                Some("image/png"),
                Some("<logo@example.org>"),
                b"\x00\x01\r\n--\xff",
            ),
        ],
    );
}

#[test]
fn requests_repeated_field_and_empty_file() {
    assert_parts(
        &parse_vector(&REQUESTS),
        &[
            ("request", None, None, None, br#"{"Subject":"requests"}"#),
            (
                "attachedfile",
                Some("notes.txt"),
                Some("text/plain"),
                None,
                b"line 1\nline 2\n",
            ),
            ("attachedfile", Some("empty.bin"), None, None, b""),
            (
                "inlinefile",
                Some("pic.gif"),
                Some("image/gif"),
                Some("<pic@x>"),
                b"GIF89a\r\n",
            ),
        ],
    );
}

#[test]
fn boundary_forms() {
    let b70 = "a".repeat(70);
    let b71 = "a".repeat(71);
    let ok = |s: &str| Ok(s.to_string());
    let cases: Vec<(String, Result<String, FormError>)> = vec![
        ("multipart/form-data; boundary=abc".into(), ok("abc")),
        ("Multipart/Form-Data;BOUNDARY=abc".into(), ok("abc")),
        (
            " multipart/form-data ; boundary = \"abc\" ".into(),
            ok("abc"),
        ),
        (
            "multipart/form-data; charset=utf-8; boundary=\"'()+_,-./:=? 09azAZ\"".into(),
            ok("'()+_,-./:=? 09azAZ"),
        ),
        ("multipart/form-data; boundary=a b".into(), ok("a b")),
        ("multipart/form-data; boundary=x;".into(), ok("x")),
        (format!("multipart/form-data; boundary={b70}"), ok(&b70)),
        ("multipart/form-data".into(), Err(FormError::NoBoundary)),
        (
            "multipart/form-data; charset=utf-8".into(),
            Err(FormError::NoBoundary),
        ),
        (
            "multipart/mixed; boundary=abc".into(),
            Err(FormError::NotFormData("multipart/mixed".into())),
        ),
        (
            "application/json".into(),
            Err(FormError::NotFormData("application/json".into())),
        ),
        ("".into(), Err(FormError::NotFormData("".into()))),
        (
            "multipart/form-data; boundary=\"\"".into(),
            Err(FormError::BadBoundary("it is empty")),
        ),
        (
            format!("multipart/form-data; boundary={b71}"),
            Err(FormError::BadBoundary("it is longer than 70 characters")),
        ),
        (
            "multipart/form-data; boundary=\"ab \"".into(),
            Err(FormError::BadBoundary("it ends with a space")),
        ),
        (
            "multipart/form-data; boundary=\"a\\\"b\"".into(),
            Err(FormError::BadBoundary(
                "it has a character outside that set",
            )),
        ),
        (
            "multipart/form-data; boundary=a*b".into(),
            Err(FormError::BadBoundary(
                "it has a character outside that set",
            )),
        ),
        (
            "multipart/form-data; boundary=\u{e9}".into(),
            Err(FormError::BadBoundary(
                "it has a character outside that set",
            )),
        ),
        (
            "multipart/form-data; boundary=a; boundary=b".into(),
            Err(FormError::BadBoundary("it is given twice")),
        ),
        (
            "multipart/form-data; boundary=\"abc".into(),
            Err(FormError::Malformed(
                "the request's Content-Type: parameter boundary: unterminated quoted string".into(),
            )),
        ),
        (
            "multipart/form-data; boundary".into(),
            Err(FormError::Malformed(
                "the request's Content-Type: parameter boundary has no value".into(),
            )),
        ),
        (
            "multipart/form-data; =abc".into(),
            Err(FormError::Malformed(
                "the request's Content-Type: expected a parameter name at \"=abc\"".into(),
            )),
        ),
    ];
    for (ct, expected) in cases {
        assert_eq!(boundary(&ct), expected, "{ct:?}");
    }
}

const CT: &str = "multipart/form-data; boundary=XyZ";

fn form(body: &[u8]) -> Result<Vec<FormPart<'_>>, FormError> {
    parse_form_data(CT, body, &FormLimits::default())
}

#[test]
fn body_forms() {
    let cases: &[(&str, &[u8], &[Expected<'_>])] = &[
        (
            "minimal, no line end after the close delimiter",
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ--",
            &[("a", None, None, None, b"1")],
        ),
        (
            "preamble, lines that only look like delimiters, epilogue",
            b"preamble\r\n--XyZnot\r\n--XyZ-x\r\n--XyZ\r\nContent-Disposition: form-data; \
              name=a\r\n\r\nv\r\n--XyZ--\r\nepilogue\r\n--XyZ\r\nbroken",
            &[("a", None, None, None, b"v")],
        ),
        (
            "preamble ended by a bare LF",
            b"preamble\n--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--XyZ--",
            &[("a", None, None, None, b"v")],
        ),
        (
            "transport padding",
            b"--XyZ \t\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--XyZ\t\r\n\
              Content-Disposition: form-data; name=b\r\n\r\nw\r\n--XyZ--  \r\n",
            &[("a", None, None, None, b"v"), ("b", None, None, None, b"w")],
        ),
        (
            "empty data",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n\r\n--XyZ--\r\n",
            &[("a", None, None, None, b"")],
        ),
        (
            "header fields then the delimiter (a part without a body)",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n--XyZ--\r\n",
            &[("a", None, None, None, b"")],
        ),
        (
            "data with dashes, boundary prefixes, CR and LF",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n\
              x--XyZ\r\n\r\n--XyZX\r\n--Xy\r\n--\n--XyZ\r\r\n-\r\n--XyZ--",
            &[(
                "a",
                None,
                None,
                None,
                b"x--XyZ\r\n\r\n--XyZX\r\n--Xy\r\n--\n--XyZ\r\r\n-",
            )],
        ),
        (
            "data that starts with an empty line",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n\r\n\r\nx\r\n--XyZ--",
            &[("a", None, None, None, b"\r\n\r\nx")],
        ),
        (
            "bare LF line ends (a script)",
            b"--XyZ\nContent-Disposition: form-data; name=a\n\nline1\r\nline2\n--XyZ\n\
              Content-Disposition: form-data; name=b\r\n\r\nw\r\n--XyZ--\n",
            &[
                ("a", None, None, None, b"line1\r\nline2"),
                ("b", None, None, None, b"w\r"),
            ],
        ),
        (
            "CRLF body with a bare LF line in the headers",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\n\r\nv\r\n--XyZ--",
            &[("a", None, None, None, b"v")],
        ),
        (
            "folded fields, names in any case, unknown fields",
            b"--XyZ\r\nCONTENT-disposition: Form-Data;\r\n\tNAME=\"a\";\r\n FileName=\"f.txt\"\r\n\
              content-type: text/plain;\r\n charset=utf-8\r\nX-Other: ignored\r\n\
              content-id:  <c@x> \r\n\r\nv\r\n--XyZ--",
            &[(
                "a",
                Some("f.txt"),
                Some("text/plain; charset=utf-8"),
                Some("<c@x>"),
                b"v",
            )],
        ),
        (
            "no spaces",
            b"--XyZ\r\nContent-Disposition:form-data;name=a;filename=b.txt\r\nContent-Type:x/y\r\n\
              \r\nv\r\n--XyZ--",
            &[("a", Some("b.txt"), Some("x/y"), None, b"v")],
        ),
        (
            "filename* (RFC 8187) preferred over filename",
            b"--XyZ\r\nContent-Disposition: form-data; name=f; filename=\"fallback.txt\"; \
              filename*=UTF-8''%E2%82%AC.txt\r\n\r\nv\r\n--XyZ\r\n\
              Content-Disposition: form-data; name=g; filename*=iso-8859-1'en'%a3%20rates.txt\r\n\
              \r\nw\r\n--XyZ--",
            &[
                ("f", Some("\u{20ac}.txt"), None, None, b"v"),
                ("g", Some("\u{a3} rates.txt"), None, None, b"w"),
            ],
        ),
        (
            "directories removed from file names",
            b"--XyZ\r\nContent-Disposition: form-data; name=a; filename=\"C:\\x\\a.txt\"\r\n\
              \r\n1\r\n--XyZ\r\nContent-Disposition: form-data; name=b; \
              filename=\"../../etc/passwd\"\r\n\r\n2\r\n--XyZ\r\n\
              Content-Disposition: form-data; name=c; filename=\"dir/\"\r\n\r\n3\r\n--XyZ\r\n\
              Content-Disposition: form-data; name=d; filename*=UTF-8''..%2F..%5Cx.txt\r\n\r\n\
              4\r\n--XyZ--",
            &[
                ("a", Some("a.txt"), None, None, b"1"),
                ("b", Some("passwd"), None, None, b"2"),
                ("c", Some(""), None, None, b"3"),
                ("d", Some("x.txt"), None, None, b"4"),
            ],
        ),
        (
            "backslash escapes, HTML's %22 %0D %0A, raw UTF-8, tokens",
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\\\"b\\\\c\\d\"\r\n\r\n\
              1\r\n--XyZ\r\n\
              Content-Disposition: form-data; name=\"q%22%0d%0Ax%41%\"\r\n\r\n2\r\n--XyZ\r\n\
              Content-Disposition: form-data; name=\"\xc3\xa9t\xc3\xa9\"\r\n\r\n3\r\n--XyZ\r\n\
              Content-Disposition: form-data; name=tok; filename=f.bin\r\n\r\n4\r\n--XyZ\r\n\
              Content-Disposition: form-data; name=\"\"\r\n\r\n5\r\n--XyZ--",
            &[
                ("a\"b\\c\\d", None, None, None, b"1"),
                ("q\"\r\nx%41%", None, None, None, b"2"),
                ("\u{e9}t\u{e9}", None, None, None, b"3"),
                ("tok", Some("f.bin"), None, None, b"4"),
                ("", None, None, None, b"5"),
            ],
        ),
        (
            "a file input with no file chosen (browsers)",
            b"--XyZ\r\nContent-Disposition: form-data; name=\"attachedfile\"; filename=\"\"\r\n\
              Content-Type: application/octet-stream\r\n\r\n\r\n--XyZ--\r\n",
            &[(
                "attachedfile",
                Some(""),
                Some("application/octet-stream"),
                None,
                b"",
            )],
        ),
        (
            "empty Content-Type and Content-ID, binary transfer encoding",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\nContent-Type:\r\nContent-ID: \r\n\
              Content-Transfer-Encoding: BINARY\r\n\r\n\x00\xff\r\n--XyZ--",
            &[("a", None, None, None, b"\x00\xff")],
        ),
        (
            "bytes that are not UTF-8 in a name",
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\xffb\"\r\n\r\nv\r\n--XyZ--",
            &[("a\u{fffd}b", None, None, None, b"v")],
        ),
        ("a close delimiter only: no parts", b"--XyZ--\r\n", &[]),
    ];
    for (what, body, expected) in cases {
        let parts = form(body).unwrap_or_else(|e| panic!("{what}: {e}"));
        check_invariants(body, &parts, &FormLimits::default());
        let got: Vec<_> = parts.iter().map(|p| p.name.clone()).collect();
        assert_eq!(parts.len(), expected.len(), "{what}: {got:?}");
        assert_parts(&parts, expected);
    }
}

#[test]
fn quoted_boundary_with_odd_characters() {
    let ct = "multipart/form-data; boundary=\"'()+_,-./:=? 9\"";
    let body = b"--'()+_,-./:=? 9\r\nContent-Disposition: form-data; name=a\r\n\r\n\
                 --'()+_,-./:=? \r\n--'()+_,-./:=? 9--";
    let parts = parse_form_data(ct, body, &FormLimits::default()).unwrap();
    assert_parts(&parts, &[("a", None, None, None, b"--'()+_,-./:=? ")]);
}

/// Bodies that do not read: (what, body, the error's message).
#[test]
fn malformed_bodies() {
    let truncated = "multipart/form-data: truncated: the body ends before the close \
                     delimiter \"--XyZ--\"";
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "empty body",
            b"",
            "multipart/form-data: no delimiter line \"--XyZ\" in the body \
          (is the boundary parameter the one the body uses?)",
        ),
        (
            "another boundary",
            b"--abc\r\n\r\n--abc--",
            "no delimiter line",
        ),
        (
            "only look-alikes",
            b"--XyZz\r\n\r\n\r\n--XyZ-a",
            "no delimiter line",
        ),
        (
            "no close delimiter",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n",
            truncated,
        ),
        ("first line only", b"--XyZ\r\n", truncated),
        ("first line without its line end", b"--XyZ", truncated),
        ("first line with a lone CR", b"--XyZ  \r", truncated),
        (
            "ends inside the close delimiter",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--XyZ-",
            truncated,
        ),
        (
            "ends after a delimiter",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--XyZ",
            truncated,
        ),
        (
            "ends after padding",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--XyZ \t",
            truncated,
        ),
        (
            "no name",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--XyZ\r\n\
              Content-Disposition: form-data; filename=x.txt\r\n\r\n2\r\n--XyZ--",
            "multipart/form-data: part 2: Content-Disposition: no name parameter \
             (form-data; name=\"...\")",
        ),
        (
            "no Content-Disposition",
            b"--XyZ\r\nContent-Type: text/plain\r\n\r\n1\r\n--XyZ--",
            "multipart/form-data: part 1 has no Content-Disposition header field \
             (form-data; name=\"...\")",
        ),
        (
            "an empty part",
            b"--XyZ\r\n\r\n--XyZ--",
            "part 1 has no Content-Disposition",
        ),
        (
            "not form-data",
            b"--XyZ\r\nContent-Disposition: attachment; name=a\r\n\r\n1\r\n--XyZ--",
            "multipart/form-data: part 1: Content-Disposition: the disposition is \
             \"attachment\", not form-data",
        ),
        (
            "name twice",
            b"--XyZ\r\nContent-Disposition: form-data; name=a; NAME=b\r\n\r\n1\r\n--XyZ--",
            "part 1: Content-Disposition: parameter name appears twice",
        ),
        (
            "Content-Type twice",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\nContent-Type: a/b\r\n\
              content-type: c/d\r\n\r\n1\r\n--XyZ--",
            "part 1: header field content-type appears twice",
        ),
        (
            "a header line without a colon",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\nbogus\r\n\r\n1\r\n--XyZ--",
            "part 1: header line \"bogus\" has no colon",
        ),
        (
            "a header line without a name",
            b"--XyZ\r\n: x\r\n\r\n1\r\n--XyZ--",
            "part 1: a header line has no field name",
        ),
        (
            "header fields not ended",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n--XyZ--",
            "part 1: the header section does not end with an empty line",
        ),
        (
            "a continuation line first",
            b"--XyZ\r\n folded\r\n\r\n1\r\n--XyZ--",
            "part 1: the header section starts with a continuation line",
        ),
        (
            "an unterminated quoted string",
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\r\n\r\n1\r\n--XyZ--",
            "part 1: Content-Disposition: parameter name: unterminated quoted string",
        ),
        (
            "text after a quoted string",
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\" filename=\"b\"\r\n\r\n1\r\n\
              --XyZ--",
            "parameter name: text after the closing quote (a missing \";\"?)",
        ),
        (
            "a filename* that is not UTF-8",
            b"--XyZ\r\nContent-Disposition: form-data; name=a; filename*=UTF-8''%E2%82\r\n\r\n\
              1\r\n--XyZ--",
            "part 1: Content-Disposition: filename*: the decoded name is not UTF-8",
        ),
        (
            "a filename* in another charset",
            b"--XyZ\r\nContent-Disposition: form-data; name=a; filename*=koi8-r''%C1\r\n\r\n\
              1\r\n--XyZ--",
            "filename*: unsupported charset \"koi8-r\" (use UTF-8)",
        ),
        (
            "a filename* without charset",
            b"--XyZ\r\nContent-Disposition: form-data; name=a; filename*=x.txt\r\n\r\n\
              1\r\n--XyZ--",
            "filename* is not charset'language'value (RFC 8187)",
        ),
        (
            "a filename* with a bad percent",
            b"--XyZ\r\nContent-Disposition: form-data; name=a; filename*=UTF-8''%G1\r\n\r\n\
              1\r\n--XyZ--",
            "filename*: a % not followed by two hex digits",
        ),
        (
            "a filename* cut in a percent",
            b"--XyZ\r\nContent-Disposition: form-data; name=a; filename*=UTF-8''a%2\r\n\r\n\
              1\r\n--XyZ--",
            "filename*: a % not followed by two hex digits",
        ),
    ];
    for (what, body, message) in cases {
        match form(body) {
            Err(e @ FormError::Malformed(_)) => {
                let text = e.to_string();
                assert!(text.contains(message), "{what}: {text}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn not_form_data() {
    assert_eq!(
        parse_form_data("application/json", b"{}", &FormLimits::default()),
        Err(FormError::NotFormData("application/json".into()))
    );
    assert_eq!(
        parse_form_data("multipart/form-data", b"--x--", &FormLimits::default()),
        Err(FormError::NoBoundary)
    );
}

/// A body of `n` parts named p1, p2...
fn parts_body(n: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 1..=n {
        body.extend_from_slice(
            format!("--XyZ\r\nContent-Disposition: form-data; name=p{i}\r\n\r\n{i}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(b"--XyZ--\r\n");
    body
}

#[test]
fn too_many_parts() {
    let limits = FormLimits {
        max_parts: 3,
        ..FormLimits::default()
    };
    assert_eq!(
        parse_form_data(CT, &parts_body(3), &limits).unwrap().len(),
        3
    );
    assert_eq!(
        parse_form_data(CT, &parts_body(4), &limits),
        Err(FormError::TooManyParts(3))
    );
    let limits = FormLimits {
        max_parts: 0,
        ..FormLimits::default()
    };
    assert_eq!(parse_form_data(CT, b"--XyZ--", &limits), Ok(Vec::new()));
    assert_eq!(
        parse_form_data(CT, &parts_body(1), &limits),
        Err(FormError::TooManyParts(0))
    );
    assert_eq!(form(&parts_body(256)).unwrap().len(), 256);
    assert_eq!(form(&parts_body(257)), Err(FormError::TooManyParts(256)));
}

#[test]
fn header_too_large() {
    let headers = b"Content-Disposition: form-data; name=a\r\n\r\n";
    let body = [
        b"--XyZ\r\n".as_slice(),
        headers,
        b"v\r\n--XyZ\r\n",
        headers,
        b"w\r\n--XyZ\r\nContent-Disposition: form-data; name=b\r\n",
        &[b'x'; 100],
        b"\r\n--XyZ--",
    ]
    .concat();
    let limits = |max| FormLimits {
        max_part_header_bytes: max,
        ..FormLimits::default()
    };
    // The empty line counts: one byte less and the first part's header section is too
    // large.
    assert_eq!(
        parse_form_data(CT, &body, &limits(headers.len() - 1)),
        Err(FormError::HeaderTooLarge {
            part: 1,
            limit: headers.len() - 1
        })
    );
    // At the limit the first two parts read and the third, a header line longer than the
    // limit, is refused as too large, not as malformed.
    assert_eq!(
        parse_form_data(CT, &body, &limits(headers.len())),
        Err(FormError::HeaderTooLarge {
            part: 3,
            limit: headers.len()
        })
    );
    // A big limit lets the third part's missing empty line show.
    assert!(matches!(
        parse_form_data(CT, &body, &limits(1000)),
        Err(FormError::Malformed(m)) if m.contains("part 3: the header section does not end")
    ));
    // Data is not header: a large part under a small header limit.
    let big = [
        b"--XyZ\r\n".as_slice(),
        headers,
        &[b'd'; 10_000],
        b"\r\n--XyZ--",
    ]
    .concat();
    assert_eq!(
        parse_form_data(CT, &big, &limits(headers.len())).unwrap()[0]
            .data
            .len(),
        10_000
    );
}

#[test]
fn transfer_encoding_refused() {
    let body = b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--XyZ--";
    assert_eq!(
        form(body),
        Err(FormError::UnsupportedTransferEncoding {
            part: 1,
            encoding: "base64".into()
        })
    );
}

#[test]
fn error_messages() {
    let cases = [
        (
            FormError::NotFormData("text/plain".into()),
            "multipart/form-data: the request's Content-Type is \"text/plain\", not \
             multipart/form-data",
        ),
        (
            FormError::NoBoundary,
            "multipart/form-data: the request's Content-Type has no boundary parameter",
        ),
        (
            FormError::BadBoundary("it ends with a space"),
            "multipart/form-data: bad boundary parameter: it ends with a space (RFC 2046: 1 to \
             70 letters, digits, spaces and '()+_,-./:=? characters, not ending in a space)",
        ),
        (
            FormError::TooManyParts(256),
            "multipart/form-data: more than 256 parts",
        ),
        (
            FormError::HeaderTooLarge {
                part: 2,
                limit: 8192,
            },
            "multipart/form-data: the header section of part 2 is larger than 8192 bytes",
        ),
        (
            FormError::UnsupportedTransferEncoding {
                part: 1,
                encoding: "base64".into(),
            },
            "multipart/form-data: part 1 has Content-Transfer-Encoding \"base64\": send the \
             data as it is, without a transfer encoding (RFC 7578 4.7)",
        ),
    ];
    for (e, text) in cases {
        assert_eq!(e.to_string(), text);
    }
}

/// A part to compose a body from.
#[derive(Clone, Debug)]
struct Spec {
    name: String,
    /// The file name, and whether to send it as filename* (RFC 8187).
    filename: Option<(String, bool)>,
    content_type: Option<String>,
    content_id: Option<String>,
    data: Vec<u8>,
}

/// A quoted string as a careful client writes it: backslash escapes for `\` and `"`, the
/// HTML form encoding for CR and LF.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An RFC 8187 ext-value, every byte but letters and digits percent-encoded.
fn ext_value(s: &str) -> String {
    let mut out = String::from("UTF-8''");
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A body with the given line end and transport padding after each delimiter.
fn compose(
    boundary: &str,
    specs: &[Spec],
    nl: &str,
    padding: &str,
    preamble: &str,
    epilogue: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    if !preamble.is_empty() {
        body.extend_from_slice(format!("{preamble}{nl}").as_bytes());
    }
    for s in specs {
        let mut head = format!(
            "--{boundary}{padding}{nl}Content-Disposition: form-data; name={}",
            quote(&s.name)
        );
        match &s.filename {
            Some((f, false)) => head.push_str(&format!("; filename={}", quote(f))),
            Some((f, true)) => head.push_str(&format!("; filename*={}", ext_value(f))),
            None => {}
        }
        head.push_str(nl);
        if let Some(ct) = &s.content_type {
            head.push_str(&format!("Content-Type: {ct}{nl}"));
        }
        if let Some(id) = &s.content_id {
            head.push_str(&format!("Content-ID: {id}{nl}"));
        }
        head.push_str(nl);
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(&s.data);
        body.extend_from_slice(nl.as_bytes());
    }
    body.extend_from_slice(format!("--{boundary}--{nl}").as_bytes());
    body.extend_from_slice(epilogue);
    body
}

/// Whether `data` holds what would read as a delimiter (conservatively: the delimiter
/// followed by anything that could continue a delimiter line, or nothing).
fn breaks_framing(data: &[u8], needle: &[u8]) -> bool {
    memmem::find_iter(data, needle).any(|at| {
        matches!(
            data.get(at + needle.len()),
            None | Some(b'-' | b' ' | b'\t' | b'\r' | b'\n')
        )
    })
}

/// RFC 2046 boundaries: 1 to 70 bchars, not ending in a space.
fn arb_boundary() -> impl Strategy<Value = String> {
    "[0-9A-Za-z'()+_,./:=?-]([0-9A-Za-z'()+_,./:=? -]{0,68}[0-9A-Za-z'()+_,./:=?-])?"
}

/// Data: random bytes, line ends, dashes and the delimiter's prefixes.
fn arb_data(boundary: String) -> impl Strategy<Value = Vec<u8>> {
    let prefix = boundary.into_bytes();
    let len = prefix.len();
    let fragment = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..8),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => Just(b"--".to_vec()),
        2 => (0..=len).prop_map(move |k| [b"\r\n--".as_slice(), &prefix[..k]].concat()),
    ];
    prop::collection::vec(fragment, 0..8).prop_map(|v| v.concat())
}

fn arb_spec(boundary: String) -> impl Strategy<Value = Spec> {
    (
        "[^%]{0,12}",
        prop::option::of(("[^%/\\\\]{0,12}", any::<bool>())),
        prop::option::of("[a-z]{1,8}/[a-z0-9.+-]{1,8}"),
        prop::option::of("<[a-z0-9.@]{1,12}>"),
        arb_data(boundary),
    )
        .prop_map(|(name, filename, content_type, content_id, data)| Spec {
            name,
            filename,
            content_type,
            content_id,
            data,
        })
}

/// Fragments of multipart syntax for bodies that get far into the reader.
fn arb_noise() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        Just(b"--XyZ".to_vec()),
        Just(b"--".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b" ".to_vec()),
        Just(b"Content-Disposition: form-data; name=".to_vec()),
        Just(b"; filename=".to_vec()),
        Just(b"; filename*=UTF-8''%E2%8".to_vec()),
        Just(b"Content-Type: a/b".to_vec()),
        Just(b"Content-Transfer-Encoding: binary".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"%22".to_vec()),
        Just(b"/".to_vec()),
        prop::collection::vec(any::<u8>(), 0..4),
    ];
    prop::collection::vec(fragment, 0..48).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..512),
        ct in ".{0,40}",
    ) {
        let limits = FormLimits::default();
        if let Ok(parts) = parse_form_data(CT, &body, &limits) {
            check_invariants(&body, &parts, &limits);
        }
        if let Ok(parts) = parse_form_data(&ct, &body, &limits) {
            check_invariants(&body, &parts, &limits);
        }
        let ct = format!("multipart/form-data; boundary={ct}");
        let _ = boundary(&ct);
        if let Ok(parts) = parse_form_data(&ct, &body, &limits) {
            check_invariants(&body, &parts, &limits);
        }
    }

    #[test]
    fn multipart_noise_never_panics(
        body in arb_noise(),
        max_parts in 0usize..4,
        max_header in 0usize..80,
    ) {
        let limits = FormLimits { max_parts, max_part_header_bytes: max_header };
        for limits in [limits, FormLimits::default()] {
            if let Ok(parts) = parse_form_data(CT, &body, &limits) {
                check_invariants(&body, &parts, &limits);
            }
        }
    }

    #[test]
    fn composed_bodies_read_back(
        (boundary, specs) in arb_boundary()
            .prop_flat_map(|b| (Just(b.clone()), prop::collection::vec(arb_spec(b), 0..6))),
        lf in any::<bool>(),
        padding in "[ \t]{0,2}",
        preamble in "[a-z ]{0,16}",
        epilogue in prop::collection::vec(any::<u8>(), 0..16),
        quoted in any::<bool>(),
    ) {
        let nl = if lf { "\n" } else { "\r\n" };
        let needle = format!("{nl}--{boundary}");
        for s in &specs {
            // The line end that ends the header section comes before the data.
            let after_headers = [nl.as_bytes(), &s.data].concat();
            prop_assume!(!breaks_framing(&after_headers, needle.as_bytes()));
        }
        let body = compose(&boundary, &specs, nl, &padding, &preamble, &epilogue);
        let ct = if quoted || !boundary.bytes().all(is_token_byte) {
            format!("multipart/form-data; boundary=\"{boundary}\"")
        } else {
            format!("multipart/form-data; boundary={boundary}")
        };
        let parts = parse_form_data(&ct, &body, &FormLimits::default());
        prop_assert!(parts.is_ok(), "{:?}", parts);
        let parts = parts.unwrap();
        prop_assert_eq!(parts.len(), specs.len());
        for (p, s) in parts.iter().zip(&specs) {
            prop_assert_eq!(&p.name, &s.name);
            prop_assert_eq!(p.filename.as_deref(), s.filename.as_ref().map(|(f, _)| f.as_str()));
            prop_assert_eq!(&p.content_type, &s.content_type);
            prop_assert_eq!(&p.content_id, &s.content_id);
            prop_assert_eq!(p.data, &s.data[..]);
        }
    }
}
