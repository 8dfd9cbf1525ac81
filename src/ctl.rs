//! The admin API: a running `rmox serve` owns the database (redb allows one process), so the
//! administration commands reach it through a Unix socket in the data directory (mode
//! 0600: whoever can connect can administer the server). One JSON request per line, one
//! JSON reply per line, with the protocol version in both ([`VERSION`]): a request of
//! another version gets an error that names both versions.
//!
//! Every command runs the same function whether the server runs or not ([`execute`]): with
//! a running server, the server runs it on its store (queue changes wake its queue runner;
//! `kick` schedules the entry for its runner instead of delivering from the command); with
//! the server stopped, the command opens the data directory itself. The answer is lines for
//! people and a JSON value for scripts (`--json`).
//!
//! The socket is answered by a thread of its own: each request is blocking storage work,
//! kept off the runtime's threads; one request at a time, each with a read timeout.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rmox_storage::MailStore;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::queue::cli::Op;
use crate::queue::Wakeup;
use crate::Fail;

/// How long a command waits for a server that holds the database but whose admin socket
/// does not answer yet (starting) or any more (stopping).
const LOCKED_WAIT: Duration = Duration::from_secs(15);

/// The version of the admin protocol.
pub const VERSION: u32 = 1;

/// Longest request line besides a message it carries (`sendmail`: base64, so 4/3 of the
/// message): a request may be `limits.max_message_size` * 4/3 plus this.
const MAX_REQUEST_OVERHEAD: u64 = 1 << 20;

/// Longest request line read for configuration `c` (a reply is read without a limit).
fn max_request(c: &Config) -> u64 {
    c.limits
        .max_message_size
        .saturating_mul(4)
        .div_ceil(3)
        .saturating_add(MAX_REQUEST_OVERHEAD)
}

/// An administration request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// A queue command (`rmox queue ...`).
    Queue {
        /// What to do.
        op: Op,
    },
    /// The stored incoming TLS reports (`rmox tlsrpt list`).
    TlsrptList,
    /// The webhooks waiting, or the retired ones (`rmox webhook list|retired`).
    WebhookList {
        /// The retired ones.
        retired: bool,
    },
    /// Retire a waiting webhook without POSTing it again (`rmox webhook drop`).
    WebhookDrop {
        /// Its id.
        id: u64,
    },
    /// One stored TLS report (`rmox tlsrpt show`).
    TlsrptShow {
        /// The report's ID.
        id: String,
    },
    /// A consistent copy of the data directory into `dir` (`rmox backup`).
    Backup {
        /// The destination (must not exist), absolute.
        dir: PathBuf,
    },
    /// Read the configuration file again (`rmox config reload`, SIGHUP).
    Reload,
    /// Set an account's password (`rmox account setpassword`).
    AccountPassword {
        /// The account.
        name: String,
        /// The new password.
        password: String,
    },
    /// Refuse (with this message) or allow an account's logins (`rmox account
    /// disable|enable`).
    AccountLogins {
        /// The account.
        name: String,
        /// The message logins are refused with; `None` allows them.
        disabled: Option<String>,
    },
    /// Submit a message as the `[sendmail]` account (`rmox sendmail`); running server only.
    Sendmail {
        /// The envelope sender (`-f`), an address of the account.
        mail_from: Option<String>,
        /// The sender's name for a From field rmox adds (`-F`).
        from_name: Option<String>,
        /// The recipients.
        recipients: Vec<String>,
        /// The message, CRLF lines, standard base64.
        message: String,
    },
    /// Import an mbox or maildir into an account's mailbox (`rmox import`).
    Import {
        /// mbox or maildir.
        format: crate::import::Format,
        /// The account.
        account: String,
        /// The mailbox.
        mailbox: String,
        /// The mbox file or maildir, absolute.
        path: PathBuf,
    },
    /// An account's messages (`rmox message list`): id, mailbox, received, flags, size,
    /// From; the newest `limit`.
    MessageList {
        /// The account.
        account: String,
        /// Only this mailbox.
        mailbox: Option<String>,
        /// At most this many, newest first.
        limit: usize,
    },
    /// Classify a message as junk or not junk (`rmox message junk|notjunk`): the evidence
    /// reputation reads.
    MessageClassify {
        /// The account that owns it.
        account: String,
        /// The message id, as `message list` prints it.
        id: u64,
        /// Junk (true) or not junk.
        junk: bool,
    },
    /// Train an account's junk filter from a corpus (`rmox junk train`).
    JunkTrain {
        /// The account.
        account: String,
        /// Spam: an mbox file, a maildir or a directory of message files, absolute.
        spam: Option<PathBuf>,
        /// Ham, the same.
        ham: Option<PathBuf>,
    },
    /// Retrain an account's junk filter from its stored, classified messages (`rmox junk
    /// retrain`).
    JunkRetrain {
        /// The account.
        account: String,
    },
    /// The junk probability of a message for an account's filter (`rmox junk check`).
    JunkCheck {
        /// The account.
        account: String,
        /// The message, standard base64.
        message: String,
    },
    /// Write an account's messages out (`rmox export`).
    Export {
        /// mbox or maildir.
        format: crate::admin::ExportFormat,
        /// The account.
        account: String,
        /// The destination, absolute.
        dest: PathBuf,
    },
}

/// What a request produced: lines for people, a value for scripts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Answer {
    /// What `rmox` prints.
    pub lines: Vec<String>,
    /// What `rmox ... --json` prints.
    pub json: serde_json::Value,
}

impl Answer {
    /// An answer of lines, its JSON the same lines.
    pub fn lines(lines: Vec<String>) -> Answer {
        let json = serde_json::Value::from(lines.clone());
        Answer { lines, json }
    }

    /// Prints the answer: its lines, or its JSON with `json`.
    pub fn print(&self, json: bool) {
        if json {
            match serde_json::to_string_pretty(&self.json) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("rmox: {e}"),
            }
        } else {
            for l in &self.lines {
                println!("{l}");
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RequestLine {
    v: u32,
    #[serde(flatten)]
    request: Request,
}

#[derive(Serialize, Deserialize)]
struct ReplyLine {
    v: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    answer: Option<Answer>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    error: Option<String>,
}

/// What the running server lends its admin API.
pub struct Live {
    /// Its queue runner's wakeup.
    pub wakeup: Arc<Wakeup>,
    /// Reloads the configuration; the notes of what waits for a restart.
    pub reload: Box<dyn Fn() -> Result<Vec<String>, Fail> + Send + Sync>,
    /// The configuration now.
    pub config: Box<dyn Fn() -> Arc<Config> + Send + Sync>,
    /// Submits as the `[sendmail]` account (`World::sendmail`).
    #[allow(clippy::type_complexity)]
    pub sendmail: Box<
        dyn Fn(Option<&str>, Option<&str>, &[String], &[u8]) -> Result<String, Fail> + Send + Sync,
    >,
}

/// Runs `request` on `store` with configuration `c`: for a running server (`live`), or for
/// a command with the server stopped (`None`).
pub fn execute(
    c: &Arc<Config>,
    store: &Arc<dyn MailStore>,
    request: Request,
    live: Option<&Live>,
) -> Result<Answer, Fail> {
    match request {
        Request::Queue { op } => {
            crate::queue::cli::execute_answer(c, store, op, None, live.map(|l| &l.wakeup))
        }
        Request::MessageList {
            account,
            mailbox,
            limit,
        } => {
            if store.account(&account)?.is_none() {
                return Err(Fail(format!("account {account:?} not found")));
            }
            for id in store.maildir_junk_sync(&account)? {
                crate::junk::sync(store.as_ref(), c, id, now())?;
            }
            let mut msgs: Vec<rmox_storage::MessageRecord> = store
                .messages(&account)?
                .into_iter()
                .filter(|m| !m.expunged && mailbox.as_ref().is_none_or(|b| &m.mailbox == b))
                .collect();
            msgs.sort_by_key(|m| std::cmp::Reverse(m.id));
            msgs.truncate(limit);
            let mut lines = vec![format!(
                "{:>8}  {:<12} {:<20} {:<13} {:>9}  from",
                "id", "mailbox", "received", "flags", "size"
            )];
            let mut json = Vec::new();
            for m in &msgs {
                let mut flags = Vec::new();
                if m.flags.seen {
                    flags.push("seen");
                }
                if m.flags.junk {
                    flags.push("junk");
                }
                if m.flags.notjunk {
                    flags.push("notjunk");
                }
                let from = m.info.from_address.clone().unwrap_or_default();
                lines.push(format!(
                    "{:>8}  {:<12} {:<20} {:<13} {:>9}  {}",
                    m.id.0,
                    m.mailbox,
                    m.received.rfc3339(),
                    flags.join(","),
                    m.size,
                    from
                ));
                json.push(serde_json::json!({
                    "id": m.id.0, "mailbox": m.mailbox, "received": m.received.0,
                    "seen": m.flags.seen, "junk": m.flags.junk, "notjunk": m.flags.notjunk,
                    "size": m.size, "from": from,
                }));
            }
            Ok(Answer {
                lines,
                json: serde_json::Value::from(json),
            })
        }
        Request::MessageClassify { account, id, junk } => {
            let id = rmox_storage::MessageId(id);
            let rec = store
                .message(id)?
                .filter(|m| m.account == account && !m.expunged)
                .ok_or_else(|| Fail(format!("no message {} in account {account:?}", id.0)))?;
            let mut flags = rec.flags;
            flags.junk = junk;
            flags.notjunk = !junk;
            store.set_flags(id, flags)?;
            crate::junk::sync(store.as_ref(), c, id, now())?;
            Ok(Answer::lines(vec![format!(
                "message {} of {account} marked {}",
                id.0,
                if junk { "junk" } else { "not junk" }
            )]))
        }
        Request::JunkTrain { account, spam, ham } => {
            // A progress line on the command's terminal when it trains itself; a running
            // server logs the result.
            let r = crate::junk::train(
                store.as_ref(),
                c,
                &account,
                spam.as_deref(),
                ham.as_deref(),
                live.is_none(),
            )?;
            let line = format!(
                "junk filter of {account}: trained {} spam and {} ham messages{}",
                r.spam,
                r.ham,
                if r.skipped > 0 {
                    format!("; {} unreadable files skipped", r.skipped)
                } else {
                    String::new()
                }
            );
            if live.is_some() {
                tracing::info!("{line}");
            }
            Ok(Answer {
                lines: vec![line],
                json: serde_json::to_value(&r).unwrap_or_default(),
            })
        }
        Request::JunkRetrain { account } => {
            let n = crate::junk::retrain(store.as_ref(), c, &account, now())?;
            Ok(Answer {
                lines: vec![format!(
                    "junk filter of {account}: {n} stored messages (re)trained or untrained"
                )],
                json: serde_json::json!({ "changed": n }),
            })
        }
        Request::JunkCheck { account, message } => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(message.as_bytes())
                .map_err(|e| Fail(format!("junk check request: message: {e}")))?;
            let cfg = crate::junk::junk_config(c, &account)?;
            let r = crate::junk::classify(store.as_ref(), &account, &cfg.params(), &bytes)?;
            let verdict = if r.probability > cfg.threshold {
                "junk"
            } else {
                "not junk"
            };
            Ok(Answer {
                lines: vec![
                    format!("{:.4}", r.probability),
                    format!(
                        "{verdict} at threshold {:.2}{}",
                        cfg.threshold,
                        if r.significant {
                            ""
                        } else {
                            " (not significant: fewer than 50 ham messages trained)"
                        }
                    ),
                    r.words(false),
                ],
                json: serde_json::json!({
                    "probability": r.probability,
                    "significant": r.significant,
                    "threshold": cfg.threshold,
                    "junk": r.probability > cfg.threshold,
                    "ham": r.ham.iter().map(|s| serde_json::json!([s.token, s.score])).collect::<Vec<_>>(),
                    "spam": r.spam.iter().map(|s| serde_json::json!([s.token, s.score])).collect::<Vec<_>>(),
                }),
            })
        }
        Request::WebhookList { retired: false } => {
            let hooks = store.webhooks()?;
            let mut lines = vec![format!(
                "{:>6}  {:<10} {:<9} {:<10} {:>8}  {:<20}  url",
                "id", "account", "kind", "event", "attempts", "next attempt"
            )];
            for h in &hooks {
                lines.push(format!(
                    "{:>6}  {:<10} {:<9} {:<10} {:>8}  {:<20}  {}",
                    h.id,
                    h.account,
                    h.kind,
                    h.event,
                    h.attempts,
                    h.next_attempt.rfc3339(),
                    h.url
                ));
            }
            Ok(Answer {
                lines,
                json: serde_json::to_value(&hooks).unwrap_or_default(),
            })
        }
        Request::WebhookList { retired: true } => {
            let mut hooks = store.webhooks_retired()?;
            hooks.reverse();
            let mut lines = vec![format!(
                "{:>6}  {:<10} {:<10} {:<7} {:>8}  {:<20}  last result",
                "id", "account", "event", "result", "attempts", "retired"
            )];
            for r in &hooks {
                let last = r
                    .hook
                    .results
                    .last()
                    .map(|x| {
                        if x.error.is_empty() {
                            format!("status {}", x.status)
                        } else {
                            x.error.clone()
                        }
                    })
                    .unwrap_or_else(|| "dropped".into());
                lines.push(format!(
                    "{:>6}  {:<10} {:<10} {:<7} {:>8}  {:<20}  {last}",
                    r.hook.id,
                    r.hook.account,
                    r.hook.event,
                    if r.success { "ok" } else { "failed" },
                    r.hook.attempts,
                    r.retired.rfc3339(),
                ));
            }
            Ok(Answer {
                lines,
                json: serde_json::to_value(&hooks).unwrap_or_default(),
            })
        }
        Request::WebhookDrop { id } => {
            if !store.webhook_drop(id, now())? {
                return Err(Fail(format!("no waiting webhook {id}")));
            }
            Ok(Answer::lines(vec![format!("webhook {id} dropped")]))
        }
        Request::TlsrptList => {
            let lines = crate::tlsrpt::list_lines(store.as_ref(), false)?;
            let json = crate::tlsrpt::list_lines(store.as_ref(), true)?
                .first()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            Ok(Answer { lines, json })
        }
        Request::TlsrptShow { id } => {
            let text = crate::tlsrpt::show_text(store.as_ref(), &id)?;
            let json = serde_json::from_str(&text).unwrap_or_default();
            Ok(Answer {
                lines: vec![text],
                json,
            })
        }
        Request::Backup { dir } => {
            let r = store.backup(&dir)?;
            let line = format!(
                "backup written to {}: {} messages, {} queued messages, {} bytes",
                dir.display(),
                r.messages,
                r.queue_messages,
                r.bytes
            );
            Ok(Answer {
                lines: vec![line],
                json: serde_json::json!({
                    "dir": dir,
                    "messages": r.messages,
                    "queue_messages": r.queue_messages,
                    "bytes": r.bytes,
                }),
            })
        }
        Request::AccountPassword { name, password } => {
            let a = configured_account(c, store.as_ref(), &name)?;
            crate::admin::set_password(store.as_ref(), &a, &password)?;
            Ok(Answer::lines(vec![format!("password set for {a}")]))
        }
        Request::AccountLogins { name, disabled } => {
            let a = configured_account(c, store.as_ref(), &name)?;
            let state = if disabled.is_some() {
                "disabled"
            } else {
                "enabled"
            };
            store.account_set_login_disabled(&a, disabled)?;
            Ok(Answer::lines(vec![format!("logins {state} for {a}")]))
        }
        Request::Export {
            format,
            account,
            dest,
        } => Ok(Answer::lines(vec![crate::admin::export_store(
            store.as_ref(),
            format,
            &account,
            &dest,
        )?])),
        Request::Import {
            format,
            account,
            mailbox,
            path,
        } => {
            // Progress lines on the command's terminal when it runs the import itself; a
            // running server logs the result.
            let r = crate::import::import(
                store.as_ref(),
                &c.data_dir(),
                format,
                &account,
                &mailbox,
                &path,
                live.is_none(),
            )?;
            let line = format!(
                "imported {} messages into {account}/{mailbox} from {}{}{}",
                r.messages,
                path.display(),
                if r.resumed {
                    " (went on from where an earlier run stopped)"
                } else {
                    ""
                },
                if r.skipped > 0 {
                    format!("; {} skipped (unreadable or over 100 MiB)", r.skipped)
                } else {
                    String::new()
                }
            );
            if live.is_some() {
                tracing::info!("{line}");
            }
            Ok(Answer {
                lines: vec![line],
                json: serde_json::to_value(&r).unwrap_or_default(),
            })
        }
        Request::Sendmail {
            mail_from,
            from_name,
            recipients,
            message,
        } => {
            let Some(l) = live else {
                return Err(Fail(format!(
                    "rmox is not running for {}: sendmail submits through the running server",
                    c.data_dir().display()
                )));
            };
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(message.as_bytes())
                .map_err(|e| Fail(format!("sendmail request: message: {e}")))?;
            let line = (l.sendmail)(
                mail_from.as_deref(),
                from_name.as_deref(),
                &recipients,
                &bytes,
            )?;
            Ok(Answer::lines(vec![line]))
        }
        Request::Reload => match live {
            None => Err(Fail(format!(
                "no server is running for {} (nothing to reload)",
                c.data_dir().display()
            ))),
            Some(l) => {
                let notes = (l.reload)()?;
                let mut lines = vec!["configuration reloaded".to_string()];
                lines.extend(notes.iter().cloned());
                Ok(Answer {
                    lines,
                    json: serde_json::json!({ "reloaded": true, "restart_needed": notes }),
                })
            }
        },
    }
}

/// The wall clock.
fn now() -> rmox_core::UnixTime {
    rmox_core::UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

/// `name` when it is an account of the configuration (added to storage when it is not
/// there yet).
fn configured_account(c: &Config, store: &dyn MailStore, name: &str) -> Result<String, Fail> {
    let Some(a) = c.account.get(name) else {
        return Err(Fail(format!(
            "{}: account.{name}: no such account",
            c.path.display()
        )));
    };
    crate::storage::ensure_account(store, name, &a.domain)?;
    Ok(name.to_string())
}

/// The socket's path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ctl.sock")
}

/// The running admin thread; [`Control::stop`] ends it and removes the socket.
pub struct Control {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Control {
    /// Stops answering, waits for the thread (it drops its handle on the store) and removes
    /// the socket.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts answering admin requests for `store` on a thread.
pub fn start(store: Arc<dyn MailStore>, live: Live) -> Result<Control, Fail> {
    let path = socket_path(&(live.config)().data_dir());
    // A socket left by a crashed server: nothing listens on it any more.
    if path.exists() && UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path)
        .map_err(|e| Fail(format!("control socket {}: {e}", path.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Fail(format!("control socket {}: {e}", path.display())))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("rmox-ctl".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut line = String::new();
                let limit = max_request(&(live.config)());
                let mut r = BufReader::new(std::io::Read::take(&conn, limit));
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let reply = handle(&store, &live, line.trim_end());
                let mut w = &conn;
                let _ = w.write_all(format!("{reply}\n").as_bytes());
            }
        })
        .map_err(|e| Fail(format!("starting control thread: {e}")))?;
    Ok(Control {
        path,
        stop,
        thread: Some(thread),
    })
}

fn handle(store: &Arc<dyn MailStore>, live: &Live, line: &str) -> String {
    let reply = |r: Result<Answer, Fail>| {
        let (answer, error) = match r {
            Ok(a) => (Some(a), None),
            Err(Fail(e)) => (None, Some(e)),
        };
        serde_json::to_string(&ReplyLine {
            v: VERSION,
            answer,
            error,
        })
        .unwrap_or_else(|e| format!("{{\"v\":{VERSION},\"error\":\"{e}\"}}"))
    };
    let v: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return reply(Err(Fail(format!("admin request is not JSON: {e}")))),
    };
    let version = v.get("v").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(VERSION)) {
        return reply(Err(Fail(format!(
            "admin protocol version {} is not spoken here: the server speaks version {VERSION} \
             (use the rmox binary of the running server)",
            version.map_or("none".to_string(), |v| v.to_string())
        ))));
    }
    let r = match serde_json::from_value::<RequestLine>(v) {
        Ok(req) => {
            let config = (live.config)();
            execute(&config, store, req.request, Some(live))
        }
        Err(e) => Err(Fail(format!("admin request not understood: {e}"))),
    };
    reply(r)
}

/// Sends `request` to a running server, if one listens for `data_dir`; `None` when no
/// server runs.
pub fn request(data_dir: &Path, request: &Request) -> Option<Result<Answer, Fail>> {
    let mut s = UnixStream::connect(socket_path(data_dir)).ok()?;
    Some(exchange(&mut s, request))
}

fn exchange(s: &mut UnixStream, request: &Request) -> Result<Answer, Fail> {
    let io = |e: std::io::Error| Fail(format!("admin socket: {e}"));
    // Long enough for an import of a large mailbox.
    let _ = s.set_read_timeout(Some(Duration::from_secs(6 * 3600)));
    let line = serde_json::to_string(&RequestLine {
        v: VERSION,
        request: request.clone(),
    })
    .map_err(|e| Fail(e.to_string()))?;
    s.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(&*s).read_line(&mut reply).map_err(io)?;
    let r: ReplyLine = serde_json::from_str(reply.trim_end())
        .map_err(|e| Fail(format!("admin socket: unreadable reply: {e}")))?;
    match (r.answer, r.error) {
        (_, Some(e)) => Err(Fail(e)),
        (Some(a), None) => Ok(a),
        (None, None) => Err(Fail("admin socket: empty reply".into())),
    }
}

/// Runs `request` for the configuration at `config`: through the running server when one
/// answers, else on the data directory itself; prints the answer (JSON with `json`).
pub fn run(config: &Path, request: Request, json: bool) -> Result<(), Fail> {
    let c = Arc::new(Config::load(config)?);
    let data = c.data_dir();
    // A server that is starting holds the database before its admin socket answers (and
    // one that is stopping after): wait for it a little instead of failing.
    let deadline = std::time::Instant::now() + LOCKED_WAIT;
    let answer = loop {
        if let Some(r) = self::request(&data, &request) {
            break r?;
        }
        match crate::storage::open_raw(&c) {
            Ok(store) => break execute(&c, &store, request, None)?,
            Err(e) if e.is_locked() && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) if e.is_locked() => {
                return Err(Fail(format!(
                    "opening data directory {}: {e}; another process holds it and its admin socket did not answer within {} s (a server starting or stopping?)",
                    data.display(),
                    LOCKED_WAIT.as_secs()
                )))
            }
            Err(e) => {
                return Err(Fail(crate::storage::describe(
                    &c,
                    &e,
                    crate::storage::Opener::Server,
                )))
            }
        }
    };
    answer.print(json);
    Ok(())
}

/// Tells a running server for `config` to reload its configuration (after a command
/// changed the file) and prints what it answered; whether a server runs.
pub fn reload_if_running(config: &Config) -> Result<bool, Fail> {
    let Some(r) = request(&config.data_dir(), &Request::Reload) else {
        return Ok(false);
    };
    let a =
        r.map_err(|Fail(e)| Fail(format!("the running server did not take the change: {e}")))?;
    for l in a.lines {
        println!("server: {l}");
    }
    Ok(true)
}
