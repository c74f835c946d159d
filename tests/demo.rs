//! `liandong demo` end to end, as a newcomer runs it (short): every scenario plays, every loop
//! closes, and the table says so.

use std::process::Command;

#[test]
fn the_demo_plays_every_scenario_and_closes_the_loops() {
    let output = Command::new(env!("CARGO_BIN_EXE_liandong")).args(["demo", "--duration", "4s", "--rate", "5"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("routed to the township: 高桥镇劳动保障所 (directory 330203101/NP03 v1)"), "{stderr}");
    assert!(stderr.contains("江西 12345 goes down") && stderr.contains("江西 12345 is back"), "{stderr}");
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
        .filter(|l| l.contains("->") && !l.contains("closed") && !l.contains("rejected") && !l.contains("direction"))
        .collect();
    assert!(open.is_empty(), "every loop closes: {open:?}\n{stdout}");
    assert!(stdout.contains("platform-side errors: 0"), "{stdout}");
    assert!(stdout.contains("0 dead letters"), "{stdout}");
}
