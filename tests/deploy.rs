//! deploy/: what an operator installs, checked as the tools that read it would: the systemd
//! unit by `systemd-analyze verify` and its command line by `runway-worker` itself, the
//! Prometheus files by `promtool` and against the metrics a real runner exports.

use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

use crate::support::scrape::{metrics_addr, scrape_until};
use crate::support::{Namespace, binary};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

/// Whether `tool` is on the PATH; says so when it is not.
fn have(tool: &str) -> bool {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|out| out.status.success());
    if !found {
        println!("note: {tool} is not installed here: skipping the check it would make");
    }
    found
}

/// The unit's `Key=value` settings of section `[section]`.
fn settings(unit: &str, section: &str) -> Vec<(String, String)> {
    let mut current = String::new();
    let mut found = Vec::new();
    for line in unit.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
        if let Some(name) = line.strip_prefix('[').and_then(|line| line.strip_suffix(']')) {
            current = name.to_owned();
        } else if current == section
            && let Some((key, value)) = line.split_once('=')
        {
            found.push((key.to_owned(), value.to_owned()));
        }
    }
    found
}

#[test]
fn the_systemd_unit_is_hardened_and_passes_systemd_analyze_verify() {
    let unit = read(&deploy("runway-worker.service"));
    let service = settings(&unit, "Service");
    let get = |key: &str| service.iter().find(|(k, _)| k == key).map(|(_, value)| value.as_str());
    assert_eq!(get("User"), Some("runway"), "its own user");
    assert_eq!(get("NoNewPrivileges"), Some("yes"));
    assert_eq!(get("ProtectSystem"), Some("strict"), "a read-only system");
    assert_eq!(get("ProtectHome"), Some("yes"));
    assert_eq!(get("PrivateTmp"), Some("yes"));
    assert_eq!(get("CapabilityBoundingSet"), Some(""), "no capabilities");
    assert_eq!(get("KillSignal"), Some("SIGTERM"), "SIGTERM drains");
    assert!(get("StateDirectory").is_some(), "a writable place for jobs under ProtectSystem=strict");
    let exec = get("ExecStart").expect("an ExecStart");
    assert!(exec.contains("--metrics-addr 127.0.0.1:"), "metrics on loopback: {exec}");
    assert!(service.iter().all(|(_, value)| !value.contains("://")), "the broker URL lives in the EnvironmentFile");

    // systemd checks that the command exists: point it at the built binary.
    let dir = tempfile::tempdir().expect("temp dir");
    let worker = binary("runway-worker");
    let copy = dir.path().join("runway-worker.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/runway-worker", &worker.display().to_string())).expect("write");
    if have("systemd-analyze") {
        let out = Command::new("systemd-analyze").arg("verify").arg(&copy).output().expect("run systemd-analyze");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "systemd-analyze verify failed: {said}");
        // Unknown keys and bad values are warnings with exit 0: none may be about this unit.
        let about: Vec<&str> = said.lines().filter(|line| line.contains("runway-worker.service")).collect();
        assert!(about.is_empty(), "systemd-analyze verify: {about:?}");
    }

    // The worker takes the unit's command line (exit 69: flags fine, no broker at port 1).
    let flags: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .map(|flag| if flag.starts_with("127.0.0.1:") { "127.0.0.1:0".to_owned() } else { flag.to_owned() })
        .collect();
    let out = Command::new(&worker)
        .args(&flags)
        .args(["--server", "amqp://127.0.0.1:1/%2f"])
        .output()
        .expect("run runway-worker");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "the unit's flags: {said}");
}

fn yaml(file: &str) -> Yaml {
    let text = read(&deploy(file));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|err| panic!("deploy/{file} is not YAML: {err}"));
    assert_eq!(docs.len(), 1, "deploy/{file} is one document");
    docs.remove(0)
}

/// The metric names an expression refers to: the words of it that start with `runway_`.
fn runway_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("runway_"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_prometheus_files_check_and_name_only_metrics_the_worker_exports() {
    if have("promtool") {
        let dir = deploy("prometheus");
        for (what, file) in [("config", "prometheus.yml"), ("rules", "runway-alerts.yml")] {
            let out =
                Command::new("promtool").args(["check", what, file]).current_dir(&dir).output().expect("promtool");
            let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "promtool check {what} {file}: {said}");
        }
    }

    // Read as Prometheus would: the scrape job, the rules file it loads, each rule's parts.
    let config = yaml("prometheus/prometheus.yml");
    assert_eq!(config["rule_files"][0].as_str(), Some("runway-alerts.yml"));
    let job = &config["scrape_configs"][0];
    assert_eq!(job["job_name"].as_str(), Some("runway-worker"));
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    let rules = yaml("prometheus/runway-alerts.yml");
    let rules = rules["groups"][0]["rules"].as_vec().expect("a group of rules");
    let mut alerts = Vec::new();
    let mut referenced = Vec::new();
    for rule in rules {
        let alert = rule["alert"].as_str().expect("every rule is an alert");
        let expr = rule["expr"].as_str().unwrap_or_else(|| panic!("{alert} has an expr"));
        assert!(rule["annotations"]["summary"].as_str().is_some(), "{alert} has a summary");
        assert!(rule["labels"]["severity"].as_str().is_some(), "{alert} has a severity");
        if alert == "RunwayRunnerDown" {
            assert!(expr.contains("up{job=\"runway-worker\"}"), "runner down is the failed scrape: {expr}");
        }
        referenced.extend(runway_names(expr).into_iter().map(|name| (alert.to_owned(), name)));
        alerts.push(alert.to_owned());
    }
    for wanted in ["RunwayRunnerDown", "RunwayJobsWaitingTooLong", "RunwayDeadLettersGrowing"] {
        assert!(alerts.iter().any(|alert| alert == wanted), "{wanted} in {alerts:?}");
    }

    // Every runway_ name the rules use is one a real runner exports (once it has run a job and
    // dead-lettered a message, so that every labelled series exists).
    let ns = Namespace::new().await;
    let worker = ns.worker("w-deploy", &["--metrics-addr", "127.0.0.1:0"]).await;
    let addr = metrics_addr(&worker);
    let project = crate::support::Project::new("[operations.ok]\nrun = \"echo ok\"\n");
    project.runway(&crate::support::args(&ns.flags(), &["--quiet", "run", "ok", "--remote"])).await.assert_code(0);
    let mut poison = runway_broker::Message::json(b"not a job".to_vec(), "job");
    poison.properties.persistent = true;
    let queue = ns.topology.job_queue(&runway_broker::protocol::Target::Any);
    ns.conn().publish_confirmed("", &queue, &poison, true).await.expect("publish a poison message");
    let scrape =
        scrape_until(&addr, "a dead letter", |scrape| scrape.value("runway_dead_letters_total", &[]).is_some()).await;
    let exported = scrape.sample_names();
    for (alert, name) in &referenced {
        assert!(exported.contains(name), "{alert} uses {name}, which the worker does not export: {exported:?}");
    }
    assert!(!referenced.is_empty());
    assert!(scrape.families().iter().all(|family| family.starts_with("runway_")), "{:?}", scrape.families());
    ns.cleanup().await;
}
