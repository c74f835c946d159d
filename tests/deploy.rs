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
        .map(|document| serde_yaml::Value::deserialize(document).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

use serde::Deserialize;

#[test]
fn the_example_configuration_passes_check_config() {
    let site = std::env::temp_dir().join(format!("liandong-deploy-{}", ulid::Ulid::new()));
    let init = Command::new(env!("CARGO_BIN_EXE_liandong")).args(["init"]).arg(&site).output().unwrap();
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
    let check = Command::new(env!("CARGO_BIN_EXE_liandong")).args(["serve", "--check-config"]).arg(&config).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // and every key of it is documented in docs/CONFIG.md
    let text = std::fs::read_to_string(deploy("liandong.example.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let documented = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md")).unwrap();
    for (section, value) in &table {
        if let toml::Value::Table(keys) = value {
            for key in keys.keys() {
                let dotted = format!("{section}.{key}");
                if section != "limits" {
                    assert!(documented.contains(&format!("`{dotted}`")), "docs/CONFIG.md does not describe {dotted}");
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
                assert_eq!(container["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
                let volumes = serde_yaml::to_string(&spec["template"]["spec"]["volumes"]).unwrap();
                assert!(volumes.contains("secretName: liandong-tls"), "{volumes}");
            }
            if doc["kind"] == "ConfigMap" {
                // the configuration inside is valid TOML the gateway's parser takes
                let text = doc["data"]["liandong.toml"].as_str().unwrap();
                let parsed = liandong::config::Config::parse("configmap", text);
                assert!(
                    parsed.is_ok() || parsed.as_ref().err().is_some_and(|e| e.to_string().contains("no such file")),
                    "{parsed:?}"
                );
            }
        }
    }
    for kind in ["Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    let compose = &yaml("compose.yaml")[0];
    let services = compose["services"].as_mapping().unwrap();
    assert_eq!(services.len(), 3, "two gateways and PostgreSQL");
}

#[test]
fn prometheus_scrapes_and_alerts_on_what_the_gateway_exports() {
    let config = &yaml("prometheus/prometheus.yml")[0];
    assert_eq!(config["scrape_configs"][0]["metrics_path"], "/metrics");
    let rules = &yaml("prometheus/alerts.yml")[0]["groups"][0]["rules"];
    let names: Vec<&str> = rules.as_sequence().unwrap().iter().map(|r| r["alert"].as_str().unwrap()).collect();
    for wanted in ["DeliveryBacklog", "DeadLetters", "OverdueTransfers", "EndpointUnreachable", "CertificateExpiresSoon"] {
        assert!(names.iter().any(|n| n.ends_with(wanted)), "no alert for {wanted}: {names:?}");
    }
    // every metric an alert uses is one the gateway writes
    let sources = ["src/metrics.rs", "src/security/reload.rs"]
        .map(|f| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(f)).unwrap())
        .join("\n");
    for rule in rules.as_sequence().unwrap() {
        let expr = rule["expr"].as_str().unwrap();
        for metric in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("liandong_")) {
            assert!(sources.contains(metric), "alert {} uses {metric}, which nothing exports", rule["alert"].as_str().unwrap());
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
            assert!(line.contains('=') && !section.is_empty(), "not KEY=value in a section: {line}");
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
    for line in dockerfile.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("&&")) {
        let instruction = line.split_whitespace().next().unwrap();
        assert!(
            ["FROM", "WORKDIR", "COPY", "RUN", "USER", "EXPOSE", "ENTRYPOINT", "CMD"].contains(&instruction),
            "unknown Dockerfile instruction: {line}"
        );
    }
    assert!(dockerfile.contains("USER 10001"), "runs unprivileged");
}
