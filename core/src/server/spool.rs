//! Message data goes to disk as it arrives, so memory per connection stays bounded.
//!
//! # The design
//!
//! The session is sans-IO, so it cannot write files: spooling is an effect. While DATA is
//! read, the unstuffed message collects in memory up to [`super::ServerConfig::spool_threshold`]
//! (256 KiB by default, `limits.spool_threshold_bytes`). A message that ends below it (the
//! common case) never leaves memory and costs nothing extra. Past it, the session hands the
//! collected data out as [`super::Effect::Spool`] and reads no more input until that effect
//! is answered: the driver appends the chunk to the transaction's spool file (in the data
//! directory's `tmp/`), and the client waits on TCP (backpressure). A connection thus holds
//! at most one threshold of message data, however large the message.
//!
//! At the final dot the last data goes out with `last: true`, and the answer gives the whole
//! message back as [`SpooledBytes`]: in rmox a read-only memory map of the spool file. The
//! checks that need the whole message (the header checks, the MIME structure check, the DKIM
//! body hash, which streams the canonical body into the digest) read that map; its pages
//! are file-backed, so the kernel can drop them under pressure, unlike heap copies of the
//! message. Mapping was chosen over reading the file in pieces because every check is
//! written over `&[u8]` (mail-parser, DKIM): one code path for spooled and in-memory
//! messages. The header of a spooled message must fit under the threshold too (`552
//! 5.3.4` otherwise), since the fields we read from it are copied into memory.
//!
//! The message handed out for storing is a [`MessageData`]: our prepended header fields in
//! memory and the spooled bytes after them; storage writes both parts into the message
//! file (and fsyncs it) before the `250`, so durability is unchanged.
//! A DSN about recipients that failed carries a spooled message's header only, even with
//! `RET=FULL` (the whole message would be composed in memory).
//!
//! BDAT chunks are spooled the same way: the chunk data held reaches the threshold, it
//! goes out, and the chunk is read on once the write is answered; the last chunk's answer
//! gives the whole message. A spool write that fails ends the transaction with `451 4.3.0`
//! after the rest of the DATA or of the chunk was read (never cutting a message short,
//! which would make its rest commands).
//!
//! A spool file lives as long as the session needs it: after every input the session checks
//! whether its state still writes to the spool (reading DATA or a chunk, a write out, a BDAT
//! transaction open between chunks); once the whole message is back (mapped) or the
//! transaction is gone (stored, refused, RSET, timeout, peer gone, close) it emits
//! [`super::Event::SpoolEnded`]. The driver removes the file then (a map of it stays
//! readable until dropped), again at the end of the connection, and leftovers from a crash
//! at startup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Names the spool file of one transaction: the connection and the transaction's number
/// in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpoolId {
    /// The connection id.
    pub cid: u64,
    /// The transaction's number in the connection.
    pub txn: u32,
}

/// Message bytes held outside the session's memory: the spool file the driver wrote,
/// usually memory-mapped (file-backed pages the kernel can reclaim, unlike heap).
#[derive(Clone)]
pub struct SpooledBytes(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl SpooledBytes {
    /// Bytes the session reads the whole spooled message from.
    pub fn new(bytes: Arc<dyn AsRef<[u8]> + Send + Sync>) -> SpooledBytes {
        SpooledBytes(bytes)
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl std::fmt::Debug for SpooledBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpooledBytes({} octets)", self.bytes().len())
    }
}

/// The answer to [`super::Effect::Spool`].
#[derive(Debug, Clone)]
pub enum SpoolAnswer {
    /// The chunk was appended (not the last one).
    Appended,
    /// The last chunk was appended: the whole message as the client sent it.
    Complete(SpooledBytes),
    /// The chunk could not be written (the reason is logged): the message is refused with
    /// `451 4.3.0` once the client has sent all of it.
    Failed(String),
}

/// A message as handed out for storing: the header fields we prepended (Received,
/// Authentication-Results, ..) in memory, followed by what the client sent, in memory
/// (small messages) or spooled. [`MessageData::parts`] gives both without copying.
#[derive(Debug, Clone)]
pub struct MessageData {
    /// Our header fields, followed by the whole message when it is not spooled.
    head: Vec<u8>,
    spooled: Option<SpooledBytes>,
}

impl MessageData {
    /// A message held entirely in memory.
    pub fn memory(bytes: Vec<u8>) -> MessageData {
        MessageData {
            head: bytes,
            spooled: None,
        }
    }

    /// Our header fields `head` followed by the spooled message.
    pub fn spooled(head: Vec<u8>, spooled: SpooledBytes) -> MessageData {
        MessageData {
            head,
            spooled: Some(spooled),
        }
    }

    /// Size in octets.
    pub fn len(&self) -> usize {
        self.head.len() + self.spooled.as_ref().map_or(0, |s| s.bytes().len())
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether part of the message is spooled (not in memory).
    pub fn is_spooled(&self) -> bool {
        self.spooled.is_some()
    }

    /// The message in two consecutive parts (the second empty when not spooled).
    pub fn parts(&self) -> [&[u8]; 2] {
        [
            &self.head,
            self.spooled.as_ref().map_or(&[][..], SpooledBytes::bytes),
        ]
    }

    /// The whole message in one slice, when it is held in memory.
    pub fn as_slice(&self) -> Option<&[u8]> {
        match self.spooled {
            None => Some(&self.head),
            Some(_) => None,
        }
    }

    /// The message in one slice for a DSN's copy of it: the whole message when in memory;
    /// when spooled, the message as the client sent it (without our prepended fields).
    pub fn original(&self) -> &[u8] {
        match &self.spooled {
            None => &self.head,
            Some(s) => s.bytes(),
        }
    }

    /// The whole message copied into one buffer (for small messages and tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let [a, b] = self.parts();
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        v
    }

    /// The header section (up to and including the empty line), copied; the header of a
    /// spooled message fits under the spool threshold (checked when it is received).
    pub fn header(&self) -> Vec<u8> {
        let [a, b] = self.parts();
        if b.is_empty() {
            let end = crate::message::body_offset(a).unwrap_or(a.len());
            return a[..end].to_vec();
        }
        let end = crate::message::body_offset(b).unwrap_or(b.len());
        let mut v = Vec::with_capacity(a.len() + end);
        v.extend_from_slice(a);
        v.extend_from_slice(&b[..end]);
        v
    }

    /// Whether any octet has the high bit set.
    pub fn has_8bit(&self) -> bool {
        self.parts().iter().any(|p| p.iter().any(|b| *b >= 0x80))
    }

    /// Puts header fields in front of the message.
    pub fn prepend(&mut self, fields: &[u8]) {
        let mut v = Vec::with_capacity(fields.len() + self.head.len());
        v.extend_from_slice(fields);
        v.extend_from_slice(&self.head);
        self.head = v;
    }
}

/// Spool files held in memory: for tests and for embedders without a disk.
#[derive(Debug, Default)]
pub struct MemorySpool {
    files: Mutex<HashMap<SpoolId, Vec<u8>>>,
}

impl MemorySpool {
    /// Answers [`super::Effect::Spool`].
    pub fn append(&self, spool: SpoolId, chunk: &[u8], last: bool) -> SpoolAnswer {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let file = files.entry(spool).or_default();
        file.extend_from_slice(chunk);
        match last {
            false => SpoolAnswer::Appended,
            true => SpoolAnswer::Complete(SpooledBytes::new(Arc::new(file.clone()))),
        }
    }

    /// Drops a spool ([`super::Event::SpoolEnded`]).
    pub fn end(&self, spool: SpoolId) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.remove(&spool);
    }

    /// How many spools are held.
    pub fn len(&self) -> usize {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no spool is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
