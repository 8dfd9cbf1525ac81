//! Group commit: many concurrent writers share one redb write transaction and one fsync.
//!
//! Leader/follower: a caller puts its work (a closure over the write transaction) and the
//! directories whose new entries must be durable into a shared queue. If no commit is
//! running, it becomes the leader: it takes up to [`MAX_BATCH`] jobs, fsyncs their
//! directories, runs every closure in one transaction, commits once with immediate
//! durability and publishes each job's result, which wakes that job's caller (callers park
//! their thread; no caller is woken for another's result). A leader whose own job is done
//! leaves and wakes the caller of the first job still pending (it arrived during the
//! commit), which becomes the next leader. The queue is bounded by [`MAX_PENDING`];
//! callers beyond it wait, so memory stays bounded.
//!
//! Jobs may also come from tasks that must not block (an async runtime's thread,
//! [`Committer::submit`]): such a job's result wakes its task, and since no thread of its
//! own waits to lead, the store's commit thread ([`Committer::helper_round`]) leads while
//! such jobs wait. The first job of a burst that finds no leader wakes it; a thread leader
//! leaving with such a job at the front of the queue hands over to it.
//!
//! A job that returns an error that is not a storage failure (no such account, over quota)
//! must not have changed anything; only that job fails. A storage failure or a panic aborts
//! the whole batch and every job in it gets the error. A failed commit also fails every
//! job; redb may still have made it durable, so callers must not delete files then.

use std::any::Any;
use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::Instant;

use redb::{Database, Durability, WriteTransaction};

use crate::alog::{Log, CHECKPOINT_AFTER};
use crate::error::StoreError;
use crate::overlay::Overlay;

/// Most jobs in one transaction.
pub const MAX_BATCH: usize = 512;
/// Most jobs waiting; more callers block until there is room.
pub const MAX_PENDING: usize = 4096;

type Work = Box<dyn FnOnce(&WriteTransaction) -> Result<Box<dyn Any + Send>, StoreError> + Send>;
type Hook = Box<dyn Fn(&WriteTransaction) -> Result<(), StoreError> + Send + Sync>;

/// The result of one job: its output, or why it failed, and whether the failure came after
/// the commit was attempted (then files must be kept).
pub(crate) struct Done {
    pub result: Result<Box<dyn Any + Send>, StoreError>,
    /// True when the commit itself failed (the job's effects may be durable).
    pub commit_failed: bool,
}

/// Where a job's result is published; set once, which wakes the job's caller.
struct Slot {
    /// The result, and the waker of the task waiting for it (a job from
    /// [`Committer::submit`]).
    done: Mutex<(Option<Done>, Option<Waker>)>,
    /// The caller's thread, parked until its job is done or it is to lead the next batch;
    /// `None` for a task's job.
    waiter: Option<Thread>,
}

impl Slot {
    fn new(waiter: Option<Thread>) -> Slot {
        Slot {
            done: Mutex::new((None, None)),
            waiter,
        }
    }
    fn lock(&self) -> MutexGuard<'_, (Option<Done>, Option<Waker>)> {
        self.done.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn set(&self, d: Done) {
        let mut g = self.lock();
        if g.0.is_none() {
            g.0 = Some(d);
            let waker = g.1.take();
            drop(g);
            if let Some(t) = &self.waiter {
                t.unpark();
            }
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
    fn is_set(&self) -> bool {
        self.lock().0.is_some()
    }
    fn take(&self) -> Option<Done> {
        self.lock().0.take()
    }
}

/// A job's result as its caller gets it.
fn outcome<R: 'static>(d: Option<Done>) -> Result<R, (StoreError, bool)> {
    let Some(d) = d else {
        return Err((StoreError::Panicked, true));
    };
    match d.result {
        Ok(b) => match b.downcast::<R>() {
            Ok(r) => Ok(*r),
            Err(_) => Err((StoreError::Panicked, d.commit_failed)),
        },
        Err(e) => Err((e, d.commit_failed)),
    }
}

/// The result of a job from [`Committer::submit`]: ready once its batch is committed (or
/// failed), as [`Committer::run`] would return it. Dropping it does not withdraw the job.
pub(crate) struct Committed<R> {
    slot: Arc<Slot>,
    _r: PhantomData<fn() -> R>,
}

impl<R: 'static> Future for Committed<R> {
    type Output = Result<R, (StoreError, bool)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut g = self.slot.lock();
        match g.0.take() {
            Some(d) => Poll::Ready(outcome(Some(d))),
            None => {
                if !g.1.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    g.1 = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

struct Job {
    work: Work,
    dirs: Vec<PathBuf>,
    /// The write's redo record for the acceptance log; `None`: the write needs a durable
    /// commit of its own (a checkpoint).
    log: Option<Vec<u8>>,
    done: Arc<Slot>,
}

/// The acceptance log and what the next checkpoint must make durable first.
struct LogState {
    log: Log,
    /// Directories with entries (files) created since the last checkpoint.
    dirs: BTreeSet<PathBuf>,
    /// When the first record since the last checkpoint was appended.
    since: Option<Instant>,
    /// Why writes stopped (a failed log write); every later write fails with it.
    poisoned: Option<StoreError>,
}

struct State {
    pending: VecDeque<Job>,
    leader: bool,
    /// The commit thread is the leader (or is woken to be): set with `leader`.
    helper_leads: bool,
    /// Callers waiting for room in `pending` (on the condition variable).
    room_waiters: usize,
}

/// The shared commit queue of one store.
pub(crate) struct Committer {
    state: Mutex<State>,
    cv: Condvar,
    /// Runs at the end of every batch before commit (persists id counters).
    before_commit: Hook,
    /// When set, message files are written without their own fsync and one `syncfs` of
    /// this directory's file system makes a whole batch's files and directory entries
    /// durable before the commit (Linux); otherwise every file is fsynced by its writer and
    /// every touched directory here.
    syncfs_root: Option<PathBuf>,
    /// The acceptance log ([`crate::alog`]); `None`: every batch commits durably.
    log: Option<Mutex<LogState>>,
    /// Index entries of logged deliveries not yet in the table ([`crate::overlay`]): every
    /// checkpoint writes them first, a logged batch when more than
    /// [`crate::overlay::INDEX_FLUSH_AT`] wait.
    overlay: Option<Arc<Overlay>>,
    /// The commit thread, which leads while tasks' jobs wait (started by the store with its
    /// first such job; it ends when the store is gone). `None`: it could not be started.
    helper: OnceLock<Option<Thread>>,
    /// `helper_leads`, readable without the store: the commit thread takes the store only
    /// when it has work (an idle store is never held by it).
    helper_flag: Arc<AtomicBool>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Committer {
    pub(crate) fn new(
        before_commit: Hook,
        syncfs_root: Option<PathBuf>,
        log: Option<Log>,
        overlay: Option<Arc<Overlay>>,
    ) -> Committer {
        Committer {
            state: Mutex::new(State {
                pending: VecDeque::new(),
                leader: false,
                helper_leads: false,
                room_waiters: 0,
            }),
            cv: Condvar::new(),
            before_commit,
            syncfs_root,
            log: log.map(|log| {
                Mutex::new(LogState {
                    log,
                    dirs: BTreeSet::new(),
                    since: None,
                    poisoned: None,
                })
            }),
            overlay,
            helper: OnceLock::new(),
            helper_flag: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the commit thread runs (see the module docs); `start` starts it if it was
    /// not tried yet (it runs once, even when called from several threads at once).
    pub(crate) fn helper_started(&self, start: impl FnOnce() -> Option<Thread>) -> bool {
        self.helper.get_or_init(start).is_some()
    }

    /// Whether the commit thread is to lead now, readable without the committer.
    pub(crate) fn helper_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.helper_flag)
    }

    /// Makes the commit thread the leader (the caller holds the state, with no leader).
    fn lead_by_helper(&self, st: &mut State) {
        st.leader = true;
        st.helper_leads = true;
        self.helper_flag.store(true, Ordering::SeqCst);
    }

    /// Queues `f` like [`Committer::run`] without waiting: the returned future is ready
    /// once the batch that ran it is committed. Never blocks (the queue's bound is for
    /// threads; a task has at most one job waiting). The commit thread must be started
    /// ([`Committer::helper`]).
    pub(crate) fn submit<R, F>(
        &self,
        dirs: Vec<PathBuf>,
        log: Option<Vec<u8>>,
        f: F,
    ) -> Committed<R>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        let done = Arc::new(Slot::new(None));
        let job = Job {
            work: Box::new(move |txn| f(txn).map(|r| Box::new(r) as Box<dyn Any + Send>)),
            dirs,
            log: log.filter(|_| self.log.is_some()),
            done: Arc::clone(&done),
        };
        let mut st = lock(&self.state);
        st.pending.push_back(job);
        let wake = !st.leader;
        if wake {
            self.lead_by_helper(&mut st);
        }
        drop(st);
        if wake {
            self.wake_helper();
        }
        Committed {
            slot: done,
            _r: PhantomData,
        }
    }

    fn wake_helper(&self) {
        match self.helper.get() {
            Some(Some(t)) => t.unpark(),
            // Only `submit` hands leadership to the helper, after the store started it.
            _ => debug_assert!(false, "commit thread not started"),
        }
    }

    /// The commit thread's turn: when it was made the leader, it commits batch after batch
    /// until the queue is empty. Returns at once otherwise.
    pub(crate) fn helper_round(&self, db: &Database) {
        let mut st = lock(&self.state);
        if !st.helper_leads {
            return;
        }
        loop {
            if st.pending.is_empty() {
                st.leader = false;
                st.helper_leads = false;
                self.helper_flag.store(false, Ordering::SeqCst);
                return;
            }
            let n = st.pending.len().min(MAX_BATCH);
            let batch: Vec<Job> = st.pending.drain(..n).collect();
            drop(st);
            self.commit_batch(db, batch);
            st = lock(&self.state);
            if st.room_waiters > 0 {
                self.cv.notify_all();
            }
        }
    }

    /// Whether writes may carry a redo record (the store has an acceptance log).
    pub(crate) fn logs(&self) -> bool {
        self.log.is_some()
    }

    /// Whether acceptance-log records wait for a checkpoint.
    pub(crate) fn log_pending(&self) -> bool {
        self.log.as_ref().is_some_and(|m| {
            m.lock()
                .unwrap_or_else(|e| e.into_inner())
                .log
                .has_records()
        })
    }

    /// Whether writers may skip their own file fsync (the batch syncs the file system).
    pub(crate) fn batch_syncs_files(&self) -> bool {
        self.syncfs_root.is_some()
    }

    /// Runs `f` in a shared, durably committed write transaction. `dirs` are fsynced before
    /// the commit. Returns `f`'s output once committed.
    pub(crate) fn run<R, F>(
        &self,
        db: &Database,
        dirs: Vec<PathBuf>,
        log: Option<Vec<u8>>,
        f: F,
    ) -> Result<R, (StoreError, bool)>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        let done = Arc::new(Slot::new(Some(std::thread::current())));
        let job = Job {
            work: Box::new(move |txn| f(txn).map(|r| Box::new(r) as Box<dyn Any + Send>)),
            dirs,
            log: log.filter(|_| self.log.is_some()),
            done: Arc::clone(&done),
        };
        let mut st = lock(&self.state);
        while st.pending.len() >= MAX_PENDING {
            st.room_waiters += 1;
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            st.room_waiters -= 1;
        }
        st.pending.push_back(job);
        // Waiting callers are woken one by one, never all at once: each when its job's
        // result is published (`Slot::set`), and the first pending job's caller when the
        // leader leaves with work left. A wake-up between the check and `park` is not lost
        // (`unpark` before `park` makes `park` return), and a spurious one only loops.
        loop {
            if done.is_set() {
                break;
            }
            if st.leader {
                drop(st);
                std::thread::park();
                st = lock(&self.state);
                continue;
            }
            st.leader = true;
            let n = st.pending.len().min(MAX_BATCH);
            let batch: Vec<Job> = st.pending.drain(..n).collect();
            drop(st);
            self.commit_batch(db, batch);
            st = lock(&self.state);
            st.leader = false;
            if st.room_waiters > 0 {
                self.cv.notify_all();
            }
            if done.is_set() {
                // Leaving: the next pending job's caller leads (this one would otherwise),
                // or the commit thread for a task's job.
                let mut helper = false;
                if let Some(next) = st.pending.front() {
                    match &next.done.waiter {
                        Some(t) => t.unpark(),
                        None => {
                            self.lead_by_helper(&mut st);
                            helper = true;
                        }
                    }
                }
                drop(st);
                if helper {
                    self.wake_helper();
                }
                return outcome(done.take());
            }
        }
        drop(st);
        outcome(done.take())
    }

    fn commit_batch(&self, db: &Database, batch: Vec<Job>) {
        let slots: Vec<Arc<Slot>> = batch.iter().map(|j| Arc::clone(&j.done)).collect();
        let _ = catch_unwind(AssertUnwindSafe(|| self.try_batch(db, batch)));
        // try_batch answers every job; should it panic before that, answer the rest here so
        // no caller waits forever.
        for s in slots {
            s.set(Done {
                result: Err(StoreError::Panicked),
                commit_failed: true,
            });
        }
    }

    fn try_batch(&self, db: &Database, batch: Vec<Job>) {
        let started = Instant::now();
        let size = batch.len() as u64;
        let mut slots = Vec::with_capacity(batch.len());
        let mut works = Vec::with_capacity(batch.len());
        let mut logs = Vec::with_capacity(batch.len());
        let mut dirs = BTreeSet::new();
        for j in batch {
            slots.push(j.done);
            works.push(j.work);
            logs.push(j.log);
            dirs.extend(j.dirs);
        }
        let fail_all = |slots: &[Arc<Slot>], e: &StoreError, commit_failed: bool| {
            for s in slots {
                s.set(Done {
                    result: Err(e.clone()),
                    commit_failed,
                });
            }
        };
        let mut log = self
            .log
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(e) = log.as_ref().and_then(|l| l.poisoned.clone()) {
            fail_all(&slots, &e, false);
            return;
        }
        // Logged: every write has a redo record and no checkpoint is due. Otherwise this
        // batch is a checkpoint: it also makes durable what was logged since the last one.
        let log_bytes: u64 = logs
            .iter()
            .flatten()
            .map(|p| (p.len() + crate::alog::HEAD) as u64)
            .sum();
        let logged = log.as_ref().is_some_and(|l| {
            logs.iter().all(Option::is_some)
                && l.log.fits(log_bytes)
                && l.since.is_none_or(|t| t.elapsed() < CHECKPOINT_AFTER)
        });
        if let Some(l) = log.as_mut() {
            if logged {
                return self.logged_batch(db, l, slots, works, logs, dirs, started, size);
            }
            dirs.append(&mut l.dirs.clone());
        }
        match &self.syncfs_root {
            Some(root) if !dirs.is_empty() => {
                if let Err(e) = crate::files::sync_fs(root) {
                    fail_all(&slots, &e, false);
                    return;
                }
            }
            _ => {
                for d in &dirs {
                    if let Err(e) = crate::files::sync_dir(d) {
                        fail_all(&slots, &e, false);
                        return;
                    }
                }
            }
        }
        let mut txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                fail_all(&slots, &e.into(), false);
                return;
            }
        };
        if let Err(e) = txn.set_durability(Durability::Immediate) {
            fail_all(&slots, &e.into(), false);
            return;
        }
        // The index entries waiting in memory go in first: this batch's writes may remove
        // some (an expunge), and the commit records that the table holds everything logged.
        let flushed = match self.overlay.as_ref().map(|o| o.flush_into(&txn)) {
            None => Vec::new(),
            Some(Ok(k)) => k,
            Some(Err(e)) => {
                let _ = txn.abort();
                fail_all(&slots, &e, false);
                return;
            }
        };
        let (results, mut fatal) = self.run_works(&txn, works);
        if fatal.is_none() {
            if let Some(l) = &log {
                // Everything appended so far is in this commit's state.
                if let Err(e) = record_log_done(&txn, l.log.last_seq()) {
                    fatal = Some(e);
                }
            }
        }
        if let Some(e) = fatal {
            let _ = txn.abort();
            fail_all(&slots, &e, false);
            return;
        }
        let any_ok = results.iter().any(|r| matches!(r, Some(Ok(_))));
        let view = self.overlay.as_ref().map(|o| o.commit_guard());
        let commit = if any_ok {
            txn.commit().map_err(StoreError::from)
        } else {
            txn.abort().map_err(StoreError::from)
        };
        if commit.is_ok() {
            if let (Some(o), true) = (&self.overlay, any_ok) {
                o.forget(&flushed);
            }
        }
        drop(view);
        if commit.is_ok() {
            COMMIT_STATS.record(started.elapsed(), size);
            if let (Some(l), true) = (log.as_mut(), any_ok) {
                let next = l.log.last_seq() + 1;
                l.log.restart(next);
                l.dirs.clear();
                l.since = None;
            }
        }
        match commit {
            Ok(()) => {
                for (s, r) in slots.iter().zip(results) {
                    let result = r.unwrap_or(Err(StoreError::Panicked));
                    s.set(Done {
                        result,
                        commit_failed: false,
                    });
                }
            }
            Err(e) => {
                for (s, r) in slots.iter().zip(results) {
                    let (result, commit_failed) = match r {
                        Some(Err(own)) => (Err(own), false),
                        _ => (Err(e.clone()), any_ok),
                    };
                    s.set(Done {
                        result,
                        commit_failed,
                    });
                }
            }
        }
    }
}

/// One job's result in a batch: `None` when the batch failed before or at it.
type JobResult = Option<Result<Box<dyn Any + Send>, StoreError>>;

impl Committer {
    /// Runs a batch's jobs in `txn`, then the before-commit hook. A job refused for its own
    /// reason fails alone; a storage failure or a panic is fatal to the batch (returned;
    /// the jobs after it do not run).
    fn run_works(
        &self,
        txn: &WriteTransaction,
        works: Vec<Work>,
    ) -> (Vec<JobResult>, Option<StoreError>) {
        let mut results: Vec<JobResult> = Vec::with_capacity(works.len());
        let mut fatal: Option<StoreError> = None;
        for w in works {
            if fatal.is_some() {
                results.push(None);
                continue;
            }
            match catch_unwind(AssertUnwindSafe(|| w(txn))) {
                Ok(Ok(r)) => results.push(Some(Ok(r))),
                Ok(Err(e)) if !e.is_storage_failure() => results.push(Some(Err(e))),
                Ok(Err(e)) => {
                    fatal = Some(e);
                    results.push(None);
                }
                Err(_) => {
                    fatal = Some(StoreError::Panicked);
                    results.push(None);
                }
            }
        }
        if fatal.is_none() {
            match catch_unwind(AssertUnwindSafe(|| (self.before_commit)(txn))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => fatal = Some(e),
                Err(_) => fatal = Some(StoreError::Panicked),
            }
        }
        (results, fatal)
    }
}

impl Committer {
    /// A batch whose every write has a redo record: made durable by one append to the
    /// acceptance log, and applied and committed to the database without fsync while the
    /// disk syncs that append (io_uring; [`Log::stage`]). The records go to the log before
    /// the writes run, so the record of a write that is then refused (or of every write,
    /// when the batch fails) is cancelled by a durable cancel record before its caller
    /// hears; replay skips cancelled records, and re-checks the others (a refused record
    /// whose cancel was lost in a crash is refused again and skipped).
    #[allow(clippy::too_many_arguments)]
    fn logged_batch(
        &self,
        db: &Database,
        l: &mut LogState,
        slots: Vec<Arc<Slot>>,
        works: Vec<Work>,
        logs: Vec<Option<Vec<u8>>>,
        dirs: BTreeSet<PathBuf>,
        started: Instant,
        size: u64,
    ) {
        let fail_all = |e: &StoreError, commit_failed: bool| {
            for s in &slots {
                s.set(Done {
                    result: Err(e.clone()),
                    commit_failed,
                });
            }
        };
        let payloads: Vec<&[u8]> = logs.iter().map(|p| p.as_deref().unwrap_or(&[])).collect();
        let staged = match l.log.stage(&payloads) {
            Ok(s) => s,
            Err(e) => {
                // Some of the records may be on disk: stop writing (the log decides on
                // the next open).
                l.poisoned = Some(e.clone());
                return fail_all(&e, true);
            }
        };
        let seqs: Vec<u64> = staged.seqs.clone().collect();
        let overlay = self.overlay.as_deref();
        if let Some(o) = overlay {
            o.begin_batch();
        }
        // Runs the batch's writes and commits what they did (without fsync): their
        // results and whether anything was committed (then the index entries the batch
        // wrote from memory), or why the whole batch failed (nothing committed then).
        type Applied = (Vec<JobResult>, Option<Vec<crate::overlay::Key>>);
        // Held from the commit until the overlay matches it (below).
        let mut view = None;
        let applied = (|| -> Result<Applied, (StoreError, bool)> {
            let early = |e: StoreError| (e, false);
            let mut txn = db.begin_write().map_err(|e| early(e.into()))?;
            txn.set_durability(Durability::None)
                .map_err(|e| early(e.into()))?;
            let (results, fatal) = self.run_works(&txn, works);
            if let Some(e) = fatal {
                let _ = txn.abort();
                return Err(early(e));
            }
            if results.iter().any(|r| matches!(r, Some(Ok(_)))) {
                let flushed = match overlay {
                    Some(o) if o.waiting() > crate::overlay::INDEX_FLUSH_AT => {
                        match o.flush_some_into(&txn, crate::overlay::INDEX_FLUSH_CHUNK) {
                            Ok(k) => k,
                            Err(e) => {
                                let _ = txn.abort();
                                return Err(early(e));
                            }
                        }
                    }
                    _ => Vec::new(),
                };
                view = overlay.map(|o| o.commit_guard());
                // From here on, a failure must stop every later write, or a checkpoint
                // would make durable what was refused.
                txn.commit().map_err(|e| (StoreError::from(e), true))?;
                Ok((results, Some(flushed)))
            } else {
                let _ = txn.abort();
                Ok((results, None))
            }
        })();
        if let Some(o) = overlay {
            // The batch's entries are visible once its commit is: before its writers hear.
            let flushed = match &applied {
                Ok((_, Some(flushed))) => Some(flushed),
                _ => None,
            };
            o.end_batch(flushed.is_some());
            if let Some(f) = flushed {
                o.forget(f);
            }
        }
        drop(view);
        let applied = applied.map(|(results, _)| results);
        let synced = l.log.wait(staged);
        let results = match (applied, synced) {
            (_, Err(e)) | (Err((e, true)), _) => {
                // The records may or may not be durable, or the database holds what the
                // log may not: stop writing.
                l.poisoned = Some(e.clone());
                return fail_all(&e, true);
            }
            (Err((e, false)), Ok(())) => {
                // Nothing was committed: cancel every record of the batch.
                return match l.log.cancel(&seqs) {
                    Ok(()) => fail_all(&e, false),
                    Err(c) => {
                        l.poisoned = Some(c);
                        fail_all(&e, true)
                    }
                };
            }
            (Ok(results), Ok(())) => results,
        };
        let refused: Vec<u64> = results
            .iter()
            .zip(&seqs)
            .filter(|(r, _)| !matches!(r, Some(Ok(_))))
            .map(|(_, seq)| *seq)
            .collect();
        if !refused.is_empty() {
            if let Err(c) = l.log.cancel(&refused) {
                // The refused records are refused again on replay; the log itself failed:
                // stop writing.
                l.poisoned = Some(c);
            }
        }
        if refused.len() < seqs.len() {
            l.dirs.extend(dirs);
            l.since.get_or_insert_with(Instant::now);
            COMMIT_STATS.record(started.elapsed(), size);
            LOG_STATS.record((seqs.len() - refused.len()) as u64);
        }
        for (s, r) in slots.iter().zip(results) {
            s.set(Done {
                result: r.unwrap_or(Err(StoreError::Panicked)),
                commit_failed: false,
            });
        }
    }
}

/// Stores in `txn` that the database holds every log record up to `seq`.
pub(crate) fn record_log_done(txn: &WriteTransaction, seq: u64) -> Result<(), StoreError> {
    let mut meta = txn.open_table(crate::tables::META)?;
    meta.insert(crate::tables::K_LOG_DONE, seq)?;
    Ok(())
}

/// Counts of the process's acceptance-log appends (for metrics).
struct LogCounters {
    appends: std::sync::atomic::AtomicU64,
    records: std::sync::atomic::AtomicU64,
}

static LOG_STATS: LogCounters = LogCounters {
    appends: std::sync::atomic::AtomicU64::new(0),
    records: std::sync::atomic::AtomicU64::new(0),
};

impl LogCounters {
    fn record(&self, records: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.appends.fetch_add(1, Relaxed);
        self.records.fetch_add(records, Relaxed);
    }
}

/// The process's acceptance-log appends so far (each one `fdatasync`) and the records they
/// carried.
pub fn log_stats() -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    (
        LOG_STATS.appends.load(Relaxed),
        LOG_STATS.records.load(Relaxed),
    )
}

/// Upper bounds (seconds) of the commit latency histogram's buckets.
pub const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Counts of the process's storage commits (for metrics; storage only counts).
struct CommitCounters {
    commits: std::sync::atomic::AtomicU64,
    writes: std::sync::atomic::AtomicU64,
    micros: std::sync::atomic::AtomicU64,
    buckets: [std::sync::atomic::AtomicU64; COMMIT_BUCKETS.len()],
}

static COMMIT_STATS: CommitCounters = CommitCounters {
    commits: std::sync::atomic::AtomicU64::new(0),
    writes: std::sync::atomic::AtomicU64::new(0),
    micros: std::sync::atomic::AtomicU64::new(0),
    buckets: [const { std::sync::atomic::AtomicU64::new(0) }; COMMIT_BUCKETS.len()],
};

impl CommitCounters {
    fn record(&self, took: std::time::Duration, writes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.commits.fetch_add(1, Relaxed);
        self.writes.fetch_add(writes, Relaxed);
        self.micros
            .fetch_add(took.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
        let secs = took.as_secs_f64();
        if let Some(b) = COMMIT_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .and_then(|i| self.buckets.get(i))
        {
            b.fetch_add(1, Relaxed);
        }
    }
}

/// The process's durable commits so far: how many, the writes they carried (batch sizes
/// summed), their total time, and how many took at most each of [`COMMIT_BUCKETS`]
/// (per bucket, not cumulative).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommitStats {
    /// Commits.
    pub commits: u64,
    /// Writes (jobs) committed.
    pub writes: u64,
    /// Seconds spent, in total.
    pub seconds: f64,
    /// Commits per bucket of [`COMMIT_BUCKETS`].
    pub buckets: Vec<u64>,
}

/// The commit counts of this process.
pub fn commit_stats() -> CommitStats {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &COMMIT_STATS;
    CommitStats {
        commits: s.commits.load(Relaxed),
        writes: s.writes.load(Relaxed),
        seconds: s.micros.load(Relaxed) as f64 / 1e6,
        buckets: s.buckets.iter().map(|b| b.load(Relaxed)).collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    /// A committer on a fresh database, with a commit thread that wakes by itself every
    /// `park` (as the store's does every second) and ends with the committer.
    fn committer(park: Duration) -> (tempfile::TempDir, Arc<Database>, Arc<Committer>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("db.redb")).unwrap());
        let c = Arc::new(Committer::new(Box::new(|_| Ok(())), None, None, None));
        let (weak, db1) = (Arc::downgrade(&c), Arc::clone(&db));
        assert!(c.helper_started(move || {
            let h = std::thread::spawn(move || loop {
                std::thread::park_timeout(park);
                let Some(c) = weak.upgrade() else { return };
                c.helper_round(&db1);
            });
            Some(h.thread().clone())
        }));
        (dir, db, c)
    }

    /// A thread that leads a batch whose one job takes 300 ms.
    fn slow_leader(
        c: &Arc<Committer>,
        db: &Arc<Database>,
    ) -> std::thread::JoinHandle<Result<&'static str, String>> {
        let (c, db) = (Arc::clone(c), Arc::clone(db));
        std::thread::spawn(move || {
            c.run(&db, Vec::new(), None, |_| {
                std::thread::sleep(Duration::from_millis(300));
                Ok("a")
            })
            .map_err(|(e, _)| e.to_string())
        })
    }

    /// A caller whose job arrives while another caller commits waits; when that leader
    /// leaves with its own job done and no one else calls, the waiting caller must be woken
    /// to lead its own job (it is never woken otherwise: no later caller, no result).
    #[test]
    fn leader_leaving_wakes_the_next_caller() {
        let (_dir, db, c) = committer(Duration::from_secs(60));
        let (tx, rx) = std::sync::mpsc::channel();
        let a = slow_leader(&c, &db);
        // B arrives while A's batch commits.
        std::thread::sleep(Duration::from_millis(100));
        std::thread::spawn(move || {
            let r = c.run(&db, Vec::new(), None, |_| Ok("b"));
            let _ = tx.send(r.map_err(|(e, _)| e.to_string()));
        });
        assert_eq!(a.join().unwrap(), Ok("a"));
        let b = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the waiting caller was never woken");
        assert_eq!(b, Ok("b"));
    }

    /// A task's job that arrives while a thread leads waits for that leader to leave; the
    /// leader must then wake the commit thread for it (the task has no thread to lead
    /// with). The commit thread here only wakes by itself after 60 s.
    #[test]
    fn leader_leaving_wakes_the_commit_thread_for_a_task() {
        let (_dir, db, c) = committer(Duration::from_secs(60));
        let a = slow_leader(&c, &db);
        std::thread::sleep(Duration::from_millis(100));
        let task = c.submit(Vec::new(), None, |_| Ok("task"));
        assert_eq!(a.join().unwrap(), Ok("a"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(futures_lite::future::block_on(task).map_err(|(e, _)| e.to_string()));
        });
        let r = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the task's job was never committed");
        assert_eq!(r, Ok("task"));
    }

    /// Tasks' jobs and threads' jobs in any mix all complete, each with its own result;
    /// one job's refusal fails only that job.
    #[test]
    fn tasks_and_threads_share_batches() {
        let (_dir, db, c) = committer(Duration::from_millis(50));
        let mut handles = Vec::new();
        for t in 0..6u64 {
            let (c, db) = (Arc::clone(&c), Arc::clone(&db));
            handles.push(std::thread::spawn(move || {
                for i in 0..50u64 {
                    let n = t * 1000 + i;
                    let work = move |_: &WriteTransaction| {
                        if n % 7 == 0 {
                            Err(StoreError::NoAccount(format!("{n}")))
                        } else {
                            Ok(n)
                        }
                    };
                    let r = if t % 2 == 0 {
                        futures_lite::future::block_on(c.submit(Vec::new(), None, work))
                    } else {
                        c.run(&db, Vec::new(), None, work)
                    };
                    match r {
                        Ok(got) => assert_eq!(got, n),
                        Err((StoreError::NoAccount(a), false)) => {
                            assert_eq!((a, n % 7), (format!("{n}"), 0));
                        }
                        Err((e, f)) => panic!("job {n}: {e} (commit failed: {f})"),
                    }
                }
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
    }
}
