//! The deployment kit parses, says what it should, and its example configuration is one the
//! gateway accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

fn yaml(file: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(deploy(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            serde_yaml::Value::deserialize(document).unwrap_or_else(|e| panic!("{file}: {e}"))
        })
        .collect()
}

use serde::Deserialize;

/// The shipped Grafana dashboard.
fn dashboard() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(deploy("grafana/liandong.json")).unwrap())
        .unwrap()
}

/// The names in a PromQL expression (metrics, functions, labels), in order.
fn words(expr: &str) -> impl Iterator<Item = &str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty())
}

#[test]
fn the_example_configuration_passes_check_config() {
    let site = std::env::temp_dir().join(format!("liandong-deploy-{}", ulid::Ulid::new()));
    let init =
        Command::new(env!("CARGO_BIN_EXE_liandong")).args(["init"]).arg(&site).output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    // The example names its files under tls/; put the site's there.
    std::fs::create_dir_all(site.join("tls")).unwrap();
    for (from, to) in [
        ("ca.pem", "ca.pem"),
        ("server.pem", "server.pem"),
        ("server-key.pem", "server-key.pem"),
        ("gateway.pem", "gateway.pem"),
        ("gateway-key.pem", "gateway-key.pem"),
        ("ca/crl.pem", "crl.pem"),
    ] {
        std::fs::copy(site.join(from), site.join("tls").join(to)).unwrap();
    }
    let config = site.join("production.toml");
    std::fs::copy(deploy("liandong.example.toml"), &config).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_liandong"))
        .args(["serve", "--check-config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // and every key of it is documented in docs/CONFIG.md
    let text = std::fs::read_to_string(deploy("liandong.example.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let documented =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md"))
            .unwrap();
    for (section, value) in &table {
        if let toml::Value::Table(keys) = value {
            for key in keys.keys() {
                let dotted = format!("{section}.{key}");
                if section != "limits" {
                    assert!(
                        documented.contains(&format!("`{dotted}`")),
                        "docs/CONFIG.md does not describe {dotted}"
                    );
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&site);
}

#[test]
fn the_kubernetes_manifests_make_two_probed_replicas_with_mounted_certificates() {
    let mut kinds = Vec::new();
    for file in [
        "kubernetes/deployment.yaml",
        "kubernetes/service.yaml",
        "kubernetes/pdb.yaml",
        "kubernetes/configmap.yaml",
        "kubernetes/secret.example.yaml",
    ] {
        for doc in yaml(file) {
            kinds.push(doc["kind"].as_str().unwrap().to_string());
            if doc["kind"] == "Deployment" {
                let spec = &doc["spec"];
                assert_eq!(spec["replicas"].as_u64(), Some(2));
                let container = &spec["template"]["spec"]["containers"][0];
                assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
                assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
                assert_eq!(
                    container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
                    Some(true)
                );
                let volumes = serde_yaml::to_string(&spec["template"]["spec"]["volumes"]).unwrap();
                assert!(volumes.contains("secretName: liandong-tls"), "{volumes}");
            }
            if doc["kind"] == "ConfigMap" {
                // the configuration inside is valid TOML the gateway's parser takes
                let text = doc["data"]["liandong.toml"].as_str().unwrap();
                let parsed = liandong::config::Config::parse("configmap", text);
                assert!(
                    parsed.is_ok()
                        || parsed
                            .as_ref()
                            .err()
                            .is_some_and(|e| e.to_string().contains("no such file")),
                    "{parsed:?}"
                );
            }
        }
    }
    for kind in ["Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
}

/// The compose stack as CI can try it without Docker: the `site` service's copy runs (as root,
/// with its paths moved to a temporary folder), leaving what the gateways need owned by the
/// image's user, 0600, and nothing of the CA's keys; the gateway's own configuration check then
/// passes as that user (setpriv), with the stack's environment and the image's command line.
#[cfg(unix)]
#[test]
fn the_compose_stack_gives_the_image_user_its_files_and_nothing_more() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let compose = &yaml("compose.yaml")[0];
    let services = compose["services"].as_mapping().unwrap();
    assert_eq!(services.len(), 4, "PostgreSQL, the site copy and two gateways");
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    let uid: u32 =
        dockerfile.lines().find_map(|l| l.strip_prefix("USER ")).unwrap().trim().parse().unwrap();
    let site_service = &compose["services"]["site"];
    assert_eq!(site_service["user"], "0");
    let mut replicas = Vec::new();
    for gateway in ["gateway-a", "gateway-b"] {
        let service = &compose["services"][gateway];
        assert_eq!(
            service["depends_on"]["site"]["condition"], "service_completed_successfully",
            "{gateway}"
        );
        assert_eq!(service["volumes"][0], "gateway-files:/etc/liandong:ro", "{gateway}");
        replicas.push(service["environment"]["LIANDONG_REPLICA"].as_str().unwrap().to_string());
    }
    assert_ne!(replicas[0], replicas[1], "each replica its own audit chain");

    let root = std::env::temp_dir().join(format!("liandong-compose-{}", ulid::Ulid::new()));
    let (site, files) = (root.join("site"), root.join("etc-liandong"));
    let init = Command::new(env!("CARGO_BIN_EXE_liandong"))
        .args([
            "init",
            site.to_str().unwrap(),
            "--listen",
            "0.0.0.0:8443",
            "--admin",
            "0.0.0.0:9090",
        ])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    // compose writes `$$` for a shell's `$`
    let script = site_service["command"][0].as_str().unwrap().replace("$$", "$");
    let script = script
        .replace("/etc/liandong", files.to_str().unwrap())
        .replace("/site", site.to_str().unwrap());
    let copy = Command::new("/bin/sh").args(["-c", &script]).output().unwrap();
    if !copy.status.success() && not_root() {
        panic!(
            "this test copies files to uid {uid} and needs root, as CI has: {}",
            String::from_utf8_lossy(&copy.stderr)
        );
    }
    assert!(copy.status.success(), "{}", String::from_utf8_lossy(&copy.stderr));
    for file in ["liandong.toml", "ca.pem", "server-key.pem", "gateway-key.pem", "ca/crl.pem"] {
        let meta = std::fs::metadata(files.join(file)).unwrap();
        assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (uid, 0o600), "{file}");
    }
    assert!(!files.join("identities").exists(), "the desks' keys stay out of the gateway");
    let ca_files: Vec<String> = std::fs::read_dir(files.join("ca"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ca_files, ["crl.pem"], "of the CA, only its CRL");

    // the image's command line, checked as the image's user with the stack's environment
    let command: Vec<String> = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .map(|json| serde_json::from_str(json).unwrap())
        .unwrap();
    assert_eq!(command[..3], ["serve", "--config", "/etc/liandong/liandong.toml"]);
    let config = files.join("liandong.toml");
    let mut args: Vec<String> = vec![
        "--reuid".into(),
        uid.to_string(),
        "--regid".into(),
        uid.to_string(),
        "--clear-groups".into(),
    ];
    args.push(env!("CARGO_BIN_EXE_liandong").into());
    args.extend(command[..1].iter().cloned());
    args.extend(command[3..].iter().cloned());
    args.extend(["--check-config".to_string(), config.to_str().unwrap().to_string()]);
    let environment = &compose["services"]["gateway-a"]["environment"];
    let mut check = Command::new("setpriv");
    check.args(&args);
    for (key, value) in environment.as_mapping().unwrap() {
        check.env(key.as_str().unwrap(), value.as_str().unwrap());
    }
    let checked = check.output().unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // and another user cannot read a key (though it can read what is public)
    let as_nobody = |file: &Path| {
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "cat"])
            .arg(file)
            .output()
            .unwrap()
    };
    assert!(as_nobody(&site.join("ca.pem")).status.success(), "setpriv runs as another user");
    assert!(
        !as_nobody(&files.join("server-key.pem")).status.success(),
        "the key is readable by another user"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Whether this process runs without root (then the copy's chown cannot work).
fn not_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() != "0")
        .unwrap_or(true)
}

#[test]
fn the_docker_build_context_leaves_out_build_output_and_keys() {
    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore"))
            .unwrap();
    let lines: Vec<&str> = ignore.lines().map(str::trim).collect();
    for pattern in ["target/", ".git/", "site/", "deploy/site/", "**/*-key.pem", "**/*.db"] {
        assert!(lines.contains(&pattern), ".dockerignore lacks {pattern}");
    }
    let unit = std::fs::read_to_string(deploy("liandong.service")).unwrap();
    let active: Vec<&str> = unit.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    assert!(
        !active.iter().any(|l| l.contains("CAP_NET_BIND_SERVICE")),
        "the unit listens above 1024: no capability needed"
    );
}

#[test]
fn prometheus_scrapes_and_alerts_on_what_the_gateway_exports() {
    let config = &yaml("prometheus/prometheus.yml")[0];
    assert_eq!(config["scrape_configs"][0]["metrics_path"], "/metrics");
    let rules = &yaml("prometheus/alerts.yml")[0]["groups"][0]["rules"];
    let names: Vec<&str> =
        rules.as_sequence().unwrap().iter().map(|r| r["alert"].as_str().unwrap()).collect();
    for wanted in [
        "DeliveryBacklog",
        "DeadLetters",
        "OverdueTransfers",
        "EndpointUnreachable",
        "CertificateExpiresSoon",
    ] {
        assert!(names.iter().any(|n| n.ends_with(wanted)), "no alert for {wanted}: {names:?}");
    }
    // every metric an alert uses is one the gateway writes
    let sources = ["src/metrics.rs", "src/security/reload.rs"]
        .map(|f| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(f)).unwrap())
        .join("\n");
    for rule in rules.as_sequence().unwrap() {
        let expr = rule["expr"].as_str().unwrap();
        for metric in words(expr).filter(|w| w.starts_with("liandong_")) {
            assert!(
                sources.contains(metric),
                "alert {} uses {metric}, which nothing exports",
                rule["alert"].as_str().unwrap()
            );
        }
    }
}

#[test]
fn the_systemd_unit_is_hardened_and_the_dockerfile_builds_in_stages() {
    let unit = std::fs::read_to_string(deploy("liandong.service")).unwrap();
    let mut section = String::new();
    for line in unit.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if line.starts_with('[') {
            assert!(["[Unit]", "[Service]", "[Install]"].contains(&line), "unknown section {line}");
            section = line.to_string();
        } else {
            assert!(
                line.contains('=') && !section.is_empty(),
                "not KEY=value in a section: {line}"
            );
        }
    }
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "MemoryDenyWriteExecute=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(hardening), "the unit lacks {hardening}");
    }
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    let stages = dockerfile.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(stages, 2, "a build stage and a runtime stage");
    for line in dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("&&"))
    {
        let instruction = line.split_whitespace().next().unwrap();
        assert!(
            ["FROM", "WORKDIR", "COPY", "RUN", "USER", "EXPOSE", "ENTRYPOINT", "CMD"]
                .contains(&instruction),
            "unknown Dockerfile instruction: {line}"
        );
    }
    assert!(dockerfile.contains("USER 10001"), "runs unprivileged");
}

/// The Grafana dashboard parses, and every metric a panel draws is one the gateway writes.
#[test]
fn the_grafana_dashboard_draws_only_what_the_gateway_exports() {
    let dashboard = dashboard();
    let sources = ["src/metrics.rs", "src/security/reload.rs"]
        .map(|f| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(f)).unwrap())
        .join("\n");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for metric in words(expr).filter(|w| w.starts_with("liandong_")) {
                let base = metric.trim_end_matches("_bucket");
                assert!(
                    sources.contains(base),
                    "panel {} uses {metric}, which nothing exports",
                    panel["title"]
                );
            }
        }
    }
}

/// The gauges each replica reads from the shared store (`metrics::StoreGauges`: the transfers by
/// state, the outbox, the unreachable endpoints) say the same thing on every replica: a panel or
/// an alert that summed them over the replicas would count each transfer once per replica. Each
/// is taken with `max` (or `min`) over the replicas before anything is summed.
#[test]
fn the_store_wide_gauges_are_never_summed_over_replicas() {
    const STORE_WIDE: [&str; 4] = [
        "liandong_transfers",
        "liandong_outbox",
        "liandong_outbox_oldest_seconds",
        "liandong_endpoint_unreachable",
    ];
    let mut exprs: Vec<String> = dashboard()["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().clone())
        .map(|target| target["expr"].as_str().unwrap().to_string())
        .collect();
    let rules = &yaml("prometheus/alerts.yml")[0]["groups"][0]["rules"];
    exprs.extend(rules.as_sequence().unwrap().iter().map(|r| r["expr"].as_str().unwrap().into()));
    let mut checked = 0;
    for expr in &exprs {
        let words: Vec<&str> = words(expr).collect();
        for (at, word) in words.iter().enumerate() {
            if !STORE_WIDE.contains(word) {
                continue;
            }
            // the aggregation nearest the gauge is the one applied over the replicas first
            let nearest = words[..at]
                .iter()
                .rev()
                .find(|w| ["sum", "max", "min", "avg", "count"].contains(w));
            assert!(
                matches!(nearest.copied(), Some("max" | "min")),
                "{word} is aggregated over the replicas with {nearest:?} in {expr}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} uses of the store-wide gauges found");
}
