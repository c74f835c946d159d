//! Shared data at scale, on the embedded SQLite store (docs/PERFORMANCE.md, "Shared data"):
//!
//! - **routing with a large directory**: submissions' latency with an empty directory, then
//!   with DIRECTORY records (1,000,000 by default): at steady state, on a restarted engine
//!   (which loads the directory before it takes submissions, as the server does before it is
//!   ready), and while another replica imports more records that this one follows;
//! - **knowledge search**: ANSWERS answers (100,000 by default), the index's build time and
//!   memory, and the latency of each kind of query.
//!
//! `cargo bench --bench shared_data [-- DIRECTORY ANSWERS]`. Latencies are percentiles over
//! many calls; nothing is asserted.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use liandong::engine::Engine;
use liandong::formats::Registry;
use liandong::model::{Case, Record, Timestamp, TransferRequest};
use liandong::store::Store;
use liandong::sync::knowledge::KnowledgeQuery;
use liandong::sync::{Dataset, Datasets, ImportOptions};

fn bench() -> ImportOptions {
    ImportOptions { source: "bench".into(), ..ImportOptions::default() }
}
use serde_json::json;

/// Records per import commit while loading.
const CHUNK: usize = 50_000;

const NP: [&str; 10] =
    ["NP01", "NP02", "NP03", "NP04", "NP05", "NP06", "NP07", "NP08", "NP09", "NP10"];

/// The n-th directory cell: ten categories for each of up to 100,000 Ningbo townships
/// (`3302CCTTT`).
fn directory_record(n: usize, version: u64) -> Record {
    let township = n / NP.len();
    Record {
        dataset: "directory".into(),
        key: format!("3302{:02}{:03}/{}", township / 1000 % 100, township % 1000, NP[n % NP.len()]),
        owner: "330200/12345".into(),
        version,
        updated_at: Timestamp::now(),
        deleted: false,
        body: json!({"unit": {"code": format!("U{n}"), "name": format!("第{n}处置单位")}, "phone": "0574-87000000"}),
    }
}

fn request(n: usize) -> TransferRequest {
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/spec/samples/jjd-json/transfer-ningbo-township.json"),
    )
    .unwrap();
    let mut request =
        Registry::builtin().endpoint_named("330200/110").unwrap().read_transfer(&bytes).unwrap();
    request.sender_ref = format!("BENCH-{n}-{}", ulid::Ulid::new());
    // each submission a case of its own, as a desk's are (one case handed over thousands of
    // times would make each submission read its earlier transfers: not what is measured here)
    request.case.origin.local_id = format!("JB{n}-{}", ulid::Ulid::new());
    request.case.case_id = Case::id_for(&request.from, &request.case.origin.local_id);
    request.requested_at = Timestamp::now();
    request
}

/// Submits `count` transfers one after another and returns each one's latency.
async fn submit(engine: &Engine, count: usize, from: usize) -> Vec<Duration> {
    let sender = "330200/110".parse().unwrap();
    let mut samples = Vec::with_capacity(count);
    for n in from..from + count {
        let request = request(n);
        let started = Instant::now();
        engine.submit(&sender, request).await.unwrap();
        samples.push(started.elapsed());
    }
    samples
}

/// Loads `count` directory records (keys unique) in commits of [`CHUNK`].
async fn load_directory(datasets: &Datasets, from: usize, count: usize, version: u64) {
    let mut n = from;
    while n < from + count {
        let end = (n + CHUNK).min(from + count);
        let records: Vec<Record> = (n..end).map(|i| directory_record(i, version)).collect();
        datasets
            .import(Dataset::Directory, records, bench())
            .await
            .map_err(|e| format!("{:?}", &e[..1]))
            .unwrap();
        n = end;
    }
}

/// One routing decision and one submission, each timed.
async fn route_and_submit(engine: &Engine, n: usize) -> (Duration, Duration) {
    let ask = request(n);
    let started = Instant::now();
    engine.route(&ask).await.unwrap();
    let route = started.elapsed();
    (route, submit(engine, 1, n).await[0])
}

async fn routing(directory: usize) {
    let dir = std::env::temp_dir().join(format!("liandong-bench-routing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::sqlite(&dir.join("bench.db")).await.unwrap();
    let empty = common::engine_with(&store, "");
    empty.directory().refresh(&store).await.unwrap();
    submit(&empty, 200, 0).await;
    println!(
        "routing: submissions, empty directory:            {}",
        common::percentiles(submit(&empty, 2000, 1_000_000).await)
    );

    let started = Instant::now();
    load_directory(&empty.datasets(), 0, directory, 1).await;
    println!(
        "routing: {directory} directory records imported in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // a restart: the directory is loaded before the first submission, as before ready
    let before = common::resident_mb();
    let restarted = common::engine_with(&store, "");
    let started = Instant::now();
    restarted.directory().refresh(&store).await.unwrap();
    println!(
        "routing: restart loads {} records in {:.2} s (+{:.0} MB resident)",
        restarted.directory().records().await,
        started.elapsed().as_secs_f64(),
        common::resident_mb() - before
    );
    println!(
        "routing: first submissions after the restart:    {}",
        common::percentiles(submit(&restarted, 200, 2_000_000).await)
    );
    println!(
        "routing: submissions, {directory} records: {}",
        common::percentiles(submit(&restarted, 2000, 3_000_000).await)
    );

    // another replica imports 100,000 changed records while this one follows and submits
    let (_keep, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(restarted.follow_datasets(store.clone(), stop));
    let replica = common::engine_with(&store, "");
    let importing = tokio::spawn(async move {
        load_directory(&replica.datasets(), 0, 100_000.min(directory), 2).await
    });
    let (mut routes, mut during, mut after) = (Vec::new(), Vec::new(), Vec::new());
    let mut n = 4_000_000;
    while !importing.is_finished() {
        let (route, submission) = route_and_submit(&restarted, n).await;
        routes.push(route);
        during.push(submission);
        n += 1;
    }
    importing.await.unwrap();
    // and while this replica catches up with it (within a second), and after
    // (each second apart too: this replica catches up within the first)
    let caught_up = Instant::now();
    let mut by_second: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    while caught_up.elapsed() < Duration::from_secs(3) {
        let second = (caught_up.elapsed().as_secs() as usize).min(2);
        let (route, submission) = route_and_submit(&restarted, n).await;
        routes.push(route);
        after.push(submission);
        by_second[second].push(submission);
        n += 1;
    }
    println!(
        "routing: during and after a replica's import, routing alone: {}",
        common::percentiles(routes)
    );
    println!(
        "routing: submissions while a replica's import commits: {}",
        common::percentiles(during)
    );
    println!(
        "routing: submissions in the 3 s after it committed:    {}",
        common::percentiles(after)
    );
    for (second, samples) in by_second.into_iter().enumerate() {
        println!(
            "routing:   … in second {} after it:                  {}",
            second + 1,
            common::percentiles(samples)
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Words a desk types; answers are made of them.
const WORDS: &[&str] = &[
    "停水",
    "停电",
    "燃气",
    "挪车",
    "开锁",
    "噪声",
    "劳资",
    "工资",
    "拖欠",
    "物业",
    "供暖",
    "路灯",
    "井盖",
    "占道",
    "违章",
    "投诉",
    "举报",
    "咨询",
    "社保",
    "医保",
    "户籍",
    "身份证",
    "居住证",
    "公积金",
    "退休",
    "养老",
    "学区",
    "入学",
    "房产",
    "租房",
    "押金",
    "消费",
    "退款",
    "快递",
    "外卖",
    "电梯",
    "漏水",
    "管道",
    "绿化",
    "垃圾",
    "宠物",
    "装修",
    "施工",
    "夜间",
    "热线",
    "窗口",
    "办理",
    "材料",
    "时限",
    "流程",
    "部门",
    "街道",
    "社区",
    "乡镇",
    "村委",
    "派出所",
    "城管",
];

fn knowledge_record(n: usize) -> Record {
    let word = |i: usize| WORDS[(n.wrapping_mul(2_654_435_761) >> (i * 5)) % WORDS.len()];
    let title = format!("{}{}怎么办（第{n}号答复）", word(0), word(1));
    let body = format!(
        "市民反映{}问题，{}可由{}受理。请携带{}到{}办理，{}时限为{}个工作日。如涉及{}，另行告知。Ref {n}.",
        word(2),
        word(3),
        word(4),
        word(5),
        word(6),
        word(7),
        1 + n % 15,
        word(8)
    );
    Record {
        dataset: "knowledge".into(),
        key: format!("kb-{n:06}"),
        owner: "330200/12345".into(),
        version: 1,
        updated_at: Timestamp::now(),
        deleted: false,
        body: json!({"title": title, "body": body, "categories": [NP[n % NP.len()]]}),
    }
}

async fn knowledge(answers: usize) {
    let dir = std::env::temp_dir().join(format!("liandong-bench-knowledge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::sqlite(&dir.join("bench.db")).await.unwrap();
    let writer = common::engine_with(&store, "");
    let datasets = writer.datasets();
    let mut n = 0;
    while n < answers {
        let end = (n + CHUNK).min(answers);
        datasets
            .import(Dataset::Knowledge, (n..end).map(knowledge_record).collect(), bench())
            .await
            .unwrap();
        n = end;
    }
    // a fresh replica builds its index from the log
    let before = common::resident_mb();
    let reader = common::engine_with(&store, "");
    let started = Instant::now();
    reader.knowledge().refresh(&store).await.unwrap();
    println!(
        "knowledge: {} answers loaded and indexed in {:.2} s (+{:.0} MB resident, records and index)",
        reader.knowledge().records().await,
        started.elapsed().as_secs_f64(),
        common::resident_mb() - before
    );
    type MakeQuery<'a> = Box<dyn Fn(usize) -> String + 'a>;
    let kinds: [(&str, MakeQuery); 5] = [
        ("one common word", Box::new(|i| WORDS[i % WORDS.len()].to_string())),
        (
            "two words",
            Box::new(|i| {
                format!("{} {}", WORDS[i % WORDS.len()], WORDS[(i * 7 + 3) % WORDS.len()])
            }),
        ),
        ("a rare phrase", Box::new(move |i| format!("第{}号答复", (i * 7919) % answers))),
        ("a Latin word", Box::new(move |i| format!("REF {}", (i * 104_729) % answers))),
        ("one character", Box::new(|i| ["停", "挪", "锁"][i % 3].to_string())),
    ];
    let who = liandong::security::Identity::Endpoint("330200/110".parse().unwrap());
    let search = reader.datasets();
    for (name, make) in kinds {
        let calls = if name == "one character" { 100 } else { 1000 };
        let mut samples = Vec::with_capacity(calls);
        let mut matched = 0;
        for i in 0..calls {
            let query = KnowledgeQuery { q: make(i), ..KnowledgeQuery::default() };
            let started = Instant::now();
            let answer = search.search(&who, &query).await.unwrap();
            samples.push(started.elapsed());
            matched += answer.total;
        }
        println!(
            "knowledge: {name:<30} {} (mean {} matches)",
            common::percentiles(samples),
            matched / calls
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    // `cargo bench` passes `--bench`; the sizes are the numbers after it.
    let numbers: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let directory = numbers.first().copied().unwrap_or(1_000_000);
    let answers = numbers.get(1).copied().unwrap_or(100_000);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        knowledge(answers).await;
        routing(directory).await;
    });
}
