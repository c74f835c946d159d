//! The replica's writer: writes queue up while a commit is in flight and the next commit takes
//! all of them, so concurrent submitters share one fsync instead of paying one each. On SQLite
//! it is the only writer; on PostgreSQL each replica has one, and replicas still write
//! concurrently (row locks and `SKIP LOCKED` keep them apart).
//!
//! Each write runs in its own savepoint: one that fails is rolled back alone and answered with
//! its error; the others commit. Nobody is answered before the batch's commit returns, and the
//! commit is attempted only on a transaction shown to be healthy (see [`commit`]).

use sqlx::{Acquire, AnyPool};
use tokio::sync::{mpsc, oneshot};

use super::writes::{execute, submit_many, NewTransfer, Write, WriteResult};
use super::{Backend, StoreError};

/// The most writes one commit carries.
const MAX_BATCH: usize = 512;

/// A write and where to send its answer.
pub struct Job {
    pub write: Write,
    pub reply: oneshot::Sender<Result<WriteResult, StoreError>>,
}

/// Starts the writer; it ends when every sender is dropped.
pub fn start(pool: AnyPool, backend: Backend) -> mpsc::Sender<Job> {
    let (sender, receiver) = mpsc::channel(8192);
    tokio::spawn(run(pool, backend, receiver));
    sender
}

async fn run(pool: AnyPool, backend: Backend, mut receiver: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = receiver.recv().await {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit(&pool, backend, &mut batch).await;
    }
}

async fn commit(pool: &AnyPool, backend: Backend, batch: &mut Vec<Job>) {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let message = e.to_string();
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(StoreError::Commit(message.clone())));
            }
            return;
        }
    };
    let mut answers = Vec::with_capacity(batch.len());
    // All the batch's submissions go in a few multi-row statements.
    let (submits, others): (Vec<Job>, Vec<Job>) = batch.drain(..).partition(|job| matches!(job.write, Write::Submit { .. }));
    if !submits.is_empty() {
        let mut replies = Vec::with_capacity(submits.len());
        let mut items = Vec::with_capacity(submits.len());
        for job in submits {
            if let Write::Submit { transfer, sender_ref, payload } = job.write {
                items.push(NewTransfer { transfer: *transfer, sender_ref, payload });
                replies.push(job.reply);
            }
        }
        let results = match (&mut tx).begin().await {
            Ok(mut savepoint) => match submit_many(&mut savepoint, backend, items).await {
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
                answers.extend(replies.into_iter().map(|reply| (reply, Err(StoreError::Commit(message.clone())))));
            }
        }
    }
    for job in others {
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
        answers.push((job.reply, result));
    }
    // PostgreSQL answers COMMIT of a transaction that an error left aborted with a silent
    // ROLLBACK, and sqlx reports that as success. So the transaction is proven healthy first:
    // in an aborted transaction this statement fails, and the whole batch is answered as failed.
    if let Err(e) = sqlx::query("SELECT 1").execute(&mut *tx).await {
        let message = format!("the transaction was aborted: {e}");
        for (reply, _) in answers {
            let _ = reply.send(Err(StoreError::Commit(message.clone())));
        }
        return;
    }
    match tx.commit().await {
        Ok(()) => {
            for (reply, result) in answers {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            let message = e.to_string();
            for (reply, _) in answers {
                let _ = reply.send(Err(StoreError::Commit(message.clone())));
            }
        }
    }
}
