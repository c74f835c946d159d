//! Stores for the suites that run against both backends: SQLite in a fresh folder and the
//! PostgreSQL server (127.0.0.1:5432, database `test`, or `LIANDONG_TEST_POSTGRES`) in a fresh
//! schema. A missing PostgreSQL fails the run: it is never skipped.

use std::cell::RefCell;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use liandong::config::Config;
use liandong::engine::Engine;
use liandong::formats::Registry;
use liandong::model::{Timestamp, TransferRequest};
use liandong::store::Store;

const CONFIG: &str = r#"
[listen]
https = "127.0.0.1:0"
[tls]
ca = "ca.pem"
cert = "server.pem"
key = "server-key.pem"
client_cert = "gateway.pem"
client_key = "gateway-key.pem"
[[endpoint]]
id = "330200/12345"
receive_within = "5m"
# Linkage offices (tests/linkage.rs): Ningbo's, and Shanghai's that covers none of Ningbo.
[[office]]
name = "nb"
regions = ["3302"]
rights = ["read_transfers", "decide_disputes"]
[[office]]
name = "sh"
regions = ["31"]
rights = ["read_transfers", "decide_disputes"]
[[agency]]
name = "nb-fire"
regions = ["3302"]
rights = ["read_transfers"]
"#;

/// PostgreSQL is one server for every test of this binary, and one test restarts it
/// (tests/postgres_restart.rs). That test takes the server alone; every other test that uses it
/// holds a share from its first use until its thread ends (libtest runs each test on a thread
/// of its own), so none of them meets the server down.
static SERVER: RwLock<()> = RwLock::new(());

thread_local! {
    static SHARE: RefCell<Option<RwLockReadGuard<'static, ()>>> = const { RefCell::new(None) };
    static ALONE: RefCell<Option<RwLockWriteGuard<'static, ()>>> = const { RefCell::new(None) };
}

/// This test uses PostgreSQL: it waits while the restarting test runs, and holds it off until
/// this test ends. Once per test (a second share could wait behind the restarting test).
pub fn share_postgres() {
    if ALONE.with(|alone| alone.borrow().is_some()) {
        return;
    }
    SHARE.with(|share| {
        let mut share = share.borrow_mut();
        if share.is_none() {
            *share = Some(SERVER.read().unwrap_or_else(PoisonError::into_inner));
        }
    });
}

/// This test restarts PostgreSQL: it waits for the tests using it to end, and holds off the
/// others until it ends.
pub fn take_postgres_alone() {
    ALONE.with(|alone| {
        let mut alone = alone.borrow_mut();
        if alone.is_none() {
            *alone = Some(SERVER.write().unwrap_or_else(PoisonError::into_inner));
        }
    });
}

pub fn postgres_url() -> String {
    share_postgres();
    std::env::var("LIANDONG_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A store of each kind, each empty: SQLite in a fresh folder, PostgreSQL in a fresh schema.
pub async fn stores(name: &str) -> Vec<(&'static str, Store, tempdir::Dir)> {
    let dir = tempdir::Dir::new(name);
    let sqlite = Store::sqlite(&dir.path().join("test.db")).await.expect("sqlite opens");
    let schema = format!("t_{}_{}", name, std::process::id());
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&postgres_url())
            .await
            .expect("PostgreSQL must be running for these tests (.ci/run starts it)");
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut conn).await.unwrap();
    }
    let postgres = Store::postgres(&schema_url(name), 8).await.expect("postgres opens");
    vec![("sqlite", sqlite, dir.clone()), ("postgres", postgres, dir)]
}

/// The PostgreSQL URL of the schema [`stores`] made for `name` (to open it again).
pub fn schema_url(name: &str) -> String {
    let schema = format!("t_{}_{}", name, std::process::id());
    let separator = if postgres_url().contains('?') { '&' } else { '?' };
    format!("{}{separator}options=-c%20search_path%3D{schema}", postgres_url())
}

/// A tiny temporary folder that is removed when the last handle goes.
pub mod tempdir {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    #[derive(Clone)]
    pub struct Dir(Arc<PathBuf>);

    impl Dir {
        pub fn new(name: &str) -> Dir {
            let path = std::env::temp_dir().join(format!(
                "liandong-{name}-{}-{}",
                std::process::id(),
                ulid::Ulid::new()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir(Arc::new(path))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            if Arc::strong_count(&self.0) == 1 {
                let _ = std::fs::remove_dir_all(&*self.0);
            }
        }
    }
}

pub fn engine(store: Store) -> Engine {
    engine_with(store, "")
}

/// An engine whose configuration has `more` besides the tests' own (whole TOML tables).
pub fn engine_with(store: Store, more: &str) -> Engine {
    let config = format!("{CONFIG}\n{more}");
    Engine::new(
        store,
        Arc::new(Registry::builtin()),
        Arc::new(Config::parse("test.toml", &config).unwrap()),
    )
}

pub fn ningbo_request(sender_ref: &str) -> TransferRequest {
    let registry = Registry::builtin();
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/spec/samples/jjd-json/transfer-ningbo-township.json"),
    )
    .unwrap();
    let mut request = registry.endpoint_named("330200/110").unwrap().read_transfer(&bytes).unwrap();
    request.sender_ref = sender_ref.to_string();
    request.requested_at = Timestamp::now();
    request
}

/// Loads the figures' facts of `store` into `engine`'s memory, as a running gateway has them;
/// dropping (or sending `true` on) the answer stops following the store.
pub async fn facts_in_memory(engine: &Engine, store: &Store) -> tokio::sync::watch::Sender<bool> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(engine.follow_facts(store.clone(), stopped));
    for _ in 0..300 {
        if engine.facts_loaded().await {
            return stop;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the facts were not loaded");
}
