//! `liandong certs` as security teams use it, checked by OpenSSL, and the gateway taking new
//! material without a restart: a revoked client is refused on new connections and its open ones
//! are closed after one reload while the gateway keeps serving others, and a renewed server
//! certificate is picked up while an old connection keeps working.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use liandong::proto::v1::{self, transfer_service_client::TransferServiceClient};
use liandong::security::ca::{CaDir, Subject};
use liandong::security::Identity;

use crate::common;
use common::liandong;
use common::net::ConfigEdit;
use common::net::{eventually, metrics_text, start_on_free_port, Client, Site};

fn ok(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn refused(output: &Output, code: i32) -> String {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(output.stdout.is_empty());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `openssl verify` of a certificate against the CA folder, optionally with its CRL.
fn openssl_verify(ca: &Path, cert: &Path, crl: bool) -> Output {
    let mut command = Command::new("openssl");
    command
        .arg("verify")
        .arg("-CAfile")
        .arg(ca.join("root.pem"))
        .arg("-untrusted")
        .arg(ca.join("intermediate.pem"));
    if crl {
        command.arg("-crl_check").arg("-CRLfile").arg(ca.join("crl.pem"));
    }
    command.arg(cert).output().expect("openssl is installed (.ci/run checks)")
}

/// A file's permission bits.
#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The path after "certificate: " / "chain: " / "key: " in an issue's output.
fn issued(text: &str, what: &str) -> PathBuf {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(what))
        .unwrap_or_else(|| panic!("no {what} in {text}"));
    PathBuf::from(line.split_whitespace().nth(1).unwrap())
}

/// A fresh CA folder made by the tool: (its temporary parent, the CA folder).
fn new_ca(name: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("liandong-certs-{name}-{}", ulid::Ulid::new()));
    let ca = dir.join("ca");
    let mut args = vec!["certs", "init", "--dir", ca.to_str().unwrap()];
    args.extend(extra);
    ok(&liandong(&args));
    (dir, ca)
}

/// The Ningbo 110 sample transfer, sent now (so no deadline has passed).
fn ningbo_document() -> Vec<u8> {
    let now = liandong::model::Timestamp::now().format_beijing("yyyy-MM-dd HH:mm:ss");
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/spec/samples/jjd-json/transfer-ningbo-township.json"),
    )
    .unwrap()
    .replace("2023-05-08 09:43:00", &now)
    .into_bytes()
}

#[test]
fn the_tool_issues_renews_revokes_and_openssl_agrees() {
    let dir = std::env::temp_dir().join(format!("liandong-certs-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca");
    let (ca_arg, pass) = (ca.to_str().unwrap(), dir.join("pass"));
    std::fs::write(&pass, "correct horse\n").unwrap();
    std::fs::write(dir.join("wrong"), "battery staple\n").unwrap();
    let with = |args: &[&str], passphrase: &Path| -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--dir", ca_arg, "--passphrase-file", passphrase.to_str().unwrap()]);
        liandong(&all)
    };

    ok(&with(&["certs", "init"], &pass));
    refused(&with(&["certs", "init"], &pass), 2);
    #[cfg(unix)]
    for key in ["root-key.pem", "intermediate-key.pem"] {
        assert_eq!(mode(&ca.join(key)), 0o600, "{key}");
        assert!(std::fs::read_to_string(ca.join(key)).unwrap().contains("ENCRYPTED PRIVATE KEY"));
    }
    // the CA folder and its issued/ only for its owner; the ledger not for others to read
    #[cfg(unix)]
    for (path, wanted) in
        [(ca.clone(), 0o700), (ca.join("issued"), 0o700), (ca.join("ledger.json"), 0o600)]
    {
        assert_eq!(mode(&path), wanted, "{}", path.display());
    }
    assert!(ok(&openssl_verify(&ca, &ca.join("intermediate.pem"), false)).contains("OK"));

    // issue: refusals first
    let text = refused(&with(&["certs", "issue", "endpoint", "330200/110"], &dir.join("wrong")), 2);
    assert!(text.contains("intermediate-key.pem: wrong passphrase"), "{text}");
    let text =
        refused(&liandong(&["certs", "issue", "--dir", ca_arg, "endpoint", "330200/110"]), 2);
    assert!(text.contains("the key is encrypted; give the passphrase"), "{text}");
    let text = refused(&with(&["certs", "issue", "endpoint", "990000/110"], &pass), 2);
    assert!(text.contains("990000/110 is not a registered endpoint"), "{text}");
    let police = ok(&with(&["certs", "issue", "endpoint", "330200/110", "--days", "10"], &pass));
    let text = refused(&with(&["certs", "issue", "endpoint", "330200/110"], &pass), 2);
    assert!(text.contains("already has a live certificate"), "{text}");
    let (police_cert, police_key) = (issued(&police, "certificate:"), issued(&police, "key:"));
    assert!(ok(&openssl_verify(&ca, &police_cert, false)).contains("OK"));
    let described = ok(&liandong(&["certs", "inspect", police_cert.to_str().unwrap()]));
    assert!(described.contains("identity:   liandong://endpoint/330200/110"), "{described}");
    assert!(described.contains("used for:   client"), "{described}");
    let chain = ok(&liandong(&["certs", "inspect", issued(&police, "chain:").to_str().unwrap()]));
    assert!(chain.contains("[2] certificate (a CA)"), "a chain shows both: {chain}");
    let text = refused(&liandong(&["certs", "inspect", pass.to_str().unwrap()]), 2);
    assert!(text.contains("expected a certificate, chain, CSR or CRL"), "{text}");
    // a PKCS#12 bundle for systems that want one: OpenSSL opens it with its passphrase
    std::fs::write(dir.join("p12pass"), "bundle pass\n").unwrap();
    let bob = ok(&with(
        &["certs", "issue", "operator", "bob", "--p12", dir.join("p12pass").to_str().unwrap()],
        &pass,
    ));
    let bundle = issued(&bob, "pkcs#12:");
    #[cfg(unix)]
    assert_eq!(mode(&bundle), 0o600, "the .p12 bundle holds a key");
    #[cfg(unix)]
    assert_eq!(mode(&issued(&police, "key:")), 0o600, "an issued key");
    let opened = Command::new("openssl")
        .args(["pkcs12", "-nokeys", "-passin", "pass:bundle pass", "-in"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(opened.status.success(), "{}", String::from_utf8_lossy(&opened.stderr));
    assert!(String::from_utf8_lossy(&opened.stdout).contains("liandong://operator/bob"));
    let server = ok(&with(&["certs", "issue", "server", "localhost", "127.0.0.1"], &pass));
    assert!(ok(&liandong(&[
        "certs",
        "inspect",
        issued(&server, "certificate:").to_str().unwrap()
    ]))
    .contains("used for:   server"));

    // a partner's CSR claiming an operator identity: the certificate says only what --as says
    let csr = dir.join("partner.csr");
    let made = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=claims/O=x",
        ])
        .args(["-addext", "subjectAltName=URI:liandong://operator/root", "-keyout"])
        .arg(dir.join("partner.key"))
        .arg("-out")
        .arg(&csr)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(ok(&liandong(&["certs", "inspect", csr.to_str().unwrap()]))
        .contains("certificate signing request"));
    let signed =
        ok(&with(&["certs", "sign-csr", csr.to_str().unwrap(), "--as", "agency/fire"], &pass));
    let described =
        ok(&liandong(&["certs", "inspect", issued(&signed, "certificate:").to_str().unwrap()]));
    assert!(described.contains("identity:   liandong://agency/fire"), "{described}");
    assert!(!described.contains("operator"), "nothing from the CSR's names: {described}");
    let text = refused(
        &with(&["certs", "sign-csr", police_key.to_str().unwrap(), "--as", "agency/x"], &pass),
        2,
    );
    assert!(text.contains("expected a certificate signing request"), "{text}");

    // expiry: the 10-day certificate is within 30 days, not within 5
    let text = refused(&with(&["certs", "check-expiry", "--within", "30d"], &pass), 1);
    assert!(text.contains("liandong://endpoint/330200/110"), "{text}");
    ok(&with(&["certs", "check-expiry", "--within", "5d"], &pass));

    // renew: a new certificate, the old one replaced
    let renewed =
        ok(&with(&["certs", "renew", "liandong://endpoint/330200/110", "--days", "400"], &pass));
    let renewed_cert = issued(&renewed, "certificate:");
    ok(&with(&["certs", "check-expiry", "--within", "30d"], &pass));

    // revoke and publish: OpenSSL refuses the revoked one with the CRL, accepts the others
    ok(&with(&["certs", "crl"], &pass));
    assert!(ok(&openssl_verify(&ca, &renewed_cert, true)).contains("OK"));
    let serial =
        renewed.split_whitespace().skip_while(|w| *w != "serial").nth(1).unwrap().to_string();
    ok(&with(&["certs", "revoke", &serial[..10], "--reason", "key-compromise"], &pass));
    let text =
        refused(&with(&["certs", "revoke", &serial, "--reason", "key-compromise"], &pass), 2);
    assert!(text.contains("already revoked"), "{text}");
    refused(
        &with(&["certs", "revoke", "--identity", "agency/fire", "--reason", "bored"], &pass),
        2,
    );
    ok(&with(&["certs", "crl", "--next-update", "2d"], &pass));
    let text = refused(&with(&["certs", "check-expiry", "--within", "3d"], &pass), 1);
    assert!(text.contains("crl (its next update)"), "the CRL's next update is watched too: {text}");
    let verdict = openssl_verify(&ca, &renewed_cert, true);
    assert!(!verdict.status.success());
    assert!(
        String::from_utf8_lossy(&verdict.stdout).contains("revoked")
            || String::from_utf8_lossy(&verdict.stderr).contains("revoked")
    );
    assert!(ok(&openssl_verify(&ca, &issued(&signed, "certificate:"), true)).contains("OK"));
    let crl = ok(&liandong(&["certs", "inspect", ca.join("crl.pem").to_str().unwrap()]));
    assert!(crl.contains(&serial) && crl.contains("number:      2"), "{crl}");
    let crl_check = Command::new("openssl")
        .args(["crl", "-noout", "-CAfile"])
        .arg(ca.join("chain.pem"))
        .arg("-in")
        .arg(ca.join("crl.pem"))
        .output()
        .unwrap();
    assert!(
        crl_check.status.success(),
        "the CRL's signature verifies: {}",
        String::from_utf8_lossy(&crl_check.stderr)
    );

    // the ledger says all of it
    let list: serde_json::Value =
        serde_json::from_str(&ok(&with(&["certs", "list", "--json"], &pass))).unwrap();
    let statuses: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["subject"].as_str().unwrap(), e["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("liandong://endpoint/330200/110", "replaced"),
            ("liandong://operator/bob", "live"),
            ("server:localhost,127.0.0.1", "live"),
            ("liandong://agency/fire", "live"),
            ("liandong://endpoint/330200/110", "revoked"),
        ]
    );
    // OpenSSL reads the encrypted key with the passphrase
    let read = Command::new("openssl")
        .args(["pkey", "-noout", "-passin", "pass:correct horse", "-in"])
        .arg(ca.join("intermediate-key.pem"))
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A certificate asked to outlive its intermediate ends with it, and says so; `check-expiry`
/// watches the CA's own certificates; each CA's names are its own.
#[test]
fn no_certificate_outlives_its_issuer_and_the_ca_itself_is_watched() {
    let (dir, ca) = new_ca("cap", &["--intermediate-days", "20"]);
    let (other_dir, other) = new_ca("cap-other", &[]);
    let issued_text = ok(&liandong(&[
        "certs",
        "issue",
        "--dir",
        ca.to_str().unwrap(),
        "agency",
        "fire",
        "--days",
        "365",
    ]));
    assert!(
        issued_text.contains("warning: shortened to end with the intermediate CA"),
        "{issued_text}"
    );
    let not_after = |path: &Path| {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-enddate", "-in"])
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        not_after(&issued(&issued_text, "certificate:")),
        not_after(&ca.join("intermediate.pem"))
    );
    assert!(ok(&openssl_verify(&ca, &issued(&issued_text, "certificate:"), false)).contains("OK"));
    let text = refused(
        &liandong(&["certs", "check-expiry", "--dir", ca.to_str().unwrap(), "--within", "30d"]),
        1,
    );
    assert!(text.contains("ca:intermediate") && !text.contains("ca:root"), "{text}");
    let subject = |path: &Path| {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for file in ["root.pem", "intermediate.pem"] {
        assert_ne!(
            subject(&ca.join(file)),
            subject(&other.join(file)),
            "two CAs, two names: {file}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}

/// A ledger edited by hand (a revoked certificate set back to `live`, which would drop it from
/// the next CRL) is refused by `certs crl` and `certs list`, naming the serial; a CA log edited
/// by hand is refused naming its first changed entry.
#[test]
fn a_ledger_or_log_edited_by_hand_is_refused() {
    let (dir, ca) = new_ca("log", &[]);
    let at = ca.to_str().unwrap();
    let issued_text = ok(&liandong(&["certs", "issue", "--dir", at, "agency", "fire"]));
    let serial =
        issued_text.split_whitespace().skip_while(|w| *w != "serial").nth(1).unwrap().to_string();
    ok(&liandong(&["certs", "revoke", "--dir", at, &serial, "--reason", "key-compromise"]));
    ok(&liandong(&["certs", "crl", "--dir", at]));
    #[cfg(unix)]
    assert_eq!(mode(&ca.join("ca.log")), 0o600);
    let log = std::fs::read_to_string(ca.join("ca.log")).unwrap();
    let actions: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(actions, ["init", "issue", "revoke", "crl"]);

    let ledger = std::fs::read_to_string(ca.join("ledger.json")).unwrap();
    let edited = ledger.replacen("\"status\": \"revoked\"", "\"status\": \"live\"", 1);
    assert_ne!(ledger, edited);
    std::fs::write(ca.join("ledger.json"), &edited).unwrap();
    for command in [vec!["certs", "crl", "--dir", at], vec!["certs", "list", "--dir", at]] {
        let text = refused(&liandong(&command), 1);
        assert!(text.contains(&serial) && text.contains("edited by hand"), "{text}");
    }
    std::fs::write(ca.join("ledger.json"), &ledger).unwrap();
    ok(&liandong(&["certs", "list", "--dir", at]));

    let changed = log.replacen("key-compromise", "superseded", 1);
    std::fs::write(ca.join("ca.log"), changed).unwrap();
    let text = refused(&liandong(&["certs", "list", "--dir", at]), 1);
    assert!(text.contains("entry 3 (revoke"), "the first changed entry is named: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An issued key is written in the clear unless asked (and says so), or encrypted for its
/// holder with `--encrypt`, which OpenSSL opens with that passphrase.
#[test]
fn issued_keys_are_encrypted_on_request() {
    let (dir, ca) = new_ca("encrypt", &[]);
    let at = ca.to_str().unwrap();
    let clear = ok(&liandong(&["certs", "issue", "--dir", at, "agency", "fire"]));
    assert!(clear.contains("NOT encrypted: --encrypt FILE"), "{clear}");
    std::fs::write(dir.join("holder-pass"), "for the holder\n").unwrap();
    let encrypted = ok(&liandong(&[
        "certs",
        "issue",
        "--dir",
        at,
        "agency",
        "water",
        "--encrypt",
        dir.join("holder-pass").to_str().unwrap(),
    ]));
    assert!(encrypted.contains("encrypted with the --encrypt passphrase"), "{encrypted}");
    let key = issued(&encrypted, "key:");
    assert!(std::fs::read_to_string(&key).unwrap().contains("ENCRYPTED PRIVATE KEY"));
    let read = Command::new("openssl")
        .args(["pkey", "-noout", "-passin", "pass:for the holder", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_mismatched_key_and_an_expired_ca_are_named() {
    let dir = std::env::temp_dir().join(format!("liandong-certs-bad-{}", ulid::Ulid::new()));
    let (a, b) = (dir.join("a"), dir.join("b"));
    CaDir::init(&a, liandong::security::ca::Algorithm::P256, None, 30, 30).unwrap();
    CaDir::init(&b, liandong::security::ca::Algorithm::Ed25519, None, 30, 0).unwrap();
    let subject = Subject::Identity(Identity::Agency("x".into()));
    let err = CaDir::open(&b, None).unwrap().issue(&subject, 5, false).unwrap_err();
    assert!(err.to_string().contains("the CA certificate expired"), "{err}");
    std::fs::copy(b.join("intermediate-key.pem"), a.join("intermediate-key.pem")).unwrap();
    let err = CaDir::open(&a, None).unwrap().issue(&subject, 5, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} does not belong to {}",
            a.join("intermediate-key.pem").display(),
            a.join("intermediate.pem").display()
        )
    );
    let err = CaDir::open(&dir.join("nothing"), None).err().unwrap();
    assert!(err.to_string().contains("no CA here"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn grpc(
    site: &Site,
    cert: &Path,
    key: &Path,
    port: u16,
) -> TransferServiceClient<tonic::transport::Channel> {
    let channel = crate::common::net::grpc_channel_as(site, cert, key, port).await;
    TransferServiceClient::new(channel)
}

/// The serial of the certificate the server presents on a new connection.
async fn server_serial(site: &Site, addr: std::net::SocketAddr) -> String {
    let (cert, key) = site.identity("330200/110");
    let config =
        liandong::security::tls::client_config(&site.dir.join("ca.pem"), &cert, &key).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    parsed.raw_serial_as_string().replace(':', "")
}

async fn list_works(client: &mut TransferServiceClient<tonic::transport::Channel>) -> bool {
    client.list_transfers(v1::ListTransfersRequest::default()).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_takes_a_crl_and_a_renewed_certificate_without_a_restart() {
    let site = Site::new("certs-reload");
    site.edit_config(|t| {
        t.must_replace("crl = \"ca/crl.pem\"", "crl = \"ca/crl.pem\"\nreload_check = \"100ms\"")
    });
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    let ca = CaDir::open(&site.dir.join("ca"), None).unwrap();
    let metrics = || async move {
        let text = metrics_text(admin).await;
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
        };
        (
            value("liandong_tls_reloads_total").unwrap_or(0.0),
            value("liandong_tls_reload_failing").unwrap_or(-1.0),
            text,
        )
    };

    // a newly issued identity connects; an old connection of it stays open
    let fire = ca
        .issue(&Subject::Identity(Identity::Endpoint("330000/110".parse().unwrap())), 30, true)
        .unwrap();
    let mut old = grpc(&site, &fire.chain, fire.key.as_ref().unwrap(), addr.port()).await;
    assert!(list_works(&mut old).await);
    let fresh = Client::new(&site, &fire.chain, fire.key.as_ref().unwrap(), addr);
    assert_eq!(fresh.get("/v1/transfers").await.status, 200);
    let police_pair = site.identity("330200/110");
    let mut police_open = grpc(&site, &police_pair.0, &police_pair.1, addr.port()).await;
    assert!(list_works(&mut police_open).await);
    let (reloads_before, failing, text) = metrics().await;
    assert_eq!(failing, 0.0, "{text}");
    assert!(text.contains("liandong_certificate_expiry_seconds{which=\"server\""), "{text}");
    assert!(text.contains("liandong_certificate_expiry_seconds{which=\"intermediate\""), "{text}");
    assert!(
        text.contains("liandong_certificate_expiry_seconds{which=\"client\""),
        "the delivery certificate: {text}"
    );
    assert!(text.contains("liandong_crl_next_update_seconds"), "{text}");

    // revoke it and publish the CRL: after one reload new connections are refused, others served
    ca.revoke(&fire.serial, "key-compromise").unwrap();
    ca.crl(Duration::from_secs(86_400)).unwrap();
    eventually(10, "the CRL is reloaded", || {
        let (reloads, _, _) = futures_lite(metrics());
        reloads > reloads_before
    })
    .await;
    assert!(
        fresh.request("GET", "/v1/transfers", Vec::new()).await.is_err(),
        "a revoked certificate is refused"
    );
    // the refusal is counted by its reason and audited with the certificate it was about
    eventually(10, "the handshake refusal is counted", || {
        futures_lite(metrics())
            .2
            .contains("liandong_refusals_total{reason=\"certificate_revoked\"}")
    })
    .await;
    let store = liandong::store::Store::sqlite(&site.dir.join("liandong.db")).await.unwrap();
    let mut refused = Vec::new();
    for _ in 0..100 {
        refused = store.audit_by_action("tls.client_refused").await.unwrap();
        if !refused.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let detail = &refused.first().expect("the refusal is in the audit trail").entry.detail;
    assert_eq!(detail["reason"], "certificate_revoked", "{detail}");
    assert_eq!(
        detail["serial"].as_str().unwrap().trim_start_matches('0'),
        fire.serial.trim_start_matches('0'),
        "{detail}"
    );
    assert_eq!(detail["identity"], "liandong://endpoint/330000/110", "{detail}");
    assert!(
        !list_works(&mut old).await,
        "the revoked certificate's open connection is closed at the reload"
    );
    assert!(list_works(&mut police_open).await, "another identity's open connection keeps working");
    let police = Client::for_endpoint(&site, "330200/110", addr);
    assert_eq!(police.get("/v1/transfers").await.status, 200, "everyone else is served");

    // a broken file: the reload fails, says so, and the old material stays in use
    let server_pem = std::fs::read(site.dir.join("server.pem")).unwrap();
    std::fs::write(site.dir.join("server.pem"), b"not a certificate").unwrap();
    eventually(10, "the failed reload is reported", || futures_lite(metrics()).1 == 1.0).await;
    assert_eq!(police.get("/v1/transfers").await.status, 200, "still served with the old material");

    // a renewed server certificate is picked up by new connections; old ones keep working
    let before = server_serial(&site, addr).await;
    let renewed =
        ca.issue(&Subject::Server(vec!["localhost".into(), "127.0.0.1".into()]), 30, true).unwrap();
    std::fs::write(
        site.dir.join("server-key.pem"),
        std::fs::read(renewed.key.as_ref().unwrap()).unwrap(),
    )
    .unwrap();
    std::fs::write(site.dir.join("server.pem"), std::fs::read(&renewed.chain).unwrap()).unwrap();
    drop(server_pem);
    eventually(10, "the renewed certificate is served", || {
        futures_lite(server_serial(&site, addr)) == renewed.serial
    })
    .await;
    assert_ne!(before, renewed.serial);
    assert_eq!(futures_lite(metrics()).1, 0.0, "the reload succeeded");
    assert!(list_works(&mut police_open).await, "a connection from before the renewal still works");

    // the gateway's own delivery certificate is reloaded too (a 10-day one replaces it)
    let client =
        ca.issue(&Subject::Identity(Identity::Gateway("gateway".into())), 10, true).unwrap();
    std::fs::write(
        site.dir.join("gateway-key.pem"),
        std::fs::read(client.key.as_ref().unwrap()).unwrap(),
    )
    .unwrap();
    std::fs::write(site.dir.join("gateway.pem"), std::fs::read(&client.chain).unwrap()).unwrap();
    eventually(10, "the delivery certificate is reloaded", || {
        let text = futures_lite(metrics()).2;
        text.lines()
            .find(|l| l.starts_with("liandong_certificate_expiry_seconds{which=\"client\""))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|left| left < 11 * 86_400)
    })
    .await;
}

/// Runs a future to completion from inside `eventually`'s synchronous check.
fn futures_lite<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_at_once() {
    let site = Site::new("certs-sighup");
    site.edit_config(|t| {
        t.must_replace("crl = \"ca/crl.pem\"", "crl = \"ca/crl.pem\"\nreload_check = \"1h\"")
    });
    let (addr, _admin, _stop) = start_on_free_port(&site).await;
    let ca = CaDir::open(&site.dir.join("ca"), None).unwrap();
    let agency = ca.issue(&Subject::Identity(Identity::Agency("demo".into())), 30, true).unwrap();
    let client = Client::new(&site, &agency.chain, agency.key.as_ref().unwrap(), addr);
    assert_eq!(client.get("/v1/transfers").await.status, 200);
    ca.revoke(&agency.serial, "privilege-withdrawn").unwrap();
    ca.crl(Duration::from_secs(86_400)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        client.get("/v1/transfers").await.status,
        200,
        "files are looked at only hourly here"
    );
    let hup =
        Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status().unwrap();
    assert!(hup.success());
    eventually(10, "SIGHUP reloads the CRL", || {
        futures_lite(client.request("GET", "/v1/transfers", Vec::new())).is_err()
    })
    .await;
}

/// Concatenates PEM files (a CA or CRL bundle).
fn bundle(to: &Path, from: &[PathBuf]) {
    let text: String = from.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    std::fs::write(to, text).unwrap();
}

/// Rotation as certs/README.md walks it: a second CA beside the first, both trusted (the new
/// one's chain.pem added to `tls.ca`) and both CRLs loaded. Clients of each are served; a
/// revocation by either CA refuses its client and spares the other's; a client of a third CA
/// is refused with the `unknown_ca` alert; a third CA's CRL, or an expired one, is refused at
/// reload and the material before it stays in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cas_overlap_during_a_rotation_with_both_crls_loaded() {
    use liandong::security::ca::Algorithm;
    let site = Site::new("certs-rotation");
    let old = CaDir::open(&site.dir.join("ca"), None).unwrap();
    let new = CaDir::init(&site.dir.join("ca2"), Algorithm::P256, None, 3650, 1825).unwrap();
    new.crl(Duration::from_secs(86_400)).unwrap();
    let crls = [site.dir.join("ca/crl.pem"), site.dir.join("ca2/crl.pem")];
    bundle(&site.dir.join("trust.pem"), &[site.dir.join("ca.pem"), site.dir.join("ca2/chain.pem")]);
    bundle(&site.dir.join("crls.pem"), &crls);
    site.edit_config(|t| {
        t.must_replace("ca = \"ca.pem\"", "ca = \"trust.pem\"")
            .must_replace("crl = \"ca/crl.pem\"", "crl = \"crls.pem\"\nreload_check = \"100ms\"")
    });
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    let failing = || {
        let text = futures_lite(metrics_text(admin));
        text.lines()
            .find_map(|l| l.strip_prefix("liandong_tls_reload_failing "))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let agency = Subject::Identity(Identity::Agency("demo".into()));
    let client = |files: &liandong::security::ca::IssuedFiles| {
        Client::new(&site, &files.chain, files.key.as_ref().unwrap(), addr)
    };
    let (of_old, of_new) =
        (old.issue(&agency, 30, true).unwrap(), new.issue(&agency, 30, true).unwrap());
    let (old_client, new_client) = (client(&of_old), client(&of_new));
    assert_eq!(old_client.get("/v1/transfers").await.status, 200, "the old CA's client");
    assert_eq!(new_client.get("/v1/transfers").await.status, 200, "the new CA's client");

    // the new CA revokes its client: refused after the reload, the old CA's client still served
    new.revoke(&of_new.serial, "key-compromise").unwrap();
    new.crl(Duration::from_secs(86_400)).unwrap();
    bundle(&site.dir.join("crls.pem"), &crls);
    eventually(10, "the new CA's revocation takes effect", || {
        futures_lite(new_client.request("GET", "/v1/transfers", Vec::new())).is_err()
    })
    .await;
    assert_eq!(
        old_client.get("/v1/transfers").await.status,
        200,
        "the other CA's client is spared"
    );

    // a client of a CA the gateway does not trust: the unknown_ca alert
    let stranger = CaDir::init(&site.dir.join("ca3"), Algorithm::P256, None, 3650, 1825).unwrap();
    let foreign = stranger.issue(&agency, 30, true).unwrap();
    let (cert, key) = (foreign.chain.clone(), foreign.key.clone().unwrap());
    let said = tokio::task::spawn_blocking(move || {
        // -ign_eof: read on after the request until the server closes (its alert comes then);
        // at most 10 s, should a regression let the client in and keep the connection.
        let mut s_client = Command::new("timeout")
            .args([
                "10",
                "openssl",
                "s_client",
                "-ign_eof",
                "-connect",
                &addr.to_string(),
                "-servername",
                "localhost",
                "-cert",
            ])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // TLS 1.3 sends the client's certificate last: the verdict comes with the first read
        use std::io::Write;
        let _ =
            s_client.stdin.take().unwrap().write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n");
        let output = s_client.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout)
    })
    .await
    .unwrap();
    assert!(said.contains("alert unknown ca"), "OpenSSL hears unknown_ca: {said}");

    // a stranger's CRL copied over tls.crl: refused, the loaded CRLs stay in use
    stranger.crl(Duration::from_secs(86_400)).unwrap();
    std::fs::copy(site.dir.join("ca3/crl.pem"), site.dir.join("crls.pem")).unwrap();
    eventually(10, "the stranger's CRL is refused", || failing() == "1").await;
    assert_eq!(
        old_client.get("/v1/transfers").await.status,
        200,
        "served with the CRLs loaded before"
    );
    assert!(
        new_client.request("GET", "/v1/transfers", Vec::new()).await.is_err(),
        "the revocation still holds"
    );

    // an expired CRL is refused the same way
    bundle(&site.dir.join("crls.pem"), &crls);
    eventually(10, "the good bundle loads again", || failing() == "0").await;
    old.crl(Duration::ZERO).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    bundle(&site.dir.join("crls.pem"), &crls);
    eventually(10, "the expired CRL is refused", || failing() == "1").await;
    assert_eq!(old_client.get("/v1/transfers").await.status, 200);
}

/// The SHA-256 of a certificate's public key, as OpenSSL computes it (`x509 -pubkey`, `pkey
/// -outform der`, `dgst -sha256`).
fn openssl_key_sha256(cert: &Path) -> String {
    let pubkey = Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let mut der = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "der"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    der.stdin.take().unwrap().write_all(&pubkey.stdout).unwrap();
    let der = der.wait_with_output().unwrap().stdout;
    use sha2::Digest;
    sha2::Sha256::digest(&der).iter().map(|b| format!("{b:02x}")).collect()
}

/// A province's own PKI signs its desk's receiving server: trusted for delivery through
/// `tls.destination_ca` alone, so the same PKI mints no client identity at the gateway; the
/// desk's key pinned (`server_key_sha256`) is delivered to, another key is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desks_own_pki_is_trusted_for_delivery_and_nothing_else() {
    use common::net::Receiver;
    use liandong::security::ca::Algorithm;
    let site = Site::new("certs-destination-ca");
    let province =
        CaDir::init(&site.dir.join("province-ca"), Algorithm::P256, None, 3650, 1825).unwrap();
    let server = province
        .issue(&Subject::Server(vec!["127.0.0.1".into(), "localhost".into()]), 30, true)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let desk = Receiver::serve_as(
        &site,
        "330200/12345",
        listener,
        &server.chain,
        server.key.as_ref().unwrap(),
    );
    site.push_to("330200/12345", &desk.url());
    // pinned too: the key OpenSSL reads from the desk's certificate
    let pin = openssl_key_sha256(&server.cert);
    site.edit_config(|t| {
        t.must_replace(
            "ca = \"ca.pem\"",
            "ca = \"ca.pem\"\ndestination_ca = \"province-ca/root.pem\"",
        )
        .must_replace(
            &format!("url = \"{}\"", desk.url()),
            &format!("url = \"{}\"\nserver_key_sha256 = \"{pin}\"", desk.url()),
        )
    });
    let (addr, _admin, _stop) = start_on_free_port(&site).await;

    let police = Client::for_endpoint(&site, "330200/110", addr);
    assert_eq!(police.post("/v1/native/330200/110/transfers", ningbo_document()).await.status, 200);
    eventually(20, "the delivery to the desk whose server the province's PKI signed", || {
        !desk.received().is_empty()
    })
    .await;

    let minted = province
        .issue(&Subject::Identity(Identity::Endpoint("330200/110".parse().unwrap())), 30, true)
        .unwrap();
    let impostor = Client::new(&site, &minted.chain, minted.key.as_ref().unwrap(), addr);
    assert!(
        impostor.request("GET", "/v1/transfers", Vec::new()).await.is_err(),
        "the province's PKI is no client CA here"
    );
}

/// A desk whose server presents another key than the pinned one is not delivered to: the
/// attempt fails naming both keys, and is retried (the desk may fix its certificate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_with_another_key_than_the_pinned_one_is_not_delivered_to() {
    use common::net::Receiver;
    let site = Site::new("certs-pinned");
    let desk = Receiver::start(&site, "330200/12345").await;
    site.push_to("330200/12345", &desk.url());
    let wrong = "00".repeat(32);
    site.edit_config(|t| {
        t.must_replace(
            &format!("url = \"{}\"", desk.url()),
            &format!("url = \"{}\"\nserver_key_sha256 = \"{wrong}\"", desk.url()),
        )
    });
    let (addr, _admin, _stop) = start_on_free_port(&site).await;
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let answer = police.post("/v1/native/330200/110/transfers", ningbo_document()).await;
    let transfer_id = answer.header("x-liandong-transfer-id").unwrap();
    let store = liandong::store::Store::sqlite(&site.dir.join("liandong.db")).await.unwrap();
    let mut error = String::new();
    for _ in 0..200 {
        error = store.deliveries_of(&transfer_id).await.unwrap()[0]
            .last_error
            .clone()
            .unwrap_or_default();
        if !error.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(error.contains("is not the one pinned for it") && error.contains(&wrong), "{error}");
    assert!(desk.received().is_empty(), "nothing was sent to the unpinned key");
}

/// An open connection ends when its client certificate does: opened with a certificate valid
/// for three more seconds, it works, and once the certificate's `notAfter` passes it is closed
/// (and a new one is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_connection_ends_when_its_certificate_expires() {
    use liandong::security::pki::DevCa;
    let ca = DevCa::new("test CA").unwrap();
    let site = Site::with_ca("certs-expiry", &ca);
    let (addr, _admin, _stop) = start_on_free_port(&site).await;
    let ningbo = Identity::Endpoint("330200/110".parse().unwrap());
    // whole seconds: what the certificate can say
    let until = (time::OffsetDateTime::now_utc() + time::Duration::seconds(3))
        .replace_nanosecond(0)
        .unwrap();
    let (cert, key) = ca.client_until(&ningbo, until).unwrap().write(&site.dir, "short").unwrap();
    let mut open = grpc(&site, &cert, &key, addr.port()).await;
    assert!(list_works(&mut open).await, "served while the certificate is good");
    eventually(15, "the connection ends with its certificate", || {
        !futures_lite(list_works(&mut open))
    })
    .await;
    assert!(time::OffsetDateTime::now_utc() >= until, "not before the certificate's end");
}
