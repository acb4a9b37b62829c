//! A job's environment and secrets end to end: what of the runner's environment a job sees
//! (daemon, CLI runner and local mode), secrets named by the job and resolved by the runner,
//! a job rejected for a secret its runner lacks, and masking in what the history keeps.

use std::os::unix::fs::PermissionsExt;

use crate::support::{Namespace, Project, args, binary, op};

/// A password in the worker's connection setting, which no job may see.
const WORKER_URL_PASSWORD: &str = "w0rker-pa55word";

/// The variables a job printed with `env`, one `NAME=value` per line.
fn names(stdout: &str) -> Vec<&str> {
    stdout.lines().filter_map(|line| line.split_once('=').map(|(name, _)| name)).collect()
}

#[tokio::test]
async fn a_remote_job_sees_only_the_allow_list_and_what_the_operator_passes() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let url = format!("amqp://someone:{WORKER_URL_PASSWORD}@127.0.0.1:5672/%2f");
    let env = [("RUNWAY_SERVER", url.as_str()), ("FOO_SECRET", "foo-secret-value"), ("FOO", "passed-on-purpose")];
    let _worker = ns.worker_env("w-env", &["--pass-env", "FOO"], &env).await;
    let project = Project::new(&op("show", "env"));
    let run = project.runway(&args(&flags, &["--quiet", "run", "show", "--runner", "w-env"])).await;
    run.assert_code(0);
    let stdout = run.stdout();
    assert!(!stdout.contains(WORKER_URL_PASSWORD), "the worker's connection setting leaked:\n{stdout}");
    assert!(!stdout.contains("foo-secret-value"), "a variable nobody passed leaked:\n{stdout}");
    let names = names(&stdout);
    assert!(!names.contains(&"RUNWAY_SERVER") && !names.contains(&"FOO_SECRET"), "{names:?}");
    assert!(names.contains(&"PATH"), "{names:?}");
    assert!(stdout.lines().any(|line| line == "FOO=passed-on-purpose"), "{stdout}");
    assert!(names.contains(&"RUNWAY_JOB_ID") && names.contains(&"RUNWAY_OUTPUT"), "{names:?}");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_cli_runner_job_does_not_see_the_clis_connection_settings() {
    let ns = Namespace::new().await;
    let project = Project::new(&op("show", "env"));
    let url = crate::support::amqp_url();
    let env = [("RUNWAY_SERVER", url.as_str()), ("RUNWAY_NAMESPACE", ns.name.as_str()), ("DEV_TOOL_HOME", "/opt/t")];
    let run = project.runway_env(&["--quiet", "run", "show"], &env).await;
    run.assert_code(0);
    let stdout = run.stdout();
    assert!(!stdout.contains(&url), "the CLI's broker URL leaked:\n{stdout}");
    let names = names(&stdout);
    assert!(!names.iter().any(|name| *name == "RUNWAY_SERVER" || *name == "RUNWAY_NAMESPACE"), "{names:?}");
    assert!(names.contains(&"DEV_TOOL_HOME") && names.contains(&"PATH"), "the developer's variables: {names:?}");
    ns.cleanup().await;
}

#[tokio::test]
async fn the_worker_refuses_to_pass_its_connection_settings_and_a_secrets_file_others_can_read() {
    let refused = tokio::process::Command::new(binary("runway-worker"))
        .args(["--server", "amqp://127.0.0.1:1/%2f", "--pass-env", "RUNWAY_SERVER"])
        .output()
        .await
        .expect("run runway-worker");
    assert_eq!(refused.status.code(), Some(64), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--pass-env RUNWAY_SERVER"), "{refused:?}");

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("secrets");
    std::fs::write(&file, "DEPLOY_TOKEN=never-shown-1234\n").expect("write secrets");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let readable = tokio::process::Command::new(binary("runway-worker"))
        .args(["--server", "amqp://127.0.0.1:1/%2f", "--secrets-file"])
        .arg(&file)
        .output()
        .await
        .expect("run runway-worker");
    let stderr = String::from_utf8_lossy(&readable.stderr);
    assert_eq!(readable.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("is readable by others (mode 640)") && stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains("never-shown-1234"), "{stderr}");
}

#[tokio::test]
async fn a_job_naming_a_secret_its_runner_lacks_is_rejected_with_the_name_and_never_runs() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let _worker = ns.worker("w-nosecret", &[]).await;
    let marker = tempfile::tempdir().expect("temp dir");
    let ran = marker.path().join("ran");
    let toml = format!("[operations.deploy]\nrun = \"touch {}\"\nsecrets = [\"DEPLOY_TOKEN\"]\n", ran.display());
    let project = Project::new(&toml);
    let run = project.runway(&args(&flags, &["run", "deploy", "--remote", "--secret", "OTHER_TOKEN"])).await;
    run.assert_code(76);
    assert!(run.stderr.contains("rejected"), "{}", run.stderr);
    assert!(run.stderr.contains("`DEPLOY_TOKEN`, `OTHER_TOKEN`"), "both names are given: {}", run.stderr);
    assert!(!ran.exists(), "a job without its secrets ran");
    ns.cleanup().await;
}

#[tokio::test]
async fn secrets_from_the_runners_store_are_injected_and_masked_in_the_history() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("secrets");
    let token = "tok/en+from?the=file";
    std::fs::write(&file, format!("# deploy\nDEPLOY_TOKEN={token}\n")).expect("write secrets");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let password = "db-pa55word-from-env";
    let secrets_file = file.display().to_string();
    let worker_flags = ["--secrets-file", secrets_file.as_str(), "--secret-env", "DB_PASSWORD"];
    let worker = ns.worker_env("w-secrets", &worker_flags, &[("DB_PASSWORD", password)]).await;
    // The job writes what it got where the test can read it: the values must not be in its command.
    let got = dir.path().join("got");
    let script = format!(
        "printf '%s %s' \"$DEPLOY_TOKEN\" \"$DB_PASSWORD\" > {}; echo injected; \
         echo \"token=$DEPLOY_TOKEN db=$DB_PASSWORD\"; printf %s \"$DEPLOY_TOKEN\" | base64; \
         echo \"url=$(printf %s \"$DEPLOY_TOKEN\" | sed 's,/,%2F,;s,+,%2B,;s,?,%3F,;s,=,%3D,')\"; \
         v=$(printf 'run-%s-value' time); echo \"::add-mask::$v\"; echo later $v; \
         echo \"deployed=$DEPLOY_TOKEN\" >> \"$RUNWAY_OUTPUT\"",
        got.display()
    );
    let toml = format!("[operations.deploy]\nrun = {script:?}\nsecrets = [\"DEPLOY_TOKEN\"]\n");
    let project = Project::new(&toml);
    let run =
        project.runway(&args(&flags, &["run", "deploy", "--remote", "--secret", "DB_PASSWORD", "--detach"])).await;
    run.assert_code(0);
    let job = run.stdout().trim().to_owned();
    let logs = project.runway(&args(&flags, &["job", "logs", &job, "--follow"])).await;
    logs.assert_code(0);
    assert_eq!(
        logs.stdout(),
        "injected\ntoken=*** db=***\n***\nurl=***\n::add-mask::***\nlater ***\n",
        "the history keeps the masked lines"
    );
    assert_eq!(std::fs::read_to_string(&got).expect("the job wrote its secrets"), format!("{token} {password}"));
    let events = ns.completed_events(&job).await;
    let history = serde_json::to_string(&events).expect("events as JSON");
    // The run-time value is made by the job, so its command does not hold it.
    for value in [token, password, "run-time-value"] {
        assert!(!history.contains(value), "`{value}` is in the history: {history}");
    }
    assert!(history.contains(r#""deployed":"***""#), "outputs are masked too: {history}");
    let inspect = project.runway(&args(&flags, &["job", "inspect", &job])).await;
    assert!(inspect.stdout().contains("secrets    DEPLOY_TOKEN, DB_PASSWORD"), "{}", inspect.stdout());
    assert!(!worker.log().contains(token) && !worker.log().contains(password), "{}", worker.log());
    ns.cleanup().await;
}

#[tokio::test]
async fn local_mode_passes_the_developers_environment_but_the_connection_settings_and_masks_secrets() {
    let project = Project::new(
        "[operations.show]\nrun = \"env; echo \\\"t=$DEPLOY_TOKEN\\\"\"\nsecrets = [\"DEPLOY_TOKEN\"]\n\
         [operations.lacking]\nrun = \"echo ran\"\nsecrets = [\"NOT_SET_ANYWHERE_42\"]\n",
    );
    let env = [
        ("RUNWAY_SERVER", "local"),
        ("AMQP_URL", "amqp://u:local-pa55@127.0.0.1/%2f"),
        ("DEV_TOOL_HOME", "/opt/tool"),
        ("DEPLOY_TOKEN", "local-token-1234"),
    ];
    let run = project.runway_env(&["--quiet", "run", "show"], &env).await;
    run.assert_code(0);
    let stdout = run.stdout();
    assert!(!stdout.contains("local-pa55") && !stdout.contains("local-token-1234"), "{stdout}");
    let names = names(&stdout);
    assert!(!names.contains(&"RUNWAY_SERVER") && !names.contains(&"AMQP_URL"), "{names:?}");
    assert!(names.contains(&"DEV_TOOL_HOME") && names.contains(&"PATH"), "{names:?}");
    assert!(stdout.lines().any(|line| line == "t=***"), "{stdout}");
    assert!(stdout.lines().any(|line| line == "DEPLOY_TOKEN=***"), "{stdout}");

    let lacking = project.runway_env(&["run", "lacking"], &env).await;
    lacking.assert_code(76);
    assert!(lacking.stderr.contains("no secret `NOT_SET_ANYWHERE_42`"), "{}", lacking.stderr);
    assert!(!lacking.stdout().contains("ran"), "{}", lacking.stdout());
}

#[tokio::test]
async fn a_secret_cut_by_the_line_bound_is_masked_across_the_cut() {
    // The reader cuts lines at 64 KiB: the token straddles the first cut.
    let project = Project::new(
        "[operations.long]\nrun = \"head -c 65530 /dev/zero | tr '\\\\0' x; echo \\\"$DEPLOY_TOKEN\\\"\"\n\
         secrets = [\"DEPLOY_TOKEN\"]\n",
    );
    let env = [("RUNWAY_SERVER", "local"), ("DEPLOY_TOKEN", "straddling-token-123")];
    let run = project.runway_env(&["--quiet", "run", "long"], &env).await;
    run.assert_code(0);
    let expected = format!("{}***\n", "x".repeat(65530));
    assert!(run.stdout() == expected, "{:?}", &run.stdout()[65500.min(run.stdout().len())..]);
}
