//! The SMTP wire layer: addresses and paths, commands and their parameters, replies with
//! enhanced status codes, the line splitter and the DATA codec (dot-stuffing with smuggling
//! protection). Everything here is pure parsing and rendering over borrowed bytes with hard
//! limits; the session machines in [`crate::server`] and [`crate::client`] use it.

pub mod address;
pub mod command;
pub mod data;
pub mod line;
pub mod reply;

pub use address::{Address, AddressError, Domain, ForwardPath, Host, Localpart, ReversePath};
pub use command::{Body, Command, CommandError, Hold, MailParams, Notify, RcptParams, Ret};
pub use data::{dot_stuff, DataEnd, DataReader};
pub use line::{split_line, LineResult};
pub use reply::{Enhanced, Reply, ReplyError, ReplyParser};

/// Longest command line accepted, CRLF included (RFC 5321 4.5.3.1.4 says 512; extensions
/// such as SIZE, AUTH and DSN parameters need more, so we allow what mox allows).
pub const MAX_COMMAND_LINE: usize = 4096;
/// Longest reply line we send or accept, CRLF included (RFC 5321 4.5.3.1.5).
pub const MAX_REPLY_LINE: usize = 512;
