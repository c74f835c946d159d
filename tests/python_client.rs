//! A plain grpcio (Python) client works against the gateway unaided: `tests/python/client.py`,
//! run in a virtual environment under `target/` that this test makes on first use from
//! `tests/python/requirements.txt` (grpcio, grpcio-tools, health checking, reflection), so
//! `cargo test` needs nothing but python3 on the machine.

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
    let python = tokio::task::spawn_blocking(|| python_with_grpc(root)).await.unwrap();
    let mut command = std::process::Command::new(python);
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

/// The python of a virtual environment with the client's packages, made once under `target/`.
fn python_with_grpc(root: &std::path::Path) -> std::path::PathBuf {
    let venv = root.join("target/python-grpc");
    let python = venv.join("bin/python");
    let stamp = venv.join("installed.txt");
    let requirements = std::fs::read_to_string(root.join("tests/python/requirements.txt")).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(requirements.as_str()) {
        return python;
    }
    let run = |program: &std::path::Path, args: &[&str]| {
        let status =
            std::process::Command::new(program).args(args).status().unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        assert!(status.success(), "{} {args:?} failed", program.display());
    };
    run(std::path::Path::new("python3"), &["-m", "venv", venv.to_str().unwrap()]);
    let requirements_path = root.join("tests/python/requirements.txt");
    run(&python, &["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", requirements_path.to_str().unwrap()]);
    std::fs::write(&stamp, requirements).unwrap();
    python
}
