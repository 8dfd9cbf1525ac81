//! Byte codecs written once for every report and message composer: gzip (RFC 1952) and
//! gunzip with a size limit over miniz_oxide's deflate, the gzip CRC-32, and base64 in
//! MIME lines (RFC 2045 6.8) over the base64 crate.

use base64::Engine as _;

/// Why [`gunzip`] or [`inflate`] gave up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The output would be larger than the caller's limit.
    #[error("decompresses to more than {0} bytes")]
    TooLarge(usize),
    /// The gzip container or the deflate stream is broken.
    #[error("{0}")]
    Malformed(String),
}

/// Gzip (RFC 1952) of `data`: one member, no name, deflated at level 6.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 6));
    out.extend(crc32(data).to_le_bytes());
    // ISIZE is the length modulo 2^32 (RFC 1952 2.3.1).
    out.extend((data.len() as u32).to_le_bytes());
    out
}

/// Decompresses one gzip member of at most `limit` bytes, checking its CRC-32.
pub fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let bad = |m: &str| CodecError::Malformed(m.to_string());
    if data.len() < 18 || data[0] != 0x1f || data[1] != 0x8b || data[2] != 8 {
        return Err(bad("not gzip"));
    }
    let flags = data[3];
    let mut pos = 10usize;
    if flags & 4 != 0 {
        let xlen = data
            .get(pos..pos + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
            .ok_or_else(|| bad("short"))?;
        pos += 2 + xlen;
    }
    for bit in [8u8, 16] {
        if flags & bit != 0 {
            let n = data
                .get(pos..)
                .and_then(|r| r.iter().position(|&c| c == 0))
                .ok_or_else(|| bad("unterminated name"))?;
            pos += n + 1;
        }
    }
    if flags & 2 != 0 {
        pos += 2;
    }
    let body = data.get(pos..).ok_or_else(|| bad("short"))?;
    let (out, used) = inflate_counted(body, limit)?;
    let trailer = body
        .get(used..used + 8)
        .ok_or_else(|| bad("missing trailer"))?;
    let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if crc != crc32(&out) {
        return Err(bad("crc mismatch"));
    }
    Ok(out)
}

/// Decompresses a raw deflate stream (as in zip) of at most `limit` bytes.
pub fn inflate(raw: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    inflate_counted(raw, limit).map(|(out, _)| out)
}

/// Inflates `body` and says how many input bytes the deflate stream used.
fn inflate_counted(body: &[u8], limit: usize) -> Result<(Vec<u8>, usize), CodecError> {
    use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
    use miniz_oxide::inflate::TINFLStatus;
    let mut d = DecompressorOxide::new();
    let mut out = vec![0u8; (64 << 10).min(limit.max(1))];
    let (mut in_pos, mut out_pos) = (0usize, 0usize);
    loop {
        let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF
            | if in_pos < body.len() {
                inflate_flags::TINFL_FLAG_HAS_MORE_INPUT
            } else {
                0
            };
        let (status, read, written) = decompress(&mut d, &body[in_pos..], &mut out, out_pos, flags);
        in_pos += read;
        out_pos += written;
        match status {
            TINFLStatus::Done => {
                out.truncate(out_pos);
                return Ok((out, in_pos));
            }
            TINFLStatus::HasMoreOutput => {
                if out.len() >= limit {
                    return Err(CodecError::TooLarge(limit));
                }
                let n = (out.len() * 2).min(limit);
                out.resize(n, 0);
            }
            s => return Err(CodecError::Malformed(format!("inflate: {s:?}"))),
        }
    }
}

/// The CRC-32 of gzip and zip (ISO 3309, reflected polynomial 0xEDB88320).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xedb8_8320
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !data.iter().fold(0xffff_ffffu32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// Base64 of `data` (standard alphabet, padded) on one line.
pub fn base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Base64 of `data` in lines of 76 characters, each ended by CRLF, as a MIME body part
/// with `Content-Transfer-Encoding: base64` holds it (no line for no data).
pub fn base64_lines(data: &[u8]) -> String {
    let text = base64(data);
    let mut out = String::with_capacity(text.len() + text.len() / 38 + 2);
    // Base64 text is ASCII: every 76-byte chunk is whole characters.
    for line in text.as_bytes().chunks(76) {
        out.extend(line.iter().map(|&b| char::from(b)));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_vectors() {
        // The check value of CRC-32/ISO-HDLC, and two more.
        let cases: [(&[u8], u32); 4] = [
            (b"", 0),
            (b"123456789", 0xcbf4_3926),
            (b"a", 0xe8b7_be43),
            (b"The quick brown fox jumps over the lazy dog", 0x414f_a339),
        ];
        for (data, want) in cases {
            assert_eq!(crc32(data), want, "{data:?}");
        }
    }

    #[test]
    fn gzip_round_trip() {
        for data in [&b""[..], b"a", &[7u8; 100_000][..], b"<feedback/>"] {
            let gz = gzip(data);
            assert_eq!(gunzip(&gz, 1 << 20).unwrap(), data);
        }
    }

    /// Output over the limit, a broken trailer and junk are errors, not panics.
    #[test]
    fn gunzip_errors() {
        let big = gzip(&[0u8; 10_000]);
        assert_eq!(gunzip(&big, 1000), Err(CodecError::TooLarge(1000)));
        assert_eq!(gunzip(&big, 10_000).unwrap().len(), 10_000);
        let mut bad_crc = gzip(b"hello");
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        assert!(matches!(
            gunzip(&bad_crc, 100),
            Err(CodecError::Malformed(_))
        ));
        let cut = gzip(b"hello");
        assert!(matches!(
            gunzip(&cut[..cut.len() - 4], 100),
            Err(CodecError::Malformed(_))
        ));
        for junk in [
            &b""[..],
            b"\x1f\x8b\x08\x00junkjunkjunkjunkjunk",
            b"\x1f\x8b\x08\x1cjunkjunkjunkjunkjunk",
            b"not gzip at all, not gzip at all",
        ] {
            assert!(matches!(gunzip(junk, 100), Err(CodecError::Malformed(_))));
        }
        // Optional header fields (FEXTRA, FNAME, FCOMMENT, FHCRC) are skipped.
        let plain = gzip(b"hello");
        let mut with = vec![0x1f, 0x8b, 8, 4 | 8 | 16 | 2, 0, 0, 0, 0, 0, 0xff];
        with.extend([2, 0, b'x', b'y']);
        with.extend(b"name\0comment\0");
        with.extend([0, 0]);
        with.extend(&plain[10..]);
        assert_eq!(gunzip(&with, 100).unwrap(), b"hello");
    }

    #[test]
    fn inflate_limit() {
        let raw = miniz_oxide::deflate::compress_to_vec(&[1u8; 5000], 6);
        assert_eq!(inflate(&raw, 5000).unwrap(), vec![1u8; 5000]);
        assert_eq!(inflate(&raw, 4999), Err(CodecError::TooLarge(4999)));
        assert!(matches!(
            inflate(b"\xff\xff", 10),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn base64_line_table() {
        assert_eq!(
            base64(b"\0mjl@mox.example\0test"),
            "AG1qbEBtb3guZXhhbXBsZQB0ZXN0"
        );
        let cases: [(&[u8], &str); 5] = [
            (b"", ""),
            (b"f", "Zg==\r\n"),
            (b"foobar", "Zm9vYmFy\r\n"),
            (&[0u8; 57], &format!("{}\r\n", "A".repeat(76))),
            (&[0u8; 58], &format!("{}\r\nAA==\r\n", "A".repeat(76))),
        ];
        for (data, want) in cases {
            assert_eq!(base64_lines(data), want, "{data:?}");
        }
        let long: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let text = base64_lines(&long);
        assert!(text.split("\r\n").all(|l| l.len() <= 76));
        let joined: String = text.split("\r\n").collect();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(joined)
                .unwrap(),
            long
        );
    }
}
