//! The operators' commands for shared data: `datasets import|export|follow`, `route` and
//! `reconcile`. Import and export, route and reconcile work on the configured store directly
//! (like `deliveries`); `follow` is a client of a running gateway.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value};

use super::{load_config, runtime, CliError};
use crate::model::{Platform, Record, Timestamp};
use crate::sync::{Dataset, Datasets};

#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// Load records from a JSON Lines or CSV file: every line checked, then all written in one
    /// commit or none.
    Import {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// categories, directory or knowledge.
        dataset: String,
        /// `.jsonl`/`.json` (one record per line) or `.csv` (a header row; see docs/DATASETS.md).
        file: PathBuf,
        /// Write nothing: print what would be added, changed, deleted, left unchanged and
        /// refused (each refusal by its line).
        #[arg(long)]
        dry_run: bool,
        /// Write only if the dataset is still at this version (printed by `--dry-run`): nothing
        /// has been written to it since the preview.
        #[arg(long, value_name = "VERSION", conflicts_with = "dry_run")]
        if_version: Option<String>,
        /// Delete directory records even when a deletion leaves a cell (a place and a
        /// category) with no unit at all.
        #[arg(long)]
        force: bool,
    },
    /// Print every record of a dataset, tombstones included.
    Export {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        dataset: String,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: TableFormat,
    },
    /// Show every version of one record: when, by whom (the endpoint, or the import and its
    /// file's hash), and what it said.
    History {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        dataset: String,
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Mirror a dataset from a running gateway over gRPC until caught up, and report the rate.
    Follow(FollowArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
pub struct FollowArgs {
    /// A site's configuration (`liandong init`): the address and the CA come from it.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    pub dataset: String,
    /// The identity to read as: its certificate is `identities/NAME.pem` beside the config
    /// (`330200-12345`, `operator-ops`, `agency-demo`).
    #[arg(long = "as", default_value = "operator-ops")]
    pub identity: String,
    /// Records per page.
    #[arg(long, default_value_t = 5000)]
    pub page: u32,
    /// Write the copy here as JSON Lines (tombstones included), and its cursor beside it
    /// (`FILE.cursor`); when both are there already, resume from that cursor.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The gateway's address (`HOST:PORT` or `https://HOST:PORT`); by default the
    /// configuration's HTTPS listener on localhost.
    #[arg(long, value_name = "ADDR")]
    pub server: Option<String>,
    /// Keep following once caught up: each change printed as it comes, the copy saved at most
    /// once a second; when the gateway goes away, say why, reconnect and resume. Ctrl-C stops
    /// (the copy saved first).
    #[arg(long)]
    pub watch: bool,
    /// Print the report (and, with --watch, each change) as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RouteArgs {
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Where the case is (its location's region): six or nine digits.
    #[arg(long, alias = "location", required_unless_present_any = ["to_region", "coverage"])]
    pub region: Option<String>,
    /// The destination region the document names, as a submission has it: the location
    /// decides when this contains it (regions nest by their digits).
    #[arg(long)]
    pub to_region: Option<String>,
    /// The canonical category (NP07, PM01, …); with `--coverage`, only this one.
    #[arg(long, required_unless_present = "coverage")]
    pub category: Option<String>,
    /// Instead of one route: every township and county the directory names inside REGION,
    /// for every category (or `--category`), whose cases fall back to a coarser tier's unit or
    /// have no unit at all.
    #[arg(long, value_name = "REGION", conflicts_with_all = ["region", "to_region", "platform"])]
    pub coverage: Option<String>,
    /// The destination platform; by default the category's (NP → 12345, PM → 110).
    #[arg(long)]
    pub platform: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The endpoint whose view this is (REGION/PLATFORM).
    #[arg(long)]
    pub endpoint: String,
    /// Its view: JSON Lines or a JSON array of `{"reference", "state"}`.
    pub file: PathBuf,
    /// Only transfers created at or after this time (RFC 3339) count as unknown there.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long)]
    pub json: bool,
}

fn dataset(name: &str) -> Result<Dataset, CliError> {
    name.parse().map_err(|e: crate::sync::SyncError| CliError::Invalid(e.to_string()))
}

/// Opens the configured store and the datasets over it.
async fn open(config: &crate::config::Config) -> Result<Datasets, CliError> {
    let store =
        crate::server::open_store(config).await.map_err(|e| CliError::Failed(e.to_string()))?;
    let registry = crate::server::registry(config).map_err(|e| CliError::Invalid(e.to_string()))?;
    let engine = crate::engine::Engine::new(
        store,
        std::sync::Arc::new(registry),
        std::sync::Arc::new(config.clone()),
    );
    Ok(engine.datasets())
}

pub fn datasets(command: &DatasetsCommand, stdout: &mut dyn Write) -> Result<(), CliError> {
    let text = match command {
        DatasetsCommand::Import { config, dataset: name, file, dry_run, if_version, force } => {
            let if_version = if_version
                .as_deref()
                .map(|v| {
                    crate::store::FeedCursor::decode(v).map_err(|_| {
                        CliError::Invalid(format!(
                            "--if-version: expected a version printed by --dry-run, got {v:?}"
                        ))
                    })
                })
                .transpose()?;
            let dataset = dataset(name)?;
            if dataset == Dataset::TransferStatus {
                return Err(CliError::Invalid(
                    "transfer_status is written by the gateway alone".into(),
                ));
            }
            let config = load_config(config)?;
            // The audit trail names what was imported: the file and its SHA-256.
            let source = {
                use sha2::Digest;
                let mut hasher = sha2::Sha256::new();
                let mut input = std::fs::File::open(file)
                    .map_err(|e| CliError::Failed(format!("{}: {e}", file.display())))?;
                std::io::copy(&mut input, &mut hasher)
                    .map_err(|e| CliError::Failed(format!("{}: {e}", file.display())))?;
                let hash = crate::model::digest::hex(&hasher.finalize());
                format!("{} sha256:{hash}", file.display())
            };
            if *dry_run {
                let (lines, records): (Vec<usize>, Vec<Record>) =
                    read_records(file, dataset)?.into_iter().unzip();
                let count = records.len();
                let preview = runtime()?.block_on(async {
                    let datasets = open(&config).await?;
                    datasets
                        .preview(dataset, records, *force)
                        .await
                        .map_err(|e| CliError::Failed(e.to_string()))
                })?;
                let mut out = format!(
                    "{} at version {}: {count} records read: {} to add, {} to change, {} to delete, {} unchanged, {} refused (dry run: nothing was written)\n",
                    dataset.as_str(),
                    preview.version,
                    preview.added,
                    preview.changed,
                    preview.deleted,
                    preview.unchanged,
                    preview.refused.len()
                );
                for (n, why) in &preview.refused {
                    out.push_str(&format!(
                        "{}: line {}: {why}\n",
                        file.display(),
                        lines.get(n - 1).copied().unwrap_or(*n)
                    ));
                }
                return stdout
                    .write_all(out.as_bytes())
                    .map_err(|e| CliError::Failed(format!("cannot write: {e}")));
            }
            // Read, checked and written a chunk at a time into one transaction: memory stays
            // bounded whatever the file's size, and nothing is committed unless every line is
            // good. Errors name the file's line (a CSV header, blank lines and quoted line
            // breaks make it differ from the record's number).
            let (count, written) = runtime()?.block_on(async {
                let datasets = open(&config).await?;
                let options = crate::sync::ImportOptions { source, if_version, force: *force };
                let mut import = datasets
                    .begin_import(dataset, options)
                    .await
                    .map_err(|e| CliError::Failed(e.to_string()))?;
                let input = std::fs::File::open(file)
                    .map_err(|e| CliError::Failed(format!("{}: {e}", file.display())))?;
                let (mut chunk, mut count) = (Vec::with_capacity(IMPORT_CHUNK), 0);
                for (line, parsed) in
                    RecordReader::new(std::io::BufReader::new(input), is_csv(file), dataset)
                {
                    match parsed {
                        Ok(record) => {
                            count += 1;
                            chunk.push((line, record));
                        }
                        Err(problem) => import.refuse(line, problem),
                    }
                    if chunk.len() >= IMPORT_CHUNK {
                        import.add(std::mem::take(&mut chunk)).await;
                    }
                }
                import.add(chunk).await;
                let written = import.finish().await.map_err(|errors| {
                    let named: Vec<String> = errors
                        .iter()
                        .map(|(line, e)| match line {
                            0 => e.clone(),
                            line => format!("{}: line {line}: {e}", file.display()),
                        })
                        .collect();
                    CliError::Invalid(format!("{}\nnothing was written", named.join("\n")))
                })?;
                Ok::<_, CliError>((count, written))
            })?;
            format!(
                "{}: {count} records read, {written} written ({} unchanged)\n",
                dataset.as_str(),
                count - written
            )
        }
        DatasetsCommand::Export { config, dataset: name, format } => {
            let dataset = dataset(name)?;
            let config = load_config(config)?;
            // Every key's last write, tombstones included (so a copy learns of deletions).
            let records = runtime()?.block_on(async {
                let store = crate::server::open_store(&config)
                    .await
                    .map_err(|e| CliError::Failed(e.to_string()))?;
                let mut all: Vec<Record> = Vec::new();
                loop {
                    let after = all.last().map(|r| r.key.clone()).unwrap_or_default();
                    let page = store
                        .records_after(dataset.as_str(), &after, crate::sync::MAX_PAGE)
                        .await
                        .map_err(|e| CliError::Failed(e.to_string()))?;
                    let full = page.len() as i64 >= crate::sync::MAX_PAGE;
                    all.extend(page);
                    if !full {
                        return Ok::<_, CliError>(all);
                    }
                }
            })?;
            match format {
                TableFormat::Jsonl => records
                    .iter()
                    .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n")
                    .collect(),
                TableFormat::Csv => write_csv(&records),
            }
        }
        DatasetsCommand::History { config, dataset: name, key, json } => {
            history(config, dataset(name)?, key, *json)?
        }
        DatasetsCommand::Follow(args) => return follow(args, stdout),
    };
    stdout.write_all(text.as_bytes()).map_err(|e| CliError::Failed(format!("cannot write: {e}")))
}

fn history(config: &Path, dataset: Dataset, key: &str, json: bool) -> Result<String, CliError> {
    let config = load_config(config)?;
    let versions = runtime()?.block_on(async {
        let store = crate::server::open_store(&config)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        store
            .record_history(dataset.as_str(), key)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))
    })?;
    if versions.is_empty() {
        return Err(CliError::Invalid(format!("{} has no record {key:?}", dataset.as_str())));
    }
    if json {
        let list: Vec<Value> = versions
            .iter()
            .map(|(record, writer)| {
                serde_json::json!({
                    "version": record.version, "updated_at": record.updated_at.to_string(), "owner": record.owner,
                    "writer": writer, "deleted": record.deleted, "body": record.body,
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&list).unwrap_or_default() + "\n");
    }
    let mut out = format!("{} {key}: {} versions\n", dataset.as_str(), versions.len());
    for (record, writer) in &versions {
        let what = if record.deleted { "deleted".to_string() } else { record.body.to_string() };
        let writer = writer.as_deref().unwrap_or("(not recorded)");
        out.push_str(&format!("v{} {} by {writer}: {what}\n", record.version, record.updated_at));
    }
    Ok(out)
}

fn follow(args: &FollowArgs, stdout: &mut dyn Write) -> Result<(), CliError> {
    use crate::sync::follower::{channel, Follower};
    let config = load_config(&args.config)?;
    let dir = args.config.parent().unwrap_or(Path::new("."));
    let cert = dir.join("identities").join(format!("{}.pem", args.identity));
    let key = dir.join("identities").join(format!("{}-key.pem", args.identity));
    let url = match &args.server {
        Some(server) if server.starts_with("https://") => server.clone(),
        Some(server) if server.contains("://") => {
            return Err(CliError::Invalid(format!(
                "--server: expected HOST:PORT or https://HOST:PORT, got {server:?}"
            )))
        }
        Some(server) => format!("https://{server}"),
        None => format!("https://localhost:{}", config.listen.https.port()),
    };
    let dataset = dataset(&args.dataset)?;
    let print = |stdout: &mut dyn Write, text: String| {
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| CliError::Failed(format!("cannot write: {e}")))
    };
    let save = |follower: &Follower| match &args.out {
        Some(out) => follower.save(out).map_err(CliError::Failed),
        None => Ok(()),
    };
    runtime()?.block_on(async {
        let mut follower = match &args.out {
            Some(out) => Follower::resume(dataset.as_str(), out).map_err(CliError::Invalid)?,
            None => None,
        }
        .unwrap_or_else(|| Follower::new(dataset.as_str()));
        let resumed_from = (!follower.cursor.is_empty()).then(|| follower.cursor.clone());
        let connect = || async {
            let channel = channel(&url, &config.tls.ca, &cert, &key).await.map_err(CliError::Failed)?;
            Ok::<_, CliError>(
                crate::proto::v1::sync_service_client::SyncServiceClient::new(channel).max_decoding_message_size(64 << 20),
            )
        };
        let mut client = connect().await?;
        let started = std::time::Instant::now();
        let applied = follower
            .catch_up(&mut client, args.page)
            .await
            .map_err(|e| CliError::Failed(format!("{url}: {}: {}", e.code(), e.message())))?;
        let seconds = started.elapsed().as_secs_f64();
        save(&follower)?;
        let report = serde_json::json!({
            "dataset": dataset.as_str(), "records": applied, "live": follower.live().len(), "seconds": seconds,
            "per_second": applied as f64 / seconds.max(1e-9), "cursor": follower.cursor, "resumed_from": resumed_from,
        });
        print(
            stdout,
            if args.json {
                serde_json::to_string(&report).unwrap_or_default() + "\n"
            } else {
                format!(
                    "{}: {applied} records in {seconds:.2} s ({:.0} records/s), {} live; cursor {}{}\n",
                    dataset.as_str(),
                    applied as f64 / seconds.max(1e-9),
                    follower.live().len(),
                    follower.cursor,
                    resumed_from.as_deref().map(|c| format!(" (resumed from {c})")).unwrap_or_default()
                )
            },
        )?;
        if !args.watch {
            return Ok(());
        }
        // Saved by the second, not by the change: a busy feed does not rewrite the copy each time.
        let mut unsaved = false;
        loop {
            let request = crate::proto::v1::ChangesRequest {
                dataset: dataset.as_str().to_string(),
                cursor: follower.cursor.clone(),
                limit: 0,
            };
            let why_stopped = match client.watch(request).await {
                Err(status) => format!("{}: {}", status.code(), status.message()),
                Ok(answer) => {
                    let mut stream = answer.into_inner();
                    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                    loop {
                        let message = tokio::select! {
                            message = stream.message() => message,
                            _ = tick.tick() => {
                                if unsaved {
                                    save(&follower)?;
                                    unsaved = false;
                                }
                                continue;
                            }
                            _ = tokio::signal::ctrl_c() => {
                                save(&follower)?;
                                return Ok(());
                            }
                        };
                        match message {
                            Ok(Some(change)) => {
                                if let Some(record) = change.record {
                                    let line = if args.json {
                                        serde_json::json!({"cursor": change.cursor, "key": record.key, "version": record.version, "deleted": record.deleted})
                                            .to_string()
                                    } else {
                                        format!(
                                            "{} {} v{}{}",
                                            change.cursor,
                                            record.key,
                                            record.version,
                                            if record.deleted { " deleted" } else { "" }
                                        )
                                    };
                                    follower.apply(record);
                                    print(stdout, line + "\n")?;
                                    unsaved = true;
                                }
                                follower.cursor = change.cursor;
                            }
                            Ok(None) => break "the gateway ended the stream".to_string(),
                            Err(status) => break format!("{}: {}", status.code(), status.message()),
                        }
                    }
                }
            };
            save(&follower)?;
            eprintln!("{url}: {why_stopped}; reconnecting from cursor {}", follower.cursor);
            // Reconnect with a growing pause; each failure says why.
            let mut pause = std::time::Duration::from_millis(500);
            client = loop {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
                match connect().await {
                    Ok(client) => break client,
                    Err(e) => eprintln!("{e}; retrying"),
                }
                pause = (pause * 2).min(std::time::Duration::from_secs(10));
            };
        }
    })
}

pub fn route(args: &RouteArgs, stdout: &mut dyn Write) -> Result<(), CliError> {
    let config = load_config(&args.config)?;
    if let Some(category) = &args.category {
        if !crate::model::category::is_known(category) {
            return Err(CliError::Invalid(format!(
                "--category: expected a canonical category code, got {category:?}"
            )));
        }
    }
    if let Some(region) = &args.coverage {
        return coverage(&config, region, args.category.as_deref(), args.json, stdout);
    }
    let category = args.category.clone().unwrap_or_default();
    let platform: Platform = match &args.platform {
        Some(p) => p.parse().map_err(|e: String| CliError::Invalid(format!("--platform: {e}")))?,
        None if category.starts_with("PM") => Platform::Police,
        None => Platform::Hotline,
    };
    for (flag, region) in [("--region", &args.region), ("--to-region", &args.to_region)] {
        if let Some(region) = region {
            let _: crate::model::Region =
                region.parse().map_err(|e: String| CliError::Invalid(format!("{flag}: {e}")))?;
        }
    }
    let (region, field) =
        crate::routing::region_for(args.to_region.as_deref(), args.region.as_deref(), "");
    let field = if field == "to_region" { "--to-region" } else { "--region" };
    let decision = runtime()?.block_on(async {
        let datasets = open(&config).await?;
        crate::routing::route(
            &datasets.directory,
            &datasets.store,
            &datasets.registry,
            platform,
            region,
            &category,
            field,
        )
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))
    })?;
    let text = if args.json {
        serde_json::to_string_pretty(&serde_json::json!({
            "endpoint": decision.endpoint.to_string(), "unit": decision.unit, "considered": decision.considered,
            "records": decision.records,
        }))
        .unwrap_or_default()
            + "\n"
    } else {
        let mut out = format!("endpoint: {}\n", decision.endpoint);
        match (&decision.unit, decision.records.first()) {
            (Some(unit), Some(record)) => out.push_str(&format!(
                "unit:     {} {} (directory {} v{}, owner {})\n",
                unit.code.as_deref().unwrap_or("-"),
                unit.name.as_deref().unwrap_or(""),
                record.key,
                record.version,
                record.owner
            )),
            _ => out.push_str("unit:     none (no directory record covers this category here)\n"),
        }
        out.push_str("looked up, most specific first:\n");
        for key in &decision.considered {
            let found = decision.records.iter().find(|r| &r.key == key);
            out.push_str(&match found {
                Some(r) => format!("  {key:<22} v{} {}\n", r.version, r.body),
                None => format!("  {key:<22} -\n"),
            });
        }
        out
    };
    stdout.write_all(text.as_bytes()).map_err(|e| CliError::Failed(format!("cannot write: {e}")))
}

/// `route --coverage REGION`: the cells inside REGION not answered at their own tier.
fn coverage(
    config: &crate::config::Config,
    region: &str,
    category: Option<&str>,
    json: bool,
    stdout: &mut dyn Write,
) -> Result<(), CliError> {
    let _: crate::model::Region =
        region.parse().map_err(|e: String| CliError::Invalid(format!("--coverage: {e}")))?;
    let categories: Vec<&str> = match category {
        Some(code) => vec![code],
        None => crate::model::category::TAXONOMY.iter().map(|(code, _, _)| *code).collect(),
    };
    let cells = runtime()?.block_on(async {
        let datasets = open(config).await?;
        datasets
            .directory
            .refresh(&datasets.store)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        Ok::<_, CliError>(
            datasets
                .directory
                .read(|view| crate::routing::coverage(view, region, &categories))
                .await,
        )
    })?;
    let (covered, gaps): (Vec<_>, Vec<_>) = cells.iter().partition(|c| c.covered_at_its_tier());
    let unanswered = gaps.iter().filter(|c| c.answered_by.is_none()).count();
    let text = if json {
        serde_json::to_string_pretty(&serde_json::json!({
            "region": region, "cells": cells.len(), "covered": covered.len(),
            "fall_back": gaps.len() - unanswered, "no_unit": unanswered, "gaps": gaps,
        }))
        .unwrap_or_default()
            + "\n"
    } else {
        let mut out = format!(
            "{region}: {} cells ({} places × {} categories): {} answered at their own tier, {} fall back to a coarser one, {} have no unit\n",
            cells.len(),
            cells.len() / categories.len().max(1),
            categories.len(),
            covered.len(),
            gaps.len() - unanswered,
            unanswered
        );
        for cell in &gaps {
            out.push_str(&match (&cell.answered_by, cell.tier) {
                (Some(key), Some(tier)) => format!(
                    "  {}/{}  falls back to the {tier}: {key}\n",
                    cell.region, cell.category
                ),
                _ => format!("  {}/{}  NO UNIT\n", cell.region, cell.category),
            });
        }
        out
    };
    stdout.write_all(text.as_bytes()).map_err(|e| CliError::Failed(format!("cannot write: {e}")))
}

pub fn reconcile(args: &ReconcileArgs, stdout: &mut dyn Write) -> Result<(), CliError> {
    let config = load_config(&args.config)?;
    let endpoint: crate::model::EndpointId =
        args.endpoint.parse().map_err(|e: String| CliError::Invalid(format!("--endpoint: {e}")))?;
    let time = |t: &Option<String>, flag: &str| {
        t.as_deref()
            .map(|t| {
                Timestamp::parse_rfc3339(t, true)
                    .map(Timestamp::unix_seconds)
                    .map_err(|e| CliError::Invalid(format!("{flag}: {e}")))
            })
            .transpose()
    };
    let (since, until) = (time(&args.since, "--since")?, time(&args.until, "--until")?);
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| CliError::Failed(format!("{}: {e}", args.file.display())))?;
    let claims: Vec<crate::sync::reconcile::Claim> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text)
            .map_err(|e| CliError::Invalid(format!("{}: {e}", args.file.display())))?
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    CliError::Invalid(format!("{}: line {}: {e}", args.file.display(), i + 1))
                })
            })
            .collect::<Result<_, _>>()?
    };
    let report = runtime()?.block_on(async {
        let datasets = open(&config).await?;
        crate::sync::reconcile::reconcile(&datasets.store, &endpoint, &claims, since, until)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))
    })?;
    let text = if args.json {
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
    } else {
        let mut out = format!(
            "{}: {} agree, {} differ\n",
            report.endpoint,
            report.matched,
            report.differences.len()
        );
        for d in &report.differences {
            let kind = serde_json::to_value(d.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {kind:<14} {:<28} {:<28} {}\n",
                d.reference,
                d.transfer_id.as_deref().unwrap_or("-"),
                d.note
            ));
        }
        out
    };
    stdout.write_all(text.as_bytes()).map_err(|e| CliError::Failed(format!("cannot write: {e}")))
}

/// One line of an import file: a record without its dataset (the command names it).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    #[serde(default)]
    dataset: Option<String>,
    key: String,
    owner: String,
    version: u64,
    #[serde(default)]
    updated_at: Option<Timestamp>,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    body: Value,
}

impl ImportLine {
    fn into_record(self, dataset: Dataset, now: Timestamp) -> Record {
        Record {
            dataset: self.dataset.unwrap_or_else(|| dataset.as_str().to_string()),
            key: self.key,
            owner: self.owner,
            version: self.version,
            updated_at: self.updated_at.unwrap_or(now),
            deleted: self.deleted,
            body: self.body,
        }
    }
}

/// Reads an import file; the first unreadable line stops it, named.
/// The file's records, each with the line it starts on; or every line that does not read, each
/// named.
/// Records per chunk of an import: what is in memory at once.
const IMPORT_CHUNK: usize = 20_000;

fn is_csv(file: &Path) -> bool {
    file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Every record of a file, each with its line, all in memory (`--dry-run`); every unreadable
/// line is reported.
fn read_records(file: &Path, dataset: Dataset) -> Result<Vec<(usize, Record)>, CliError> {
    let input = std::fs::File::open(file)
        .map_err(|e| CliError::Failed(format!("{}: {e}", file.display())))?;
    let (mut records, mut errors) = (Vec::new(), Vec::new());
    for (line, parsed) in RecordReader::new(std::io::BufReader::new(input), is_csv(file), dataset) {
        match parsed {
            Ok(record) => records.push((line, record)),
            Err(problem) => errors.push(format!("{}: line {line}: {problem}", file.display())),
        }
    }
    if !errors.is_empty() {
        return Err(CliError::Invalid(format!("{}\nnothing was written", errors.join("\n"))));
    }
    Ok(records)
}

/// The records of a JSON Lines or CSV file, one at a time, each with the file line it starts
/// on, or why that line does not read. A CSV row may span lines (a quoted line break): lines
/// are joined until their quotes balance.
struct RecordReader<R> {
    input: R,
    csv: bool,
    header: Option<Vec<String>>,
    line: usize,
    dataset: Dataset,
    now: Timestamp,
    done: bool,
}

impl<R: std::io::BufRead> RecordReader<R> {
    fn new(input: R, csv: bool, dataset: Dataset) -> RecordReader<R> {
        RecordReader {
            input,
            csv,
            header: None,
            line: 0,
            dataset,
            now: Timestamp::now(),
            done: false,
        }
    }

    /// The next row's text and the line it starts on; `None` at the end.
    fn next_row(&mut self) -> Option<(usize, Result<String, String>)> {
        let start = self.line + 1;
        let mut text = String::new();
        loop {
            match self.input.read_line(&mut text) {
                Ok(0) => break,
                Ok(_) => self.line += 1,
                Err(e) => {
                    self.done = true;
                    return Some((start, Err(format!("cannot read: {e}"))));
                }
            }
            if !self.csv || text.matches('"').count().is_multiple_of(2) {
                break;
            }
        }
        (!text.is_empty()).then_some((start, Ok(text)))
    }
}

impl<R: std::io::BufRead> Iterator for RecordReader<R> {
    type Item = (usize, Result<Record, String>);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let (start, text) = self.next_row()?;
            let text = match text {
                Ok(text) => text,
                Err(e) => return Some((start, Err(e))),
            };
            let value = if self.csv {
                let mut rows = match parse_csv(&text) {
                    Ok(rows) => rows,
                    Err((line, problem)) => {
                        self.done = true;
                        return Some((start + line - 1, Err(problem)));
                    }
                };
                let Some((_, cells)) = rows.pop() else { continue };
                let Some(header) = &self.header else {
                    self.header = Some(cells);
                    continue;
                };
                csv_row_to_json(header, &cells)
            } else if text.trim().is_empty() {
                continue;
            } else {
                serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
            };
            let record = value
                .and_then(decode::<ImportLine>)
                .map(|line| line.into_record(self.dataset, self.now));
            return Some((start, record));
        }
        None
    }
}

/// Decodes with the path of the field at fault.
fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })
}

/// The columns that are the record's own; every other column is a body field.
const RECORD_COLUMNS: &[&str] = &["dataset", "key", "owner", "version", "updated_at", "deleted"];

/// A CSV row as an import line: body columns nest by dots (`unit.code`); a column named
/// `NAME[]` is a list separated by `;`; empty cells are absent.
fn csv_row_to_json(header: &[String], cells: &[String]) -> Result<Value, String> {
    if cells.len() != header.len() {
        return Err(format!(
            "expected {} cells as in the header, got {}",
            header.len(),
            cells.len()
        ));
    }
    let mut line = Map::new();
    let mut body = Map::new();
    for (name, cell) in header.iter().zip(cells) {
        if cell.is_empty() {
            continue;
        }
        if RECORD_COLUMNS.contains(&name.as_str()) {
            let value = match name.as_str() {
                "version" => Value::from(
                    cell.parse::<u64>()
                        .map_err(|_| format!("version: expected a whole number, got {cell:?}"))?,
                ),
                // Spreadsheets write TRUE/FALSE: any case of true/false, yes/no, 1/0.
                "deleted" => Value::Bool(match cell.to_lowercase().as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => {
                        return Err(format!(
                            "deleted: expected true or false (yes/no, 1/0), got {cell:?}"
                        ))
                    }
                }),
                _ => Value::String(cell.clone()),
            };
            line.insert(name.clone(), value);
            continue;
        }
        let (path, value) = match name.strip_suffix("[]") {
            Some(path) => (
                path,
                Value::Array(
                    cell.split(';').map(|s| Value::String(s.trim().to_string())).collect(),
                ),
            ),
            None => (name.as_str(), Value::String(cell.clone())),
        };
        let mut target = &mut body;
        let parts: Vec<&str> = path.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            let entry = target.entry(part.to_string()).or_insert_with(|| Value::Object(Map::new()));
            target = entry
                .as_object_mut()
                .ok_or_else(|| format!("{name}: {part} is both a field and a group"))?;
        }
        target.insert(parts[parts.len() - 1].to_string(), value);
    }
    line.insert("body".into(), Value::Object(body));
    Ok(Value::Object(line))
}

/// A CSV row: the line it starts on, and its cells.
type CsvRow = (usize, Vec<String>);

/// RFC 4180 CSV: rows of cells with the line each starts on; quoted cells may hold commas,
/// quotes (doubled) and line breaks.
fn parse_csv(text: &str) -> Result<Vec<CsvRow>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let (mut row, mut cell) = (Vec::new(), String::new());
    let (mut line, mut row_line, mut quoted, mut was_quoted) = (1, 1, false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                cell.push(c);
            }
            (false, '"') if cell.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            (false, '"') => return Err((line, "a quote inside an unquoted cell".into())),
            (false, ',') => {
                row.push(std::mem::take(&mut cell));
                was_quoted = false;
            }
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                was_quoted = false;
                if !(row.len() == 1 && row[0].is_empty()) {
                    rows.push((row_line, std::mem::take(&mut row)));
                }
                row.clear();
                line += 1;
                row_line = line;
            }
            (false, c) => cell.push(c),
        }
    }
    if quoted {
        return Err((row_line, "a quoted cell is not closed".into()));
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push((row_line, row));
    }
    Ok(rows)
}

/// Records as CSV: the record's columns, then the body's fields flattened the way import reads them.
fn write_csv(records: &[Record]) -> String {
    fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
        match value {
            Value::Object(fields) => {
                for (k, v) in fields {
                    flatten(
                        &if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") },
                        v,
                        out,
                    );
                }
            }
            Value::Array(items) => {
                let joined: Vec<String> = items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), String::from))
                    .collect();
                out.insert(format!("{prefix}[]"), joined.join(";"));
            }
            Value::Null => {}
            Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let flat: Vec<BTreeMap<String, String>> = records
        .iter()
        .map(|r| {
            let mut out = BTreeMap::new();
            flatten("", &r.body, &mut out);
            out
        })
        .collect();
    let mut columns: Vec<String> = flat.iter().flat_map(|f| f.keys().cloned()).collect();
    columns.sort();
    columns.dedup();
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from("key,owner,version,updated_at,deleted");
    for c in &columns {
        out.push(',');
        out.push_str(&quote(c));
    }
    out.push('\n');
    for (r, f) in records.iter().zip(&flat) {
        out.push_str(&format!(
            "{},{},{},{},{}",
            quote(&r.key),
            quote(&r.owner),
            r.version,
            r.updated_at,
            r.deleted
        ));
        for c in &columns {
            out.push(',');
            out.push_str(&quote(f.get(c).map(String::as_str).unwrap_or("")));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_quotes_and_line_breaks() {
        let rows = parse_csv("a,b\n\"x, y\",\"say \"\"hi\"\"\nthere\"\n\nlast,\n").unwrap();
        assert_eq!(rows[0], (1, vec!["a".to_string(), "b".to_string()]));
        assert_eq!(rows[1], (2, vec!["x, y".to_string(), "say \"hi\"\nthere".to_string()]));
        assert_eq!(rows[2], (5, vec!["last".to_string(), String::new()]));
        assert!(parse_csv("a,\"open\n").is_err());
        assert!(parse_csv("a,b\"c\n").is_err());
    }

    proptest::proptest! {
        /// Any text: rows or a line-numbered error, never a panic; and any row becomes a line or an error.
        #[test]
        fn csv_never_panics(text in "[a-z,\"\\r\\n.\\[\\]; 的]{0,80}") {
            if let Ok(rows) = parse_csv(&text) {
                if let Some(((_, header), rest)) = rows.split_first() {
                    for (_, cells) in rest {
                        let _ = csv_row_to_json(header, cells);
                    }
                }
            }
        }
    }

    #[test]
    fn csv_rows_nest_body_fields() {
        let header: Vec<String> =
            ["key", "owner", "version", "unit.code", "unit.name", "categories[]", "hours"]
                .map(String::from)
                .into();
        let cells: Vec<String> =
            ["330203/NP07", "330200/12345", "3", "CG", "城管", "NP07; NP01", ""]
                .map(String::from)
                .into();
        let line = csv_row_to_json(&header, &cells).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"key": "330203/NP07", "owner": "330200/12345", "version": 3,
                "body": {"unit": {"code": "CG", "name": "城管"}, "categories": ["NP07", "NP01"]}})
        );
        assert!(csv_row_to_json(&header, &cells[..3]).is_err());
    }

    /// What Excel writes is read as meant; anything else is refused, naming the column.
    #[test]
    fn csv_deleted_takes_any_case_and_refuses_the_rest() {
        let header: Vec<String> = ["key", "owner", "version", "deleted"].map(String::from).into();
        let row = |deleted: &str| {
            let cells: Vec<String> =
                ["330203/NP07", "330200/12345", "3", deleted].map(String::from).into();
            csv_row_to_json(&header, &cells)
        };
        for yes in ["TRUE", "True", "true", "1", "YES"] {
            assert_eq!(row(yes).unwrap()["deleted"], true, "{yes}");
        }
        for no in ["FALSE", "false", "0", "No"] {
            assert_eq!(row(no).unwrap()["deleted"], false, "{no}");
        }
        assert_eq!(
            row("deleted").unwrap_err(),
            "deleted: expected true or false (yes/no, 1/0), got \"deleted\""
        );
    }
}
