//! The `liandong` binary as users run it: conversions, the registry, profile checks, and the
//! exit status and streams on bad input.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::common;
use common::{liandong, liandong_with_input};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sample(path: &str) -> PathBuf {
    root().join("tests/spec/samples").join(path)
}

fn stdout_json(output: &Output) -> Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

#[test]
fn native_to_canonical_from_a_file_and_from_stdin() {
    let file = sample("jqxx-xml/transfer-yunnan-gbk.xml");
    let expected: Value = serde_json::from_slice(
        &std::fs::read(sample("jqxx-xml/transfer-yunnan-gbk.canonical.json")).unwrap(),
    )
    .unwrap();
    let from_file = stdout_json(&liandong(&[
        "convert",
        "--from",
        "530000/110",
        "--kind",
        "transfer",
        file.to_str().unwrap(),
    ]));
    common::assert_canonical_eq(&from_file, &expected, "file");
    let from_stdin = stdout_json(&liandong_with_input(
        &["convert", "--from", "530000/110", "--kind", "transfer"],
        &std::fs::read(&file).unwrap(),
    ));
    assert_eq!(from_stdin, from_file);
}

#[test]
fn canonical_to_native_writes_gbk_for_jqxx() {
    let canonical = std::fs::read(sample("jqxx-xml/transfer-yunnan-gbk.canonical.json")).unwrap();
    let output =
        liandong_with_input(&["convert", "--to", "530000/110", "--kind", "transfer"], &canonical);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.starts_with(br#"<?xml version="1.0" encoding="GBK"?>"#));
    assert!(
        output.stdout.windows(8).any(|w| w == b"&#x4DAE;"),
        "䶮 is written as a character reference"
    );
    // and it reads back to the same canonical document
    let back = stdout_json(&liandong_with_input(
        &["convert", "--from", "530000/110", "--kind", "transfer"],
        &output.stdout,
    ));
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
    let output = liandong_with_input(
        &["convert", "--to", "330200/12345", "--kind", "transfer"],
        transfer.to_string().as_bytes(),
    );
    let native = stdout_json(&output);
    assert_eq!(native["lzbh"], "01HZX3V6Q8K2M7R4T9W1Y5C0DE");
    assert_eq!(native["gd"]["sqlx"], "1007");
}

#[test]
fn native_to_native_across_formats() {
    let file = sample("ticket-json/status-visited.json");
    let output = liandong(&[
        "convert",
        "--from",
        "110000/12345",
        "--to",
        "210000/110",
        "--kind",
        "status",
        file.to_str().unwrap(),
    ]);
    assert!(output.status.success());
    let text = encoding_text(&output.stdout);
    assert!(
        text.contains("<ZT>HF</ZT>")
            && text.contains("<MYD>不满意</MYD>")
            && text.contains("<LZBH>BJ12345-TR-7781</LZBH>"),
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
        let output = liandong_with_input(args, input);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(message), "{args:?}: {stderr}");
    }
}

#[test]
fn endpoints_lists_the_registry() {
    let output = liandong(&["endpoints"]);
    let table = String::from_utf8(output.stdout).unwrap();
    assert_eq!(table.lines().count(), 19, "a header and 18 endpoints");
    assert!(
        table.contains("530000/110     jqxx-xml        云南 Yunnan  (extra codes: JW11)"),
        "{table}"
    );
    let list = stdout_json(&liandong(&["endpoints", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 18);
    assert_eq!(list[12]["id"], "360000/110");
    assert_eq!(list[12]["extra_codes"], serde_json::json!(["070301"]));
}

#[test]
fn a_seventh_format_is_a_data_file() {
    let dir = root().join("examples/profiles");
    let output = liandong(&["profiles", "check", dir.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("7 formats"));
    let doc = dir.join("transfer.json");
    let canonical = stdout_json(&liandong(&[
        "--profiles",
        dir.to_str().unwrap(),
        "convert",
        "--from",
        "440000/110",
        "--kind",
        "transfer",
        doc.to_str().unwrap(),
    ]));
    assert_eq!(canonical["case"]["case_id"], "110:440000:GZ20240601001");
    assert_eq!(canonical["case"]["category"], "NP07");
    assert_eq!(canonical["case"]["caller"]["phone"], "+8613800000000");
    let native = stdout_json(&liandong(&[
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
    ]));
    assert_eq!(native["gd"]["sqlx"], "1007");
}

#[test]
fn profile_mistakes_are_reported_with_file_and_key() {
    let dir = root().join("tests/fixtures/bad-profiles");
    let output = liandong(&["profiles", "check", dir.to_str().unwrap()]);
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
    assert!(
        lines[1].starts_with(&format!(
            "{}: transfer.fields[0]: unknown field `pth`",
            file("misspelt.toml")
        )),
        "{stderr}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{}: endpoint[0].format: unknown format \"no-such-format\"",
            file("endpoints.toml")
        )),
        "{stderr}"
    );
}

#[test]
fn a_profile_that_is_not_toml_is_reported_with_its_line() {
    let dir = std::env::temp_dir().join(format!("liandong-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bad.toml"), "name = \"x\"\nsyntax = json\n").unwrap();
    let output = liandong(&["profiles", "check", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("bad.toml: not valid TOML") && stderr.contains("(line 2, column 10)"),
        "{stderr}"
    );
}

#[test]
fn the_built_in_profiles_pass_their_own_check() {
    let output = liandong(&["profiles", "check", root().join("profiles").to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("6 formats") && stdout.contains("18 endpoints"), "{stdout}");
}

#[test]
fn datasets_import_export_route_and_reconcile_on_the_configured_store() {
    let dir = std::env::temp_dir().join(format!("liandong-cli-data-{}", ulid::Ulid::new()));
    let site = dir.join("site");
    let output = liandong(&[
        "init",
        site.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let config = site.join("liandong.toml");
    let config = config.to_str().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };

    // a CSV with a bad line: every line is checked, the error names the line and the field, nothing is written
    let bad = write(
        "bad.csv",
        "key,owner,version,unit.code,unit.name,phone\n330203/NP03,330200/12345,1,HS-RS,海曙区人社局,0574-1\n330203101/NP03,330200/12345,x,GQ,\"高桥镇, 劳动保障所\",\n",
    );
    let output = liandong(&["datasets", "import", "--config", config, "directory", &bad]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 3: version: expected a whole number"), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    // errors name the file's line, past blank lines; every unreadable line is named
    let wrong_owner = write(
        "owner.jsonl",
        "\n{\"key\": \"330203/NP03\", \"owner\": \"330000/12345\", \"version\": 1, \"body\": {\"unit\": {\"name\": \"x\"}}}\n",
    );
    let output = liandong(&["datasets", "import", "--config", config, "directory", &wrong_owner]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("owner.jsonl: line 2: forbidden: 330203/NP03 is kept by 330200/12345"),
        "{stderr}"
    );
    let unreadable =
        write("unreadable.jsonl", "{not json\n{\"key\": \"330203/NP05\", \"owner\": \"330200/12345\", \"version\": \"one\"}\n");
    let output = liandong(&["datasets", "import", "--config", config, "directory", &unreadable]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 1: not JSON") && stderr.contains("line 2: "), "{stderr}");

    let good = write(
        "good.csv",
        "key,owner,version,unit.code,unit.name,phone\n330203/NP03,330200/12345,1,HS-RS,海曙区人社局,0574-1\n330203101/NP03,330200/12345,1,GQ,\"高桥镇, 劳动保障所\",\n",
    );
    let output = liandong(&["datasets", "import", "--config", config, "directory", &good]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "directory: 2 records read, 2 written (0 unchanged)\n"
    );
    let again = liandong(&["datasets", "import", "--config", config, "directory", &good]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "directory: 2 records read, 0 written (2 unchanged)\n"
    );

    // a dry run says what an import would do, and writes nothing
    let preview = write(
        "preview.csv",
        "key,owner,version,unit.code,unit.name,phone,deleted\n\
         330203/NP03,330200/12345,1,HS-RS,海曙区人社局,0574-1,\n\
         330203101/NP03,330200/12345,2,GQ2,高桥镇,,\n\
         330203/NP03,330200/12345,2,,,,TRUE\n\
         330204/NP03,330200/12345,1,JB,江北区,,\n\
         330203101/NP03,330200/12345,1,GQ,old,,\n",
    );
    // (--force: the deletion of line 4 leaves its county without a unit, counted as a deletion)
    let output = liandong(&[
        "datasets",
        "import",
        "--config",
        config,
        "directory",
        &preview,
        "--dry-run",
        "--force",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.starts_with("directory at version ")
            && text.contains(
                ": 5 records read: 1 to add, 1 to change, 1 to delete, 1 unchanged, 1 refused (dry run: nothing was written)\n"
            ),
        "{text}"
    );
    assert!(
        text.contains("preview.csv: line 6: version: 330203101/NP03 is at version 2"),
        "{text}"
    );
    let unchanged = stdout_json(&liandong(&[
        "route",
        "--config",
        config,
        "--region",
        "330203101",
        "--category",
        "NP03",
        "--json",
    ]));
    assert_eq!(unchanged["unit"]["code"], "GQ", "nothing was written");

    // --if-version: the preview's version; applied only while nothing else wrote the dataset
    let planned =
        write("planned.csv", "key,owner,version,unit.code\n330205/NP03,330200/12345,1,ZH\n");
    let version_of = |output: &Output| {
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        text.strip_prefix("directory at version ")
            .and_then(|rest| rest.split(':').next())
            .unwrap()
            .to_string()
    };
    let previewed = version_of(&liandong(&[
        "datasets",
        "import",
        "--config",
        config,
        "directory",
        &planned,
        "--dry-run",
    ]));

    // a deletion (TRUE, as Excel writes it) is a tombstone; export lists it
    let deletion =
        write("delete.csv", "key,owner,version,deleted\n330203/NP09,330200/12345,1,TRUE\n");
    let output = liandong(&["datasets", "import", "--config", config, "directory", &deletion]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // the dataset moved since the preview: refused, nothing written; previewed again, applied
    let output = liandong(&[
        "datasets",
        "import",
        "--config",
        config,
        "directory",
        &planned,
        "--if-version",
        &previewed,
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("not {previewed} as previewed"))
            && stderr.contains("nothing was written"),
        "{stderr}"
    );
    let previewed = version_of(&liandong(&[
        "datasets",
        "import",
        "--config",
        config,
        "directory",
        &planned,
        "--dry-run",
    ]));
    let output = liandong(&[
        "datasets",
        "import",
        "--config",
        config,
        "directory",
        &planned,
        "--if-version",
        &previewed,
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = liandong(&[
        "datasets",
        "import",
        "--config",
        config,
        "directory",
        &planned,
        "--if-version",
        "soon",
    ]);
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("--if-version: expected a version printed by --dry-run"));
    // deleting the only unit of a cell is refused (in the preview too) unless forced
    let retire =
        write("retire.csv", "key,owner,version,deleted\n330205/NP03,330200/12345,2,true\n");
    let output = liandong(&["datasets", "import", "--config", config, "directory", &retire]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "retire.csv: line 2: deleted: 330205/NP03 is the only unit for NP03 in 330205"
        ),
        "{stderr}"
    );
    let output =
        liandong(&["datasets", "import", "--config", config, "directory", &retire, "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 refused"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let output =
        liandong(&["datasets", "import", "--config", config, "directory", &retire, "--force"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // a record's history: each version, when, by whom
    let output = liandong(&[
        "datasets",
        "history",
        "--config",
        config,
        "directory",
        "330205/NP03",
        "--json",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let history: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(
        (history[0]["version"].as_u64(), history[0]["deleted"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(history[0]["body"]["unit"]["code"], "ZH");
    assert!(
        history[0]["writer"].as_str().unwrap().starts_with("import ")
            && history[0]["writer"].as_str().unwrap().contains("planned.csv sha256:")
    );
    assert_eq!(
        (history[1]["version"].as_u64(), history[1]["deleted"].as_bool()),
        (Some(2), Some(true))
    );
    assert!(history[1]["writer"].as_str().unwrap().contains("retire.csv"));
    let output = liandong(&["datasets", "history", "--config", config, "directory", "330205/NP03"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("v1 ") && text.contains("v2 ") && text.contains("deleted"), "{text}");
    let output = liandong(&["datasets", "history", "--config", config, "directory", "330299/NP03"]);
    assert_eq!(output.status.code(), Some(2), "no such record");
    assert!(String::from_utf8_lossy(&output.stderr).contains("330299/NP03"));

    // export as JSON Lines and as CSV, tombstones included; the CSV reads back unchanged
    let output = liandong(&["datasets", "export", "--config", config, "directory"]);
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    // in key order, byte-wise: "330203/…" before "330203101/…"
    assert_eq!(
        (lines[1]["key"].as_str(), lines[1]["deleted"].as_bool()),
        (Some("330203/NP09"), Some(true))
    );
    assert_eq!(lines[2]["body"]["unit"]["name"], "高桥镇, 劳动保障所");
    let output =
        liandong(&["datasets", "export", "--config", config, "directory", "--format", "csv"]);
    let csv = write("export.csv", &String::from_utf8_lossy(&output.stdout));
    let back = liandong(&["datasets", "import", "--config", config, "directory", &csv]);
    assert_eq!(
        String::from_utf8_lossy(&back.stdout),
        "directory: 4 records read, 0 written (4 unchanged)\n"
    );

    // routing: the township's record wins; another township falls back to the county
    let route = stdout_json(&liandong(&[
        "route",
        "--config",
        config,
        "--region",
        "330203101",
        "--category",
        "NP03",
        "--json",
    ]));
    assert_eq!(route["endpoint"], "330200/12345");
    assert_eq!(route["unit"]["code"], "GQ");
    assert_eq!(route["considered"][0], "330203101/NP03");
    let output =
        liandong(&["route", "--config", config, "--region", "330203102", "--category", "NP03"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("unit:     HS-RS 海曙区人社局 (directory 330203/NP03 v1"), "{text}");
    let output =
        liandong(&["route", "--config", config, "--region", "33020", "--category", "NP03"]);
    assert_eq!(output.status.code(), Some(2));
    // as a submission has it: a Zhejiang-wide destination region and the case's township
    let route = stdout_json(&liandong(&[
        "route",
        "--config",
        config,
        "--to-region",
        "330000",
        "--location",
        "330203101",
        "--category",
        "NP03",
        "--json",
    ]));
    assert_eq!(
        (route["endpoint"].as_str(), route["unit"]["code"].as_str()),
        (Some("330200/12345"), Some("GQ"))
    );
    let route = stdout_json(&liandong(&[
        "route",
        "--config",
        config,
        "--to-region",
        "330106",
        "--category",
        "NP03",
        "--json",
    ]));
    assert_eq!(route["endpoint"], "330000/12345", "Hangzhou has no platform of its own");

    // coverage: each township and county the directory names, by category, answered where
    let lock = write("lock.csv", "key,owner,version,unit.code\n330203102/NP05,330200/12345,1,KS\n");
    assert!(liandong(&["datasets", "import", "--config", config, "directory", &lock])
        .status
        .success());
    let output =
        liandong(&["route", "--config", config, "--coverage", "330203", "--category", "NP03"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("330203: 3 cells (3 places × 1 categories): 2 answered at their own tier, 1 fall back to a coarser one, 0 have no unit\n"), "{text}");
    assert!(text.contains("  330203102/NP03  falls back to the county: 330203/NP03\n"), "{text}");
    let report =
        stdout_json(&liandong(&["route", "--config", config, "--coverage", "330200", "--json"]));
    let taxonomy = liandong::model::category::TAXONOMY.len() as u64;
    assert_eq!(report["cells"].as_u64(), Some(3 * taxonomy), "{report}");
    // NP03 answered at both its places; NP05 at the lock-smith's township only
    assert_eq!(report["covered"].as_u64(), Some(3), "{report}");
    assert_eq!(report["fall_back"].as_u64(), Some(1), "{report}");
    assert_eq!(report["no_unit"].as_u64(), Some(3 * taxonomy - 4), "{report}");
    let output = liandong(&["route", "--config", config, "--coverage", "3302"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--coverage"));

    // reconcile against an empty store: everything the endpoint claims is unknown here
    let view = write("view.jsonl", "{\"reference\": \"LZ1\", \"state\": \"accepted\"}\n");
    let report = stdout_json(&liandong(&[
        "reconcile",
        "--config",
        config,
        "--endpoint",
        "330200/110",
        &view,
        "--json",
    ]));
    assert_eq!(report["differences"][0]["kind"], "unknown_here");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `formats.md`: jjd-json's `MBQH` is six digits; `convert` refuses a township's nine.
#[test]
fn convert_refuses_a_nine_digit_mbqh() {
    let document = std::fs::read_to_string(sample("jjd-json/transfer-ningbo-township.json"))
        .unwrap()
        .replace(r#""MBQH": "330203""#, r#""MBQH": "330203101""#);
    let output = liandong_with_input(
        &["convert", "--from", "330200/110", "--kind", "transfer"],
        document.as_bytes(),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "MBQH: expected a six-digit region code, got \"330203101\""
    );
}

/// Operator tools that do not lie: `init` does not replace a site without `--force` and lists
/// every identity it wrote; `audit verify` and `deliveries list` refuse a store that is not
/// there instead of making an empty one and calling it intact; replaying a dead letter that
/// does not exist exits non-zero.
#[tokio::test]
async fn operator_tools_refuse_what_they_cannot_do() {
    let dir = std::env::temp_dir().join(format!("liandong-cli-tools-{}", ulid::Ulid::new()));
    let site = dir.join("site");
    let at = site.to_str().unwrap();
    let first = liandong(&["init", at, "--json"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let manifest: Value = serde_json::from_slice(&first.stdout).unwrap();
    for identity in ["operator/ops", "agency/demo", "330200/110"] {
        assert!(manifest["identities"][identity]["cert"].is_string(), "{identity} in {manifest}");
    }
    let root = std::fs::read(site.join("ca.pem")).unwrap();
    let again = liandong(&["init", at]);
    assert_eq!(again.status.code(), Some(2));
    let text = String::from_utf8_lossy(&again.stderr);
    assert!(text.contains("a site is already here") && text.contains("--force"), "{text}");
    assert_eq!(std::fs::read(site.join("ca.pem")).unwrap(), root, "nothing was replaced");
    let forced = liandong(&["init", at, "--force"]);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    assert!(String::from_utf8_lossy(&forced.stdout).contains("operator/ops, agency/demo, "));
    assert_ne!(std::fs::read(site.join("ca.pem")).unwrap(), root, "--force makes a new CA");

    let config = site.join("liandong.toml");
    let config = config.to_str().unwrap();
    for command in [
        vec!["audit", "verify", "--config", config],
        vec!["deliveries", "list", "--config", config],
    ] {
        let output = liandong(&command);
        assert_eq!(output.status.code(), Some(1), "{command:?}");
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(text.contains("no database at"), "{text}");
    }
    assert!(!site.join("liandong.db").exists(), "no empty database was made");

    let store = liandong::store::Store::sqlite(&site.join("liandong.db")).await.unwrap();
    let replay = liandong(&["deliveries", "replay", "--config", config, "999"]);
    assert_eq!(replay.status.code(), Some(1));
    let text = String::from_utf8_lossy(&replay.stderr);
    assert!(text.contains("999: ") && text.contains("1 of 1 not replayed"), "{text}");
    assert!(liandong(&["audit", "verify", "--config", config]).status.success());

    // three dead letters to Ningbo 12345: listed with when they were queued, replayed in bulk
    let engine = common::stores::engine(store.clone());
    let police: liandong::model::EndpointId = "330200/110".parse().unwrap();
    for n in 1..=3 {
        engine
            .submit(&police, common::stores::ningbo_request(&format!("LZ-DEAD-{n}")))
            .await
            .unwrap();
    }
    let now = liandong::store::now_millis();
    for item in store.due(now, "330200/12345", 10, &[]).await.unwrap() {
        let error = "HTTP 500".to_string();
        let dead = liandong::store::Write::Failed {
            item_id: item.id,
            at: now / 1000,
            error,
            next_attempt_at: now,
            dead: true,
            undeliverable: None,
        };
        store.write(dead).await.unwrap();
    }
    let listed: Value = serde_json::from_slice(
        &liandong(&["deliveries", "list", "--config", config, "--json"]).stdout,
    )
    .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert!(
        listed[0]["created_at"].as_i64().unwrap() > 0 && listed[0]["last_error"] == "HTTP 500",
        "{listed}"
    );
    let table =
        String::from_utf8(liandong(&["deliveries", "list", "--config", config]).stdout).unwrap();
    assert!(table.contains("QUEUED (UTC+8)") && table.contains("HTTP 500"), "{table}");
    let none =
        liandong(&["deliveries", "replay", "--config", config, "--destination", "330200/110"]);
    assert!(String::from_utf8_lossy(&none.stdout)
        .contains("0 of 0 dead letters (to 330200/110) queued again"));
    let all =
        liandong(&["deliveries", "replay", "--config", config, "--destination", "330200/12345"]);
    assert!(all.status.success(), "{}", String::from_utf8_lossy(&all.stderr));
    assert!(String::from_utf8_lossy(&all.stdout)
        .contains("3 of 3 dead letters (to 330200/12345) queued again; 0 not replayed"));
    assert!(store.dead_letters(10).await.unwrap().is_empty());
    // each replay is audited with who did it: the login and the machine
    let transfer = listed[0]["transfer_id"].as_str().unwrap();
    let export = liandong(&["audit", "export", "--config", config, "--transfer", transfer]);
    let replayed: Vec<Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "delivery.replayed")
        .collect();
    assert_eq!(replayed.len(), 1, "{}", String::from_utf8_lossy(&export.stdout));
    let actor = replayed[0]["actor"].as_str().unwrap();
    assert!(actor.starts_with("cli:") && actor.contains('@'), "{actor}");
    assert_eq!(replayed[0]["detail"]["destination"], "330200/12345");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `text` with the first `from` replaced by `to`; `from` must be there (an edit that finds
/// nothing would test the unedited file).
fn edited(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in the configuration");
    text.replacen(from, to, 1)
}

/// `serve --check-config` refuses what `serve` would silently ignore or misreport: an endpoint
/// id the registry does not have, a body budget no body fits in, and a key that does not belong
/// to its certificate (naming both files).
#[test]
fn check_config_names_an_unknown_endpoint_and_a_mismatched_key() {
    let dir = std::env::temp_dir().join(format!("liandong-cli-check-{}", ulid::Ulid::new()));
    let site = dir.join("site");
    assert!(liandong(&["init", site.to_str().unwrap()]).status.success());
    let config = site.join("liandong.toml");
    let check = || liandong(&["serve", "--check-config", config.to_str().unwrap()]);
    assert!(check().status.success());
    let text = std::fs::read_to_string(&config).unwrap();

    std::fs::write(&config, edited(&text, "id = \"330200/12345\"", "id = \"990000/110\"")).unwrap();
    let output = check();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[[endpoint]] id = \"990000/110\": not an endpoint of the registry"),
        "{stderr}"
    );

    // sub-second durations are taken where they are kept as such…
    let finer = edited(
        &edited(&text, "unreachable_after = \"2m\"", "unreachable_after = \"500ms\""),
        "dead_after = \"24h\"",
        "dead_after = \"1500ms\"",
    );
    std::fs::write(&config, finer).unwrap();
    assert!(check().status.success(), "{}", String::from_utf8_lossy(&check().stderr));
    // …and a deadline rule finer than a second is refused, naming it
    std::fs::write(
        &config,
        edited(
            &text,
            "id = \"330200/12345\"\n",
            "id = \"330200/12345\"\nreceive_within = \"1500ms\"\n",
        ),
    )
    .unwrap();
    let output = check();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("receive_within: expected whole seconds"), "{stderr}");

    std::fs::write(
        &config,
        edited(&text, "[listen]\n", "[listen]\nbody_budget_per_identity = 1000\n"),
    )
    .unwrap();
    let output = check();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("listen.body_budget_per_identity: expected at least 1048576 bytes"),
        "{stderr}"
    );

    std::fs::write(&config, &text).unwrap();
    std::fs::copy(site.join("gateway-key.pem"), site.join("server-key.pem")).unwrap();
    let output = check();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("server-key.pem: this key does not belong to the certificate in"),
        "{stderr}"
    );
    assert!(!stderr.contains("tls: tls:"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The site `init` writes states the defaults, not a copy of them that could drift: its
/// delivery settings read back as `Delivery::default()`.
#[test]
fn init_writes_the_defaults_themselves() {
    let dir = std::env::temp_dir().join(format!("liandong-cli-defaults-{}", ulid::Ulid::new()));
    assert!(liandong(&["init", dir.to_str().unwrap()]).status.success());
    let config = liandong::config::Config::load(&dir.join("liandong.toml")).unwrap();
    let defaults = liandong::config::Delivery::default();
    assert_eq!(format!("{:?}", config.delivery), format!("{defaults:?}"));
    let _ = std::fs::remove_dir_all(&dir);
}
