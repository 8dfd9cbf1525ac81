//! The per-account junk filter: a Bayesian classifier over the words and word pairs of a
//! message, trained from the account's own classified mail.
//!
//! Two pure halves; the caller keeps the counts (storage) in between:
//!
//! * [`tokenize`]: the set of tokens of a message. MIME parts are read through
//!   mail-parser: text parts, HTML parts as text (tags, scripts and styles dropped) plus the
//!   host names their links point to, attachment file names and extensions, and the words of
//!   the From, To, Cc, Reply-To, Sender and Subject headers, prefixed by the header's name.
//!   Words are lowercased letters and digits; too short, all-digit, number-like and
//!   random-looking words (long consonant runs: tracking ids) are left out, and so is every
//!   word longer than [`MAX_WORD`] bytes.
//! * [`classify`]: the junk probability of a token set from the counts of its tokens in
//!   the account's ham and spam, as Paul Graham's "A plan for spam" combines the strongest
//!   signals: each token's spamminess is its share of spam messages against its share of
//!   ham messages, bounded away from 0 and 1 by `max_power`, pulled toward 0.5 when the
//!   token was seen rarely; tokens within `ignore_words` of 0.5 say nothing; the
//!   `top_words` hammiest and spammiest are combined. The defaults are mox's.
//!
//! Training is counting: a message trained as spam adds one to the spam count of each of
//! its tokens and to the number of spam messages; untraining subtracts the same.
//! Classification is significant only when the account has trained at least
//! [`MIN_HAMS`] ham messages: with less, a few spam words could refuse wanted mail.

use std::collections::BTreeSet;

use mail_parser::{MimeHeaders, PartType};

/// The longest token kept, in bytes (longer ones are ids and encodings, not words).
pub const MAX_WORD: usize = 64;

/// Tokens taken from one message at most (a huge message does not make a huge transaction).
pub const MAX_TOKENS: usize = 20_000;

/// Ham messages the account must have trained before a classification counts.
pub const MIN_HAMS: u32 = 50;

/// How a message is tokenized and classified (per account: `junk_filter` in the config).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Single words are tokens.
    pub onegrams: bool,
    /// Two consecutive words are a token.
    pub twograms: bool,
    /// A token's spamminess is kept in `[max_power, 1 - max_power]`.
    pub max_power: f64,
    /// How many of the hammiest and of the spammiest tokens are combined.
    pub top_words: usize,
    /// Tokens whose spamminess is within this distance of 0.5 are ignored.
    pub ignore_words: f64,
    /// A token seen in at most this many messages counts less.
    pub rare_words: u32,
    /// The probability above which a message is junk.
    pub threshold: f64,
}

impl Default for Params {
    /// mox's recommended settings, with word pairs on.
    fn default() -> Params {
        Params {
            onegrams: true,
            twograms: true,
            max_power: 0.01,
            top_words: 10,
            ignore_words: 0.1,
            rare_words: 2,
            threshold: 0.95,
        }
    }
}

/// How often a token was seen in the account's trained messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// In ham messages.
    pub ham: u32,
    /// In spam messages.
    pub spam: u32,
}

/// A token and its spamminess, as reported in a [`Classification`].
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// The token.
    pub token: String,
    /// Its spamminess, 0 (ham) to 1 (spam).
    pub score: f64,
}

/// The result of [`classify`].
#[derive(Clone, Debug, PartialEq)]
pub struct Classification {
    /// The junk probability, 0 (ham) to 1 (spam).
    pub probability: f64,
    /// Enough ham was trained for the probability to count ([`MIN_HAMS`]).
    pub significant: bool,
    /// The hammiest tokens used, hammiest first.
    pub ham: Vec<Scored>,
    /// The spammiest tokens used, spammiest first.
    pub spam: Vec<Scored>,
}

impl Classification {
    /// The tokens that decided, for the `X-Rmox-Reason` header and `rmox junk check`:
    /// `ham words: a 0.010, b 0.020; spam words: c 0.990` (non-ASCII words shown as
    /// `(non-ascii)` when `ascii_only`).
    pub fn words(&self, ascii_only: bool) -> String {
        let list = |v: &[Scored]| {
            v.iter()
                .map(|s| {
                    let w = if ascii_only && !s.token.is_ascii() {
                        "(non-ascii)"
                    } else {
                        s.token.as_str()
                    };
                    format!("{w} {:.3}", s.score)
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "ham words: {}; spam words: {}",
            list(&self.ham),
            list(&self.spam)
        )
    }
}

/// The junk probability of a message with these tokens. `hams`/`spams`: messages trained
/// as ham/spam; `tokens`: each token of the message with its counts (tokens never seen
/// may be left out or given zero counts). Pure and deterministic: ties are broken by the
/// token's text.
pub fn classify(p: &Params, hams: u32, spams: u32, tokens: &[(String, Counts)]) -> Classification {
    let mut ham: Vec<Scored> = Vec::new();
    let mut spam: Vec<Scored> = Vec::new();
    for (token, c) in tokens {
        if c.ham == 0 && c.spam == 0 {
            continue;
        }
        let share = |n: u32, of: u32| {
            if of == 0 {
                0.0
            } else {
                f64::from(n) / f64::from(of)
            }
        };
        let (ws, wh) = (share(c.spam, spams), share(c.ham, hams));
        if ws + wh == 0.0 {
            continue;
        }
        let mut r = (ws / (ws + wh)).clamp(p.max_power, 1.0 - p.max_power);
        let seen = c.ham.saturating_add(c.spam);
        if seen <= p.rare_words {
            // Seen rarely: pulled toward 0.5 by a tenth per missing sighting.
            r += f64::from(p.rare_words + 1 - seen) * (0.5 - r) / 10.0;
        }
        if (0.5 - r).abs() < p.ignore_words {
            continue;
        }
        let s = Scored {
            token: token.clone(),
            score: r,
        };
        if r < 0.5 {
            ham.push(s);
        } else if r > 0.5 {
            spam.push(s);
        }
    }
    // Strongest first; equal scores: longer (pairs) first, then by text, so the result does
    // not depend on the order of `tokens`.
    let order = |a: &Scored, b: &Scored, strongest_low: bool| {
        let c = if strongest_low {
            a.score.total_cmp(&b.score)
        } else {
            b.score.total_cmp(&a.score)
        };
        c.then_with(|| b.token.len().cmp(&a.token.len()))
            .then_with(|| a.token.cmp(&b.token))
    };
    ham.sort_by(|a, b| order(a, b, true));
    spam.sort_by(|a, b| order(a, b, false));
    ham.truncate(p.top_words);
    spam.truncate(p.top_words);
    // Combined in the log domain: p = 1 / (1 + e^eta), eta = sum(ln(1-s) - ln(s)).
    let eta: f64 = ham
        .iter()
        .chain(spam.iter())
        .map(|s| (1.0 - s.score).ln() - s.score.ln())
        .sum();
    let probability = 1.0 / (1.0 + eta.exp());
    Classification {
        probability: if probability.is_finite() {
            probability
        } else {
            0.5
        },
        significant: hams >= MIN_HAMS,
        ham,
        spam,
    }
}

/// The tokens of a message (see the module documentation). Never fails: a message in
/// which mail-parser finds nothing is tokenized as plain text.
pub fn tokenize(p: &Params, message: &[u8]) -> BTreeSet<String> {
    let mut t = Tokens {
        p,
        out: BTreeSet::new(),
    };
    if let Some(m) = crate::message::parse_mime(message) {
        // mail-parser's decoders are not trusted not to panic on a peer's bytes either.
        let walked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.message(&m, 0);
        }));
        if walked.is_err() {
            t.out.clear();
        }
    }
    if t.out.is_empty() {
        // Nothing mail-parser could make sense of: the bytes as text.
        t.text(&String::from_utf8_lossy(message));
    }
    t.out
}

/// Nested messages read at most this deep.
const MAX_DEPTH: usize = 4;

struct Tokens<'p> {
    p: &'p Params,
    out: BTreeSet<String>,
}

impl Tokens<'_> {
    fn add(&mut self, s: String) {
        if self.out.len() < MAX_TOKENS && s.len() <= MAX_WORD * 2 + 1 {
            self.out.insert(s);
        }
    }

    fn message(&mut self, m: &mail_parser::Message<'_>, depth: usize) {
        for h in m.headers() {
            let name = match h.name.as_str().to_ascii_lowercase().as_str() {
                "from" => "from",
                "to" => "to",
                "cc" => "cc",
                "reply-to" => "reply-to",
                "sender" => "sender",
                "subject" => "subject",
                _ => continue,
            };
            let mut value = String::new();
            header_text(&h.value, &mut value);
            let mut words = BTreeSet::new();
            each_word(&value, |w| {
                if w.len() > 3 {
                    words.insert(format!("{name}:{w}"));
                }
            });
            for w in words {
                self.add(w);
            }
        }
        for part in &m.parts {
            match &part.body {
                PartType::Text(s) => self.text(s),
                PartType::Html(s) => {
                    self.links(s);
                    self.text(&mail_parser::decoders::html::html_to_text(s));
                }
                PartType::Binary(_) | PartType::InlineBinary(_) => {
                    if let Some(name) = part.attachment_name() {
                        self.attachment(name);
                    }
                }
                PartType::Message(inner) => {
                    if let Some(name) = part.attachment_name() {
                        self.attachment(name);
                    }
                    if depth < MAX_DEPTH {
                        self.message(inner, depth + 1);
                    }
                }
                PartType::Multipart(_) => {}
            }
        }
    }

    /// `attachment:WORD` for the words of a file name, `attachment-type:EXT` for its
    /// extension.
    fn attachment(&mut self, name: &str) {
        let lower = name.to_lowercase();
        if let Some((_, ext)) = lower.rsplit_once('.') {
            if !ext.is_empty() && ext.len() <= 10 {
                self.add(format!("attachment-type:{ext}"));
            }
        }
        let mut v = Vec::new();
        each_word(&lower, |w| v.push(format!("attachment:{w}")));
        for w in v {
            self.add(w);
        }
    }

    /// `link:HOST` for the hosts that `http(s)://` links in HTML point to.
    fn links(&mut self, html: &str) {
        let lower = html.to_ascii_lowercase();
        let mut hosts = Vec::new();
        for scheme in ["http://", "https://"] {
            let mut rest = lower.as_str();
            while let Some(i) = rest.find(scheme) {
                rest = &rest[i + scheme.len()..];
                let host: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                let host = host.trim_matches('.');
                if !host.is_empty() && host.len() <= MAX_WORD {
                    hosts.push(format!("link:{host}"));
                }
                if hosts.len() >= 100 {
                    break;
                }
            }
        }
        for h in hosts {
            self.add(h);
        }
    }

    /// Words and word pairs of `text`.
    fn text(&mut self, text: &str) {
        let (one, two) = (self.p.onegrams, self.p.twograms);
        let mut prev: Option<String> = None;
        let mut new = Vec::new();
        each_word(text, |w| {
            if two {
                if let Some(p) = &prev {
                    new.push(format!("{p} {w}"));
                }
            }
            if one {
                new.push(w.to_string());
            }
            prev = Some(w.to_string());
        });
        for w in new {
            if self.out.len() >= MAX_TOKENS {
                break;
            }
            self.add(w);
        }
    }
}

/// The text of a header value: texts and address names and addresses.
fn header_text(v: &mail_parser::HeaderValue<'_>, out: &mut String) {
    use mail_parser::HeaderValue;
    match v {
        HeaderValue::Text(s) => {
            out.push_str(s);
            out.push(' ');
        }
        HeaderValue::TextList(l) => {
            for s in l {
                out.push_str(s);
                out.push(' ');
            }
        }
        HeaderValue::Address(a) => {
            for addr in a.iter() {
                for s in [addr.name(), addr.address()].into_iter().flatten() {
                    out.push_str(s);
                    out.push(' ');
                }
            }
        }
        _ => {}
    }
}

/// Calls `f` with each word of `text` that is worth a token: letters and digits
/// (apostrophes inside words kept), lowercased, 3 to [`MAX_WORD`] bytes, not all digits,
/// not number-like, not random-looking.
fn each_word(text: &str, mut f: impl FnMut(&str)) {
    let mut w = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let inner_apostrophe =
            c == '\'' && !w.is_empty() && chars.peek().is_some_and(|n| n.is_alphabetic());
        if c.is_alphanumeric() || inner_apostrophe {
            w.extend(c.to_lowercase());
            if w.len() > MAX_WORD * 4 {
                // A run this long is no word; skip to its end.
                while chars.next_if(|c| c.is_alphanumeric()).is_some() {}
                w.clear();
            }
            continue;
        }
        if worth(&w) {
            f(&w);
        }
        w.clear();
    }
    if worth(&w) {
        f(&w);
    }
}

fn worth(w: &str) -> bool {
    w.len() > 2
        && w.len() <= MAX_WORD
        && !w.chars().all(|c| c.is_ascii_digit())
        && !looks_numeric(w)
        && !looks_random(w)
}

/// Four digits in a row, or only digits and hex letters with three in a row: a number,
/// a date, an id.
fn looks_numeric(w: &str) -> bool {
    let w = w.strip_prefix("0x").unwrap_or(w);
    let (mut run, mut longest, mut other) = (0, 0, false);
    for c in w.chars() {
        if c.is_ascii_digit() {
            run += 1;
            longest = longest.max(run);
            continue;
        }
        run = 0;
        if !c.is_ascii_hexdigit() {
            other = true;
        }
    }
    longest >= 4 || (!other && longest >= 3)
}

/// Six or more consonants (or digits that are not 0/1) in a row: generated, not written.
fn looks_random(w: &str) -> bool {
    if !w.is_ascii() {
        return false;
    }
    let mut run = 0;
    for c in w.chars() {
        if "bcdfghjklmnpqrstvwxz23456789".contains(c) {
            run += 1;
            if run >= 6 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

#[cfg(test)]
mod tests;
