//! The figures at scale (docs/PERFORMANCE.md, "Figures"): a year of TRANSFERS transfers
//! (1,000,000 by default) spread over Zhejiang's townships, both directions, twenty categories,
//! most received and resolved, some called back, some rejected; then `GET /v1/stats`'s
//! computation (`stats::compute`) timed for an operator and for an agency granted Zhejiang,
//! over the whole year, over one month, and for one county, on SQLite (and on PostgreSQL with
//! `LIANDONG_BENCH_POSTGRES=URL`, in a schema of its own).
//!
//! The facts are loaded straight into `transfer_facts` (the figures read nothing else; the
//! write path that keeps them is tested in tests/engine.rs), so that a million rows take
//! seconds to make instead of minutes.
//!
//! `cargo bench --bench figures [-- TRANSFERS]`. Latencies are percentiles over many calls;
//! nothing is asserted.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use liandong::engine::Engine;
use liandong::security::Identity;
use liandong::stats::{compute, StatsQuery};
use liandong::store::Store;

/// The agency the figures are asked as, beside an operator.
const AGENCY: &str = r#"
[[agency]]
name = "zj-command"
regions = ["33"]
rights = ["read_transfers"]
"#;

const YEAR: i64 = 365 * 86_400;
const CATEGORIES: [&str; 20] = [
    "NP01", "NP02", "NP03", "NP04", "NP05", "NP06", "NP07", "NP08", "NP09", "NP10", "PM01", "PM02",
    "PM03", "PM04", "PM05", "PM06", "PM07", "PM08", "NP99", "PM99",
];

/// A small deterministic generator (no dependency for a benchmark's data).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn load(url: &str, transfers: usize, start: i64) {
    use sqlx::{Any, Connection};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let cities = ["330100", "330200", "330300", "330400", "330500", "330600", "330700"];
    let started = Instant::now();
    let rows_per_statement = 500;
    let mut tx: sqlx::Transaction<'_, Any> = conn.begin().await.unwrap();
    for chunk in 0..transfers.div_ceil(rows_per_statement) {
        let n = rows_per_statement.min(transfers - chunk * rows_per_statement);
        let mut sql = String::from(
            "INSERT INTO transfer_facts (submitted_at, transfer_id, requested_at, origin, destination, \
             location, category, direction, receive_by, resolve_by, received_at, resolved_at, \
             called_back, satisfied, rejected) VALUES ",
        );
        for i in 0..n {
            let k = chunk * rows_per_statement + i;
            let at = start + (k as i64 * YEAR) / transfers as i64;
            let city = cities[random.below(cities.len() as u64) as usize];
            let county = &format!("{}{:02}", &city[..4], 1 + random.below(12));
            let township = format!("{county}{:03}", 1 + random.below(20));
            let police_first = random.below(10) < 8;
            let (origin, destination, direction) = if police_first {
                (format!("{city}/110"), format!("{city}/12345"), "110->12345")
            } else {
                (format!("{city}/12345"), format!("{city}/110"), "12345->110")
            };
            let category = CATEGORIES[random.below(20) as usize];
            let receive = 60 + random.below(1800) as i64;
            let resolve = 3_600 + random.below(5 * 86_400) as i64;
            let received = random.below(100) < 95;
            let resolved = received && random.below(100) < 85;
            let rejected = !resolved && random.below(100) < 30;
            let called_back = resolved && random.below(100) < 90;
            let satisfied = called_back && random.below(100) < 92;
            let optional = |b: bool, v: i64| if b { v.to_string() } else { "NULL".into() };
            sql.push_str(&format!(
                "{}({at}, 'T{k:010}', {at}, '{origin}', '{destination}', '{township}', '{category}', \
                 '{direction}', {}, {}, {}, {}, {}, {}, {})",
                if i == 0 { "" } else { ", " },
                at + 1_800,
                at + 3 * 86_400,
                optional(received, at + receive),
                optional(resolved, at + resolve),
                i64::from(called_back),
                i64::from(satisfied),
                i64::from(rejected),
            ));
        }
        sqlx::query(&sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    println!("loaded {transfers} transfers' facts in {:.1} s", started.elapsed().as_secs_f64());
}

async fn measure(store: &str, engine: &Engine, start: i64, calls: usize) {
    let operator = Identity::Operator("bench".into());
    let agency = Identity::Agency("zj-command".into());
    let month = start + 200 * 86_400;
    let cases: [(&str, &Identity, Option<&str>, i64, i64); 4] = [
        ("operator, Zhejiang (33), the year", &operator, Some("33"), start, start + YEAR),
        ("agency granted 33, the year", &agency, None, start, start + YEAR),
        ("agency granted 33, one month", &agency, None, month, month + 30 * 86_400),
        ("operator, one county (330203), the year", &operator, Some("330203"), start, start + YEAR),
    ];
    for (name, who, region, since, until) in cases {
        let query = StatsQuery::new(region.map(String::from), None, None, Some(since), Some(until))
            .unwrap();
        let figures = compute(engine, who, &query).await.unwrap();
        let mut samples = Vec::new();
        for _ in 0..calls {
            let at = Instant::now();
            let again = compute(engine, who, &query).await.unwrap();
            samples.push(at.elapsed());
            assert_eq!(again.transfers, figures.transfers);
        }
        println!(
            "{store}: {name}: {} transfers: {}",
            figures.transfers,
            common::percentiles(samples)
        );
    }
}

/// Loads the facts into memory as a running gateway does, then measures again.
async fn in_memory(name: &str, engine: &Engine, store: &Store, start: i64) {
    let before = common::resident_mb();
    let loading = Instant::now();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(engine.follow_facts(store.clone(), stopped));
    while !engine.facts_loaded().await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{name}: facts loaded into memory in {:.2} s, resident memory +{:.0} MB",
        loading.elapsed().as_secs_f64(),
        common::resident_mb() - before
    );
    measure(&format!("{name}, in memory"), engine, start, 100).await;
}

fn main() {
    let transfers: usize =
        std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let start = liandong::model::Timestamp::now().unix_seconds() - YEAR - 86_400;
        let dir =
            std::env::temp_dir().join(format!("liandong-figures-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("figures.db");
        let store = Store::sqlite(&path).await.unwrap();
        load(&format!("sqlite://{}", path.display()), transfers, start).await;
        let engine = common::engine_with(&store, AGENCY);
        measure(
            "SQLite, aggregated by the database (before the facts are in memory)",
            &engine,
            start,
            3,
        )
        .await;
        in_memory("SQLite", &engine, &store, start).await;
        if let Ok(url) = std::env::var("LIANDONG_BENCH_POSTGRES") {
            let schema = format!("figures_bench_{}", std::process::id());
            {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut conn).await.unwrap();
            }
            let separator = if url.contains('?') { '&' } else { '?' };
            let scoped = format!("{url}{separator}options=-c%20search_path%3D{schema}");
            let store = Store::postgres(&scoped, 4).await.unwrap();
            load(&scoped, transfers, start).await;
            {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&scoped).await.unwrap();
                sqlx::query("ANALYZE transfer_facts").execute(&mut conn).await.unwrap();
            }
            let engine = common::engine_with(&store, AGENCY);
            measure("PostgreSQL, aggregated by the database", &engine, start, 3).await;
            in_memory("PostgreSQL", &engine, &store, start).await;
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut conn).await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
