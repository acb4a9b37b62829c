//! The CLI in the shell (issue 17): completion scripts, the man page, `runway init`, the
//! waiting spinner on a terminal and nowhere else, and colours only on a terminal without
//! `NO_COLOR`. A terminal is a real pseudo-terminal, from util-linux's `script`.

use std::process::Stdio;

use tokio::io::AsyncReadExt as _;

use crate::support::{Namespace, PATIENCE, Project, args, binary, op};

/// Run `runway` with `args` in `dir` on a pseudo-terminal (`script`), with `env` added; its
/// output (stdout and stderr, as the terminal showed them) is read in the background.
fn on_terminal(dir: &std::path::Path, runway_args: &[&str], env: &[(&str, &str)]) -> tokio::process::Child {
    let mut line = shell_quote(&binary("runway").to_string_lossy());
    for arg in runway_args {
        line.push(' ');
        line.push_str(&shell_quote(arg));
    }
    tokio::process::Command::new("script")
        .args(["--quiet", "--flush", "--return", "--command", &line, "/dev/null"])
        .current_dir(dir)
        .env_remove("RUNWAY_SERVER")
        .env_remove("RUNWAY_NAMESPACE")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("util-linux `script` runs (it gives runway a terminal)")
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Read `child`'s stdout into `seen` until it holds `needle`.
async fn read_until(child: &mut tokio::process::Child, seen: &mut Vec<u8>, needle: &str) {
    let stdout = child.stdout.as_mut().expect("piped stdout");
    tokio::time::timeout(PATIENCE, async {
        while !String::from_utf8_lossy(seen).contains(needle) {
            let mut chunk = [0u8; 4096];
            let read = stdout.read(&mut chunk).await.expect("read the terminal");
            assert!(read > 0, "the terminal closed before `{needle}`: {:?}", String::from_utf8_lossy(seen));
            seen.extend_from_slice(&chunk[..read]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never saw `{needle}` on the terminal: {:?}", String::from_utf8_lossy(seen)));
}

/// Everything the terminal shows until `runway` exits, and its exit code.
async fn to_the_end(mut child: tokio::process::Child, mut seen: Vec<u8>) -> (Option<i32>, String) {
    let mut rest = Vec::new();
    child.stdout.as_mut().expect("piped stdout").read_to_end(&mut rest).await.expect("read the terminal");
    seen.extend_from_slice(&rest);
    let status = tokio::time::timeout(PATIENCE, child.wait()).await.expect("runway ends").expect("wait");
    (status.code(), String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test]
async fn completions_for_bash_zsh_and_fish_name_the_subcommands() {
    let project = Project::empty();
    for shell in ["bash", "zsh", "fish"] {
        let run = project.runway(&["completions", shell]).await;
        run.assert_code(0);
        let script = run.stdout();
        assert!(!script.trim().is_empty(), "{shell}: an empty script");
        for subcommand in ["build", "deploy", "job", "runner", "init", "submit"] {
            assert!(script.contains(subcommand), "{shell}: no `{subcommand}` in the completions");
        }
        assert!(script.contains("namespace"), "{shell}: the global flags complete too");
    }
    let run = project.runway(&["completions", "tcsh"]).await;
    run.assert_code(64);
    assert!(run.stderr.contains("tcsh") && run.stderr.contains("bash"), "{}", run.stderr);
}

#[tokio::test]
async fn the_man_page_renders_with_man() {
    let project = Project::empty();
    let run = project.runway(&["man"]).await;
    run.assert_code(0);
    let roff = run.stdout();
    assert!(roff.contains(".TH runway 1"), "not a section-1 man page:\n{roff}");
    let mut man = tokio::process::Command::new("man")
        .args(["--local-file", "-"])
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("man (man-db) renders the page");
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = man.stdin.take().expect("piped stdin");
        stdin.write_all(roff.as_bytes()).await.expect("feed man");
    }
    let rendered = man.wait_with_output().await.expect("man runs");
    assert!(rendered.status.success(), "man failed: {}", String::from_utf8_lossy(&rendered.stderr));
    let text = String::from_utf8_lossy(&rendered.stdout);
    for heading in ["NAME", "SYNOPSIS", "OPTIONS", "SUBCOMMANDS"] {
        assert!(text.contains(heading), "no {heading} in the rendered page:\n{text}");
    }
    assert!(text.contains("runway-job") || text.contains("job"), "the subcommands are listed:\n{text}");
    assert!(!text.contains(".TH") && !text.contains("\\fB"), "roff left unrendered:\n{text}");
}

#[tokio::test]
async fn init_writes_a_project_file_that_loads_and_never_overwrites_one() {
    let project = Project::empty();
    let run = project.runway(&["init"]).await;
    run.assert_code(0);
    assert!(run.stderr.contains("wrote runway.toml"), "{}", run.stderr);
    let path = project.path().join("runway.toml");
    let written = std::fs::read_to_string(&path).expect("runway init wrote runway.toml");
    assert!(written.lines().filter(|line| line.trim_start().starts_with('#')).count() > 5, "commented:\n{written}");
    // runway's own loader takes it, and the operation it defines runs (local mode).
    let loaded = runway_producer::project::load(&path).expect("the written file loads");
    let dir_name = project.path().canonicalize().expect("dir").file_name().expect("named").to_owned();
    assert_eq!(std::ffi::OsStr::new(&loaded.name), dir_name);
    assert!(loaded.operations.contains_key("build"));
    project.runway(&["build"]).await.assert_code(0);

    std::fs::write(&path, "# mine\n").expect("edit");
    let again = project.runway(&["init"]).await;
    again.assert_code(73);
    assert!(again.stderr.contains("already exists") && again.stderr.contains("runway.toml"), "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "# mine\n", "init overwrote the file");

    // --file names where to write, and refuses there the same way.
    let elsewhere = project.path().join("other.toml");
    project.runway(&["--file", elsewhere.to_str().expect("utf-8"), "init"]).await.assert_code(0);
    runway_producer::project::load(&elsewhere).expect("the file written with --file loads");
    project.runway(&["--file", elsewhere.to_str().expect("utf-8"), "init"]).await.assert_code(73);
}

#[tokio::test]
async fn colours_only_on_a_terminal_and_never_with_no_color() {
    let project = Project::new(&format!("{}{}", op("ok", "echo fine"), op("bad", "echo broken >&2; exit 3")));
    // Not a terminal: no escape codes anywhere.
    for operation in ["ok", "bad"] {
        let run = project.runway(&["run", operation]).await;
        assert!(!run.stderr.contains('\x1b') && !run.stdout().contains('\x1b'), "escape codes: {run:?}");
    }
    // A terminal: the outcome is coloured...
    let (code, shown) = to_the_end(on_terminal(project.path(), &["run", "bad"], &[]), Vec::new()).await;
    assert_eq!(code, Some(3), "{shown}");
    assert!(shown.contains("\x1b[") && shown.contains("failed with exit code 3"), "no colour on a terminal: {shown:?}");
    // ...but not with NO_COLOR, even on a terminal.
    let (code, shown) =
        to_the_end(on_terminal(project.path(), &["run", "bad"], &[("NO_COLOR", "1")]), Vec::new()).await;
    assert_eq!(code, Some(3), "{shown}");
    assert!(shown.contains("failed with exit code 3"), "{shown}");
    assert!(!shown.contains('\x1b'), "escape codes with NO_COLOR: {shown:?}");
}

#[tokio::test]
async fn a_spinner_says_why_a_job_waits_on_a_terminal_and_nowhere_else() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let project = Project::new(&op("build", "echo built"));
    // No runner is up: the job waits in its queue.
    let mut terminal = on_terminal(project.path(), &args(&flags, &["build", "--remote"]), &[]);
    let mut seen = Vec::new();
    read_until(&mut terminal, &mut seen, "waiting for a runner for").await;
    read_until(&mut terminal, &mut seen, "no runner that serves it is up").await;
    // Not a terminal, or quiet, or JSON: the notice at most, never a spinner.
    let piped = project.spawn_runway(&args(&flags, &["build", "--remote"]));
    let quiet = on_terminal(project.path(), &args(&flags, &["--quiet", "build", "--remote"]), &[]);
    let json = on_terminal(project.path(), &args(&flags, &["build", "--remote", "--json"]), &[]);
    let mut piped = piped;
    piped.stderr_line_containing("still waiting for a runner").await;
    let _worker = ns.worker("w-spin", &[]).await;
    let (code, shown) = to_the_end(terminal, seen).await;
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("build succeeded"), "{shown}");
    let piped = piped.finish().await;
    piped.assert_code(0);
    assert!(!piped.stderr.contains("waiting for a runner for") && !piped.stderr.contains('\x1b'), "{}", piped.stderr);
    for (name, child) in [("--quiet", quiet), ("--json", json)] {
        let (code, shown) = to_the_end(child, Vec::new()).await;
        assert_eq!(code, Some(0), "{name}: {shown}");
        assert!(!shown.contains("waiting for a runner for"), "{name} showed a spinner: {shown}");
    }
    ns.cleanup().await;
}
