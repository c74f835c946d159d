//! A follower: the client side of a dataset's change feed over gRPC, keeping a copy.
//!
//! It starts from a consistent snapshot when it has no cursor, then reads changes from the
//! snapshot's cursor; with a cursor (a follower that reconnects) it reads changes only. The
//! copy holds tombstones as well, so a deletion is applied, not forgotten. Used by
//! `liandong datasets follow`, the catch-up benchmark and the tests.

use std::collections::BTreeMap;
use std::path::Path;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::model::Record;
use crate::proto::v1::{self, sync_service_client::SyncServiceClient};

/// A mutual-TLS gRPC channel to the gateway at `url` (`https://localhost:8443`).
pub async fn channel(url: &str, ca: &Path, cert: &Path, key: &Path) -> Result<Channel, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)?))
        .identity(Identity::from_pem(read(cert)?, read(key)?))
        .domain_name("localhost");
    Channel::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{url}: {}", why(&e)))
}

/// An error and every cause under it, with a hint for the common ones: what a person needs to
/// know when the gateway cannot be reached (tonic's own text is only "transport error").
pub fn why(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !chain.iter().any(|held| held.contains(&text)) {
            chain.push(text);
        }
        cause = e.source();
    }
    let text = chain.join(": ");
    let hint = if text.contains("Connection refused") {
        " (nothing listens there: is the gateway running, and is this its address?)"
    } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        " (the gateway's certificate is not signed by the CA given: is this the site's ca.pem?)"
    } else if text.contains("NotValidForName") {
        " (the gateway's certificate does not name localhost)"
    } else if text.contains("certificate") || text.contains("alert") {
        " (TLS refused: is the client certificate one the gateway trusts, and not revoked?)"
    } else if text.contains("dns error") || text.contains("failed to lookup") {
        " (the host name does not resolve)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// Where a saved copy's cursor is kept: beside the copy (`copy.jsonl.cursor`).
pub fn cursor_path(copy: &Path) -> std::path::PathBuf {
    let mut name = copy.as_os_str().to_owned();
    name.push(".cursor");
    std::path::PathBuf::from(name)
}

/// A dataset's copy and the cursor it is at.
#[derive(Clone, Debug, Default)]
pub struct Follower {
    pub dataset: String,
    /// Every key seen, tombstones included, as received (bodies stay JSON text).
    pub copy: BTreeMap<String, v1::Record>,
    /// Empty until the first snapshot.
    pub cursor: String,
}

type Client = SyncServiceClient<Channel>;

/// How long a RESOURCE_EXHAUSTED answer asks to wait (its RetryInfo), else a fifth of a second.
fn retry_delay(status: &tonic::Status) -> std::time::Duration {
    use tonic_types::StatusExt;
    status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .unwrap_or(std::time::Duration::from_millis(200))
}

impl Follower {
    pub fn new(dataset: &str) -> Follower {
        Follower { dataset: dataset.to_string(), ..Follower::default() }
    }

    /// Reads until caught up: a snapshot first when there is no cursor, then changes. Returns
    /// how many records were applied. The next page is asked for as soon as a page arrives,
    /// so the gateway reads it while this one is applied.
    pub async fn catch_up(
        &mut self,
        client: &mut Client,
        page: u32,
    ) -> Result<usize, tonic::Status> {
        let mut applied = 0;
        if self.cursor.is_empty() {
            let dataset = self.dataset.clone();
            let ask = |client: &Client, token: String| {
                let mut client = client.clone();
                let request = v1::SnapshotRequest {
                    dataset: dataset.clone(),
                    page_token: token,
                    page_size: page,
                };
                tokio::spawn(async move { client.snapshot(request).await })
            };
            let mut asked = String::new();
            let mut pending = Some(ask(client, asked.clone()));
            while let Some(answer) = pending.take() {
                let answer =
                    match answer.await.map_err(|e| tonic::Status::internal(e.to_string()))? {
                        Ok(answer) => answer.into_inner(),
                        Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                            // Over the read quota: wait as told, and ask for the same page again.
                            tokio::time::sleep(retry_delay(&status)).await;
                            pending = Some(ask(client, asked.clone()));
                            continue;
                        }
                        Err(status) => return Err(status),
                    };
                if !answer.next_page_token.is_empty() {
                    asked = answer.next_page_token.clone();
                    pending = Some(ask(client, answer.next_page_token));
                }
                for record in answer.records {
                    self.apply(record);
                    applied += 1;
                }
                self.cursor = answer.cursor;
            }
        }
        loop {
            let request = v1::ChangesRequest {
                dataset: self.dataset.clone(),
                cursor: self.cursor.clone(),
                limit: page,
            };
            let answer = match client.changes(request).await {
                Ok(answer) => answer.into_inner(),
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    tokio::time::sleep(retry_delay(&status)).await;
                    continue;
                }
                Err(status) => return Err(status),
            };
            for change in answer.changes {
                if let Some(record) = change.record {
                    self.apply(record);
                    applied += 1;
                }
            }
            self.cursor = answer.cursor;
            if !answer.more {
                return Ok(applied);
            }
        }
    }

    /// Applies one record: a later version replaces an earlier one; an older one is ignored.
    pub fn apply(&mut self, record: v1::Record) {
        match self.copy.get(&record.key) {
            Some(held) if held.version >= record.version => {}
            _ => {
                self.copy.insert(record.key.clone(), record);
            }
        }
    }

    /// The live records (tombstones left out), by key.
    pub fn live(&self) -> BTreeMap<&str, &v1::Record> {
        self.copy.iter().filter(|(_, r)| !r.deleted).map(|(k, r)| (k.as_str(), r)).collect()
    }

    /// The copy as canonical records, for writing out.
    pub fn records(&self) -> Result<Vec<Record>, crate::model::ModelError> {
        self.copy.values().cloned().map(Record::try_from).collect()
    }

    /// A follower resumed from a copy saved by [`Follower::save`] (JSON Lines, tombstones
    /// included) and the cursor beside it; `None` when nothing was saved there yet.
    pub fn resume(dataset: &str, copy: &Path) -> Result<Option<Follower>, String> {
        let cursor = match std::fs::read_to_string(cursor_path(copy)) {
            Ok(cursor) => cursor.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", cursor_path(copy).display())),
        };
        let text = std::fs::read_to_string(copy).map_err(|e| format!("{}: {e}", copy.display()))?;
        let mut follower = Follower::new(dataset);
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let record: Record = serde_json::from_str(line)
                .map_err(|e| format!("{}: line {}: {e}", copy.display(), i + 1))?;
            if record.dataset != dataset {
                return Err(format!(
                    "{}: line {}: a {} record, not {dataset}",
                    copy.display(),
                    i + 1,
                    record.dataset
                ));
            }
            follower.apply(record.into());
        }
        follower.cursor = cursor;
        Ok(Some(follower))
    }

    /// Saves the copy and then its cursor (each written whole and renamed into place), so a
    /// crash between the two leaves an older cursor with a newer copy: resuming reads some
    /// changes again, which [`Follower::apply`] ignores, and misses none.
    pub fn save(&self, copy: &Path) -> Result<(), String> {
        let records = self.records().map_err(|e| e.to_string())?;
        let text: String =
            records.iter().map(|r| serde_json::to_string(r).unwrap_or_default() + "\n").collect();
        write_whole(copy, text.as_bytes())?;
        write_whole(&cursor_path(copy), self.cursor.as_bytes())
    }
}

/// Writes a file whole: to a temporary beside it, then renamed over it.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    std::fs::write(&temporary, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::rename(&temporary, path).map_err(|e| format!("{}: {e}", path.display()))
}
