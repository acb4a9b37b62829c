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

/// The samples of a Prometheus query answer (`/api/v1/query`), as (labels, value).
fn query_result(body: &str) -> Vec<(serde_json::Value, String)> {
    let answer: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|err| panic!("{err}: {body}"));
    answer["data"]["result"]
        .as_array()
        .map(|samples| {
            samples
                .iter()
                .map(|sample| (sample["metric"].clone(), sample["value"][1].as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_real_prometheus_with_the_example_config_scrapes_a_worker_and_evaluates_every_alert() {
    if !have("prometheus") {
        return;
    }
    let ns = Namespace::new().await;
    let worker = ns.worker("w-prometheus", &["--metrics-addr", "127.0.0.1:0"]).await;
    let addr = metrics_addr(&worker);
    let project = crate::support::Project::new("[operations.ok]\nrun = \"echo ok\"\n");
    project.runway(&crate::support::args(&ns.flags(), &["--quiet", "run", "ok", "--remote"])).await.assert_code(0);

    // deploy/'s files, pointed at this worker and evaluated every second.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = read(&deploy("prometheus/prometheus.yml"))
        .replace("127.0.0.1:9464", &addr)
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("write the config");
    std::fs::copy(deploy("prometheus/runway-alerts.yml"), dir.path().join("runway-alerts.yml"))
        .expect("copy the rules");
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|free| free.local_addr()).expect("a free port").port();
    let web = format!("127.0.0.1:{port}");
    let _prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");
    let ready = get_until_up(&web, "/-/ready").await;
    assert_eq!(ready.status, 200, "{ready:?}");

    // It scraped the worker: the target is up, and the job it ran is there by its labels.
    crate::support::scrape::get_until(&web, "/api/v1/query?query=runway_jobs_completed_total", "the job", |answer| {
        query_result(&answer.body).iter().any(|(labels, value)| {
            labels["job"] == "runway-worker"
                && labels["operation"] == "ok"
                && labels["status"] == "success"
                && value == "1"
        })
    })
    .await;
    let up = crate::support::scrape::get(&web, "/api/v1/query?query=up").await;
    assert!(
        query_result(&up.body).iter().any(|(labels, value)| labels["job"] == "runway-worker" && value == "1"),
        "{up:?}"
    );

    // Every alert rule was evaluated against the worker's series without an error.
    let rules = crate::support::scrape::get_until(&web, "/api/v1/rules", "every rule evaluated", |answer| {
        let rules: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
        let rules = rules["data"]["groups"][0]["rules"].as_array().cloned().unwrap_or_default();
        !rules.is_empty() && rules.iter().all(|rule| rule["health"] != "unknown")
    })
    .await;
    let rules: serde_json::Value = serde_json::from_str(&rules.body).expect("JSON");
    for rule in rules["data"]["groups"][0]["rules"].as_array().expect("rules") {
        assert_eq!(rule["health"], "ok", "{rule}");
        // A healthy worker fires nothing (RunwayRunnerDown would fire after 2 minutes of `up == 0`).
        assert_eq!(rule["state"], "inactive", "{rule}");
    }
    ns.cleanup().await;
}

/// `GET path` until the server answers at all (it is starting).
async fn get_until_up(addr: &str, path: &str) -> crate::support::scrape::Answer {
    tokio::time::timeout(crate::support::PATIENCE, async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let answer = crate::support::scrape::get(addr, path).await;
                if answer.status == 200 {
                    return answer;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{addr}{path} never answered"))
}
