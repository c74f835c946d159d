//! `liandong demo` end to end, as a newcomer runs it (short): every scenario plays, every loop
//! closes, and the table says so.

use std::process::Command;

#[test]
fn the_demo_plays_every_scenario_and_closes_the_loops() {
    let output = Command::new(env!("CARGO_BIN_EXE_liandong"))
        .args(["demo", "--duration", "4s", "--rate", "5"])
        .output()
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("routed to the township: 高桥镇劳动保障所 (directory 330203101/NP03 v1)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("江西 12345 goes down") && stderr.contains("江西 12345 is back"),
        "{stderr}"
    );
    // the table: every transfer closed after the call-back but the Liaoning lock-out handed back,
    // whose re-routed successor closed too
    let row = |direction: &str, state: &str| -> i64 {
        stdout
            .lines()
            .find(|l| l.split_whitespace().take(2).eq([direction, state]))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(row("110->12345", "rejected"), 1, "{stdout}");
    assert!(row("110->12345", "closed") >= 20, "{stdout}");
    assert!(row("12345->110", "closed") >= 1, "{stdout}");
    let open: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.contains("->")
                && !l.contains("closed")
                && !l.contains("rejected")
                && !l.contains("direction")
        })
        .collect();
    assert!(open.is_empty(), "every loop closes: {open:?}\n{stdout}");
    assert!(stdout.contains("platform-side errors: 0"), "{stdout}");
    assert!(stdout.contains("0 dead letters"), "{stdout}");
    // each scenario's outcome, as its sender sees it, with the province's own people
    let scenario = |name: &str| {
        stdout.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("no {name} in {stdout}"))
    };
    let wage = scenario("宁波 110 → 12345 讨薪");
    assert!(
        wage.contains(": closed")
            && wage.contains("宁波市")
            && wage.contains("called back: satisfied"),
        "{wage}"
    );
    let crime = scenario("浙江 12345 → 110 入室盗窃");
    assert!(crime.contains(": closed") && crime.contains("杭州市公安局"), "{crime}");
    let lockout = scenario("辽宁 110 → 12345 开锁");
    assert!(
        lockout.contains(": rejected")
            && lockout.contains("handed back (insufficient_information)"),
        "{lockout}"
    );
    let again = stdout
        .lines()
        .find(|l| l.contains("sent again, linked to it"))
        .expect("the lock-out sent again");
    assert!(again.contains(": closed") && again.contains("沈阳市"), "{again}");
    assert!(scenario("北京 110 → 12345").contains(": closed"), "{stdout}");
    // linkage.md's scenarios: handled first, help on site, a dispute decided by the linkage
    // office, an overdue case urged, an extension granted.
    assert!(
        wage.contains("routing basis safety_first") && wage.contains("handled first: 民警"),
        "{wage}"
    );
    let assist = scenario("宁波 12345 → 110 派员协助");
    assert!(assist.contains(": closed") && assist.contains("on the scene: "), "{assist}");
    let disputed = scenario("浙江 110 → 12345 开锁 (lock-out, disputed)");
    assert!(
        disputed.contains(": closed")
            && disputed.contains("handed back (out_of_scope)")
            && disputed.contains("overruled by liandong://office/demo")
            && disputed.contains("routing basis negotiated"),
        "{disputed}"
    );
    let urged = scenario("辽宁 110 → 12345 停水");
    assert!(
        urged.contains(": closed") && urged.contains("escalated") && urged.contains("urged 1×"),
        "{urged}"
    );
    let extended = scenario("宁波 110 → 12345 路灯");
    assert!(
        extended.contains(": closed") && extended.contains("extension granted until"),
        "{extended}"
    );
    assert!(stdout.contains("urges (催办) the desks received in their own format: 1"), "{stdout}");
    // the site is gone when the demo ends: it is not offered as a place to look
    assert!(!stdout.contains("liandong-demo-") && stdout.contains("--keep DIR"), "{stdout}");
}

/// `--keep DIR`: the report is shown while the gateway runs, the site stays, and Ctrl-C stops
/// it at once (no graceful wait on the simulated platforms' connections).
#[cfg(unix)]
#[test]
fn the_demo_kept_stops_at_once_on_ctrl_c() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("liandong-demo-keep-{}", ulid::Ulid::new()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_liandong"))
        .args(["demo", "--duration", "2s", "--rate", "2", "--keep", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut report = Vec::new();
    for line in stdout.by_ref() {
        let line = line.unwrap();
        let done = line.contains("certificates: liandong certs list");
        report.push(line);
        if done {
            break;
        }
    }
    // the rest is read to the end, as a terminal would
    let rest = std::thread::spawn(move || stdout.count());
    let report = report.join("\n");
    assert!(report.contains(&format!("the site:     {}", dir.display())), "{report}");
    assert!(dir.join("liandong.toml").is_file(), "the site stays");
    let interrupted = std::time::Instant::now();
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    let took = interrupted.elapsed();
    let _ = rest.join();
    assert!(status.success(), "{status:?}");
    // Not a speed goal: the gateway's shutdown grace is 10 s, and this says it was not waited out.
    assert!(took < std::time::Duration::from_secs(5), "Ctrl-C took {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

use crate::common;

/// `liandong simulate` as a partner runs it: it submits in its own format and answers what it
/// is sent, against a gateway it does not share a process with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_plays_one_platform_against_a_gateway() {
    let site = common::net::Site::new("simulate");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    site.push_to("330200/12345", &format!("https://127.0.0.1:{port}/receive"));
    let (addr, _, _stop) = common::net::start_on_free_port(&site).await;
    let dir = site.dir.to_str().unwrap().to_string();
    let gateway = addr.to_string();
    let listen = format!("127.0.0.1:{port}");
    // the 12345 simulated: answers what the 110 (this test) sends it
    let hotline = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_liandong"))
            .args([
                "simulate",
                "330200/12345",
                "--gateway",
                &gateway,
                "--listen",
                &listen,
                "--duration",
                "6s",
            ])
            .args([
                "--ca",
                &format!("{dir}/ca.pem"),
                "--cert",
                &format!("{dir}/identities/330200-12345.pem"),
            ])
            .args([
                "--key",
                &format!("{dir}/identities/330200-12345-key.pem"),
                "--server-cert",
                &format!("{dir}/server.pem"),
            ])
            .args([
                "--server-key",
                &format!("{dir}/server-key.pem"),
                "--rate",
                "1",
                "--category",
                "PM04",
            ])
            .output()
            .unwrap()
    });
    // the simulated 12345 is up when its receiving port answers
    let receiving = format!("127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&receiving).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(up, "the simulated 12345 never listened on {receiving}");
    let police = common::net::Client::for_endpoint(&site, "330200/110", addr);
    let answer = police
        .post(
            "/v1/native/330200/110/transfers",
            std::fs::read(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/spec/samples/jjd-json/transfer-ningbo-township.json"),
            )
            .unwrap(),
        )
        .await;
    assert_eq!(answer.status, 200);
    let id = answer.header("x-liandong-transfer-id").unwrap();
    let output = hotline.await.unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.contains("received 1,") && report.contains("errors 0"), "{report}");
    assert!(!report.contains("submitted 0,"), "it submitted police matters to the 110: {report}");
    let transfer = police.get(&format!("/v1/transfers/{id}")).await.json();
    assert_eq!(
        transfer["state"], "resolved",
        "the simulated 12345 accepted and resolved it: {transfer}"
    );
}
