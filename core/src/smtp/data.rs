//! The DATA codec: dot-unstuffing with smuggling protection (server) and dot-stuffing (client).

/// How a DATA transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataEnd {
    /// A bare CR or LF was seen next to a dot (an SMTP smuggling attempt, or a broken
    /// client): the message must be refused with `500 5.5.2`.
    pub smuggling: bool,
    /// More than the size limit was received; the excess was discarded.
    pub too_large: bool,
    /// A bare CR or bare LF was seen anywhere in the message.
    pub bare_newline: bool,
}

/// Reads DATA content up to and including `CRLF.CRLF`.
///
/// Only `CRLF . CRLF` (or `. CRLF` right at the start) ends the data. A line that holds
/// just a dot but has a bare CR or bare LF on either side (`\n.\n`, `\r\n.\r`, ...) is
/// content, and sets [`DataEnd::smuggling`]. A leading dot is removed from lines that
/// start after CRLF (dot-unstuffing); after a bare CR or LF nothing is removed. The state
/// carries across [`DataReader::feed`] calls, so any split of the input gives the same
/// message.
#[derive(Debug)]
pub struct DataReader {
    pub(crate) max_size: u64,
    pub(crate) size: u64,
    pub(crate) state: u8,
    pub(crate) end: DataEnd,
}

// Reader states. A CR, or a dot at a line start, is held back until the next byte shows
// what it is.
/// At a line start after CRLF, or at the start of the message.
const LINE_START: u8 = 0;
/// At a line start after a bare CR or bare LF.
const LINE_START_BARE: u8 = 1;
/// Inside a line.
const MID: u8 = 2;
/// After a CR (held back).
const CR: u8 = 3;
/// After a dot at a [`LINE_START`] (held back).
const DOT: u8 = 4;
/// After a dot at a [`LINE_START_BARE`] (held back).
const DOT_BARE: u8 = 5;
/// After `.` CR at a [`LINE_START`] (held back).
const DOT_CR: u8 = 6;
/// After `.` CR at a [`LINE_START_BARE`] (held back).
const DOT_CR_BARE: u8 = 7;
/// The end was seen.
const ENDED: u8 = 8;

/// What to do with the byte just looked at.
enum Step {
    /// It was used; go to the next byte.
    Next,
    /// The state changed without using it; look at it again.
    Again,
    /// It completed `CRLF.CRLF`.
    End,
}

impl DataReader {
    /// A reader for one message of at most `max_size` octets (after unstuffing, the
    /// terminating `.CRLF` not included).
    pub fn new(max_size: u64) -> Self {
        DataReader {
            max_size,
            size: 0,
            state: LINE_START,
            end: DataEnd {
                smuggling: false,
                too_large: false,
                bare_newline: false,
            },
        }
    }

    /// Message octets seen so far (including any beyond the limit that were discarded).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Consumes DATA bytes, appending the unstuffed message to `out`. Returns how many
    /// bytes of `input` were consumed: all of them until the end is seen, then exactly up to
    /// and including the final `.CRLF` (the rest is the next command), together with
    /// `Some(end)`. After the end, further calls consume nothing and return the same end.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Option<DataEnd>) {
        if self.state == ENDED {
            return (0, Some(self.end));
        }
        let mut i = 0;
        while let Some(rest) = input.get(i..) {
            let Some(&b) = rest.first() else { break };
            if self.state == MID || (self.state == LINE_START && b != b'.') {
                // Fast path: ordinary lines are copied whole, many at a time.
                let (n, line_start) = plain_run(rest);
                if n > 0 {
                    self.emit(out, rest.get(..n).unwrap_or_default());
                    self.state = if line_start { LINE_START } else { MID };
                    i += n;
                    continue;
                }
            }
            match self.step(b, out) {
                Step::Next => i += 1,
                Step::Again => {}
                Step::End => {
                    self.state = ENDED;
                    return (i + 1, Some(self.end));
                }
            }
        }
        (i, None)
    }

    /// Appends message bytes, up to the size limit: the first `max_size` octets of the
    /// message are kept whatever the chunking.
    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        let before = self.size;
        self.size = before.saturating_add(bytes.len() as u64);
        if before < self.max_size {
            let room = usize::try_from(self.max_size - before).unwrap_or(usize::MAX);
            out.extend_from_slice(bytes.get(..room).unwrap_or(bytes));
        }
        if self.size > self.max_size {
            self.end.too_large = true;
        }
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> Step {
        match (self.state, b) {
            (LINE_START, b'.') => self.state = DOT,
            (LINE_START_BARE, b'.') => self.state = DOT_BARE,
            (LINE_START | LINE_START_BARE | MID, b'\r') => self.state = CR,
            (LINE_START | LINE_START_BARE | MID, b'\n') => {
                self.end.bare_newline = true;
                self.emit(out, b"\n");
                self.state = LINE_START_BARE;
            }
            (LINE_START | LINE_START_BARE | MID, _) => {
                self.emit(out, &[b]);
                self.state = MID;
            }
            (CR, b'\n') => {
                self.emit(out, b"\r\n");
                self.state = LINE_START;
            }
            (CR, _) => {
                // A bare CR; it ends a line as far as smuggling is concerned.
                self.end.bare_newline = true;
                self.emit(out, b"\r");
                self.state = LINE_START_BARE;
                return Step::Again;
            }
            (DOT | DOT_BARE, b'\r') => {
                self.state = if self.state == DOT {
                    DOT_CR
                } else {
                    DOT_CR_BARE
                };
            }
            (DOT | DOT_BARE, _) => {
                if b == b'\n' {
                    // `.` then a bare LF: a fake end of data.
                    self.end.smuggling = true;
                }
                // The leading dot is dropped only after a real CRLF.
                if self.state == DOT_BARE {
                    self.emit(out, b".");
                }
                self.state = MID;
                return Step::Again;
            }
            (DOT_CR, b'\n') => return Step::End,
            (DOT_CR_BARE, b'\n') => {
                // A bare CR or LF, a dot, CRLF: a fake end of data.
                self.end.smuggling = true;
                self.end.bare_newline = true;
                self.emit(out, b".\r\n");
                self.state = LINE_START;
            }
            (DOT_CR | DOT_CR_BARE, _) => {
                // `.` then a bare CR: a fake end of data.
                self.end.smuggling = true;
                self.end.bare_newline = true;
                if self.state == DOT_CR_BARE {
                    self.emit(out, b".");
                }
                self.emit(out, b"\r");
                self.state = LINE_START_BARE;
                return Step::Again;
            }
            _ => {
                // ENDED is handled in feed; nothing else exists.
                self.state = ENDED;
                return Step::End;
            }
        }
        Step::Next
    }
}

/// The length of the longest start of `rest` that is ordinary content where the reader is
/// inside a line or at a line start before anything but a dot: bytes other than CR and LF,
/// and CRLFs whose next byte is in `rest` and is not a dot. Whether it ends right after a
/// CRLF (a line start) comes with it. What stops it (a dot after CRLF, a bare CR or LF, a
/// CR or CRLF at the end of `rest`) is left to [`DataReader::step`].
fn plain_run(rest: &[u8]) -> (usize, bool) {
    let mut j = 0;
    loop {
        let Some(k) = rest.get(j..).and_then(|r| memchr::memchr2(b'\r', b'\n', r)) else {
            return (rest.len(), false);
        };
        let p = j + k;
        if rest.get(p) != Some(&b'\r') || rest.get(p + 1) != Some(&b'\n') {
            return (p, false);
        }
        match rest.get(p + 2) {
            Some(&b'.') | None => return (p + 2, true),
            Some(_) => j = p + 2,
        }
    }
}

/// Appends `msg` in DATA wire form: a `.` is doubled at the start of every line (after
/// any LF, and after a bare CR, so receivers that treat bare line endings as line ends
/// cannot see a fake end), CRLF is added when `msg` is non-empty and does not end with
/// one, then the terminating `.CRLF`.
pub fn dot_stuff(msg: &[u8], out: &mut Vec<u8>) {
    out.reserve(msg.len() + msg.len() / 64 + 5);
    let mut line_start = true;
    let mut rest = msg;
    while !rest.is_empty() {
        if line_start && rest.first() == Some(&b'.') {
            out.push(b'.');
        }
        let n = memchr::memchr2(b'\r', b'\n', rest).map_or(rest.len(), |p| p + 1);
        let (line, tail) = rest.split_at(n.min(rest.len()));
        out.extend_from_slice(line);
        line_start = match line.last() {
            Some(b'\n') => true,
            // A CR starts a line unless an LF follows (then the LF does).
            Some(b'\r') => tail.first() != Some(&b'\n'),
            _ => false,
        };
        rest = tail;
    }
    if !msg.is_empty() && !msg.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NONE: DataEnd = DataEnd {
        smuggling: false,
        too_large: false,
        bare_newline: false,
    };
    const BARE: DataEnd = DataEnd {
        bare_newline: true,
        ..NONE
    };
    const SMUG: DataEnd = DataEnd {
        smuggling: true,
        bare_newline: true,
        ..NONE
    };

    fn read(input: &[u8], max: u64) -> (Vec<u8>, usize, Option<DataEnd>) {
        let mut r = DataReader::new(max);
        let mut out = Vec::new();
        let (n, end) = r.feed(input, &mut out);
        (out, n, end)
    }

    #[test]
    fn table() {
        // input, message, end flags (None: not ended, all input consumed).
        let cases: &[(&[u8], &[u8], Option<DataEnd>)] = &[
            (b".\r\n", b"", Some(NONE)),
            (b"test\r\n.\r\n", b"test\r\n", Some(NONE)),
            (b".test\r\n.\r\n", b"test\r\n", Some(NONE)),
            (b"..test\r\n.\r\n", b".test\r\n", Some(NONE)),
            (b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n", Some(NONE)),
            (b"a\r\n...\r\n.\r\n", b"a\r\n..\r\n", Some(NONE)),
            (b"a.\r\nb\r\n.\r\n", b"a.\r\nb\r\n", Some(NONE)),
            (b"\r\n.\r\n", b"\r\n", Some(NONE)),
            (
                b"..test\ntest.\n\r\n.\r\n",
                b".test\ntest.\n\r\n",
                Some(BARE),
            ),
            (
                b"bare \r is flagged\r\n.\r\n",
                b"bare \r is flagged\r\n",
                Some(BARE),
            ),
            (
                b"bare \n is flagged\r\n.\r\n",
                b"bare \n is flagged\r\n",
                Some(BARE),
            ),
            (b"a\r\r\n.\r\n", b"a\r\r\n", Some(BARE)),
            (b"a\n.b\r\n.\r\n", b"a\n.b\r\n", Some(BARE)),
            (b"..test\ntest\n", b".test\ntest\n", None),
            (b"test\r\n.\r", b"test\r\n", None),
            (b"test\r\n.", b"test\r\n", None),
            (b"test\r\n", b"test\r\n", None),
            (b"", b"", None),
            // Dots not at a line start, and NUL, are content.
            (b"a\r\n\0.\r\n.\r\n", b"a\r\n\0.\r\n", Some(NONE)),
            (b"a\r\n.\0\r\n.\r\n", b"a\r\n\0\r\n", Some(NONE)),
            // Fake ends.
            (b"a\r\n.\nb\r\n.\r\n", b"a\r\n\nb\r\n", Some(SMUG)),
            (b"a\n.\nb\r\n.\r\n", b"a\n.\nb\r\n", Some(SMUG)),
            (b"a\r.\rb\r\n.\r\n", b"a\r.\rb\r\n", Some(SMUG)),
            (b"a\n.\r\nb\r\n.\r\n", b"a\n.\r\nb\r\n", Some(SMUG)),
            (b"a\r\n.\rb\r\n.\r\n", b"a\r\n\rb\r\n", Some(SMUG)),
            (b".\nb\r\n.\r\n", b"\nb\r\n", Some(SMUG)),
            (b".\rb\r\n.\r\n", b"\rb\r\n", Some(SMUG)),
        ];
        for (input, msg, end) in cases {
            let (out, n, got) = read(input, 1 << 20);
            assert_eq!(got, *end, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(out, *msg, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(n, input.len(), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn pipelined_rest_not_consumed() {
        let input = b"hi\r\n.\r\nMAIL FROM:<a@x>\r\n";
        let (out, n, end) = read(input, 100);
        assert_eq!(out, b"hi\r\n");
        assert_eq!(end, Some(NONE));
        assert_eq!(&input[n..], b"MAIL FROM:<a@x>\r\n");
        // After the end nothing more is consumed.
        let mut r = DataReader::new(100);
        let mut out = Vec::new();
        r.feed(b".\r\n", &mut out);
        assert_eq!(r.feed(b"x\r\n.\r\n", &mut out), (0, Some(NONE)));
        assert!(out.is_empty());
    }

    #[test]
    fn too_large() {
        let (out, n, end) = read(b"12345\r\n.\r\n", 7);
        assert_eq!(
            (out.as_slice(), n, end),
            (&b"12345\r\n"[..], 10, Some(NONE))
        );
        let (out, n, end) = read(b"123456\r\nmore\r\n.\r\nQUIT\r\n", 7);
        assert_eq!(n, 17);
        assert_eq!(
            end,
            Some(DataEnd {
                too_large: true,
                ..NONE
            })
        );
        assert!(out.len() <= 7);
        let mut r = DataReader::new(7);
        r.feed(b"123456\r\nmore\r\n", &mut Vec::new());
        assert_eq!(r.size(), 14);
    }

    /// Every fake end-of-data sequence from the smuggling vectors, placed inside a message
    /// the way the SEC Consult scanner and mox's TestSmuggle send it.
    #[test]
    fn smuggling_vectors() {
        let with_bare: &[&[u8]] = &[
            // inbound_fake_eod_sequences_sec_consult / outbound / hannob
            b"\n.\n",
            b"\n.\r",
            b"\r.\n",
            b"\r.\r",
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\r\r\n",
            b"\r\r\n.\r\r\n",
            b"\r\n.\n",
            b"\r\n.\r",
        ];
        let nul: &[&[u8]] = &[b"\r\n\0.\r\n", b"\r\n.\0\r\n"];
        let smuggled = b"mail FROM:<smuggled@example.org>\r\nrcpt TO:<victim@example.com>\r\ndata\r\nFrom: smuggled@example.org\r\nSubject: SMUGGLED\r\n\r\nbody\r\n";
        for seq in with_bare.iter().chain(nul) {
            for prefix in [&b"\r\n"[..], b"Subject: x\r\n\r\nbody", b""] {
                let mut input = prefix.to_vec();
                input.extend_from_slice(seq);
                input.extend_from_slice(smuggled);
                input.extend_from_slice(b".\r\nQUIT\r\n");
                let (_, n, end) = read(&input, 1 << 20);
                let end = end.expect("real end reached");
                assert_eq!(&input[n..], b"QUIT\r\n", "{seq:?} {prefix:?}");
                let is_nul = nul.contains(seq);
                assert_eq!(end.smuggling, !is_nul, "{seq:?} {prefix:?}");
                assert_eq!(end.bare_newline, !is_nul, "{seq:?} {prefix:?}");
            }
        }
        // mox TestSmuggle: "\r\n" (empty header), the input, then CRLF.CRLF.
        for seq in [&b"\r\n.\n"[..], b"\n.\n", b"\r.\r", b"\n.\r\n"] {
            let mut input = b"\r\n".to_vec();
            input.extend_from_slice(seq);
            input.extend_from_slice(b"\r\n.\r\n");
            let (_, n, end) = read(&input, 1 << 20);
            assert_eq!(n, input.len());
            assert!(end.unwrap().smuggling, "{seq:?}");
        }
        // mox DataReader cases marked ErrCRLF: all must be flagged (bare newline), and
        // the ones with a dot next to a bare newline as smuggling.
        let err_crlf: &[(&[u8], bool)] = &[
            (b"bare \r is rejected\r\n.\r\n", false),
            (b"bad:\r.\ris rejected\r\n.\r\n", true),
            (b"bad:\r.\nis rejected\r\n.\r\n", true),
            (b"bad:\n.\nis rejected\r\n.\r\n", true),
            (b"bad:\n.\r\nis rejected\r\n.\r\n", true),
            (b"bad:\r\n.\nis rejected\r\n.\r\n", true),
            (b".\ris rejected\r\n.\r\n", true),
            (b".\nis rejected\r\n.\r\n", true),
            (b"\n.\ris rejected\r\n.\r\n", true),
            (b"\r.\ris rejected\r\n.\r\n", true),
            (b"\n.\nis rejected\r\n.\r\n", true),
            (b"\r.\nis rejected\r\n.\r\n", true),
            (b"\r.\r\nis rejected\r\n.\r\n", true),
            (b"\n.\r\nis rejected\r\n.\r\n", true),
            (b"\r\n.\ris rejected\r\n.\r\n", true),
            (b"\r\n.\nis rejected\r\n.\r\n", true),
        ];
        for (input, smuggling) in err_crlf {
            let (_, n, end) = read(input, 1 << 20);
            let end = end.unwrap();
            assert_eq!(n, input.len());
            assert!(end.bare_newline, "{input:?}");
            assert_eq!(end.smuggling, *smuggling, "{input:?}");
        }
    }

    #[test]
    fn dot_stuff_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (
                b"header: abc\r\n\r\nmessage\r\n",
                b"header: abc\r\n\r\nmessage\r\n.\r\n",
            ),
            (b"a", b"a\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b"a\r\n.b\r\n..c", b"a\r\n..b\r\n...c\r\n.\r\n"),
            (b"a\n.b", b"a\n..b\r\n.\r\n"),
            (b"a\r.b\r\n", b"a\r..b\r\n.\r\n"),
            (b"a.b\r\n", b"a.b\r\n.\r\n"),
            (b"a\r", b"a\r\r\n.\r\n"),
        ];
        for (msg, want) in cases {
            let mut out = Vec::new();
            dot_stuff(msg, &mut out);
            assert_eq!(out, *want, "{:?}", String::from_utf8_lossy(msg));
        }
    }

    fn arb_crlf_message() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec("[.a ]{0,5}|[^\r\n]{0,10}", 0..12).prop_map(|lines| {
            let mut m = Vec::new();
            for l in lines {
                m.extend_from_slice(l.as_bytes());
                m.extend_from_slice(b"\r\n");
            }
            m
        })
    }

    fn feed_chunked(input: &[u8], cuts: &[usize], max: u64) -> (Vec<u8>, usize, Option<DataEnd>) {
        let mut r = DataReader::new(max);
        let mut out = Vec::new();
        let mut pos = 0;
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.push(input.len());
        bounds.sort_unstable();
        for b in bounds {
            if b < pos {
                continue;
            }
            let (n, end) = r.feed(&input[pos..b], &mut out);
            pos += n;
            if end.is_some() {
                return (out, pos, end);
            }
            assert_eq!(pos, b, "all input consumed before the end");
        }
        (out, pos, None)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn stuff_then_read(m in arb_crlf_message(), extra in "[A-Z]{0,8}") {
            let mut wire = Vec::new();
            dot_stuff(&m, &mut wire);
            let stuffed_len = wire.len();
            wire.extend_from_slice(extra.as_bytes());
            let (out, n, end) = read(&wire, 1 << 20);
            prop_assert_eq!(out, m);
            prop_assert_eq!(n, stuffed_len);
            prop_assert_eq!(end, Some(NONE));
        }

        #[test]
        fn chunking_invariance(
            input in proptest::collection::vec(prop_oneof![
                Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), any::<u8>()
            ], 0..80),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
            max in prop_oneof![Just(1u64 << 20), 0u64..40],
        ) {
            let mut input = input;
            input.extend_from_slice(b"\r\n.\r\nNEXT");
            let whole = read(&input, max);
            let chunked = feed_chunked(&input, &cuts, max);
            prop_assert_eq!(&whole, &chunked);
            // Byte by byte too.
            let all: Vec<usize> = (0..input.len()).collect();
            prop_assert_eq!(&whole, &feed_chunked(&input, &all, max));
            prop_assert!(whole.2.is_some());
            prop_assert!(whole.0.len() as u64 <= max);
        }

        /// The fast path (whole ordinary lines at once) reads what the byte-by-byte state
        /// machine reads, on input made of the pieces that matter: line ends of every
        /// kind, dots at line starts, text.
        #[test]
        fn fast_path_matches_steps(
            pieces in proptest::collection::vec(prop_oneof![
                Just(&b"\r\n"[..]), Just(&b"\r"[..]), Just(&b"\n"[..]), Just(&b"."[..]),
                Just(&b".."[..]), Just(&b"text"[..]), Just(&b"a long line of text"[..]),
                Just(&b"\r\n.\r\n"[..]),
            ], 0..60),
            max in prop_oneof![Just(1u64 << 20), 0u64..200],
        ) {
            let input: Vec<u8> = pieces.concat();
            prop_assert_eq!(read(&input, max), read_by_steps(&input, max));
        }
    }

    /// [`DataReader::feed`] without its fast path: every byte through `step`.
    fn read_by_steps(input: &[u8], max: u64) -> (Vec<u8>, usize, Option<DataEnd>) {
        let mut r = DataReader::new(max);
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            match r.step(b, &mut out) {
                Step::Next => i += 1,
                Step::Again => {}
                Step::End => {
                    r.state = ENDED;
                    return (out, i + 1, Some(r.end));
                }
            }
        }
        (out, i, None)
    }
}
