//! A plain grpcio (Python) client works against the gateway unaided: `tests/python/client.py`,
//! run with the machine's python3 (grpcio, grpcio-tools, grpcio-health-checking and
//! grpcio-reflection: `.ci/run` installs them).

use liandong::config::Config;
use liandong::server::{self, Listeners};

mod common;
use common::net::Site;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_submits_reads_watches_and_uses_health_and_reflection() {
    let site = Site::new("python");
    let config = Config::load(&site.config).unwrap();
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = https.local_addr().unwrap().port();
    tokio::spawn(async move { server::run(config, Listeners { https, admin }, std::future::pending()).await.unwrap() });
    let (cert, key) = site.identity("330200/110");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = std::process::Command::new("python3");
    command
        .arg(root.join("tests/python/client.py"))
        .args(["--port", &port.to_string()])
        .args(["--ca", site.dir.join("ca.pem").to_str().unwrap()])
        .args(["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .args(["--proto", root.join("proto").to_str().unwrap()]);
    let output = tokio::task::spawn_blocking(move || command.output().expect("python3 runs")).await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the Python client failed:\n{stdout}\n{stderr}");
    assert!(stdout.starts_with("ok 0"), "{stdout}");
}
