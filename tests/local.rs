//! Local mode end to end: the real `runway` binary with its embedded broker and in-process runner.

use crate::support::{Project, op};

#[tokio::test]
async fn a_successful_job_prints_its_output_and_exits_zero() {
    let project = Project::new(&op("build", "echo hello; echo world"));
    let run = project.runway(&["build"]).await;
    run.assert_code(0);
    assert_eq!(run.stdout(), "hello\nworld\n");
    assert!(run.stderr.contains("runway: queued build as job"), "{}", run.stderr);
    assert!(run.stderr.contains("build succeeded in"), "{}", run.stderr);
}

#[tokio::test]
async fn a_failing_command_passes_its_exit_code_on() {
    let project = Project::new(&op("test", "echo before; exit 3"));
    let run = project.runway(&["run", "test"]).await;
    run.assert_code(3);
    assert_eq!(run.stdout(), "before\n");
    assert!(run.stderr.contains("test failed with exit code 3"), "{}", run.stderr);
}

#[tokio::test]
async fn a_command_killed_by_a_signal_exits_128_plus_the_signal() {
    let project = Project::new(&op("die", "kill -KILL $$"));
    let run = project.runway(&["run", "die"]).await;
    run.assert_code(128 + 9);
    assert!(run.stderr.contains("killed by signal SIGKILL"), "{}", run.stderr);
}

#[tokio::test]
async fn stdout_and_stderr_stay_apart_and_in_order() {
    let script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done";
    let project = Project::new(&op("mix", script));
    let run = project.runway(&["--quiet", "run", "mix"]).await;
    run.assert_code(0);
    assert_eq!(run.stdout(), "out1\nout2\nout3\nout4\nout5\n");
    assert_eq!(run.stderr, "err1\nerr2\nerr3\nerr4\nerr5\n");
}

#[tokio::test]
async fn two_hundred_thousand_lines_arrive_complete_and_in_order() {
    let project = Project::new(&op("count", "seq 1 200000"));
    let run = project.runway(&["--quiet", "run", "count"]).await;
    run.assert_code(0);
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert!(run.stdout() == expected, "output differs from seq 1 200000 ({} bytes)", run.stdout.len());
}

#[tokio::test]
async fn a_five_megabyte_line_without_newline_is_split_and_kept_whole() {
    let project = Project::new(&op("long", "head -c 5000000 /dev/zero | tr '\\0' x"));
    let run = project.runway(&["--quiet", "run", "long"]).await;
    run.assert_code(0);
    assert_eq!(run.stdout.len(), 5_000_000, "every byte arrives, and no newline is added");
    assert!(run.stdout.iter().all(|&b| b == b'x'));
    // The runner never held the line whole: it travelled in pieces of at most 64 KiB.
    let json = project.runway(&["run", "long", "--json"]).await;
    let pieces: Vec<usize> = json
        .events()
        .iter()
        .filter(|event| event["body"]["kind"] == "log")
        .flat_map(|event| event["body"]["data"]["lines"].as_array().expect("lines").clone())
        .map(|line| line["l"].as_str().expect("text").len())
        .collect();
    assert!(pieces.len() >= 5_000_000 / 65_536, "split into pieces: {}", pieces.len());
    assert!(pieces.iter().all(|&len| len <= 65_536), "a piece exceeds the bound");
    assert_eq!(pieces.iter().sum::<usize>(), 5_000_000);
}

#[tokio::test]
async fn outputs_appear_in_the_result_and_in_json() {
    let project = Project::new(&op(
        "release",
        "echo version=1.2.3 >> \"$RUNWAY_OUTPUT\"; echo 'url=https://x/?a=b' >> \"$RUNWAY_OUTPUT\"",
    ));
    let run = project.runway(&["release"]).await;
    run.assert_code(0);
    assert!(run.stderr.contains("output version=1.2.3"), "{}", run.stderr);
    assert!(run.stderr.contains("output url=https://x/?a=b"), "{}", run.stderr);
    let json = project.runway(&["release", "--json"]).await;
    json.assert_code(0);
    let events = json.events();
    let completed = events.last().expect("events");
    assert_eq!(completed["body"]["kind"], "completed");
    assert_eq!(completed["body"]["data"]["outputs"]["version"], "1.2.3");
    let outputs: Vec<&serde_json::Value> = events.iter().filter(|event| event["body"]["kind"] == "output").collect();
    assert_eq!(outputs.len(), 2);
}

#[tokio::test]
async fn json_prints_every_event_with_gap_free_seq() {
    let project = Project::new(&op("build", "echo one; echo two >&2"));
    let run = project.runway(&["build", "--json"]).await;
    run.assert_code(0);
    let events = run.events();
    assert_eq!(events[0]["body"]["kind"], "queued", "the producer's own record comes first");
    assert_eq!(events[0]["seq"], 0);
    let runner_events = &events[1..];
    let seqs: Vec<u64> = runner_events.iter().map(|event| event["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "the runner's events are gap-free from 1");
    let kinds: Vec<&str> = runner_events.iter().map(|event| event["body"]["kind"].as_str().expect("kind")).collect();
    assert_eq!(kinds.first(), Some(&"accepted"));
    assert_eq!(kinds.get(1), Some(&"started"));
    assert_eq!(kinds.last(), Some(&"completed"));
    assert!(events.iter().all(|event| event["v"] == 1));
    assert!(run.stderr.is_empty(), "--json keeps stderr quiet: {}", run.stderr);
}

#[tokio::test]
async fn args_after_double_dash_reach_the_command() {
    let toml = format!(
        "{}{}",
        op("shell", "printf '[%s]\\n' \"$@\""),
        "[operations.argv]\nrun = [\"printf\", \"<%s>\\\\n\"]\n"
    );
    let project = Project::new(&toml);
    let run = project.runway(&["--quiet", "run", "shell", "--", "a", "b c"]).await;
    run.assert_code(0);
    assert_eq!(run.stdout(), "[a]\n[b c]\n");
    let run = project.runway(&["--quiet", "run", "argv", "--", "x", "y z"]).await;
    run.assert_code(0);
    assert_eq!(run.stdout(), "<x>\n<y z>\n");
}

#[tokio::test]
async fn env_comes_from_the_file_and_from_flags_and_runway_sets_its_own() {
    let toml = "[operations.env]\nrun = 'echo \"$A $B\"; echo \"$RUNWAY_JOB_ID|$RUNWAY_ATTEMPT|$RUNWAY_RUNNER_ID\"'\nenv = { A = \"from-file\", B = \"file\" }\n";
    let project = Project::new(toml);
    let run = project.runway(&["--quiet", "run", "env", "--env", "B=from-flag"]).await;
    run.assert_code(0);
    let stdout = run.stdout();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("from-file from-flag"));
    let ids: Vec<&str> = lines.next().expect("second line").split('|').collect();
    assert_eq!(ids.len(), 3);
    assert!(uuid::Uuid::parse_str(ids[0]).is_ok(), "job id: {}", ids[0]);
    assert_eq!(ids[1], "1");
    assert!(ids[2].starts_with("cli-"), "runner id: {}", ids[2]);
}

#[tokio::test]
async fn the_job_runs_in_the_project_directory() {
    let project = Project::new(&op("where", "pwd"));
    let run = project.runway(&["--quiet", "run", "where"]).await;
    run.assert_code(0);
    let expected = project.path().canonicalize().expect("canonical");
    assert_eq!(run.stdout().trim_end(), expected.display().to_string());
}

#[tokio::test]
async fn a_timeout_ends_the_job_timed_out() {
    let project = Project::new("[operations.slow]\nrun = \"echo begun; sleep 30\"\ntimeout = \"300ms\"\n");
    let run = project.runway(&["run", "slow"]).await;
    run.assert_code(124);
    assert_eq!(run.stdout(), "begun\n");
    assert!(run.stderr.contains("slow ended timed_out"), "{}", run.stderr);
    // The flag beats the file.
    let project = Project::new(&op("slow", "sleep 30"));
    let run = project.runway(&["run", "slow", "--timeout", "200ms"]).await;
    run.assert_code(124);
}

#[tokio::test]
async fn a_timed_out_job_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let toml = "[operations.stubborn]\nrun = \"trap '' TERM; echo trapped; sleep 30 & wait\"\ntimeout = \"200ms\"\nkill_grace = \"300ms\"\n";
    let project = Project::new(toml);
    let run = project.runway(&["run", "stubborn", "--json"]).await;
    run.assert_code(124);
    let events = run.events();
    let completed = &events.last().expect("events")["body"]["data"];
    assert_eq!(completed["status"], "timed_out");
    assert_eq!(completed["signal"], 9, "SIGKILL ended it: {completed}");
}

#[tokio::test]
async fn up_stops_at_the_first_failure() {
    let toml = format!(
        "{}{}{}",
        op("build", "echo built"),
        op("deploy", "echo deploying; exit 4"),
        op("release", "echo released")
    );
    let project = Project::new(&toml);
    let run = project.runway(&["up"]).await;
    run.assert_code(4);
    assert_eq!(run.stdout(), "built\ndeploying\n");
    assert!(!run.stderr.contains("release"), "release must not run: {}", run.stderr);
}

#[tokio::test]
async fn up_skips_undefined_operations_with_a_note() {
    let toml = format!("{}{}", op("build", "echo built"), op("release", "echo released"));
    let project = Project::new(&toml);
    let run = project.runway(&["up"]).await;
    run.assert_code(0);
    assert_eq!(run.stdout(), "built\nreleased\n");
    assert!(run.stderr.contains("skipping deploy: not defined"), "{}", run.stderr);
}

#[tokio::test]
async fn a_background_child_holding_stdout_does_not_keep_the_job_open() {
    let project = Project::new(&op("bg", "sleep 1000 & echo $!"));
    let run = project.runway(&["--quiet", "run", "bg"]).await;
    run.assert_code(0);
    let pid = run.stdout().trim().parse::<u32>().expect("the background pid");
    // The leftover was in the job's process group and went with it.
    assert!(!process_alive(pid), "the background sleep {pid} survived the job");
}

fn process_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; only a live process has a state other than Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(") ").next().is_some_and(|rest| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn no_project_file_says_where_it_looked() {
    let project = Project::empty();
    let run = project.runway(&["build"]).await;
    run.assert_code(66);
    assert!(run.stderr.contains("runway.toml"), "{}", run.stderr);
    let dir = project.path().canonicalize().expect("canonical");
    let dir_text = dir.display().to_string();
    assert!(
        run.stderr.contains(&dir_text) || run.stderr.contains(&project.path().display().to_string()),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_toml_syntax_error_names_path_line_and_column() {
    let project = Project::new("[operations.build]\nrun = \"make\n");
    let run = project.runway(&["build"]).await;
    run.assert_code(65);
    assert!(run.stderr.contains("runway.toml:2:"), "{}", run.stderr);
}

#[tokio::test]
async fn an_unknown_key_is_named_with_its_position() {
    let project = Project::new("[operations.build]\nrun = \"make\"\ntiemout = \"1m\"\n");
    let run = project.runway(&["build"]).await;
    run.assert_code(65);
    assert!(run.stderr.contains("runway.toml:3:1"), "{}", run.stderr);
    assert!(run.stderr.contains("tiemout"), "{}", run.stderr);
    assert!(run.stderr.contains("timeout"), "the expected keys are listed: {}", run.stderr);
}

#[tokio::test]
async fn an_unknown_operation_lists_the_defined_ones() {
    let project = Project::new(&format!("{}{}", op("build", "true"), op("lint", "true")));
    let run = project.runway(&["run", "deploy"]).await;
    run.assert_code(64);
    assert!(run.stderr.contains("unknown operation `deploy`"), "{}", run.stderr);
    assert!(run.stderr.contains("build, lint"), "{}", run.stderr);
}

#[tokio::test]
async fn an_empty_command_is_a_project_error() {
    let project = Project::new("[operations.build]\nrun = \"  \"\n");
    let run = project.runway(&["build"]).await;
    run.assert_code(65);
    assert!(run.stderr.contains("empty command"), "{}", run.stderr);
    assert!(run.stderr.contains("runway.toml:2:"), "{}", run.stderr);
}

#[tokio::test]
async fn a_bad_duration_is_an_error_in_the_file_and_on_the_command_line() {
    let project = Project::new("[operations.build]\nrun = \"true\"\ntimeout = \"soon\"\n");
    let run = project.runway(&["build"]).await;
    run.assert_code(65);
    assert!(run.stderr.contains("soon") && run.stderr.contains("runway.toml:3:"), "{}", run.stderr);
    let project = Project::new(&op("build", "true"));
    let run = project.runway(&["build", "--timeout", "soon"]).await;
    run.assert_code(64);
    assert!(run.stderr.contains("soon"), "{}", run.stderr);
}

#[tokio::test]
async fn a_bad_flag_is_a_usage_error() {
    let project = Project::new(&op("build", "true"));
    let run = project.runway(&["build", "--no-such-flag"]).await;
    run.assert_code(64);
    assert!(run.stderr.contains("--no-such-flag"), "{}", run.stderr);
}

#[tokio::test]
async fn a_command_that_cannot_be_spawned_fails_with_the_os_error() {
    let project = Project::new("[operations.ghost]\nrun = [\"/nonexistent/ghost-binary\"]\n");
    let run = project.runway(&["run", "ghost"]).await;
    run.assert_code(127);
    assert!(run.stderr.contains("cannot run `/nonexistent/ghost-binary`"), "{}", run.stderr);
    assert!(run.stderr.contains("No such file or directory"), "{}", run.stderr);
    assert!(run.stderr.contains("ghost failed"), "{}", run.stderr);
}

#[tokio::test]
async fn non_utf8_output_arrives_byte_for_byte() {
    let project = Project::new(&op("bytes", "printf 'a\\377b\\n\\303('"));
    let run = project.runway(&["--quiet", "run", "bytes"]).await;
    run.assert_code(0);
    assert_eq!(run.stdout, b"a\xffb\n\xc3(");
}

#[tokio::test]
async fn the_noop_builtin_completes_without_a_process() {
    let project = Project::new("[operations.ping]\nrun = { builtin = \"noop\" }\n");
    let run = project.runway(&["run", "ping", "--json"]).await;
    run.assert_code(0);
    let kinds: Vec<String> =
        run.events().iter().map(|event| event["body"]["kind"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(kinds, ["queued", "accepted", "completed"], "no process, so no `started`: {kinds:?}");
    let completed = &run.events()[2]["body"]["data"];
    assert_eq!(completed["status"], "success");
    assert_eq!(completed["exit_code"], 0);
}
