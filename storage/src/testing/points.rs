//! Exact crash points over a sequence of [`Op`]s: a probe run counts the I/O operations
//! (redb's writes, `set_len`s and syncs; message-file creations, links, removals, data
//! and directory syncs) and records the model's state after every step; then, for every
//! N up to that count, a fresh run crashes at the N-th I/O operation. Both surviving
//! images ([`Image::Durable`]: power loss, only synced data; [`Image::Written`]: process
//! crash, all writes) are opened with the real file backend, and:
//!
//! * the store opens (ordinary recovery);
//! * its observable state equals the model after the acknowledged operations, or after
//!   those and the one in flight (nothing of an operation is half-visible, nothing
//!   acknowledged is missing, message bytes are intact);
//! * [`crate::verify`] reports no problem (orphan files are allowed);
//! * a new delivery and a new queue entry get fresh ids and verify stays clean.

use std::path::Path;

use rmox_core::UnixTime;

use super::check::{diff, exec, observe, temp_root, Answer, Model, Observed, Op, ACCOUNTS};
use super::crash::{Crash, Image};
use crate::{Delivery, Flags, MessageInfo, QueueRecipient, RequireTls, Store};

/// What a crash-point run covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// I/O operations of the workload (= crash points tried).
    pub points: u64,
    /// Images checked (two per point).
    pub images: u64,
    /// Images where the operation in flight at the crash turned out durable.
    pub in_flight_durable: u64,
    /// Images that held orphan files (harmless leftovers).
    pub with_orphans: u64,
    /// Images opened with the real file backend (the others in memory).
    pub real_file_images: u64,
}

fn open(data: &Path, sim: &Crash, per_file_fsync: bool) -> Result<Store, String> {
    Store::open_with_backend(data, sim.backend(), per_file_fsync).map_err(|e| e.to_string())
}

/// Runs `op` (reopening for [`Op::Reopen`]).
fn step(
    store: &mut Option<Store>,
    model: &Model,
    op: &Op,
    data: &Path,
    sim: &Crash,
    per_file_fsync: bool,
) -> Answer {
    if *op == Op::Reopen {
        drop(store.take());
        match open(data, sim, per_file_fsync) {
            Ok(s) => {
                *store = Some(s);
                Answer::Unit
            }
            Err(_) => Answer::Err("Io"),
        }
    } else {
        match store {
            Some(s) => exec(s, model, op),
            None => Answer::Err("Io"),
        }
    }
}

/// Opens a crash image in `data`: with the real file backend and real fsyncs, or (fast)
/// with its database bytes in memory and message-file syncs skipped; `close` writes the
/// database back to `index.db` (for verify) and closes.
struct Recovered {
    store: Option<Store>,
    data: std::path::PathBuf,
    mem: Option<(Crash, super::FileHookGuard)>,
}

impl Recovered {
    fn open(data: &Path, real: bool) -> Result<Recovered, String> {
        let mem = if real {
            None
        } else {
            let root = data.parent().ok_or("no parent")?;
            let bytes = std::fs::read(data.join(crate::DB_FILE)).unwrap_or_default();
            let sim = Crash::with_db(root, bytes);
            let hook = super::register_file_hook(root, std::sync::Arc::new(sim.clone()));
            Some((sim, hook))
        };
        let store = match &mem {
            None => Store::open(data),
            Some((sim, _)) => Store::open_with_backend(data, sim.backend(), false),
        }
        .map_err(|e| format!("open: {e}"))?;
        Ok(Recovered {
            store: Some(store),
            data: data.to_path_buf(),
            mem,
        })
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("open")
    }

    fn close(mut self) {
        drop(self.store.take());
        if let Some((sim, hook)) = self.mem.take() {
            drop(hook);
            super::crash::write_sparse(&self.data.join(crate::DB_FILE), &sim.db_written());
        }
    }
}

/// Crashes `ops` at every I/O operation (or only at `only`) and checks every image.
/// Images are opened with the real file backend (real fsyncs) at every `real_every`-th
/// crash point, in memory otherwise.
pub fn check_crash_points(
    ops: &[Op],
    per_file_fsync: bool,
    only: Option<u64>,
    real_every: u64,
) -> Result<Report, String> {
    // Probe: count, and keep the expected state after each step.
    let (_tmp, root) = temp_root();
    let data = root.join("data");
    let sim = Crash::new(&root, None);
    let hook = super::register_file_hook(&root, std::sync::Arc::new(sim.clone()));
    let mut store = Some(open(&data, &sim, per_file_fsync)?);
    let mut model = Model::default();
    let mut snaps: Vec<Observed> = vec![model.expected()];
    let mut answers = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let got = step(&mut store, &model, op, &data, &sim, per_file_fsync);
        model
            .apply(op, &got)
            .map_err(|e| format!("probe step {i}: {e}"))?;
        let s = store.as_ref().ok_or("probe: no store")?;
        let seen = observe(s).map_err(|e| format!("probe step {i}: {e}"))?;
        let want = model.expected();
        if seen != want {
            return Err(format!("probe step {i}: {}", diff(&seen, &want)));
        }
        snaps.push(want);
        answers.push(got);
    }
    let total = sim.ops();
    drop(store);
    drop(hook);

    let mut rep = Report {
        points: total,
        ..Report::default()
    };
    let points: Vec<u64> = match only {
        Some(n) => vec![n],
        None => (1..=total).collect(),
    };
    for n in points {
        let (_tmp, root) = temp_root();
        let data = root.join("data");
        let sim = Crash::new(&root, Some(n));
        let hook = super::register_file_hook(&root, std::sync::Arc::new(sim.clone()));
        // Acknowledged operations: those answered as in the probe before the first that
        // was not (the one in flight at the crash).
        let mut acked = 0;
        let mut store = open(&data, &sim, per_file_fsync).ok();
        if store.is_some() {
            let mut model = Model::default();
            for (i, op) in ops.iter().enumerate() {
                let got = step(&mut store, &model, op, &data, &sim, per_file_fsync);
                if got != answers[i] {
                    break;
                }
                model
                    .apply(op, &got)
                    .map_err(|e| format!("crash {n}, step {i}: {e}"))?;
                acked = i + 1;
            }
        }
        drop(store);
        if !sim.crashed() {
            return Err(format!("crash point {n} of {total} never reached"));
        }
        sim.check_model().map_err(|e| format!("crash {n}: {e}"))?;
        drop(hook);
        for image in [Image::Durable, Image::Written] {
            let what = format!("crash at I/O operation {n} of {total}, {image:?} image, {acked} operations acknowledged");
            let (_img, dest) = temp_root();
            sim.write_image(image, &data, &dest);
            let ddata = dest.join("data");
            let real = n % real_every.max(1) == 0;
            let r = Recovered::open(&ddata, real).map_err(|e| format!("{what}: {e}"))?;
            let seen = observe(r.store()).map_err(|e| format!("{what}: observe: {e}"))?;
            if seen == snaps[acked] {
            } else if acked < ops.len() && seen == snaps[acked + 1] {
                rep.in_flight_durable += 1;
            } else {
                let mut msg = format!(
                    "{what}: state is neither before nor after the operation in flight ({:?})\nagainst before:\n{}",
                    ops.get(acked),
                    diff(&seen, &snaps[acked])
                );
                if acked < ops.len() {
                    msg.push_str(&format!(
                        "against after:\n{}",
                        diff(&seen, &snaps[acked + 1])
                    ));
                }
                return Err(msg);
            }
            r.close();
            let v = crate::verify(&ddata);
            if !v.is_ok() {
                return Err(format!("{what}: verify: {:?}", v.lines()));
            }
            if !v.orphans.is_empty() {
                rep.with_orphans += 1;
            }
            after_recovery(&ddata, &seen, real)
                .map_err(|e| format!("{what}: after recovery: {e}"))?;
            if real {
                rep.real_file_images += 1;
            }
            rep.images += 1;
        }
    }
    Ok(rep)
}

/// A recovered store keeps working: new ids are fresh, verify stays clean.
fn after_recovery(data: &Path, seen: &Observed, real: bool) -> Result<(), String> {
    let r = Recovered::open(data, real)?;
    let s = r.store();
    let msg = b"Subject: after\r\n\r\nrecovery\r\n".to_vec();
    let has_a = seen.accounts.iter().any(|a| a.0 == ACCOUNTS[0]);
    let reqs = if has_a {
        vec![Delivery {
            account: ACCOUNTS[0].into(),
            mailbox: "Inbox".into(),
            message: &msg,
            flags: Flags::default(),
            received: UnixTime(50),
            info: MessageInfo::default(),
        }]
    } else {
        vec![]
    };
    let rcpt = QueueRecipient {
        sender_account: None,
        mail_from: String::new(),
        recipient: "new@example.com".into(),
        has_8bit: false,
        smtputf8: false,
        requiretls: RequireTls::Default,
        transport: None,
        next_attempt: UnixTime(50),
        queued: UnixTime(50),
        hold: false,
        dsn: Default::default(),
        is_dsn: true,
    };
    let ids = s
        .deliver_and_queue(reqs, Some((&msg, vec![rcpt])))
        .map_err(|e| e.to_string())?;
    for id in &ids {
        if seen
            .messages
            .iter()
            .any(|(_, v)| v.iter().any(|m| m.id == id.0))
        {
            return Err(format!("message id {id} handed out again"));
        }
        if s.message_bytes(*id).map_err(|e| e.to_string())? != msg {
            return Err(format!("message {id} differs"));
        }
    }
    let queue = s
        .queue_list(&Default::default())
        .map_err(|e| e.to_string())?;
    for e in &queue {
        let old = seen.queue.iter().find(|o| o.id == e.id);
        let retired = seen.retired.iter().any(|r| r.entry.id == e.id);
        if retired || old.is_some_and(|o| o.rcpt.recipient != e.rcpt.recipient) {
            return Err(format!("queue id {} handed out again", e.id));
        }
        if old.is_none() && s.queue_message(e.msg_id).map_err(|e| e.to_string())? != msg {
            return Err(format!("queued message {} differs", e.msg_id));
        }
    }
    r.close();
    let v = crate::verify(data);
    if !v.is_ok() {
        return Err(format!("verify: {:?}", v.lines()));
    }
    Ok(())
}
