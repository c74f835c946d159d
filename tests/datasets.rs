//! Shared data, routing and reconciliation over a real store, run against SQLite and
//! PostgreSQL: ownership and version rules, consistent snapshots with changes after them,
//! tombstones, `transfer_status` written by the engine, seeding, imports that are all or
//! nothing, three-tier routing precedence, and reconciliation finding planted differences.

use std::collections::BTreeMap;

use liandong::model::{
    EndpointId, HistoryEvent, Record, RecordDoc, State, StatusUpdate, Timestamp,
};
use liandong::security::Identity;
use liandong::store::PutOutcome;
use liandong::sync::reconcile::{reconcile, Claim, DifferenceKind};
use liandong::sync::{Dataset, Datasets, ImportOptions, PutRequest, SyncError};
use serde_json::json;

use crate::common;
use common::stores::{engine, ningbo_request, stores};

fn endpoint(s: &str) -> Identity {
    Identity::Endpoint(s.parse().unwrap())
}

fn put(version: u64, body: serde_json::Value) -> PutRequest {
    PutRequest { version, deleted: false, body, updated_at: None, force: false }
}

fn import_options(source: &str) -> ImportOptions {
    ImportOptions { source: source.into(), ..ImportOptions::default() }
}

fn unit(code: &str, name: &str) -> serde_json::Value {
    json!({"unit": {"code": code, "name": name}, "phone": "0574-87000000"})
}

/// A directory record of Ningbo 12345's.
fn directory_record(key: &str, version: u64, name: &str) -> Record {
    Record {
        dataset: "directory".into(),
        key: key.into(),
        owner: "330200/12345".into(),
        version,
        updated_at: Timestamp::now(),
        deleted: false,
        body: unit("U", name),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_writes_versions_grow_and_repeats_are_harmless() {
    for (backend, store, _dir) in stores("ds_owner").await {
        let datasets = engine(store.clone()).datasets();
        let ningbo = endpoint("330200/12345");
        let key = "330203/NP07";
        let (_, outcome) = datasets
            .put(&ningbo, Dataset::Directory, key, put(1, unit("CG", "海曙区综合行政执法局")))
            .await
            .unwrap();
        assert_eq!(outcome, PutOutcome::Written, "{backend}");
        // a repeat is harmless
        let (_, outcome) = datasets
            .put(&ningbo, Dataset::Directory, key, put(1, unit("CG", "海曙区综合行政执法局")))
            .await
            .unwrap();
        assert_eq!(outcome, PutOutcome::Unchanged, "{backend}");
        // the same version with other content, or an older one: refused naming the current one
        for version in [1, 0] {
            let err = datasets
                .put(&ningbo, Dataset::Directory, key, put(version, unit("X", "别的单位")))
                .await
                .unwrap_err();
            match (version, err) {
                (1, SyncError::Stale { current, .. }) => assert_eq!(current, 1),
                (0, SyncError::Invalid { field, .. }) => assert_eq!(field, "version"),
                (_, other) => panic!("{backend}: {other}"),
            }
        }
        let err = datasets
            .put(&ningbo, Dataset::Directory, key, put(1, unit("X", "别的单位")))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("version 1"), "{backend}: {err}");
        // others may not write it: another endpoint, the wrong platform, an operator, an agency
        for who in [
            endpoint("330000/12345"),
            endpoint("330200/110"),
            Identity::Operator("ops".into()),
            Identity::Agency("demo".into()),
        ] {
            let err = datasets
                .put(&who, Dataset::Directory, key, put(2, unit("X", "别的单位")))
                .await
                .unwrap_err();
            assert!(matches!(err, SyncError::Forbidden(_)), "{backend}: {who}: {err}");
        }
        // a police category in the directory belongs to the city's 110
        datasets
            .put(
                &endpoint("330200/110"),
                Dataset::Directory,
                "330203/PM01",
                put(1, unit("HS", "海曙分局")),
            )
            .await
            .unwrap();
        // knowledge: whoever writes first owns it
        let entry = json!({"title": "挪车怎么办", "body": "拨打12345，由属地交警联系车主", "categories": ["NP07"]});
        datasets
            .put(&ningbo, Dataset::Knowledge, "kb/nuoche", put(1, entry.clone()))
            .await
            .unwrap();
        let err = datasets
            .put(&endpoint("330200/110"), Dataset::Knowledge, "kb/nuoche", put(2, entry))
            .await
            .unwrap_err();
        assert!(matches!(err, SyncError::Forbidden(_)), "{backend}: {err}");
        // every write is in the audit trail with who wrote it; the refused one is not
        let puts = store.audit_by_action("dataset.put").await.unwrap();
        let last = &puts.last().unwrap().entry;
        assert_eq!(
            (last.actor.as_str(), last.detail["key"].as_str()),
            ("330200/12345", Some("kb/nuoche")),
            "{backend}"
        );
        assert!(
            !puts
                .iter()
                .any(|p| p.entry.actor == "330200/110" && p.entry.detail["key"] == "kb/nuoche"),
            "{backend}"
        );
        // bodies are checked, naming the field
        let err = datasets
            .put(&ningbo, Dataset::Directory, "330204/NP07", put(1, json!({"phone": "1"})))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "body.unit: required field is missing or empty", "{backend}");
        let err = datasets
            .put(
                &ningbo,
                Dataset::Knowledge,
                "kb/x",
                put(1, json!({"title": "t", "body": "b", "categories": ["NP99X"]})),
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("body.categories[0]: expected a canonical category code"),
            "{backend}: {err}"
        );
        // a key is counted in characters: 82 Chinese ones (246 bytes) are a key, 201 are not
        let long = "kb/".to_string() + &"挪车".repeat(41);
        let entry = json!({"title": "t", "body": "b", "categories": ["NP07"]});
        datasets.put(&ningbo, Dataset::Knowledge, &long, put(1, entry.clone())).await.unwrap();
        let too_long = "挪".repeat(201);
        let err =
            datasets.put(&ningbo, Dataset::Knowledge, &too_long, put(1, entry)).await.unwrap_err();
        assert!(
            err.to_string().starts_with("key: expected 1 to 200 printable characters"),
            "{backend}: {err}"
        );
        let err = datasets
            .put(&ningbo, Dataset::TransferStatus, "x", put(1, json!({})))
            .await
            .unwrap_err();
        assert!(matches!(err, SyncError::Forbidden(_)), "{backend}: {err}");
        // nothing refused changed anything
        let record = datasets.get(&endpoint("330000/110"), Dataset::Directory, key).await.unwrap();
        assert_eq!((record.version, record.owner.as_str()), (1, "330200/12345"), "{backend}");
        assert_eq!(record.body["unit"]["name"], "海曙区综合行政执法局", "{backend}");
        assert!(matches!(
            datasets.get(&endpoint("330000/110"), Dataset::Directory, "330204/NP07").await,
            Err(SyncError::NotFound(_))
        ));
        // an agency reads only with read_datasets (the test config grants none)
        let err = datasets
            .get(&Identity::Agency("demo".into()), Dataset::Directory, key)
            .await
            .unwrap_err();
        assert!(matches!(err, SyncError::Forbidden(_)), "{backend}: {err}");
    }
}

fn decoded(docs: Vec<RecordDoc>) -> Vec<Record> {
    docs.iter().map(|d| d.record().unwrap()).collect()
}

/// The live records of a dataset read the way a new follower does: snapshot pages, then changes.
async fn follow(
    datasets: &Datasets,
    who: &Identity,
    dataset: Dataset,
    page: i64,
) -> (BTreeMap<String, Record>, String) {
    let mut copy = BTreeMap::new();
    let mut token = String::new();
    let cursor = loop {
        let snapshot = datasets.snapshot(who, dataset, &token, page).await.unwrap();
        for r in decoded(snapshot.records) {
            copy.insert(r.key.clone(), r);
        }
        if snapshot.next_page_token.is_empty() {
            break snapshot.cursor;
        }
        token = snapshot.next_page_token;
    };
    let cursor = catch_up(datasets, who, dataset, &mut copy, cursor, page).await;
    (copy, cursor)
}

/// Reads changes until a read after a pause brings nothing: on PostgreSQL the feed holds back
/// writes while an older transaction (of any test) is still running, so "caught up" is only
/// "caught up for now".
async fn catch_up(
    datasets: &Datasets,
    who: &Identity,
    dataset: Dataset,
    copy: &mut BTreeMap<String, Record>,
    mut cursor: String,
    page: i64,
) -> String {
    let mut quiet = 0;
    while quiet < 2 {
        let changes = datasets.changes(who, dataset, &cursor, page).await.unwrap();
        quiet = if changes.changes.is_empty() { quiet + 1 } else { 0 };
        for r in decoded(changes.changes.into_iter().map(|(_, r)| r).collect()) {
            copy.insert(r.key.clone(), r);
        }
        cursor = changes.cursor;
        if !changes.more {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    cursor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_the_dataset_at_its_cursor_and_changes_continue_from_it() {
    for (backend, store, _dir) in stores("ds_snapshot").await {
        let datasets = engine(store.clone()).datasets();
        let owner = endpoint("330200/12345");
        let towns = ["101", "102", "103", "104", "105", "106", "107"];
        for (i, town) in towns.iter().enumerate() {
            let key = format!("330203{town}/NP07");
            datasets
                .put(&owner, Dataset::Directory, &key, put(1, unit(&format!("U{i}"), "旧")))
                .await
                .unwrap();
        }
        let reader = endpoint("330200/110");
        // a snapshot begins; while its pages are read, records change and one is deleted
        let first = datasets.snapshot(&reader, Dataset::Directory, "", 3).await.unwrap();
        assert!(first.records.len() <= 3, "{backend}");
        datasets
            .put(&owner, Dataset::Directory, "330203107/NP07", put(2, unit("U6", "新")))
            .await
            .unwrap();
        datasets
            .put(
                &owner,
                Dataset::Directory,
                "330203106/NP07",
                PutRequest {
                    version: 2,
                    deleted: true,
                    body: json!(null),
                    updated_at: None,
                    force: true,
                },
            )
            .await
            .unwrap();
        datasets
            .put(&owner, Dataset::Directory, "330203108/NP07", put(1, unit("U7", "新")))
            .await
            .unwrap();
        let mut seen: Vec<Record> = decoded(first.records.clone());
        let mut token = first.next_page_token.clone();
        while !token.is_empty() {
            let page = datasets.snapshot(&reader, Dataset::Directory, &token, 3).await.unwrap();
            assert_eq!(page.cursor, first.cursor, "{backend}: every page is of the same moment");
            seen.extend(decoded(page.records));
            token = page.next_page_token;
        }
        // the snapshot is the moment it began: only the old versions. (On SQLite that is all
        // seven; on PostgreSQL a write whose transaction overlapped another test's may fall
        // after the snapshot's cursor and come in the changes instead.)
        assert!(
            seen.iter().all(|r| r.version == 1 && r.body["unit"]["name"] == "旧"),
            "{backend}: {seen:?}"
        );
        if backend == "sqlite" {
            assert_eq!(seen.len(), 7);
        }
        // changes from its cursor end with the three writes since, in order, and repeat nothing
        // the snapshot had
        let mut changes = Vec::new();
        let mut cursor = first.cursor.clone();
        for _ in 0..100 {
            let page = datasets.changes(&reader, Dataset::Directory, &cursor, 100).await.unwrap();
            changes.extend(page.changes.into_iter().map(|(c, r)| (c, r.record().unwrap())));
            cursor = page.cursor;
            if changes.len() + seen.len() >= 10 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let keys: Vec<(&str, u64, bool)> =
            changes.iter().map(|(_, r)| (r.key.as_str(), r.version, r.deleted)).collect();
        assert_eq!(
            keys[keys.len() - 3..],
            [
                ("330203107/NP07", 2, false),
                ("330203106/NP07", 2, true),
                ("330203108/NP07", 1, false)
            ],
            "{backend}"
        );
        assert_eq!(changes.len() + seen.len(), 10, "{backend}: nothing missed, nothing twice");
        for (_, r) in &changes {
            assert!(
                !seen.iter().any(|s| s.key == r.key && s.version == r.version),
                "{backend}: {} twice",
                r.key
            );
        }
        // a follower from zero and one from the snapshot end with the same copy; the tombstone
        // propagated
        let (copy, end) = follow(&datasets, &reader, Dataset::Directory, 2).await;
        let mut from_snapshot: BTreeMap<String, Record> =
            seen.into_iter().map(|r| (r.key.clone(), r)).collect();
        for (_, r) in changes {
            from_snapshot.insert(r.key.clone(), r);
        }
        let live = |m: &BTreeMap<String, Record>| -> Vec<(String, u64)> {
            m.values().filter(|r| !r.deleted).map(|r| (r.key.clone(), r.version)).collect()
        };
        assert_eq!(live(&copy), live(&from_snapshot), "{backend}");
        assert_eq!(live(&copy).len(), 7, "{backend}: 8 keys, one deleted");
        assert!(!live(&copy).iter().any(|(k, _)| k == "330203106/NP07"));
        // nothing after the end, and a bad cursor is named
        for at in [&end, &cursor] {
            assert!(
                datasets
                    .changes(&reader, Dataset::Directory, at, 100)
                    .await
                    .unwrap()
                    .changes
                    .is_empty(),
                "{backend}"
            );
        }
        let err = datasets.changes(&reader, Dataset::Directory, "nonsense", 100).await.unwrap_err();
        assert!(err.to_string().starts_with("cursor:"), "{backend}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_status_mirrors_the_transfers_a_platform_is_party_to() {
    for (backend, store, _dir) in stores("ds_status").await {
        let engine = engine(store.clone());
        let datasets = engine.datasets();
        let police: EndpointId = "330200/110".parse().unwrap();
        let first = engine.submit(&police, ningbo_request("S-1")).await.unwrap().transfer;
        let second = engine.submit(&police, ningbo_request("S-2")).await.unwrap().transfer;
        let mut beijing = ningbo_request("S-3");
        beijing.from = "110000/110".parse().unwrap();
        beijing.case.origin.endpoint = beijing.from.clone();
        beijing.case.case_id =
            liandong::model::Case::id_for(&beijing.from, &beijing.case.origin.local_id);
        beijing.to_region = None;
        beijing.case.location = None;
        let other = engine.submit(&beijing.from.clone(), beijing).await.unwrap().transfer;
        let update = StatusUpdate {
            reason_code: None,
            transfer_id: Some(first.transfer_id.clone()),
            transfer_ref: None,
            state: State::Accepted,
            at: Timestamp::now(),
            by: "330200/12345".parse().unwrap(),
            unit: None,
            note: None,
            resolution: None,
            feedback: None,
        };
        engine.update_status(&"330200/12345".parse().unwrap(), update).await.unwrap();

        let hotline = endpoint("330200/12345");
        let (copy, _) = follow(&datasets, &hotline, Dataset::TransferStatus, 10).await;
        assert_eq!(copy.len(), 2, "{backend}: Ningbo 12345 sees its two, not Beijing's");
        assert!(!copy.contains_key(&other.transfer_id));
        let mirrored = &copy[&first.transfer_id];
        assert_eq!(mirrored.body["state"], "accepted", "{backend}");
        assert_eq!(mirrored.owner, "gateway");
        let stored = store.transfer(&first.transfer_id).await.unwrap().unwrap();
        assert_eq!(
            mirrored.version,
            stored.history.len() as u64,
            "{backend}: the version is the history's length"
        );
        assert_eq!(copy[&second.transfer_id].body["state"], "submitted");
        // operators see all three; an endpoint cannot read another's transfer status
        let (all, _) =
            follow(&datasets, &Identity::Operator("ops".into()), Dataset::TransferStatus, 10).await;
        assert_eq!(all.len(), 3, "{backend}");
        let err =
            datasets.get(&hotline, Dataset::TransferStatus, &other.transfer_id).await.unwrap_err();
        assert!(matches!(err, SyncError::Forbidden(_)), "{backend}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn categories_are_seeded_once_and_imports_are_all_or_nothing() {
    for (backend, store, _dir) in stores("ds_seed").await {
        let datasets = engine(store.clone()).datasets();
        let added = datasets.seed_categories().await.unwrap();
        assert!(added > 100, "{backend}: {added} rows from the code tables");
        assert_eq!(
            datasets.seed_categories().await.unwrap(),
            0,
            "{backend}: seeding twice adds nothing"
        );
        let jiangxi = datasets
            .get(&endpoint("360000/12345"), Dataset::Categories, "360000/110/070301")
            .await
            .unwrap();
        assert_eq!(jiangxi.body, json!({"canonical": "NP07", "name": "占道停车挪车"}), "{backend}");

        let record = directory_record;
        let written = datasets
            .import(
                Dataset::Directory,
                vec![record("330203/NP01", 1, "a"), record("330203/NP02", 1, "b")],
                import_options("a.jsonl sha256:00"),
            )
            .await
            .unwrap();
        assert_eq!(written, 2);
        // the import is one entry of the audit trail, naming its source, with its counts
        let imports = store.audit_by_action("dataset.import").await.unwrap();
        assert_eq!(imports.len(), 1, "{backend}");
        assert_eq!(imports[0].entry.detail["source"], "a.jsonl sha256:00");
        assert_eq!(
            (
                imports[0].entry.detail["records"].as_u64(),
                imports[0].entry.detail["written"].as_u64()
            ),
            (Some(2), Some(2))
        );
        // one stale record and one bad owner: every error named, nothing written
        let mut wrong_owner = record("330203/NP03", 1, "c");
        wrong_owner.owner = "330000/12345".into();
        let errors = datasets
            .import(
                Dataset::Directory,
                vec![
                    record("330203/NP04", 1, "d"),
                    wrong_owner,
                    record("330203/NP01", 1, "changed"),
                ],
                import_options("b"),
            )
            .await
            .unwrap_err();
        assert_eq!(errors.len(), 1, "{backend}: the owner is checked before the store: {errors:?}");
        assert_eq!(errors[0].0, 2);
        let errors = datasets
            .import(
                Dataset::Directory,
                vec![record("330203/NP04", 1, "d"), record("330203/NP01", 1, "changed")],
                import_options("c"),
            )
            .await
            .unwrap_err();
        assert_eq!(errors[0].0, 2, "{backend}: {errors:?}");
        assert!(errors[0].1.contains("version 1"), "{backend}: {errors:?}");
        assert!(
            store.record("directory", "330203/NP04").await.unwrap().is_none(),
            "{backend}: nothing half-written"
        );
        let kept = store.record("directory", "330203/NP01").await.unwrap().unwrap();
        assert_eq!(kept.body["unit"]["name"], "a");
        // the knowledge base's first writer owns its key: an import may not take it over
        let entry = json!({"title": "挪车", "body": "拨打12345", "categories": ["NP07"]});
        datasets
            .put(&endpoint("330200/12345"), Dataset::Knowledge, "kb/nuoche", put(1, entry.clone()))
            .await
            .unwrap();
        let takeover = Record {
            dataset: "knowledge".into(),
            key: "kb/nuoche".into(),
            owner: "330200/110".into(),
            version: 2,
            updated_at: Timestamp::now(),
            deleted: false,
            body: entry,
        };
        let errors = datasets
            .import(Dataset::Knowledge, vec![takeover], import_options("d"))
            .await
            .unwrap_err();
        assert_eq!(errors[0].0, 1, "{backend}: {errors:?}");
        assert_eq!(
            errors[0].1, "forbidden: kb/nuoche is owned by 330200/12345, not 330200/110",
            "{backend}"
        );
        let kept = store.record("knowledge", "kb/nuoche").await.unwrap().unwrap();
        assert_eq!((kept.owner.as_str(), kept.version), ("330200/12345", 1), "{backend}");
    }
}

/// An import is checked a chunk at a time and committed whole, and a later record of a key in
/// the same import is checked against its earlier one, across chunks. While it is under way the
/// gateway goes on writing (on SQLite the chunks are staged beside the store, not written under
/// its one write lock: a submission made meanwhile would otherwise wait for the import and fail
/// with "database is locked"). A key written by someone else after the import was checked
/// against it refuses the whole import, naming the key; the scratch file never stays behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_is_checked_beside_the_gateways_writes_and_applied_whole() {
    let record = directory_record;
    let lines = |records: Vec<Record>| records.into_iter().enumerate().collect::<Vec<_>>();
    let leftovers = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains("import"))
            .count()
    };
    for (backend, store, dir) in stores("ds_staged").await {
        let engine = engine(store.clone());
        let datasets = engine.datasets();
        let mut import =
            datasets.begin_import(Dataset::Directory, import_options("e.jsonl")).await.unwrap();
        import
            .add(lines(vec![
                record("330203/NP01", 1, "a1"),
                record("330203/NP02", 1, "b1"),
                record("330203/NP01", 2, "a2"),
            ]))
            .await;
        // A desk submits while the import is under way: answered at once.
        let submitted =
            engine.submit(&"330200/110".parse().unwrap(), ningbo_request("LZ-S1")).await;
        assert!(submitted.unwrap().created, "{backend}");
        import
            .add(lines(vec![record("330203/NP01", 3, "a3"), record("330203/NP03", 1, "c1")]))
            .await;
        assert_eq!(import.finish().await.unwrap(), 5, "{backend}: every version written");
        let a = store.record("directory", "330203/NP01").await.unwrap().unwrap();
        assert_eq!((a.version, &a.body["unit"]["name"]), (3, &json!("a3")), "{backend}");
        let history = store.record_history("directory", "330203/NP01").await.unwrap();
        let versions: Vec<u64> = history.iter().map(|(r, _)| r.version).collect();
        assert_eq!(versions, [1, 2, 3], "{backend}");
        assert_eq!(history[2].1.as_deref(), Some("import e.jsonl"), "{backend}");

        // Within one import, across chunks: a version that does not grow on the import's own
        // earlier record is refused, by its line.
        let mut import =
            datasets.begin_import(Dataset::Directory, import_options("f.jsonl")).await.unwrap();
        import.add(lines(vec![record("330203/NP04", 1, "d1")])).await;
        import.add(vec![(7, record("330203/NP04", 1, "d1 again, changed"))]).await;
        let errors = import.finish().await.unwrap_err();
        assert_eq!(errors.len(), 1, "{backend}: {errors:?}");
        assert_eq!(errors[0].0, 7, "{backend}: {errors:?}");
        assert!(store.record("directory", "330203/NP04").await.unwrap().is_none(), "{backend}");

        if backend == "sqlite" {
            // Checked against the store, then the store moves: nothing is written.
            let mut import =
                datasets.begin_import(Dataset::Directory, import_options("g.jsonl")).await.unwrap();
            import
                .add(lines(vec![record("330203/NP05", 1, "e1"), record("330203/NP02", 2, "b2")]))
                .await;
            datasets
                .put(
                    &endpoint("330200/12345"),
                    Dataset::Directory,
                    "330203/NP05",
                    put(1, unit("U", "x")),
                )
                .await
                .unwrap();
            let errors = import.finish().await.unwrap_err();
            assert_eq!(
                errors,
                [(
                    0,
                    "version: 330203/NP05 was written (now version 1) while this import was \
                     being checked; nothing was written (import again)"
                        .to_string()
                )],
                "{backend}"
            );
            let b = store.record("directory", "330203/NP02").await.unwrap().unwrap();
            assert_eq!(b.version, 1, "{backend}: nothing of it written");
            // An import dropped half-way writes nothing and leaves no file.
            let mut import =
                datasets.begin_import(Dataset::Directory, import_options("h.jsonl")).await.unwrap();
            import.add(lines(vec![record("330203/NP06", 1, "f1")])).await;
            drop(import);
            assert!(store.record("directory", "330203/NP06").await.unwrap().is_none());
            assert_eq!(leftovers(dir.path()), 0, "no scratch file left");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_takes_the_most_specific_directory_record() {
    for (backend, store, _dir) in stores("ds_route").await {
        let engine = engine(store.clone());
        let datasets = engine.datasets();
        let (ningbo, zhejiang) = (endpoint("330200/12345"), endpoint("330000/12345"));
        for (who, key, name) in [
            (&zhejiang, "330000/NP03", "浙江省人社厅"),
            (&ningbo, "330200/NP03", "宁波市人社局"),
            (&ningbo, "330203/NP03", "海曙区人社局"),
            (&ningbo, "330203101/NP03", "高桥镇劳动保障所"),
            (&zhejiang, "330100/NP03", "杭州市人社局"),
        ] {
            datasets.put(who, Dataset::Directory, key, put(1, unit(key, name))).await.unwrap();
        }
        // (region, category) → (endpoint, unit)
        let table = [
            ("330203101", "NP03", "330200/12345", Some("高桥镇劳动保障所")),
            ("330203102", "NP03", "330200/12345", Some("海曙区人社局")),
            ("330203", "NP03", "330200/12345", Some("海曙区人社局")),
            ("330205", "NP03", "330200/12345", Some("宁波市人社局")),
            ("330106", "NP03", "330000/12345", Some("杭州市人社局")),
            ("330302", "NP03", "330000/12345", Some("浙江省人社厅")),
            ("330203101", "NP07", "330200/12345", None),
        ];
        for (region, category, to, unit) in table {
            let decision = liandong::routing::route(
                engine.directory(),
                &store,
                engine.registry(),
                liandong::model::Platform::Hotline,
                region,
                category,
                "to_region",
            )
            .await
            .unwrap();
            assert_eq!(decision.endpoint.to_string(), to, "{backend}: {region} {category}");
            assert_eq!(
                decision.unit.and_then(|u| u.name).as_deref(),
                unit,
                "{backend}: {region} {category}"
            );
        }
        // a deleted township record falls back to the county
        datasets
            .put(
                &ningbo,
                Dataset::Directory,
                "330203101/NP03",
                PutRequest {
                    version: 2,
                    deleted: true,
                    body: json!(null),
                    updated_at: None,
                    force: false,
                },
            )
            .await
            .unwrap();
        let decision = liandong::routing::route(
            engine.directory(),
            &store,
            engine.registry(),
            liandong::model::Platform::Hotline,
            "330203101",
            "NP03",
            "to_region",
        )
        .await
        .unwrap();
        assert_eq!(
            decision.unit.and_then(|u| u.name).as_deref(),
            Some("海曙区人社局"),
            "{backend}"
        );

        // deleting the only unit of a cell (no county, city or province record for NP07) is
        // refused naming `deleted`, unless forced
        datasets
            .put(&ningbo, Dataset::Directory, "330203101/NP07", put(1, unit("CG", "城管中队")))
            .await
            .unwrap();
        let delete = |force| PutRequest {
            version: 2,
            deleted: true,
            body: json!(null),
            updated_at: None,
            force,
        };
        match datasets.put(&ningbo, Dataset::Directory, "330203101/NP07", delete(false)).await {
            Err(SyncError::Invalid { field, problem }) => {
                assert_eq!(field, "deleted", "{backend}");
                assert!(
                    problem.contains("only unit for NP07 in 330203101")
                        && problem.contains("330203/NP07"),
                    "{backend}: {problem}"
                );
            }
            other => panic!("{backend}: {other:?}"),
        }
        datasets.put(&ningbo, Dataset::Directory, "330203101/NP07", delete(true)).await.unwrap();

        // a submitted wage dispute in the township: the unit is in the history and the destination's copy
        datasets
            .put(
                &ningbo,
                Dataset::Directory,
                "330203101/NP03",
                put(3, unit("GQ-LB", "高桥镇劳动保障所")),
            )
            .await
            .unwrap();
        let mut request = ningbo_request("R-1");
        request.case.category = "NP03".parse().unwrap();
        let transfer =
            engine.submit(&"330200/110".parse().unwrap(), request).await.unwrap().transfer;
        let routed = transfer
            .history
            .iter()
            .find(|h| h.state == HistoryEvent::Routed)
            .expect("a routed entry");
        assert_eq!(
            routed.unit.as_ref().and_then(|u| u.name.as_deref()),
            Some("高桥镇劳动保障所"),
            "{backend}"
        );
        assert_eq!(routed.note.as_deref(), Some("directory 330203101/NP03 v3"));
        assert_eq!(
            transfer.for_destination().to_unit.and_then(|u| u.code).as_deref(),
            Some("GQ-LB")
        );
        let deliveries = store.deliveries_of(&transfer.transfer_id).await.unwrap();
        assert!(
            deliveries[0].payload.contains("GQ-LB"),
            "{backend}: the outbox payload carries the unit"
        );

        // regions nest (canonical.md): a city or province to_region holding the case's township
        // is routed by the township — its unit, and its city's own platform
        for to_region in ["330200", "330000"] {
            let mut request = ningbo_request(&format!("R-nest-{to_region}"));
            request.case.category = "NP03".parse().unwrap();
            request.to_region = Some(to_region.parse().unwrap());
            let transfer =
                engine.submit(&"330200/110".parse().unwrap(), request).await.unwrap().transfer;
            assert_eq!(transfer.to.to_string(), "330200/12345", "{backend}: {to_region}");
            let routed = transfer
                .history
                .iter()
                .find(|h| h.state == HistoryEvent::Routed)
                .expect("a routed entry");
            assert_eq!(
                routed.note.as_deref(),
                Some("directory 330203101/NP03 v3"),
                "{backend}: {to_region}"
            );
        }
        // a to_region that does not hold the location decides by itself
        let mut request = ningbo_request("R-elsewhere");
        request.case.category = "NP03".parse().unwrap();
        request.to_region = Some("330106".parse().unwrap());
        let transfer =
            engine.submit(&"330200/110".parse().unwrap(), request).await.unwrap().transfer;
        assert_eq!(
            transfer.to.to_string(),
            "330000/12345",
            "{backend}: Hangzhou has no platform of its own"
        );

        // another replica's write (another engine on the same store) is routed on within a
        // second: the server keeps its directory caught up beside the submissions
        let (_keep, never) = tokio::sync::watch::channel(false);
        tokio::spawn(engine.follow_datasets(store.clone(), never));
        let replica = common::stores::engine(store.clone());
        replica
            .datasets()
            .put(
                &ningbo,
                Dataset::Directory,
                "330203101/NP03",
                put(4, unit("GQ-2", "高桥镇劳动保障所（新址）")),
            )
            .await
            .unwrap();
        let started = std::time::Instant::now();
        loop {
            let mut request = ningbo_request(&format!("R-2-{}", started.elapsed().as_millis()));
            request.case.category = "NP03".parse().unwrap();
            let decision = engine.route(&request).await.unwrap();
            if decision.unit.and_then(|u| u.code).as_deref() == Some("GQ-2") {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(3),
                "{backend}: the directory did not catch up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_finds_planted_differences() {
    for (backend, store, _dir) in stores("ds_reconcile").await {
        let engine = engine(store.clone());
        let police: EndpointId = "330200/110".parse().unwrap();
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(
                engine
                    .submit(&police, ningbo_request(&format!("RC-{i}")))
                    .await
                    .unwrap()
                    .transfer
                    .transfer_id,
            );
        }
        let cancel = StatusUpdate {
            reason_code: None,
            transfer_id: Some(ids[1].clone()),
            transfer_ref: None,
            state: State::Cancelled,
            at: Timestamp::now(),
            by: police.clone(),
            unit: None,
            note: Some("误报".into()),
            resolution: None,
            feedback: None,
        };
        engine.update_status(&police, cancel).await.unwrap();
        // the 110's view: RC-0 agrees, RC-1 still open there, RC-2 missing there, RC-3 by
        // transfer id and agreeing, and one the gateway never saw
        let claims = vec![
            Claim { reference: "RC-0".into(), state: State::Submitted },
            Claim { reference: "RC-1".into(), state: State::Submitted },
            Claim { reference: ids[3].clone(), state: State::Submitted },
            Claim { reference: "RC-9".into(), state: State::Accepted },
            // RC-0 again, by its transfer id, in another state: the view disagrees with itself
            Claim { reference: ids[0].clone(), state: State::Accepted },
        ];
        let report = reconcile(&store, &police, &claims, None, None).await.unwrap();
        assert_eq!(report.matched, 2, "{backend}: {report:?}");
        let twice: Vec<&str> = report
            .differences
            .iter()
            .filter(|d| d.kind == DifferenceKind::ClaimedTwice)
            .map(|d| d.note.as_str())
            .collect();
        assert_eq!(
            twice,
            [format!("claimed RC-0 as submitted and {} as accepted", ids[0]).as_str()],
            "{backend}"
        );
        let report = reconcile(&store, &police, &claims[..4], None, None).await.unwrap();
        let kinds: Vec<(DifferenceKind, &str)> =
            report.differences.iter().map(|d| (d.kind, d.reference.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (DifferenceKind::StateDiffers, "RC-1"),
                (DifferenceKind::UnknownHere, "RC-9"),
                (DifferenceKind::UnknownThere, "RC-2")
            ],
            "{backend}"
        );
        assert_eq!(report.differences[0].note, "closed here (cancelled), open there (submitted)");
        // the destination knows them by transfer id
        let hotline: EndpointId = "330200/12345".parse().unwrap();
        let claims: Vec<Claim> =
            ids.iter().map(|id| Claim { reference: id.clone(), state: State::Submitted }).collect();
        let report = reconcile(&store, &hotline, &claims, None, None).await.unwrap();
        assert_eq!(report.matched, 3, "{backend}");
        assert_eq!(report.differences.len(), 1);
        assert_eq!(report.differences[0].transfer_id.as_deref(), Some(ids[1].as_str()));
        // a window in the future leaves nothing unknown there
        let report =
            reconcile(&store, &police, &[], Some(Timestamp::now().unix_seconds() + 3600), None)
                .await
                .unwrap();
        assert!(report.differences.is_empty(), "{backend}");
    }
}

/// The Ningbo township sample with its category code (`JQLB`) replaced.
fn ningbo_document(code: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/spec/samples/jjd-json/transfer-ningbo-township.json");
    std::fs::read_to_string(path)
        .unwrap()
        .replace("\"070300\"", &format!("\"{code}\""))
        .into_bytes()
}

fn item(canonical: &str, name: &str) -> serde_json::Value {
    json!({"canonical": canonical, "name": name})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transfer_item_list_is_the_live_code_table() {
    for (backend, store, _dir) in stores("ds_items").await {
        let engine = engine(store.clone());
        let datasets = engine.datasets();
        datasets.seed_categories().await.unwrap();
        let ningbo = endpoint("330200/110");
        let read = |engine: &liandong::engine::Engine, code: &str| {
            engine
                .registry()
                .endpoint_named("330200/110")
                .unwrap()
                .read_transfer(&ningbo_document(code))
        };
        // a code the profile does not have is refused until the province adds it
        let err = read(&engine, "070310").unwrap_err().to_string();
        assert!(
            err.contains("JQXX.JQLB") && err.contains("unknown category code \"070310\""),
            "{backend}: {err}"
        );
        datasets
            .put(
                &ningbo,
                Dataset::Categories,
                "330200/110/070310",
                put(1, item("NP07", "占道停车挪车")),
            )
            .await
            .unwrap();
        assert_eq!(
            read(&engine, "070310").unwrap().case.category.as_str(),
            "NP07",
            "{backend}: added at once"
        );
        // a re-pointed code maps the new way
        assert_eq!(read(&engine, "070300").unwrap().case.category.as_str(), "NP07", "{backend}");
        datasets
            .put(
                &ningbo,
                Dataset::Categories,
                "330200/110/070300",
                put(2, item("NP08", "挪车求助")),
            )
            .await
            .unwrap();
        assert_eq!(
            read(&engine, "070300").unwrap().case.category.as_str(),
            "NP08",
            "{backend}: re-pointed"
        );
        // a retired code is refused with its name, and a canonical code left without a row
        // renders as the catch-all
        let retire = PutRequest {
            version: 2,
            deleted: true,
            body: json!(null),
            updated_at: None,
            force: false,
        };
        datasets.put(&ningbo, Dataset::Categories, "330200/110/070400", retire).await.unwrap();
        let err = read(&engine, "070400").unwrap_err().to_string();
        assert!(
            err.contains("JQXX.JQLB")
                && err.contains("070400")
                && err.contains("政务咨询")
                && err.contains("retired"),
            "{backend}: {err}"
        );
        let mut request = ningbo_request("R-items");
        request.case.category = "NP06".parse().unwrap();
        request.case.source_category = None;
        let rendered = engine
            .registry()
            .endpoint_named("330200/110")
            .unwrap()
            .write_transfer(&request)
            .unwrap();
        let rendered: serde_json::Value = serde_json::from_slice(&rendered).unwrap();
        assert_eq!(rendered["JQXX"]["JQLB"], "079900", "{backend}: {rendered}");
        // the catch-alls stay: never retired, never moved to the other side
        let retire = PutRequest {
            version: 2,
            deleted: true,
            body: json!(null),
            updated_at: None,
            force: false,
        };
        let err = datasets
            .put(&ningbo, Dataset::Categories, "330200/110/079900", retire)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("catch-all"), "{backend}: {err}");
        let err = datasets
            .put(&ningbo, Dataset::Categories, "330200/110/079900", put(2, item("PM99", "其他")))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("body.canonical"), "{backend}: {err}");
        // another endpoint's list is its own
        let err = datasets
            .put(&ningbo, Dataset::Categories, "330000/110/070300", put(2, item("NP07", "x")))
            .await
            .unwrap_err();
        assert!(matches!(err, SyncError::Forbidden(_)), "{backend}: {err}");

        // a restart seeds again and loads the lists: the retired code stays retired, the
        // added one stays
        let restarted = common::stores::engine(store.clone());
        assert_eq!(restarted.datasets().seed_categories().await.unwrap(), 0, "{backend}");
        restarted.categories().refresh(&store).await.unwrap();
        liandong::sync::categories::apply(restarted.registry(), restarted.categories()).await;
        assert!(
            read(&restarted, "070400").unwrap_err().to_string().contains("retired"),
            "{backend}"
        );
        assert_eq!(read(&restarted, "070310").unwrap().case.category.as_str(), "NP07", "{backend}");

        // another replica's change takes effect here within a second
        let (_keep, never) = tokio::sync::watch::channel(false);
        tokio::spawn(restarted.follow_datasets(store.clone(), never));
        datasets
            .put(&ningbo, Dataset::Categories, "330200/110/070311", put(1, item("NP05", "开锁")))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        while read(&restarted, "070311").is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(3),
                "{backend}: the other replica did not catch up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(read(&restarted, "070311").unwrap().case.category.as_str(), "NP05", "{backend}");
    }
}

/// `record_log` as the release before writers were kept made it.
const OLD_RECORD_LOG: &str = "CREATE TABLE record_log (seq {serial}, dataset TEXT NOT NULL, key TEXT NOT NULL, \
    version BIGINT NOT NULL, deleted BIGINT NOT NULL DEFAULT 0, doc TEXT NOT NULL, tx BIGINT NOT NULL DEFAULT 0)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_made_by_an_earlier_release_gets_the_writer_column() {
    use sqlx::Connection;
    let old_doc = r#"{"dataset":"directory","key":"330203/NP03","owner":"330200/12345","version":1,"updated_at":"2026-01-01T00:00:00+08:00","deleted":false,"body":{"unit":{"code":"OLD"}}}"#;
    let insert = format!("INSERT INTO record_log (dataset, key, version, deleted, doc, tx) VALUES ('directory', '330203/NP03', 1, 0, '{old_doc}', 0)");
    // SQLite
    let dir = std::env::temp_dir().join(format!(
        "liandong-oldlog-{}-{}",
        std::process::id(),
        ulid::Ulid::new()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("old.db");
    {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(&OLD_RECORD_LOG.replace("{serial}", "INTEGER PRIMARY KEY AUTOINCREMENT"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&insert).execute(&mut conn).await.unwrap();
    }
    let sqlite =
        liandong::store::Store::sqlite(&path).await.expect("an earlier release's store opens");
    // PostgreSQL
    let schema = format!("t_oldlog_{}", std::process::id());
    {
        let mut conn = sqlx::PgConnection::connect(&common::stores::postgres_url()).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut conn).await.unwrap();
        sqlx::query(&format!("SET search_path TO {schema}")).execute(&mut conn).await.unwrap();
        sqlx::query(&OLD_RECORD_LOG.replace("{serial}", "BIGSERIAL PRIMARY KEY"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&insert).execute(&mut conn).await.unwrap();
    }
    let separator = if common::stores::postgres_url().contains('?') { '&' } else { '?' };
    let url =
        format!("{}{separator}options=-c%20search_path%3D{schema}", common::stores::postgres_url());
    let postgres =
        liandong::store::Store::postgres(&url, 4).await.expect("an earlier release's store opens");
    for (backend, store) in [("sqlite", sqlite), ("postgres", postgres)] {
        let datasets = engine(store.clone()).datasets();
        datasets
            .put(
                &endpoint("330200/12345"),
                Dataset::Directory,
                "330203/NP03",
                put(2, unit("NEW", "新")),
            )
            .await
            .unwrap();
        let history = store.record_history("directory", "330203/NP03").await.unwrap();
        let seen: Vec<(u64, Option<&str>)> =
            history.iter().map(|(r, w)| (r.version, w.as_deref())).collect();
        assert_eq!(seen, [(1, None), (2, Some("330200/12345"))], "{backend}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn answer(
    title: &str,
    body: &str,
    categories: &[&str],
    valid_until: Option<&str>,
) -> serde_json::Value {
    let mut record = json!({"title": title, "body": body, "categories": categories});
    if let Some(until) = valid_until {
        record["valid_until"] = json!(until);
    }
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_knowledge_base_is_searched_by_every_word_in_chinese() {
    use liandong::sync::knowledge::KnowledgeQuery;
    for (backend, store, _dir) in stores("ds_knowledge").await {
        let engine = engine(store.clone());
        let datasets = engine.datasets();
        let hotline = endpoint("330200/12345");
        let police = endpoint("330200/110");
        let entries = [
            (
                "water-1",
                answer(
                    "小区停水怎么办",
                    "先查看物业公告，再拨打供水热线96390报修。",
                    &["NP04"],
                    None,
                ),
            ),
            ("water-2", answer("停电报修", "拨打95598。小区停水另见供水答复。", &["NP04"], None)),
            (
                "car-1",
                answer(
                    "挪车求助的处理",
                    "联系车主挪车；Car owner not found: call 110.",
                    &["NP07"],
                    None,
                ),
            ),
            (
                "old",
                answer(
                    "春节停水安排",
                    "2020年春节期间停水的安排。",
                    &["NP04"],
                    Some("2021-01-01T00:00:00+08:00"),
                ),
            ),
        ];
        for (key, body) in entries {
            datasets.put(&hotline, Dataset::Knowledge, key, put(1, body)).await.unwrap();
        }
        let search = |q: &str| KnowledgeQuery { q: q.into(), ..KnowledgeQuery::default() };
        let keys = |answer: liandong::sync::knowledge::KnowledgeAnswer| -> Vec<String> {
            answer.records.into_iter().map(|r| r.key).collect()
        };
        // a two-character word, found in titles before bodies; the expired answer left out
        let found = datasets.search(&police, &search("停水")).await.unwrap();
        assert_eq!(
            (keys(found.clone()), found.total),
            (vec!["water-1".to_string(), "water-2".to_string()], 2),
            "{backend}"
        );
        // every word must occur, as written (the bigrams of 停水热线 are not enough)
        assert_eq!(
            keys(datasets.search(&police, &search("停水 96390")).await.unwrap()),
            ["water-1"],
            "{backend}"
        );
        assert!(
            datasets.search(&police, &search("停水热线")).await.unwrap().records.is_empty(),
            "{backend}"
        );
        // Latin words whatever their case; a lone character
        assert_eq!(
            keys(datasets.search(&police, &search("OWNER")).await.unwrap()),
            ["car-1"],
            "{backend}"
        );
        assert_eq!(
            keys(datasets.search(&police, &search("挪")).await.unwrap()),
            ["car-1"],
            "{backend}"
        );
        // by category; expired ones when asked
        let water_only = KnowledgeQuery { category: Some("NP07".into()), ..search("停水") };
        assert!(
            datasets.search(&police, &water_only).await.unwrap().records.is_empty(),
            "{backend}"
        );
        let with_old = KnowledgeQuery { include_expired: true, ..search("停水") };
        assert_eq!(datasets.search(&police, &with_old).await.unwrap().total, 3, "{backend}");
        // a change and a deletion are searched at once
        datasets
            .put(
                &hotline,
                Dataset::Knowledge,
                "water-1",
                put(2, answer("燃气报修", "拨打燃气热线。", &["NP04"], None)),
            )
            .await
            .unwrap();
        let deleted = PutRequest {
            version: 2,
            deleted: true,
            body: json!(null),
            updated_at: None,
            force: false,
        };
        datasets.put(&hotline, Dataset::Knowledge, "water-2", deleted).await.unwrap();
        assert!(
            datasets.search(&police, &search("停水")).await.unwrap().records.is_empty(),
            "{backend}"
        );
        assert_eq!(
            keys(datasets.search(&police, &search("燃气")).await.unwrap()),
            ["water-1"],
            "{backend}"
        );
        // a bad query names its field
        for (query, field) in [
            (search("  "), "q"),
            (KnowledgeQuery { category: Some("XX01".into()), ..search("停水") }, "category"),
            (KnowledgeQuery { limit: 101, ..search("停水") }, "limit"),
        ] {
            match datasets.search(&police, &query).await {
                Err(SyncError::Invalid { field: named, .. }) => {
                    assert_eq!(named, field, "{backend}")
                }
                other => panic!("{backend}: {other:?}"),
            }
        }
        // another replica (its own index over the same store) finds what this one wrote
        let replica = common::stores::engine(store.clone());
        replica.knowledge().refresh(&store).await.unwrap();
        let found = replica.datasets().search(&police, &search("燃气")).await.unwrap();
        assert_eq!(keys(found), ["water-1"], "{backend}");
    }
}
