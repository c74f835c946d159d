//! The replica's writer: writes queue up while a commit is in flight and the next commit takes
//! all of them, so concurrent submitters share one fsync instead of paying one each. On SQLite
//! it is the only writer; on PostgreSQL each replica has one, and replicas still write
//! concurrently (row locks and `SKIP LOCKED` keep them apart).
//!
//! Writes come in two lanes. A desk's submission, a status update, an operator's action are
//! *urgent*: someone is waiting on the answer. The deadline sweeper's escalations, linkage
//! timers and the records of confirmed deliveries *yield*: a commit carries at most
//! [`YIELDING_SHARE`] of them (on PostgreSQL, beside urgent writes, one per urgent write from
//! [`POSTGRES_LEAST_SHARE`] up), so a burst of thousands (a desk that stopped confirming
//! receipt, a backlog draining after an outage) never makes a submission wait behind it, and the
//! sweeper and the deliverer, which wait for their writes, slow to what is left.
//!
//! Each write runs in its own savepoint: one that fails is rolled back alone and answered with
//! its error; the others commit. Nobody is answered before the batch's commit returns, and the
//! commit is attempted only on a transaction shown to be the one that began (see [`GUARD`]).

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Acquire, Any, AnyConnection, AnyPool};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::writes::{
    delivered_many, escalate_many, execute, submit_many, Escalation, NewTransfer, Write,
    WriteResult,
};
use super::{Backend, StoreError};

/// The most urgent writes one commit carries.
const MAX_BATCH: usize = 512;

/// The most yielding writes (escalations, timers, confirmed deliveries) one commit carries:
/// the most an urgent write can find ahead of it. Small enough that a commit of them costs a
/// few milliseconds, large enough that the sweeper or a drain alone still commits thousands a
/// second.
pub const YIELDING_SHARE: usize = 64;

/// On PostgreSQL, the fewest yielding writes a commit that carries urgent ones takes: such a
/// commit takes one yielding write per urgent one, at least this many and at most
/// [`YIELDING_SHARE`]. A confirmed delivery's record costs a PostgreSQL commit far more than a
/// submission (its outbox row, its transfer read and rewritten, an event, two audit entries),
/// and with 64 of them beside every few submissions a draining backlog took most of the
/// store and the desks' submissions waited seconds (docs/PERFORMANCE.md, "The drain yields to
/// the desks"). One per urgent write keeps a flat-out load's deliveries recorded as fast as
/// its submissions. SQLite's commits carry a full share: its records are cheap, and its drain
/// already waits for them.
pub const POSTGRES_LEAST_SHARE: usize = 16;

/// Which queue a write waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Someone waits on the answer: taken first, as many as a commit carries.
    Urgent,
    /// Housekeeping that can wait a commit or two: at most [`YIELDING_SHARE`] per commit.
    Yielding,
}

/// Where a write's answer goes.
type Reply = oneshot::Sender<Result<WriteResult, StoreError>>;

/// A write and where to send its answer.
pub struct Job {
    pub write: Write,
    pub reply: oneshot::Sender<Result<WriteResult, StoreError>>,
}

/// The writer's two queues.
#[derive(Clone)]
pub struct Writer {
    urgent: mpsc::Sender<Job>,
    yielding: mpsc::Sender<Job>,
}

impl Writer {
    /// Queues a write; an error means the writer is gone.
    pub async fn send(&self, lane: Lane, job: Job) -> Result<(), ()> {
        let queue = match lane {
            Lane::Urgent => &self.urgent,
            Lane::Yielding => &self.yielding,
        };
        queue.send(job).await.map_err(|_| ())
    }
}

/// The receiving ends of a [`Writer`].
struct Queues {
    urgent: mpsc::Receiver<Job>,
    yielding: mpsc::Receiver<Job>,
    /// The fewest yielding writes a commit with urgent ones takes ([`POSTGRES_LEAST_SHARE`]).
    least_share: usize,
}

/// What the writer tells once per commit, before it answers the commit's writes: one wake-up
/// and one bump for a commit of dozens, where each write's own woke the deliverer dozens of
/// times for one read's worth of work (docs/PERFORMANCE.md, "The writer on its own thread").
#[derive(Clone, Default)]
pub struct Signals {
    /// Woken when a commit carried a write that may queue a delivery.
    pub outbox_ready: Arc<Notify>,
    /// Bumped after every commit that carried a write that succeeded.
    pub committed: Arc<watch::Sender<u64>>,
}

impl Signals {
    fn tell(&self, queued: bool) {
        if queued {
            self.outbox_ready.notify_one();
        }
        self.committed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Starts the writer on a thread of its own; it ends when every sender is dropped. An error
/// means the thread or its runtime could not be made.
pub fn start(
    pool: AnyPool,
    backend: Backend,
    chain: std::sync::Arc<std::sync::OnceLock<String>>,
    signals: Signals,
) -> std::io::Result<Writer> {
    let (urgent, urgent_queue) = mpsc::channel(8192);
    let (yielding, yielding_queue) = mpsc::channel(8192);
    let least_share = match backend {
        Backend::Sqlite => YIELDING_SHARE,
        Backend::Postgres => POSTGRES_LEAST_SHARE,
    };
    let queues = Queues { urgent: urgent_queue, yielding: yielding_queue, least_share };
    // Its own thread: between a commit's statements the writer waits for SQLite's (or the
    // server's) answer, and on the shared runtime each answer then waited behind the requests
    // being served — the commit every submission waits for took three times its work
    // (docs/PERFORMANCE.md, "The writer on its own thread").
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let writer = run(pool, backend, queues, chain, signals);
    std::thread::Builder::new()
        .name("liandong-writer".into())
        .spawn(move || runtime.block_on(writer))?;
    Ok(Writer { urgent, yielding })
}

impl Queues {
    /// How many yielding writes a commit carrying `urgent` urgent writes takes: a full share
    /// alone, else one per urgent write between `least_share` and [`YIELDING_SHARE`].
    fn share(&self, urgent: usize) -> usize {
        match urgent {
            0 => YIELDING_SHARE,
            n => n.clamp(self.least_share, YIELDING_SHARE),
        }
    }

    /// The next batch: waits for a first write (an urgent one if both wait), then takes the
    /// urgent writes waiting, up to [`MAX_BATCH`], and yielding ones up to [`Queues::share`].
    /// `None` once every sender is gone and nothing is left.
    async fn next_batch(&mut self, batch: &mut Vec<Job>) -> Option<()> {
        let mut yielded = 0;
        tokio::select! {
            biased;
            Some(job) = self.urgent.recv() => batch.push(job),
            Some(job) = self.yielding.recv() => {
                batch.push(job);
                yielded = 1;
            }
            else => return None,
        }
        self.fill(batch, yielded);
        Some(())
    }

    /// Adds what is already waiting to a batch holding `yielded` yielding writes: urgent ones
    /// up to [`MAX_BATCH`] of them, then yielding ones up to [`Queues::share`] — beyond the
    /// urgent ones, so that a flood of urgent writes never starves them.
    fn fill(&mut self, batch: &mut Vec<Job>, mut yielded: usize) {
        while batch.len() - yielded < MAX_BATCH {
            match self.urgent.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let share = self.share(batch.len() - yielded);
        while yielded < share {
            match self.yielding.try_recv() {
                Ok(job) => {
                    batch.push(job);
                    yielded += 1;
                }
                Err(_) => break,
            }
        }
    }
}

/// The writer keeps one connection while it works (its prepared statements stay warm, and no
/// batch waits for the pool); after a batch that failed it takes a fresh one.
async fn run(
    pool: AnyPool,
    backend: Backend,
    mut queues: Queues,
    chain: std::sync::Arc<std::sync::OnceLock<String>>,
    signals: Signals,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut held: Option<PoolConnection<Any>> = None;
    while queues.next_batch(&mut batch).await.is_some() {
        let conn = match held.as_mut() {
            Some(conn) => conn,
            None => match pool.acquire().await {
                Ok(conn) => held.insert(conn),
                Err(e) => {
                    let message = e.to_string();
                    for job in batch.drain(..) {
                        let _ = job.reply.send(Err(StoreError::Commit(message.clone())));
                    }
                    continue;
                }
            },
        };
        let started = std::time::Instant::now();
        // The batch's audit entries go to this store's chain (its replica's name).
        let name = chain.get().cloned().unwrap_or_else(|| "local".to_string());
        let committed =
            super::audit::CHAIN.scope(name, commit(conn, backend, &mut batch, &signals)).await;
        crate::metrics::counters().commit_seconds.observe(String::new(), started.elapsed());
        if !committed {
            if let Some(mut conn) = held.take() {
                conn.close_on_drop();
            }
        }
    }
    if let Some(conn) = held {
        let _ = conn.close().await;
    }
}

/// A savepoint held for the whole batch: releasing it fails when the transaction is gone —
/// aborted on PostgreSQL (whose COMMIT would then be a silent ROLLBACK that sqlx reports as
/// success), or rolled back by SQLite itself (it may do so on a full disk, after which the
/// statements that follow would run outside any transaction).
const GUARD: &str = "SAVEPOINT liandong_batch";
const GUARD_RELEASE: &str = "RELEASE SAVEPOINT liandong_batch";

/// Whether the batch's transaction is still the one it began, re-arming the guard if so.
async fn still_in_transaction(tx: &mut sqlx::Transaction<'_, Any>) -> Result<(), sqlx::Error> {
    sqlx::query(GUARD_RELEASE).execute(&mut **tx).await?;
    sqlx::query(GUARD).execute(&mut **tx).await.map(|_| ())
}

/// Writes of one kind that run together, in a few multi-row statements.
enum GroupWork {
    Submissions(Vec<NewTransfer>),
    Receipts(Vec<(i64, i64)>),
    Escalations(Vec<Escalation>),
}

/// A group and the replies of its writes, in the same order as its results.
struct Group {
    replies: Vec<Reply>,
    work: GroupWork,
}

impl Group {
    fn submissions(jobs: Vec<Job>) -> Group {
        let (mut replies, mut items) =
            (Vec::with_capacity(jobs.len()), Vec::with_capacity(jobs.len()));
        for job in jobs {
            if let Write::Submit(new) = job.write {
                items.push(*new);
                replies.push(job.reply);
            }
        }
        Group { replies, work: GroupWork::Submissions(items) }
    }

    fn receipts(jobs: Vec<Job>) -> Group {
        let (mut replies, mut items) =
            (Vec::with_capacity(jobs.len()), Vec::with_capacity(jobs.len()));
        for job in jobs {
            if let Write::Delivered { item_id, at } = job.write {
                items.push((item_id, at));
                replies.push(job.reply);
            }
        }
        Group { replies, work: GroupWork::Receipts(items) }
    }

    fn escalations(jobs: Vec<Job>) -> Group {
        let (mut replies, mut items) =
            (Vec::with_capacity(jobs.len()), Vec::with_capacity(jobs.len()));
        for job in jobs {
            if let Write::Escalate { transfer_id, deadline, at } = job.write {
                items.push(Escalation { transfer_id, deadline, at });
                replies.push(job.reply);
            }
        }
        Group { replies, work: GroupWork::Escalations(items) }
    }
}

impl GroupWork {
    async fn execute(
        self,
        tx: &mut sqlx::Transaction<'_, Any>,
        backend: Backend,
    ) -> Result<Vec<WriteResult>, StoreError> {
        match self {
            GroupWork::Submissions(items) => submit_many(tx, backend, items).await,
            GroupWork::Receipts(items) => delivered_many(tx, backend, &items).await,
            GroupWork::Escalations(items) => escalate_many(tx, backend, &items).await,
        }
    }
}

/// Commits the batch and answers every write in it; false if anything in it failed.
async fn commit(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &mut Vec<Job>,
    signals: &Signals,
) -> bool {
    let fail_all = |jobs: Vec<Reply>, message: String| {
        for reply in jobs {
            let _ = reply.send(Err(StoreError::Commit(message.clone())));
        }
    };
    // SQLite: take the write lock up front. A transaction that reads first and writes later
    // cannot upgrade if another process (an import, a second tool) committed in between: that
    // is "database is locked" at once, whatever the busy timeout.
    let begun = match backend {
        Backend::Sqlite => sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await,
        Backend::Postgres => conn.begin().await,
    };
    let mut tx = match begun {
        Ok(tx) => tx,
        Err(e) => {
            fail_all(batch.drain(..).map(|job| job.reply).collect(), e.to_string());
            return false;
        }
    };
    if let Err(e) = sqlx::query(GUARD).execute(&mut *tx).await {
        fail_all(batch.drain(..).map(|job| job.reply).collect(), e.to_string());
        return false;
    }
    let queues = batch.iter().any(|job| job.write.queues_delivery());
    let mut answers: Vec<(Reply, Result<WriteResult, StoreError>)> =
        Vec::with_capacity(batch.len());
    // The batch's submissions, its delivery receipts and its escalations each go in a few
    // multi-row statements.
    let (submits, others): (Vec<Job>, Vec<Job>) =
        batch.drain(..).partition(|job| matches!(job.write, Write::Submit(_)));
    let (receipts, others): (Vec<Job>, Vec<Job>) =
        others.into_iter().partition(|job| matches!(job.write, Write::Delivered { .. }));
    let (escalations, mut pending): (Vec<Job>, Vec<Job>) =
        others.into_iter().partition(|job| matches!(job.write, Write::Escalate { .. }));
    let mut groups = Vec::with_capacity(3);
    if !submits.is_empty() {
        groups.push(Group::submissions(submits));
    }
    if !receipts.is_empty() {
        groups.push(Group::receipts(receipts));
    }
    if !escalations.is_empty() {
        groups.push(Group::escalations(escalations));
    }
    let alone = groups.len() == 1 && pending.is_empty();
    for group in groups {
        let (replies, work) = (group.replies, group.work);
        if alone {
            // Nothing else rides this commit: no savepoint of its own, and a failure fails
            // them all (the transaction is dropped, so rolled back).
            match work.execute(&mut tx, backend).await {
                Ok(results) => answers.extend(replies.into_iter().zip(results.into_iter().map(Ok))),
                Err(e) => {
                    fail_all(replies, e.to_string());
                    return false;
                }
            }
            continue;
        }
        let results = match (&mut tx).begin().await {
            Ok(mut savepoint) => match work.execute(&mut savepoint, backend).await {
                Ok(results) => savepoint.commit().await.map(|()| results).map_err(StoreError::from),
                Err(e) => {
                    let _ = savepoint.rollback().await;
                    Err(e)
                }
            },
            Err(e) => Err(e.into()),
        };
        match results {
            Ok(results) => answers.extend(replies.into_iter().zip(results.into_iter().map(Ok))),
            Err(e) => {
                let message = e.to_string();
                if let Err(gone) = still_in_transaction(&mut tx).await {
                    tracing::error!(error = %message, after = %gone, "the store rolled the batch back");
                    fail_all(
                        answers
                            .into_iter()
                            .map(|(r, _)| r)
                            .chain(replies)
                            .chain(pending.into_iter().map(|j| j.reply))
                            .collect(),
                        message,
                    );
                    return false;
                }
                answers.extend(
                    replies
                        .into_iter()
                        .map(|reply| (reply, Err(StoreError::Commit(message.clone())))),
                );
            }
        }
    }
    while !pending.is_empty() {
        let job = pending.remove(0);
        let result = match (&mut tx).begin().await {
            Ok(mut savepoint) => match execute(&mut savepoint, backend, job.write).await {
                Ok(result) => savepoint.commit().await.map(|()| result).map_err(StoreError::from),
                Err(e) => {
                    let _ = savepoint.rollback().await;
                    Err(e)
                }
            },
            Err(e) => Err(e.into()),
        };
        if let Err(e) = &result {
            if let Err(gone) = still_in_transaction(&mut tx).await {
                let message = e.to_string();
                tracing::error!(error = %message, after = %gone, "the store rolled the batch back");
                let replies = answers
                    .into_iter()
                    .map(|(r, _)| r)
                    .chain(std::iter::once(job.reply))
                    .chain(pending.into_iter().map(|j| j.reply));
                fail_all(replies.collect(), message);
                return false;
            }
        }
        answers.push((job.reply, result));
    }
    // The transaction must still be the one that began: otherwise the whole batch failed.
    if let Err(e) = sqlx::query(GUARD_RELEASE).execute(&mut *tx).await {
        fail_all(
            answers.into_iter().map(|(r, _)| r).collect(),
            format!("the transaction was aborted: {e}"),
        );
        return false;
    }
    match tx.commit().await {
        Ok(()) => {
            if answers.iter().any(|(_, result)| result.is_ok()) {
                signals.tell(queues);
            }
            for (reply, result) in answers {
                let _ = reply.send(result);
            }
            true
        }
        Err(e) => {
            fail_all(answers.into_iter().map(|(r, _)| r).collect(), e.to_string());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job whose lane can be told from its write: urgent ones are audit writes, yielding
    /// ones escalations.
    fn job(lane: Lane) -> Job {
        let write = match lane {
            Lane::Urgent => Write::Audit(Vec::new()),
            Lane::Yielding => {
                Write::Escalate { transfer_id: "t".to_string(), deadline: "receive_by", at: 0 }
            }
        };
        Job { write, reply: oneshot::channel().0 }
    }

    fn lanes(batch: &[Job]) -> Vec<Lane> {
        batch.iter().map(|job| job.write.lane()).collect()
    }

    /// What yields: the writes nobody waits on. What a desk or an operator waits on does not.
    #[test]
    fn housekeeping_yields_and_what_someone_waits_on_does_not() {
        let yielding = [
            Write::Escalate { transfer_id: "t".into(), deadline: "receive_by", at: 0 },
            Write::Delivered { item_id: 1, at: 0 },
        ];
        assert!(yielding.iter().all(|w| w.lane() == Lane::Yielding));
        let failed = Write::Failed {
            item_id: 1,
            at: 0,
            error: "refused".into(),
            next_attempt_at: 0,
            dead: true,
            undeliverable: None,
        };
        let urgent = [Write::Audit(Vec::new()), failed];
        assert!(urgent.iter().all(|w| w.lane() == Lane::Urgent));
    }

    /// A commit tells once, however many writes it carries: one bump of the commit counter,
    /// and one wake-up of the deliverer only when a write in it may have queued a delivery.
    #[tokio::test]
    async fn a_commit_tells_once_and_wakes_the_deliverer_only_for_what_may_queue() {
        let dir = std::env::temp_dir().join(format!("liandong-signals-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = super::super::Store::sqlite(&dir.join("signals.db")).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let signals = Signals::default();
        let counter = signals.committed.subscribe();
        // Three writes that queue nothing: one bump, no wake-up.
        let mut batch: Vec<Job> = (0..3).map(|_| job(Lane::Urgent)).collect();
        assert!(commit(&mut conn, Backend::Sqlite, &mut batch, &signals).await);
        assert_eq!(*counter.borrow(), 1);
        assert!(!woken(&signals).await, "nothing queued, nobody woken");
        // Beside them a linkage timer, which may queue a notice: one bump, one wake-up.
        let timer = Write::Timer {
            transfer_id: "none".into(),
            kind: super::super::writes::TIMER_DISPUTE.into(),
            now: crate::model::Timestamp::now(),
        };
        let mut batch: Vec<Job> = (0..3).map(|_| job(Lane::Urgent)).collect();
        batch.push(Job { write: timer, reply: oneshot::channel().0 });
        assert!(commit(&mut conn, Backend::Sqlite, &mut batch, &signals).await);
        assert_eq!(*counter.borrow(), 2);
        assert!(woken(&signals).await, "woken once");
        assert!(!woken(&signals).await, "and only once");
    }

    /// Whether a wake-up is waiting (a `Notify` keeps one for the next waiter).
    async fn woken(signals: &Signals) -> bool {
        let notified = signals.outbox_ready.notified();
        tokio::time::timeout(std::time::Duration::from_millis(10), notified).await.is_ok()
    }

    /// Queues the writes, in this order, and returns the writer's queues.
    async fn queued(writes: &[(Lane, usize)]) -> (Writer, Queues) {
        queued_with(YIELDING_SHARE, writes).await
    }

    /// [`queued`], for a store whose commits with urgent writes take at least `least_share`.
    async fn queued_with(least_share: usize, writes: &[(Lane, usize)]) -> (Writer, Queues) {
        let (urgent, urgent_queue) = mpsc::channel(8192);
        let (yielding, yielding_queue) = mpsc::channel(8192);
        let writer = Writer { urgent, yielding };
        for (lane, count) in writes {
            for _ in 0..*count {
                writer.send(*lane, job(*lane)).await.unwrap();
            }
        }
        (writer, Queues { urgent: urgent_queue, yielding: yielding_queue, least_share })
    }

    /// The (urgent, yielding) writes of the next batch.
    async fn next_split(queues: &mut Queues) -> (usize, usize) {
        let mut batch = Vec::new();
        queues.next_batch(&mut batch).await.unwrap();
        let urgent = lanes(&batch).iter().filter(|l| **l == Lane::Urgent).count();
        (urgent, batch.len() - urgent)
    }

    #[tokio::test]
    async fn on_postgresql_a_drain_records_one_delivery_per_submission_beside_it() {
        // A backlog's thousands of records wait; submissions keep coming.
        let (writer, mut queues) =
            queued_with(POSTGRES_LEAST_SHARE, &[(Lane::Yielding, 5000), (Lane::Urgent, 3)]).await;
        assert_eq!(next_split(&mut queues).await, (3, POSTGRES_LEAST_SHARE), "at least the least");
        for _ in 0..40 {
            writer.send(Lane::Urgent, job(Lane::Urgent)).await.unwrap();
        }
        assert_eq!(next_split(&mut queues).await, (40, 40), "one per submission");
        for _ in 0..MAX_BATCH + 1 {
            writer.send(Lane::Urgent, job(Lane::Urgent)).await.unwrap();
        }
        assert_eq!(next_split(&mut queues).await, (MAX_BATCH, YIELDING_SHARE), "at most a share");
        // The last submission, and a commit of records alone takes a full share.
        assert_eq!(next_split(&mut queues).await, (1, POSTGRES_LEAST_SHARE));
        assert_eq!(next_split(&mut queues).await, (0, YIELDING_SHARE));
    }

    #[tokio::test]
    async fn a_submission_never_waits_behind_more_than_a_share_of_escalations() {
        // A thousand escalations were queued before three urgent writes.
        let (_writer, mut queues) = queued(&[(Lane::Yielding, 1000), (Lane::Urgent, 3)]).await;
        let mut batch = Vec::new();
        queues.next_batch(&mut batch).await.unwrap();
        let lanes = lanes(&batch);
        assert_eq!(lanes.len(), 3 + YIELDING_SHARE);
        assert!(lanes[..3].iter().all(|l| *l == Lane::Urgent), "{lanes:?}");
        assert!(lanes[3..].iter().all(|l| *l == Lane::Yielding));
    }

    #[tokio::test]
    async fn escalations_alone_still_commit_a_share_at_a_time_and_all_are_taken() {
        let (writer, mut queues) = queued(&[(Lane::Yielding, 200)]).await;
        drop(writer);
        let mut sizes = Vec::new();
        let mut batch = Vec::new();
        while queues.next_batch(&mut batch).await.is_some() {
            sizes.push(batch.len());
            batch.clear();
        }
        let expected: Vec<usize> =
            (0..200).collect::<Vec<_>>().chunks(YIELDING_SHARE).map(<[_]>::len).collect();
        assert_eq!(sizes, expected);
    }

    #[tokio::test]
    async fn a_flood_of_urgent_writes_never_starves_the_escalations() {
        // More urgent writes waiting than two commits carry: each commit still takes its share
        // of escalations, after a full load of urgent ones.
        let (_writer, mut queues) =
            queued(&[(Lane::Yielding, 100), (Lane::Urgent, 2 * MAX_BATCH + 7)]).await;
        let mut commits = Vec::new();
        let mut batch = Vec::new();
        for _ in 0..3 {
            queues.next_batch(&mut batch).await.unwrap();
            let lanes = lanes(&batch);
            let urgent = lanes.iter().take_while(|l| **l == Lane::Urgent).count();
            assert!(lanes[urgent..].iter().all(|l| *l == Lane::Yielding), "urgent ones first");
            commits.push((urgent, lanes.len() - urgent));
            batch.clear();
        }
        let escalations = [YIELDING_SHARE, 100 - YIELDING_SHARE, 0];
        let expected: Vec<(usize, usize)> =
            [MAX_BATCH, MAX_BATCH, 7].into_iter().zip(escalations).collect();
        assert_eq!(commits, expected);
    }
}
