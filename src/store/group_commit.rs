//! The replica's writer: writes queue up while a commit is in flight and the next commit takes
//! all of them, so concurrent submitters share one fsync instead of paying one each. On SQLite
//! it is the only writer; on PostgreSQL each replica has one, and replicas still write
//! concurrently (row locks and `SKIP LOCKED` keep them apart).
//!
//! Each write runs in its own savepoint: one that fails is rolled back alone and answered with
//! its error; the others commit. Nobody is answered before the batch's commit returns, and the
//! commit is attempted only on a transaction shown to be the one that began (see [`GUARD`]).

use sqlx::pool::PoolConnection;
use sqlx::{Acquire, Any, AnyConnection, AnyPool};
use tokio::sync::{mpsc, oneshot};

use super::writes::{delivered_many, execute, submit_many, NewTransfer, Write, WriteResult};
use super::{Backend, StoreError};

/// The most writes one commit carries.
const MAX_BATCH: usize = 512;

/// Where a write's answer goes.
type Reply = oneshot::Sender<Result<WriteResult, StoreError>>;

/// A write and where to send its answer.
pub struct Job {
    pub write: Write,
    pub reply: oneshot::Sender<Result<WriteResult, StoreError>>,
}

/// Starts the writer; it ends when every sender is dropped.
pub fn start(
    pool: AnyPool,
    backend: Backend,
    chain: std::sync::Arc<std::sync::OnceLock<String>>,
) -> mpsc::Sender<Job> {
    let (sender, receiver) = mpsc::channel(8192);
    tokio::spawn(run(pool, backend, receiver, chain));
    sender
}

/// The writer keeps one connection while it works (its prepared statements stay warm, and no
/// batch waits for the pool); after a batch that failed it takes a fresh one.
async fn run(
    pool: AnyPool,
    backend: Backend,
    mut receiver: mpsc::Receiver<Job>,
    chain: std::sync::Arc<std::sync::OnceLock<String>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut held: Option<PoolConnection<Any>> = None;
    while let Some(job) = receiver.recv().await {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
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
        let committed = super::audit::CHAIN.scope(name, commit(conn, backend, &mut batch)).await;
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
        }
    }
}

/// Commits the batch and answers every write in it; false if anything in it failed.
async fn commit(conn: &mut AnyConnection, backend: Backend, batch: &mut Vec<Job>) -> bool {
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
    let mut answers: Vec<(Reply, Result<WriteResult, StoreError>)> =
        Vec::with_capacity(batch.len());
    // The batch's submissions, and its delivery receipts, each go in a few multi-row statements.
    let (submits, others): (Vec<Job>, Vec<Job>) =
        batch.drain(..).partition(|job| matches!(job.write, Write::Submit(_)));
    let (receipts, mut pending): (Vec<Job>, Vec<Job>) =
        others.into_iter().partition(|job| matches!(job.write, Write::Delivered { .. }));
    let mut groups = Vec::with_capacity(2);
    if !submits.is_empty() {
        groups.push(Group::submissions(submits));
    }
    if !receipts.is_empty() {
        groups.push(Group::receipts(receipts));
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
