//! The `liandong` binary as users run it: conversions, the registry, profile checks, and the
//! exit status and streams on bad input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sample(path: &str) -> PathBuf {
    root().join("tests/spec/samples").join(path)
}

fn liandong(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_liandong"))
        .args(args)
        .env_remove("LIANDONG_PROFILES")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout_json(output: &Output) -> Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

#[test]
fn native_to_canonical_from_a_file_and_from_stdin() {
    let file = sample("jqxx-xml/transfer-yunnan-gbk.xml");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(sample("jqxx-xml/transfer-yunnan-gbk.canonical.json")).unwrap()).unwrap();
    let from_file =
        stdout_json(&liandong(&["convert", "--from", "530000/110", "--kind", "transfer", file.to_str().unwrap()], None));
    common::assert_canonical_eq(&from_file, &expected, "file");
    let from_stdin =
        stdout_json(&liandong(&["convert", "--from", "530000/110", "--kind", "transfer"], Some(&std::fs::read(&file).unwrap())));
    assert_eq!(from_stdin, from_file);
}

#[test]
fn canonical_to_native_writes_gbk_for_jqxx() {
    let canonical = std::fs::read(sample("jqxx-xml/transfer-yunnan-gbk.canonical.json")).unwrap();
    let output = liandong(&["convert", "--to", "530000/110", "--kind", "transfer"], Some(&canonical));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.starts_with(br#"<?xml version="1.0" encoding="GBK"?>"#));
    assert!(output.stdout.windows(8).any(|w| w == b"&#x4DAE;"), "䶮 is written as a character reference");
    // and it reads back to the same canonical document
    let back = stdout_json(&liandong(&["convert", "--from", "530000/110", "--kind", "transfer"], Some(&output.stdout)));
    common::assert_canonical_eq(&back, &serde_json::from_slice(&canonical).unwrap(), "round trip");
}

#[test]
fn a_whole_transfer_renders_with_its_transfer_id_as_the_reference() {
    let transfer = serde_json::json!({
        "transfer_id": "01HZX3V6Q8K2M7R4T9W1Y5C0DE",
        "case": serde_json::from_slice::<Value>(&std::fs::read(sample("jjd-json/transfer-ningbo-township.canonical.json")).unwrap()).unwrap()["case"],
        "from": "330200/110", "to": "330200/12345", "direction": "110->12345",
        "requested_at": "2023-05-08T09:43:00+08:00",
        "deadlines": {"receive_by": "2023-05-08T10:13:00+08:00"},
        "state": "submitted", "history": []
    });
    let output = liandong(&["convert", "--to", "330200/12345", "--kind", "transfer"], Some(transfer.to_string().as_bytes()));
    let native = stdout_json(&output);
    assert_eq!(native["lzbh"], "01HZX3V6Q8K2M7R4T9W1Y5C0DE");
    assert_eq!(native["gd"]["sqlx"], "1007");
}

#[test]
fn native_to_native_across_formats() {
    let file = sample("ticket-json/status-visited.json");
    let output =
        liandong(&["convert", "--from", "110000/12345", "--to", "210000/110", "--kind", "status", file.to_str().unwrap()], None);
    assert!(output.status.success());
    let text = encoding_text(&output.stdout);
    assert!(
        text.contains("<ZT>HF</ZT>") && text.contains("<MYD>不满意</MYD>") && text.contains("<LZBH>BJ12345-TR-7781</LZBH>"),
        "{text}"
    );
}

fn encoding_text(gbk: &[u8]) -> String {
    liandong::formats::encoding::TextEncoding::Gbk.decode(gbk).unwrap()
}

#[test]
fn invalid_input_exits_2_with_one_line_naming_the_field_and_nothing_on_stdout() {
    let cases: &[(&[&str], &[u8], &str)] = &[
        (
            &["convert", "--from", "330200/110", "--kind", "transfer"],
            &std::fs::read(sample("invalid/jjd-bad-time.json")).unwrap(),
            "JQXX.BJSJ: expected yyyy-MM-dd HH:mm:ss, got \"2023/05/08 09:41:09\"",
        ),
        (
            &["convert", "--from", "210000/110", "--kind", "transfer"],
            &std::fs::read(sample("invalid/jqxx-utf8-declared-gbk.xml")).unwrap(),
            "document is not valid GBK (encoding)",
        ),
        (&["convert", "--from", "330200/110", "--kind", "transfer"], b"\xff\xfe\x00garbage", "document is not valid UTF-8"),
        (
            &["convert", "--to", "330200/12345", "--kind", "transfer"],
            br#"{"sender_ref": "x"}"#,
            "requested_at: required field is missing or empty",
        ),
        (
            &["convert", "--to", "330200/12345", "--kind", "status"],
            br#"{"transfer_ref": "x", "state": "finished", "at": "2023-05-08T09:43:00+08:00", "by": "330200/110"}"#,
            "state: unknown variant `finished`",
        ),
        (
            &["convert", "--to", "330200/12345", "--kind", "status"],
            br#"{"transfer_ref": "x", "state": "delivered", "at": "2023-05-08T09:43:00+08:00", "by": "330200/110"}"#,
            "state: the format has no status for \"delivered\"",
        ),
        (&["convert", "--from", "999999/110", "--kind", "transfer"], b"{}", "unknown endpoint 999999/110"),
        (&["convert", "--kind", "transfer"], b"{}", "convert needs --from ENDPOINT, --to ENDPOINT, or both"),
    ];
    for (args, input, message) in cases {
        let output = liandong(args, Some(input));
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(message), "{args:?}: {stderr}");
    }
}

#[test]
fn endpoints_lists_the_registry() {
    let output = liandong(&["endpoints"], None);
    let table = String::from_utf8(output.stdout).unwrap();
    assert_eq!(table.lines().count(), 19, "a header and 18 endpoints");
    assert!(table.contains("530000/110     jqxx-xml        云南 Yunnan  (extra codes: JW11)"), "{table}");
    let list = stdout_json(&liandong(&["endpoints", "--json"], None));
    assert_eq!(list.as_array().unwrap().len(), 18);
    assert_eq!(list[12]["id"], "360000/110");
    assert_eq!(list[12]["extra_codes"], serde_json::json!(["070301"]));
}

#[test]
fn a_seventh_format_is_a_data_file() {
    let dir = root().join("examples/profiles");
    let output = liandong(&["profiles", "check", dir.to_str().unwrap()], None);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("7 formats"));
    let doc = dir.join("transfer.json");
    let canonical = stdout_json(&liandong(
        &["--profiles", dir.to_str().unwrap(), "convert", "--from", "440000/110", "--kind", "transfer", doc.to_str().unwrap()],
        None,
    ));
    assert_eq!(canonical["case"]["case_id"], "110:440000:GZ20240601001");
    assert_eq!(canonical["case"]["category"], "NP07");
    assert_eq!(canonical["case"]["caller"]["phone"], "+8613800000000");
    let native = stdout_json(&liandong(
        &[
            "--profiles",
            dir.to_str().unwrap(),
            "convert",
            "--from",
            "440000/110",
            "--to",
            "440000/12345",
            "--kind",
            "transfer",
            doc.to_str().unwrap(),
        ],
        None,
    ));
    assert_eq!(native["gd"]["sqlx"], "1007");
}

#[test]
fn profile_mistakes_are_reported_with_file_and_key() {
    let dir = root().join("tests/fixtures/bad-profiles");
    let output = liandong(&["profiles", "check", dir.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    let file = |name: &str| Path::new(dir.to_str().unwrap()).join(name).display().to_string();
    assert!(
        lines[0].starts_with(&format!(
            "{}: transfer.fields[1].layout: a layout names each of yyyy, MM, dd, HH, mm, ss once",
            file("broken.toml")
        )),
        "{stderr}"
    );
    assert!(lines[1].starts_with(&format!("{}: transfer.fields[0]: unknown field `pth`", file("misspelt.toml"))), "{stderr}");
    assert!(
        lines[2].starts_with(&format!("{}: endpoint[0].format: unknown format \"no-such-format\"", file("endpoints.toml"))),
        "{stderr}"
    );
}

#[test]
fn a_profile_that_is_not_toml_is_reported_with_its_line() {
    let dir = std::env::temp_dir().join(format!("liandong-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bad.toml"), "name = \"x\"\nsyntax = json\n").unwrap();
    let output = liandong(&["profiles", "check", dir.to_str().unwrap()], None);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("bad.toml: not valid TOML") && stderr.contains("(line 2, column 10)"), "{stderr}");
}

#[test]
fn the_built_in_profiles_pass_their_own_check() {
    let output = liandong(&["profiles", "check", root().join("profiles").to_str().unwrap()], None);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("6 formats") && stdout.contains("18 endpoints"), "{stdout}");
}
