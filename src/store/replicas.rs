//! Replica names are leased. A replica's name is its audit chain (`store::audit`): two live
//! gateways under one name would interleave one chain, and `audit verify` would later report
//! tampering that never happened. So a gateway claims its name in the store before it serves,
//! renews the claim while it runs, gives it back when it stops, and is refused at start while
//! another live gateway holds it.
//!
//! A gateway killed outright (`kill -9`) leaves its claim behind; it lapses after the lease
//! (`LEASE`), and sooner on the same machine: a claim whose holder names this host and a
//! process that no longer runs is taken over at once, so a crashed gateway restarts at once.

use std::time::Duration;

use super::{Store, StoreError};

/// How long a claim lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(30);

/// How often a live gateway renews its claim.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);

/// Why a name could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "replica name {name:?} is held by a running gateway ({holder}) until {until}; \
         give this one another name (LIANDONG_REPLICA), or stop that one"
    )]
    Held { name: String, holder: String, until: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// This process's claim: `HOST:PID:ULID`.
pub fn holder_id() -> String {
    format!("{}:{}:{}", hostname(), std::process::id(), ulid::Ulid::new())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

/// Whether `holder` is a process of this host that has ended (its claim can be taken at once).
fn ended_here(holder: &str) -> bool {
    let mut parts = holder.splitn(3, ':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else { return false };
    host == hostname()
        && pid.parse::<u32>().is_ok_and(|pid| {
            pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        })
}

impl Store {
    /// Claims `name` for `holder` (at start), or says who holds it.
    pub async fn claim_replica(&self, name: &str, holder: &str) -> Result<(), ClaimError> {
        let now = super::now_millis();
        let until = now + LEASE.as_millis() as i64;
        let current: Option<(String, i64)> =
            sqlx::query_as("SELECT holder, lease_until FROM replicas WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::from)?;
        let taken = match &current {
            None => {
                sqlx::query("INSERT INTO replicas (name, holder, lease_until) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(holder)
                    .bind(until)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::from)?
                    .rows_affected()
            }
            // Lapsed, or its holder ended on this host: taken over, if nobody else took it first.
            Some((old, lease_until)) if *lease_until < now || ended_here(old) => {
                sqlx::query("UPDATE replicas SET holder = $1, lease_until = $2 WHERE name = $3 AND holder = $4")
                    .bind(holder)
                    .bind(until)
                    .bind(name)
                    .bind(old)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::from)?
                    .rows_affected()
            }
            Some(_) => 0,
        };
        if taken == 1 {
            return Ok(());
        }
        let (holder, until) = sqlx::query_as::<_, (String, i64)>(
            "SELECT holder, lease_until FROM replicas WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from)?
        .unwrap_or_default();
        let until = crate::model::Timestamp::from_unix_seconds(until / 1000)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        Err(ClaimError::Held { name: name.to_string(), holder, until })
    }

    /// Renews the claim; false when it is no longer this holder's (the store lost it, or it
    /// lapsed and another took it).
    pub async fn renew_replica(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        let until = super::now_millis() + LEASE.as_millis() as i64;
        let renewed =
            sqlx::query("UPDATE replicas SET lease_until = $1 WHERE name = $2 AND holder = $3")
                .bind(until)
                .bind(name)
                .bind(holder)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(renewed == 1)
    }

    /// Gives the name back (a clean stop), so the next start under it need not wait.
    pub async fn release_replica(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM replicas WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
