//! Group commit: concurrent writes share one PostgreSQL transaction and one commit.
//!
//! Leader/follower: a caller puts its job (a closure over the transaction, owning its
//! data) into the store's queue. If no batch is running, it becomes the leader: it takes
//! up to [`MAX_BATCH`] jobs, locks the account rows they named (in name order, so batches of
//! several nodes cannot deadlock on them), runs each job inside `SAVEPOINT job` (a batch of
//! one needs none: its refusal rolls the transaction back), commits
//! once, publishes every job's result and wakes the others. A caller whose job is still
//! waiting when the leader is done (it arrived during the commit) becomes the next leader.
//! At most [`MAX_PENDING`] jobs wait; more callers block until there is room.
//!
//! * A job that fails (a refusal such as [`StoreError::QuotaExceeded`], or a statement the
//!   database refused) is rolled back to its savepoint and fails alone; the others commit.
//! * When the savepoint cannot be rolled back, or the commit fails (a lost connection),
//!   every job of the batch fails with [`StoreError::Backend`]; a job gets `Ok` only after
//!   `COMMIT` returned (`synchronous_commit = on`), so its ids are committed ones.
//! * A job that panics fails alone with [`StoreError::Panicked`]; a panic of the leader
//!   itself fails the jobs it had taken, so no caller waits forever.

use std::any::Any;
use std::collections::{BTreeSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rmox_storage::StoreError;

use crate::{pg, Conn, Pool, Tx, BACKEND, Q};

/// Most jobs in one transaction. Each job is a subtransaction; PostgreSQL caches the ids of
/// 64 per session, and a transaction with more slows every other session's snapshots.
pub const MAX_BATCH: usize = 64;
/// Most jobs waiting; more callers block until there is room.
pub const MAX_PENDING: usize = 1024;

type Out = Box<dyn Any + Send>;
type Work = Box<dyn FnOnce(&mut Tx<'_>) -> Result<Out, StoreError> + Send>;

/// Where a job's result is published; set once.
#[derive(Default)]
struct Slot(Mutex<Option<Result<Out, StoreError>>>);

impl Slot {
    fn set(&self, r: Result<Out, StoreError>) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(r);
        }
    }
    fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
    fn take(&self) -> Option<Result<Out, StoreError>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

struct Job {
    /// Accounts whose rows the job locks.
    accounts: Vec<String>,
    work: Work,
    done: Arc<Slot>,
}

#[derive(Default)]
struct State {
    pending: VecDeque<Job>,
    leader: bool,
}

/// The commit queue of one store.
#[derive(Default)]
pub(crate) struct Committer {
    state: Mutex<State>,
    cv: Condvar,
    commits: AtomicU64,
    jobs: AtomicU64,
}

/// What a store's group commit has done so far (for metrics and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Batches committed.
    pub commits: u64,
    /// Jobs those batches carried (including jobs that failed alone).
    pub jobs: u64,
    /// Jobs waiting now for a batch.
    pub pending: usize,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn backend(message: String) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        message,
    }
}

impl Committer {
    pub(crate) fn stats(&self) -> GroupStats {
        GroupStats {
            commits: self.commits.load(Ordering::Relaxed),
            jobs: self.jobs.load(Ordering::Relaxed),
            pending: lock(&self.state).pending.len(),
        }
    }

    /// Runs `f` in a shared transaction; its output once that is committed. `accounts` are
    /// the accounts whose rows `f` locks.
    pub(crate) fn run<R, F>(
        &self,
        pool: &Pool,
        accounts: Vec<String>,
        f: F,
    ) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let done = Arc::new(Slot::default());
        let job = Job {
            accounts,
            work: Box::new(move |t| f(t).map(|r| Box::new(r) as Out)),
            done: Arc::clone(&done),
        };
        let mut st = lock(&self.state);
        while st.pending.len() >= MAX_PENDING {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.pending.push_back(job);
        while !done.is_set() {
            if st.leader {
                st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.leader = true;
            let n = st.pending.len().min(MAX_BATCH);
            let batch: Vec<Job> = st.pending.drain(..n).collect();
            drop(st);
            self.commit_batch(pool, batch);
            st = lock(&self.state);
            st.leader = false;
            self.cv.notify_all();
        }
        drop(st);
        match done.take() {
            Some(Ok(b)) => b
                .downcast::<R>()
                .map(|r| *r)
                .map_err(|_| StoreError::Panicked),
            Some(Err(e)) => Err(e),
            // Set before the loop ended and taken only here.
            None => Err(StoreError::Panicked),
        }
    }

    fn commit_batch(&self, pool: &Pool, batch: Vec<Job>) {
        let slots: Vec<Arc<Slot>> = batch.iter().map(|j| Arc::clone(&j.done)).collect();
        let size = batch.len() as u64;
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut c = pool.get()?;
            let r = try_batch(&mut c, batch);
            pool.put(c);
            r
        }));
        let fail = match r {
            Ok(Ok(committed)) => {
                if committed {
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    self.jobs.fetch_add(size, Ordering::Relaxed);
                }
                None
            }
            Ok(Err(e)) => Some(e),
            Err(_) => Some(StoreError::Panicked),
        };
        // Answers the jobs try_batch did not (all of them, unless it committed).
        let e = fail.unwrap_or(StoreError::Panicked);
        for s in slots {
            s.set(Err(e.clone()));
        }
    }
}

/// Runs a batch and publishes its results once committed (whether a commit happened: a
/// batch of one refused job is rolled back); `Err` (every job fails) when the transaction
/// could not be committed.
fn try_batch(c: &mut Conn, batch: Vec<Job>) -> Result<bool, StoreError> {
    let mut t = Tx::begin(c)?;
    let accounts: Vec<&str> = batch
        .iter()
        .flat_map(|j| j.accounts.iter().map(String::as_str))
        .collect::<BTreeSet<&str>>()
        .into_iter()
        .collect();
    if !accounts.is_empty() {
        t.q(
            "SELECT name FROM rmox_accounts WHERE name = ANY($1)
             ORDER BY name COLLATE \"C\" FOR UPDATE",
            &[&accounts],
        )?;
    }
    if batch.len() == 1 {
        // A batch of one needs no savepoint: its refusal rolls the transaction back.
        let mut batch = batch;
        let job = batch.remove(0);
        let r = match catch_unwind(AssertUnwindSafe(|| (job.work)(&mut t))) {
            Ok(r) => r,
            Err(_) => Err(StoreError::Panicked),
        };
        return match r {
            Ok(out) => {
                t.commit().map_err(pg)?;
                job.done.set(Ok(out));
                Ok(true)
            }
            Err(e) => {
                t.rollback()
                    .map_err(|e| backend(format!("rolling back a refused write: {}", pg(e))))?;
                job.done.set(Err(e));
                Ok(false)
            }
        };
    }
    let mut results = Vec::with_capacity(batch.len());
    let mut first = true;
    for job in batch {
        // One round trip: the last job's savepoint goes, this one's comes.
        t.batch_execute(if first {
            "SAVEPOINT job"
        } else {
            "RELEASE SAVEPOINT job; SAVEPOINT job"
        })
        .map_err(pg)?;
        first = false;
        let r = match catch_unwind(AssertUnwindSafe(|| (job.work)(&mut t))) {
            Ok(r) => r,
            Err(_) => Err(StoreError::Panicked),
        };
        if r.is_err() {
            // The job alone is undone; failing that, the batch is.
            t.batch_execute("ROLLBACK TO SAVEPOINT job")
                .map_err(|e| backend(format!("rolling back a refused write: {}", pg(e))))?;
        }
        results.push((job.done, r));
    }
    t.commit().map_err(pg)?;
    for (slot, r) in results {
        slot.set(r);
    }
    Ok(true)
}
