//! Splitting command lines off the input.

/// One step of [`split_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum LineResult<'a> {
    /// A complete line without its line ending, and the number of bytes it used.
    Line(&'a [u8], usize),
    /// No line ending yet and the input is shorter than the limit: read more.
    Partial,
    /// No line ending within the limit.
    TooLong,
}

/// Finds the first line in `input`.
///
/// CRLF ends a line; a bare LF is accepted as a line ending too (the LF and a CR right
/// before it are stripped). `max` is the longest line accepted including its line ending: a
/// line of `max - 2` content bytes plus CRLF fits. When there is no line ending within the
/// first `max` bytes the result is [`LineResult::TooLong`]; the caller decides how to
/// resynchronise (typically: reply 500, discard up to the next LF).
pub fn split_line(input: &[u8], max: usize) -> LineResult<'_> {
    let window = input.len().min(max);
    let head = input.get(..window).unwrap_or(input);
    match head.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            let line = head.get(..lf).unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            LineResult::Line(line, lf + 1)
        }
        None if input.len() >= max => LineResult::TooLong,
        None => LineResult::Partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&[u8], usize, LineResult<'_>)] = &[
            (b"", 10, LineResult::Partial),
            (b"EHLO x", 10, LineResult::Partial),
            (b"EHLO x\r", 10, LineResult::Partial),
            (b"EHLO x\r\n", 10, LineResult::Line(b"EHLO x", 8)),
            (b"EHLO x\r\nQUIT\r\n", 10, LineResult::Line(b"EHLO x", 8)),
            (b"EHLO x\nQUIT\r\n", 10, LineResult::Line(b"EHLO x", 7)),
            (b"\r\n", 10, LineResult::Line(b"", 2)),
            (b"\n", 10, LineResult::Line(b"", 1)),
            (b"a\rb\r\n", 10, LineResult::Line(b"a\rb", 5)),
            (b"a\r\r\n", 10, LineResult::Line(b"a\r", 4)),
            // Exactly max - 2 content bytes plus CRLF fits.
            (b"12345678\r\n", 10, LineResult::Line(b"12345678", 10)),
            (b"123456789\n", 10, LineResult::Line(b"123456789", 10)),
            (b"123456789\r\n", 10, LineResult::TooLong),
            (b"1234567890", 10, LineResult::TooLong),
            (b"123456789", 10, LineResult::Partial),
            (b"12345678901234\r\n", 10, LineResult::TooLong),
            (b"x\r\n", 0, LineResult::TooLong),
        ];
        for (input, max, want) in cases {
            assert_eq!(&split_line(input, *max), want, "input {input:?} max {max}");
        }
    }
}
