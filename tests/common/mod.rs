//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod browser;
pub mod crash;
pub mod net;
pub mod stores;

use serde_json::Value;

/// Runs the `liandong` binary with `args`, as an operator would (no profile folder or CA
/// passphrase from the environment), and nothing on its standard input.
pub fn liandong(args: &[&str]) -> std::process::Output {
    liandong_with_input(args, &[])
}

/// [`liandong`], with `stdin` on its standard input.
pub fn liandong_with_input(args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_liandong"))
        .args(args)
        .env_remove("LIANDONG_PROFILES")
        .env_remove("LIANDONG_CA_PASSPHRASE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// Compares `actual` with the snapshot `tests/snapshots/NAME.txt`; with `UPDATE_SNAPSHOTS=1`
/// writes it instead. A missing snapshot fails (it is committed with the test).
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (UPDATE_SNAPSHOTS=1 writes it)
actual:\n{actual}",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "{name}: the answer differs from {}\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}

/// Compares canonical JSON: equal values, except numbers under a `point` within 2e-6
/// (samples/README.md: an inverse iterated to 1e-6 may differ in the sixth decimal).
pub fn assert_canonical_eq(actual: &Value, expected: &Value, at: &str) {
    if let Err(problem) = canonical_diff(actual, expected, at) {
        panic!("{problem}\nactual:   {actual}\nexpected: {expected}");
    }
}

/// The first difference between two canonical values, if any.
pub fn canonical_diff(actual: &Value, expected: &Value, at: &str) -> Result<(), String> {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            let mut keys_a: Vec<_> = a.keys().collect();
            let mut keys_e: Vec<_> = e.keys().collect();
            keys_a.sort();
            keys_e.sort();
            if keys_a != keys_e {
                return Err(format!("keys differ at {at}: {keys_a:?} vs {keys_e:?}"));
            }
            for (k, v) in e {
                canonical_diff(&a[k], v, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(e)) => {
            if a.len() != e.len() {
                return Err(format!("lengths differ at {at}"));
            }
            for (i, (x, y)) in a.iter().zip(e).enumerate() {
                canonical_diff(x, y, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Number(a), Value::Number(e)) if at.contains(".point.") => {
            let (a, e) = (a.as_f64().unwrap_or(f64::NAN), e.as_f64().unwrap_or(f64::NAN));
            if (a - e).abs() <= 2e-6 {
                Ok(())
            } else {
                Err(format!("{at}: {a} vs {e}"))
            }
        }
        (a, e) if a == e => Ok(()),
        (a, e) => Err(format!("values differ at {at}: {a} vs {e}")),
    }
}
