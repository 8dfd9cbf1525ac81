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
//! * [`crate::verify`] reports no problem (orphan files are allowed), both before the
//!   store is opened again (then it may say recovery is due) and after;
//! * a new delivery and a new queue entry get fresh ids and verify stays clean.

use std::collections::{BTreeMap, BTreeSet};
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
    /// Images on which [`crate::verify`], run before the store was opened again (as an
    /// operator would after a crash), said recovery is due (and found no problem).
    pub needs_recovery: u64,
    /// Images whose acceptance log held acknowledged writes to replay.
    pub log_pending: u64,
    /// Of those, images whose replay was itself crashed at every I/O operation.
    pub replay_crashed: u64,
    /// Crash points tried inside replays.
    pub replay_points: u64,
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

/// Crashes `ops` at every I/O operation (or only at one, `1 + only % count`: fuzzers
/// and proptests pick any number) and checks every image.
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
        Some(n) => vec![1 + n % total.max(1)],
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
            // What an operator's `rmox verify` says before any start repaired the image.
            // (Without `index.db` the directory was still being created: nothing to check.)
            if ddata.join(crate::DB_FILE).exists() {
                let raw = crate::verify(&ddata);
                if !raw.is_ok() {
                    return Err(format!("{what}: verify before recovery: {:?}", raw.lines()));
                }
                if raw.recovered {
                    rep.needs_recovery += 1;
                }
                if raw.log_pending > 0 {
                    rep.log_pending += 1;
                    // Crash the replay itself: the first such image, then every 16th.
                    if rep.replay_crashed == 0 || rep.log_pending % 16 == 0 {
                        rep.replay_points +=
                            check_replay_crashes(&dest).map_err(|e| format!("{what}: {e}"))?;
                        rep.replay_crashed += 1;
                    }
                }
            }
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

/// Copies the tree under `from` into `to` (files and directories).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Crashes the recovery of the crash image under `image` (its `data` directory holds
/// acceptance-log records to replay) at each of its I/O operations; every image of every
/// such crash must recover to the state a clean recovery reaches, and verify clean.
/// Returns the number of crash points tried.
fn check_replay_crashes(image: &Path) -> Result<u64, String> {
    let (want, count) = {
        let (_tmp, root) = temp_root();
        copy_tree(image, &root);
        let data = root.join("data");
        let sim = Crash::from_tree(&root, &data, None);
        let hook = super::register_file_hook(&root, std::sync::Arc::new(sim.clone()));
        let s = open(&data, &sim, false).map_err(|e| format!("clean replay: {e}"))?;
        let count = sim.ops();
        let want = observe(&s).map_err(|e| format!("clean replay: observe: {e}"))?;
        drop(s);
        drop(hook);
        (want, count)
    };
    for m in 1..=count {
        let what = format!("crash during replay at I/O operation {m} of {count}");
        let (_tmp, root) = temp_root();
        copy_tree(image, &root);
        let data = root.join("data");
        let sim = Crash::from_tree(&root, &data, Some(m));
        let hook = super::register_file_hook(&root, std::sync::Arc::new(sim.clone()));
        drop(open(&data, &sim, false));
        drop(hook);
        if !sim.crashed() {
            return Err(format!("{what}: never reached"));
        }
        for img in [Image::Durable, Image::Written] {
            let (_img, dest) = temp_root();
            sim.write_image(img, &data, &dest);
            let ddata = dest.join("data");
            let r = Recovered::open(&ddata, false).map_err(|e| format!("{what}, {img:?}: {e}"))?;
            let seen = observe(r.store()).map_err(|e| format!("{what}, {img:?}: {e}"))?;
            if seen != want {
                return Err(format!("{what}, {img:?} image: {}", diff(&seen, &want)));
            }
            r.close();
            let v = crate::verify(&ddata);
            if !v.is_ok() {
                return Err(format!("{what}, {img:?} image: verify: {:?}", v.lines()));
            }
        }
    }
    Ok(count)
}

/// A recovered store keeps working: new ids are fresh, verify stays clean.
fn after_recovery(data: &Path, seen: &Observed, real: bool) -> Result<(), String> {
    let r = Recovered::open(data, real)?;
    let s = r.store();
    let msg = b"Subject: after\r\n\r\nrecovery\r\n".to_vec();
    let has_a = seen.accounts.iter().any(|a| a.0 == ACCOUNTS[0]);
    if has_a {
        // (The workload may have set a quota.)
        s.account_set_quota(ACCOUNTS[0], None)
            .map_err(|e| e.to_string())?;
    }
    let reqs = if has_a {
        vec![Delivery {
            account: ACCOUNTS[0].into(),
            mailbox: "Inbox".into(),
            head: &[],
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
        from_id: None,
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

/// What the concurrent workload acknowledged.
#[derive(Debug, Default)]
struct Acked {
    /// Message ids and their bytes (each delivery went to two mailboxes in one commit).
    messages: Vec<(u64, Vec<u8>)>,
    /// Queue entry ids with their message bytes.
    queued: Vec<(u64, Vec<u8>)>,
    /// Entries whose retirement was acknowledged.
    retired: BTreeSet<u64>,
}

/// The message of thread `t`, step `k`.
fn concurrent_msg(t: usize, k: usize) -> Vec<u8> {
    let mut v = format!("Subject: {t}-{k}\r\n\r\n").into_bytes();
    v.resize(40 + (t * 977 + k * 131) % 3000, b'a' + (k % 26) as u8);
    v
}

/// Runs the concurrent workload on a fresh store until it finishes or the crash stops it.
fn concurrent_run(
    data: &Path,
    sim: &Crash,
    per_file_fsync: bool,
    threads: usize,
    steps: usize,
) -> Acked {
    let acked = std::sync::Mutex::new(Acked::default());
    let Ok(s) = Store::open_with_backend(data, sim.backend(), per_file_fsync) else {
        return Acked::default();
    };
    if s.account_add("a", "example.org").is_err() || s.account_add("b", "example.org").is_err() {
        return Acked::default();
    }
    let barrier = std::sync::Barrier::new(threads);
    std::thread::scope(|sc| {
        for t in 0..threads {
            let (s, acked, barrier) = (&s, &acked, &barrier);
            sc.spawn(move || {
                barrier.wait();
                for k in 0..steps {
                    let m = concurrent_msg(t, k);
                    if t == 0 && k % 2 == 1 {
                        let r = |to: &str| QueueRecipient {
                            sender_account: Some("a".into()),
                            mail_from: "a@example.org".into(),
                            recipient: to.into(),
                            has_8bit: false,
                            smtputf8: false,
                            requiretls: RequireTls::Default,
                            transport: None,
                            next_attempt: UnixTime(1),
                            queued: UnixTime(1),
                            hold: false,
                            dsn: Default::default(),
                            is_dsn: false,
                            from_id: None,
                        };
                        let Ok(ids) = s.queue_add(&m, vec![r("x@example.com"), r("y@example.com")])
                        else {
                            return;
                        };
                        acked
                            .lock()
                            .unwrap()
                            .queued
                            .extend(ids.iter().map(|i| (i.0, m.clone())));
                        if s.queue_retire(
                            ids[0],
                            crate::Outcome::Delivered("250".into()),
                            UnixTime(2),
                        )
                        .is_err()
                        {
                            return;
                        }
                        acked.lock().unwrap().retired.insert(ids[0].0);
                        continue;
                    }
                    let to = |acc: &str| Delivery {
                        account: acc.into(),
                        mailbox: "Inbox".into(),
                        head: &[],
                        message: &m,
                        flags: Flags::default(),
                        received: UnixTime(1),
                        info: MessageInfo::default(),
                    };
                    let Ok(ids) = s.deliver_many(vec![to("a"), to("b")]) else {
                        return;
                    };
                    acked
                        .lock()
                        .unwrap()
                        .messages
                        .extend(ids.iter().map(|i| (i.0, m.clone())));
                }
            });
        }
    });
    drop(s);
    acked.into_inner().unwrap()
}

/// Group commit under crashes: `threads` writers share commits (deliveries to two
/// mailboxes, queue add and retire); crashed at every `stride`-th I/O operation of a
/// probe run's count (batching varies between runs, so points beyond a run's end are
/// skipped). Every acknowledged operation must be intact in both images, every delivery
/// present in both mailboxes or in neither, and verify clean.
pub fn check_concurrent_crash_points(
    per_file_fsync: bool,
    threads: usize,
    steps: usize,
    stride: u64,
) -> Result<Report, String> {
    let total = {
        let (_tmp, root) = temp_root();
        let sim = Crash::new(&root, None);
        let _hook = super::register_file_hook(&root, std::sync::Arc::new(sim.clone()));
        concurrent_run(&root.join("data"), &sim, per_file_fsync, threads, steps);
        sim.ops()
    };
    let mut rep = Report {
        points: total,
        ..Report::default()
    };
    let mut n = 1;
    while n <= total {
        let (_tmp, root) = temp_root();
        let data = root.join("data");
        let sim = Crash::new(&root, Some(n));
        let hook = super::register_file_hook(&root, std::sync::Arc::new(sim.clone()));
        let acked = concurrent_run(&data, &sim, per_file_fsync, threads, steps);
        drop(hook);
        if !sim.crashed() {
            n += stride;
            continue;
        }
        for image in [Image::Durable, Image::Written] {
            let what = format!(
                "concurrent crash at I/O operation {n} (of about {total}), {image:?} image"
            );
            let (_img, dest) = temp_root();
            sim.write_image(image, &data, &dest);
            let ddata = dest.join("data");
            let r = Recovered::open(&ddata, false).map_err(|e| format!("{what}: {e}"))?;
            let s = r.store();
            for (id, m) in &acked.messages {
                match s.message_bytes(crate::MessageId(*id)) {
                    Ok(b) if b == *m => {}
                    other => {
                        return Err(format!(
                            "{what}: acknowledged message {id}: {:?}",
                            other.map(|b| b.len())
                        ))
                    }
                }
            }
            // All or nothing: each message is in both accounts or in neither.
            let mut copies: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
            for acc in ["a", "b"] {
                for rec in s.messages(acc).map_err(|e| format!("{what}: {e}"))? {
                    let b = s
                        .message_bytes(rec.id)
                        .map_err(|e| format!("{what}: message {}: {e}", rec.id))?;
                    *copies.entry(b).or_default() += 1;
                }
            }
            if let Some((m, c)) = copies.iter().find(|(_, c)| **c != 2) {
                return Err(format!(
                    "{what}: a delivery is half visible ({c} copies of {:?})",
                    String::from_utf8_lossy(&m[..20.min(m.len())])
                ));
            }
            let retired: BTreeSet<u64> = s
                .queue_retired(usize::MAX)
                .map_err(|e| format!("{what}: {e}"))?
                .into_iter()
                .map(|r| r.entry.id.0)
                .collect();
            for (id, m) in &acked.queued {
                let e = s
                    .queue_get(crate::QueueId(*id))
                    .map_err(|e| format!("{what}: {e}"))?;
                match e {
                    Some(_) if acked.retired.contains(id) => {
                        return Err(format!("{what}: retired entry {id} still queued"))
                    }
                    Some(e) => {
                        if s.queue_message(e.msg_id).ok().as_ref() != Some(m) {
                            return Err(format!("{what}: queued message of entry {id} differs"));
                        }
                    }
                    None if retired.contains(id) => {}
                    None => return Err(format!("{what}: acknowledged queue entry {id} lost")),
                }
            }
            r.close();
            let v = crate::verify(&ddata);
            if !v.is_ok() {
                return Err(format!("{what}: verify: {:?}", v.lines()));
            }
            if !v.orphans.is_empty() {
                rep.with_orphans += 1;
            }
            rep.images += 1;
        }
        n += stride;
    }
    Ok(rep)
}
