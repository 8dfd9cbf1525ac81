//! The web inbox's search (localserve): Mailpit's query language, the part test suites use.
//! Words match anywhere in the sender, recipients, subject and text (case-insensitive);
//! `"quoted phrases"` match as one; `from:`, `to:` (also Cc and Bcc), `subject:` limit a
//! word to a field; `is:read`, `is:unread`, `has:attachment`; a leading `-` or `!` negates.
//! Every term must hold.

#[cfg(test)]
mod tests;

/// What a term looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Field {
    Any,
    From,
    To,
    Subject,
    Read,
    Unread,
    Attachment,
}

/// One term of a query.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    field: Field,
    /// Lower case.
    value: String,
    negate: bool,
}

/// A parsed query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    terms: Vec<Term>,
}

/// The facts of one message a query is tested against.
#[derive(Clone, Debug, Default)]
pub struct Facts<'a> {
    /// Sender name and address.
    pub from: &'a str,
    /// To, Cc and Bcc names and addresses.
    pub to: &'a str,
    /// Subject.
    pub subject: &'a str,
    /// The text body.
    pub text: &'a str,
    /// Seen.
    pub read: bool,
    /// Number of attachments.
    pub attachments: usize,
}

/// Splits a query into words, keeping `"quoted phrases"` (with a prefix before the quote)
/// whole.
fn words(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in q.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Query {
    /// Parses a query; never fails (an unknown `prefix:` is an ordinary word).
    pub fn parse(q: &str) -> Query {
        let mut terms = Vec::new();
        for w in words(q) {
            let (negate, w) = match w.strip_prefix(['-', '!']) {
                Some(rest) if !rest.is_empty() => (true, rest.to_string()),
                _ => (false, w),
            };
            let lower = w.to_lowercase();
            let (field, value) = match lower.split_once(':') {
                Some(("from", v)) => (Field::From, v.to_string()),
                Some(("to", v)) => (Field::To, v.to_string()),
                Some(("subject", v)) => (Field::Subject, v.to_string()),
                Some(("is", "read")) => (Field::Read, String::new()),
                Some(("is", "unread")) => (Field::Unread, String::new()),
                Some(("has", "attachment" | "attachments")) => (Field::Attachment, String::new()),
                _ => (Field::Any, lower.clone()),
            };
            terms.push(Term {
                field,
                value,
                negate,
            });
        }
        Query { terms }
    }

    /// Whether the query has no terms (matches everything).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether a message matches every term.
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        let has = |hay: &str, needle: &str| hay.to_lowercase().contains(needle);
        self.terms.iter().all(|t| {
            let hit = match t.field {
                Field::Any => [f.from, f.to, f.subject, f.text]
                    .iter()
                    .any(|h| has(h, &t.value)),
                Field::From => has(f.from, &t.value),
                Field::To => has(f.to, &t.value),
                Field::Subject => has(f.subject, &t.value),
                Field::Read => f.read,
                Field::Unread => !f.read,
                Field::Attachment => f.attachments > 0,
            };
            hit != t.negate
        })
    }
}
