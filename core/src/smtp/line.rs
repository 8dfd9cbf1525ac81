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
