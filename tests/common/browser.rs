//! A real browser for the console tests: Debian's headless Chromium, driven over the W3C
//! WebDriver protocol by `chromedriver`, presenting a client certificate the way a person's
//! browser does — a `.p12` imported into its own NSS database with `pk12util`, the site's root
//! CA trusted with `certutil`, and the managed policy `AutoSelectCertificateForUrls` choosing
//! that certificate for `https://127.0.0.1:*` (docs/CONSOLE.md shows the same set-up for
//! people). Each browser has its own home, so each holds one identity.
//!
//! Needs the packages `chromium`, `chromium-driver` and `libnss3-tools` (`.ci/run` installs
//! them) and the policy file, which is written here when it is missing.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::net::Site;

/// The managed policy that lets Chromium present the one certificate it holds to the test
/// gateways on 127.0.0.1, without a dialog.
pub const POLICY_FILE: &str = "/etc/chromium/policies/managed/liandong-console-tests.json";
const POLICY: &str =
    r#"{"AutoSelectCertificateForUrls": ["{\"pattern\":\"https://127.0.0.1:*\",\"filter\":{}}"]}"#;

/// The W3C WebDriver element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn need(program: &str, package: &str) {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{program} is not installed: the console tests need Debian's {package} \
         (apt-get install chromium chromium-driver libnss3-tools; .ci/run does)"
    );
}

fn ensure_policy() {
    if std::fs::read_to_string(POLICY_FILE).is_ok_and(|text| text == POLICY) {
        return;
    }
    let written = std::fs::create_dir_all(Path::new(POLICY_FILE).parent().unwrap())
        .and_then(|()| std::fs::write(POLICY_FILE, POLICY));
    if let Err(e) = written {
        panic!(
            "cannot write {POLICY_FILE} ({e}): the console tests need Chromium's \
             AutoSelectCertificateForUrls policy; write {POLICY} there as root"
        );
    }
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A `.p12` for an identity, issued by the site's CA with the certificate tool, as a security
/// team issues one for a person (`liandong certs issue --p12`); returns it and its passphrase.
pub fn issue_p12(site: &Site, kind: &str, name: &str) -> (PathBuf, String) {
    issue_p12_with(site, kind, name, &[])
}

/// [`issue_p12`] with more arguments (`--replace` for an identity that already has one).
pub fn issue_p12_with(site: &Site, kind: &str, name: &str, more: &[&str]) -> (PathBuf, String) {
    let passphrase = "console-test".to_string();
    let pass_file = site.dir.join(format!("p12-{kind}-{}.pass", name.replace('/', "-")));
    std::fs::write(&pass_file, &passphrase).unwrap();
    let ca = site.dir.join("ca");
    let mut args = vec![
        "certs",
        "issue",
        "--dir",
        ca.to_str().unwrap(),
        kind,
        name,
        "--p12",
        pass_file.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    let output = super::liandong(&args);
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    let p12 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("pkcs#12:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no pkcs#12 in {text}"));
    let path = PathBuf::from(p12);
    let path = if path.is_absolute() { path } else { std::env::current_dir().unwrap().join(path) };
    (path, passphrase)
}

/// One browser, holding one identity.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    home: PathBuf,
    pub base: String,
}

impl Browser {
    /// Chromium with the identity in `p12` (and the site's root trusted), for the gateway at
    /// `https`.
    pub async fn start(site: &Site, p12: &Path, passphrase: &str, https: SocketAddr) -> Browser {
        need("chromium", "chromium");
        need("chromedriver", "chromium-driver");
        need("pk12util", "libnss3-tools");
        ensure_policy();
        let home = site.dir.join(format!("browser-{}", ulid::Ulid::new()));
        let nssdb = home.join(".pki/nssdb");
        std::fs::create_dir_all(&nssdb).unwrap();
        let db = format!("sql:{}", nssdb.display());
        run(Command::new("certutil").args(["-N", "-d", &db, "--empty-password"]));
        let root = site.dir.join("ca/root.pem");
        run(Command::new("certutil")
            .args(["-A", "-d", &db, "-n", "liandong-root", "-t", "C,,"])
            .arg("-i")
            .arg(&root));
        run(Command::new("pk12util").arg("-i").arg(p12).args(["-d", &db, "-W", passphrase]));

        let port = super::crash::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("HOME", &home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            home: home.clone(),
            base: format!("https://127.0.0.1:{}", https.port()),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser.call("GET", "/status", None).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1920,1080", "--lang=zh-CN",
                         format!("--user-data-dir={}", home.join("profile").display())],
            },
        }}});
        let answer = browser.call("POST", "/session", Some(capabilities)).await.unwrap();
        browser.session = answer["sessionId"].as_str().expect("a session").to_string();
        // The page itself 1920×1080, as on a wall's screen (the window has a frame around it).
        let frame = browser
            .script("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]")
            .await;
        let (dx, dy) = (frame[0].as_i64().unwrap_or(0), frame[1].as_i64().unwrap_or(0));
        browser
            .command("POST", "/window/rect", Some(json!({"width": 1920 + dx, "height": 1080 + dy})))
            .await;
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{}", self.port))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {}", value["value"]));
        }
        Ok(value["value"].clone())
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Opens a console page (`#/wall`, `#/search/phone:…`) afresh — reloaded when it is the
    /// page already open (a fragment alone would not reload it).
    pub async fn open(&self, fragment: &str) {
        let url = format!("{}/console/{fragment}", self.base);
        let current = self.command("GET", "/url", None).await;
        if current.as_str() == Some(url.as_str()) {
            self.command("POST", "/refresh", Some(json!({}))).await;
        } else {
            self.command("POST", "/url", Some(json!({"url": url}))).await;
        }
    }

    /// The value of a script run in the page (`return …`).
    pub async fn script(&self, script: &str) -> Value {
        self.command("POST", "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// The script's value once it is truthy; fails after `seconds` naming `what`.
    pub async fn wait_for(&self, what: &str, seconds: u64, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let value = self
                .call(
                    "POST",
                    &format!("/session/{}/execute/sync", self.session),
                    Some(json!({"script": script, "args": []})),
                )
                .await
                .unwrap_or(Value::Null);
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let page = self.script("return document.getElementById('page').innerText").await;
                panic!("{what}: not seen in {seconds} s; the page shows: {page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of the page's main part.
    pub async fn text(&self) -> String {
        self.script("return document.getElementById('page').innerText")
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Clicks the element `css` selects, as a person does (a WebDriver click, not a script).
    pub async fn click(&self, css: &str) {
        let element = self
            .command("POST", "/element", Some(json!({"using": "css selector", "value": css})))
            .await;
        let id =
            element[ELEMENT].as_str().unwrap_or_else(|| panic!("no {css}: {element}")).to_string();
        self.command("POST", &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    /// The text of the open dialog (`confirm()`), then accepts it.
    pub async fn accept_dialog(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let path = format!("/session/{}/alert/text", self.session);
            if let Ok(text) = self.call("GET", &path, None).await {
                self.command("POST", "/alert/accept", Some(json!({}))).await;
                return text.as_str().unwrap_or("").to_string();
            }
            assert!(Instant::now() < deadline, "no dialog opened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        base64_decode(self.command("GET", "/screenshot", None).await.as_str().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium outlives a killed chromedriver: end it by its profile, then the driver.
        let profile = format!("--user-data-dir={}", self.home.join("profile").display());
        let _ = Command::new("pkill").args(["-f", "--", &profile]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (WebDriver screenshots, the console's exports).
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u32> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, d)| n | d << (18 - 6 * i));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}
