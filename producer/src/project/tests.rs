//! The project file's tests: what parses, and the path:line:column and message of each error.

use runway_broker::protocol::Builtin;

use super::*;

const PATH: &str = "/nonexistent/shop/runway.toml";

fn parse_text(text: &str) -> Result<Project, ProjectError> {
    parse(Path::new(PATH), text)
}

/// The line, column and message of the error `text` must give.
#[track_caller]
fn error(text: &str) -> (usize, usize, String) {
    match parse_text(text) {
        Err(ProjectError::Invalid { path, line, column, message }) => {
            assert_eq!(path, Path::new(PATH));
            (line, column, message)
        }
        other => panic!("expected an invalid-file error, got {other:?}"),
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
}

#[test]
fn a_file_with_every_field_parses() {
    let project = parse_text(
        r#"
[project]
name = "shop"

[server]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
namespace = "ci"

[operations.build]
run = "cargo build --release"
timeout = "30m"
kill_grace = "10s"
env = { RUST_LOG = "info", "A_B" = "x=y" }
description = "compile everything"
target = "any"
retry_on_lost = true

[operations.deploy]
run = ["./deploy.sh", "production"]
target = { labels = { env = "prod", region = "eu-1" } }

[operations.pinned]
run = "true"
target = { runner = "build-01" }
"#,
    )
    .expect("valid");
    assert_eq!(project.path, Path::new(PATH));
    assert_eq!(project.dir, Path::new("/nonexistent/shop"));
    assert_eq!(project.name, "shop");
    let server = project.server.expect("a server");
    assert_eq!(server.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_eq!(server.namespace.as_deref(), Some("ci"));
    assert_eq!(project.operations.keys().collect::<Vec<_>>(), ["build", "deploy", "pinned"]);

    let build = &project.operations["build"];
    assert_eq!(build.name, "build");
    assert_eq!(build.command, Command::Shell("cargo build --release".to_owned()));
    assert_eq!(build.timeout, Some(Duration::from_secs(30 * 60)));
    assert_eq!(build.kill_grace, Some(Duration::from_secs(10)));
    assert_eq!(build.env, labels(&[("A_B", "x=y"), ("RUST_LOG", "info")]));
    assert_eq!(build.description.as_deref(), Some("compile everything"));
    assert_eq!(build.target, Some(Target::Any));
    assert!(build.retry_on_lost);

    let deploy = &project.operations["deploy"];
    assert_eq!(deploy.command, Command::Argv(vec!["./deploy.sh".to_owned(), "production".to_owned()]));
    assert_eq!(deploy.target, Some(Target::Labels(labels(&[("env", "prod"), ("region", "eu-1")]))));
    assert_eq!(deploy.timeout, None);
    assert_eq!(deploy.kill_grace, None);
    assert!(deploy.env.is_empty());
    assert_eq!(deploy.description, None);
    assert!(!deploy.retry_on_lost);

    assert_eq!(project.operations["pinned"].target, Some(Target::Runner("build-01".to_owned())));
}

#[test]
fn the_project_name_defaults_to_the_directory() {
    let project = parse_text("[operations.a]\nrun = \"true\"\n").expect("valid");
    assert_eq!(project.name, "shop");
    assert!(project.server.is_none());
    assert_eq!(project.operations["a"].target, None);
}

#[test]
fn a_relative_path_gets_an_absolute_directory() {
    let project = parse(Path::new(FILE_NAME), "").expect("valid");
    assert!(project.dir.is_absolute(), "{}", project.dir.display());
    assert_eq!(project.path, Path::new(FILE_NAME));
}

#[test]
fn an_empty_file_is_an_empty_project() {
    let project = parse_text("").expect("valid");
    assert!(project.operations.is_empty());
    assert!(parse_text("[operations]\n").expect("valid").operations.is_empty());
}

#[test]
fn run_is_a_shell_string_or_an_argv() {
    let project = parse_text(
        "[operations.shell]\nrun = \"echo $HOME | wc -c\"\n\n[operations.argv]\nrun = [\"echo\", \"$HOME\", \"\"]\n",
    )
    .expect("valid");
    assert_eq!(project.operations["shell"].command, Command::Shell("echo $HOME | wc -c".to_owned()));
    assert_eq!(
        project.operations["argv"].command,
        Command::Argv(vec!["echo".to_owned(), "$HOME".to_owned(), String::new()])
    );
}

#[test]
fn dotted_keys_and_inline_tables_are_the_same_file() {
    let project = parse_text("operations.build.run = \"make\"\noperations.test = { run = [\"make\", \"test\"] }\n")
        .expect("valid");
    assert_eq!(project.operations["build"].command, Command::Shell("make".to_owned()));
    assert_eq!(project.operations["test"].command, Command::Argv(vec!["make".to_owned(), "test".to_owned()]));
}

#[test]
fn an_unknown_top_level_key_is_named_at_the_key() {
    let (line, column, message) = error("[project]\nname = \"x\"\n\n[sever]\nurl = \"amqp://x\"\n");
    assert_eq!((line, column), (4, 2));
    assert_eq!(message, "unknown key `sever` at the top level, expected one of `project`, `server`, `operations`");
}

#[test]
fn an_unknown_operation_key_is_named_at_the_key() {
    let (line, column, message) = error("[operations.build]\nrun = \"make\"\n  tiemout = \"1m\"\n");
    assert_eq!((line, column), (3, 3));
    assert_eq!(
        message,
        "unknown key `tiemout` in [operations.build], expected one of `run`, `timeout`, `kill_grace`, `env`, \
             `secrets`, `target`, `retry_on_lost`, `description`, `concurrency`, `retry`, `delay`, \
             `concurrency_pending`"
    );
}

#[test]
fn unknown_keys_in_project_and_server_name_their_section() {
    let (line, column, message) = error("[project]\nnmae = \"x\"\n");
    assert_eq!((line, column), (2, 1));
    assert_eq!(message, "unknown key `nmae` in [project], expected `name`");
    let (line, column, message) = error("[server]\nurl = \"amqp://x\"\nnamespce = \"y\"\n");
    assert_eq!((line, column), (3, 1));
    assert_eq!(
        message,
        "unknown key `namespce` in [server], expected one of `url`, `urls`, `namespace`, `tls_ca`, `tls_cert`, `tls_key`"
    );
}

#[test]
fn tls_files_in_server_are_relative_to_the_project_file() {
    let text = "[server]\nurl = \"amqps://rabbit:5671/%2f\"\ntls_ca = \"certs/ca.pem\"\ntls_cert = \"/etc/runway/runner.pem\"\n";
    let project = parse(Path::new("/work/app/runway.toml"), text).expect("valid");
    let tls = project.server.expect("a [server]").tls;
    assert_eq!(tls.ca.as_deref(), Some(Path::new("/work/app/certs/ca.pem")));
    assert_eq!(tls.cert.as_deref(), Some(Path::new("/etc/runway/runner.pem")));
    assert_eq!(tls.key, None);
}

#[test]
fn a_syntax_error_is_located() {
    let (line, column, message) = error("[operations.build]\nrun = \"make\ntimeout = \"1m\"\n");
    // toml points where the closing quote is missing.
    assert_eq!((line, column), (2, 12));
    assert_eq!(message, "invalid TOML: invalid basic string, expected `\"`");
    let (line, column, message) = error("[operations.build\nrun = \"make\"\n");
    assert_eq!((line, column), (1, 18));
    assert_eq!(message, "invalid TOML: unclosed table, expected `]`");
    let (line, column, message) = error("[operations.build]\nrun = \n");
    assert_eq!((line, column), (2, 7));
    assert!(message.starts_with("invalid TOML: "), "{message}");
    let (line, column, message) = error("[operations.build]\nrun = \"a\"\nrun = \"b\"\n");
    assert_eq!((line, column), (3, 1));
    assert!(message.contains("duplicate key"), "{message}");
}

#[test]
fn a_missing_run_is_reported_at_the_operation_name() {
    let (line, column, message) = error("[operations.build]\ntimeout = \"1m\"\n");
    assert_eq!((line, column), (1, 13));
    assert_eq!(
        message,
        "missing `run` in operation `build`, expected a command string, an array of strings, or { builtin = \"noop\" }"
    );
}

#[test]
fn a_run_of_the_wrong_type_says_what_was_expected() {
    let (line, column, message) = error("[operations.build]\nrun = 42\n");
    assert_eq!((line, column), (2, 7));
    assert_eq!(
        message,
        "[operations.build]: invalid type: integer `42`, expected a command string, an array of strings, or { builtin = \"noop\" }"
    );
    let (line, column, message) = error("[operations.build]\nrun = [\"make\", 1]\n");
    assert_eq!((line, column), (2, 16));
    assert!(message.contains("expected a string (each element of a `run` array is one argument)"), "{message}");
}

#[test]
fn empty_commands_are_rejected() {
    for run in ["\"\"", "\" \\t \"", "[]", "[\"\", \"x\"]"] {
        let (line, column, message) = error(&format!("[operations.build]\nrun = {run}\n"));
        assert_eq!((line, column), (2, 7), "run = {run}");
        assert_eq!(message, "empty command in operation `build`", "run = {run}");
    }
}

#[test]
fn a_bad_duration_says_why_and_what_would_do() {
    let (line, column, message) = error("[operations.build]\nrun = \"x\"\ntimeout = \"soon\"\n");
    assert_eq!((line, column), (3, 11));
    assert!(message.starts_with("invalid duration `soon` for `timeout`: "), "{message}");
    assert!(message.ends_with(r#"; expected e.g. "90s", "30m", "1h 30m""#), "{message}");
    let reason = humantime::parse_duration("soon").expect_err("not a duration").to_string();
    assert!(message.contains(&reason), "{message}");

    let (line, column, message) = error("[operations.build]\nrun = \"x\"\nkill_grace = \"10 parsecs\"\n");
    assert_eq!((line, column), (3, 14));
    assert!(message.starts_with("invalid duration `10 parsecs` for `kill_grace`: "), "{message}");

    let (line, column, message) = error("[operations.build]\nrun = \"x\"\ntimeout = 90\n");
    assert_eq!((line, column), (3, 11));
    assert!(message.contains(r#"expected a duration string such as "90s""#), "{message}");
}

#[test]
fn a_zero_timeout_is_rejected_but_a_zero_kill_grace_is_not() {
    let (line, column, message) = error("[operations.build]\nrun = \"x\"\ntimeout = \"0s\"\n");
    assert_eq!((line, column), (3, 11));
    assert_eq!(
        message,
        r#"zero `timeout` in operation `build`, expected a positive duration, e.g. "90s", "30m", "1h 30m""#
    );
    let (line, column, message) = error("[operations.build]\nrun = \"x\"\ntimeout = \"1ns\"\n");
    assert_eq!((line, column), (3, 11));
    assert!(message.contains("`timeout` `1ns` in operation `build` is under a millisecond"), "{message}");
    let project = parse_text("[operations.build]\nrun = \"x\"\nkill_grace = \"0s\"\n").expect("valid");
    assert_eq!(project.operations["build"].kill_grace, Some(Duration::ZERO));
}

#[test]
fn a_bad_label_is_reported_where_it_is_written() {
    let (line, column, message) = error("[operations.d]\nrun = \"x\"\ntarget = { labels = { env = \"pr od\" } }\n");
    assert_eq!((line, column), (3, 29));
    let reason = topology::check_labels(&labels(&[("env", "pr od")])).expect_err("bad label").to_string();
    assert_eq!(message, format!("{reason} in the target of operation `d`"));
    assert!(message.contains("label value `pr od`"), "{message}");

    let (line, column, message) = error("[operations.d]\nrun = \"x\"\ntarget = { labels = { \"e nv\" = \"prod\" } }\n");
    assert_eq!((line, column), (3, 23));
    assert!(message.contains("label key `e nv`"), "{message}");
}

#[test]
fn too_many_labels_are_reported_at_the_labels() {
    let (line, column, message) = error(
        "[operations.d]\nrun = \"x\"\ntarget = { labels = { a = \"1\", b = \"1\", c = \"1\", d = \"1\", e = \"1\", f = \"1\", g = \"1\" } }\n",
    );
    assert_eq!((line, column), (3, 21));
    assert!(message.contains("too many labels (7)"), "{message}");
}

#[test]
fn a_bad_runner_id_is_reported_at_the_id() {
    let (line, column, message) = error("[operations.d]\nrun = \"x\"\ntarget = { runner = \"a/b\" }\n");
    assert_eq!((line, column), (3, 21));
    assert!(message.contains("runner id `a/b`") && message.ends_with("in the target of operation `d`"), "{message}");
}

#[test]
fn a_target_of_the_wrong_shape_says_what_would_do() {
    let expected = r#"expected "any", { runner = "ID" } or { labels = { KEY = "VALUE" } }"#;

    let (line, column, message) = error("[operations.d]\nrun = \"x\"\ntarget = \"everywhere\"\n");
    assert_eq!((line, column), (3, 10));
    assert_eq!(message, format!("[operations.d]: invalid target \"everywhere\", {expected}"));

    let (line, column, message) =
        error("[operations.d]\nrun = \"x\"\ntarget = { runner = \"a\", labels = { a = \"b\" } }\n");
    assert_eq!((line, column), (3, 10));
    assert_eq!(message, format!("[operations.d]: a target names `runner` or `labels`, not both, {expected}"));

    let (line, column, message) = error("[operations.d]\nrun = \"x\"\ntarget = {}\n");
    assert_eq!((line, column), (3, 10));
    assert_eq!(message, format!("[operations.d]: empty target, {expected}"));

    let (line, column, message) = error("[operations.d]\nrun = \"x\"\ntarget = { runer = \"a\" }\n");
    assert_eq!((line, column), (3, 12));
    assert_eq!(message, "[operations.d]: unknown key `runer` in `target`, expected `runner` or `labels`");

    let (line, column, message) = error("[operations.d]\nrun = \"x\"\ntarget = 3\n");
    assert_eq!((line, column), (3, 10));
    assert_eq!(message, format!("[operations.d]: invalid type: integer `3`, expected a target: {TARGET_EXAMPLES}"));
}

#[test]
fn bad_operation_and_environment_names_are_rejected() {
    let (line, column, message) = error("[operations.\"a b\"]\nrun = \"x\"\n");
    assert_eq!((line, column), (1, 13));
    assert_eq!(message, "invalid operation name `a b`: use 1 to 64 letters, digits, `-`, `_` or `.`");
    let long = "a".repeat(65);
    let (_, _, message) = error(&format!("[operations.{long}]\nrun = \"x\"\n"));
    assert!(message.starts_with(&format!("invalid operation name `{long}`")), "{message}");
    assert!(parse_text(&format!("[operations.\"v1.2_x-{}\"]\nrun = \"x\"\n", "a".repeat(57))).is_ok());

    let (line, column, message) = error("[operations.a]\nrun = \"x\"\nenv = { \"A=B\" = \"c\" }\n");
    assert_eq!((line, column), (3, 9));
    assert!(message.starts_with("invalid environment variable name `A=B` in operation `a`"), "{message}");
    let (_, _, message) = error("[operations.a]\nrun = \"x\"\nenv = { \"\" = \"c\" }\n");
    assert!(message.starts_with("invalid environment variable name `` in operation `a`"), "{message}");
    let (_, _, message) = error("[operations.a]\nrun = \"x\"\nenv = { \"A\\u0000\" = \"c\" }\n");
    assert!(message.starts_with("invalid environment variable name `A\\0`"), "{message}");
    let (line, column, message) = error("[operations.a]\nrun = \"x\"\nenv = { A = 1 }\n");
    assert_eq!((line, column), (3, 13));
    assert_eq!(message, "[operations.a]: invalid type: integer `1`, expected a string");
}

#[test]
fn operations_must_be_tables() {
    let (line, column, message) = error("[operations]\nbuild = \"cargo build\"\n");
    assert_eq!((line, column), (2, 9));
    assert_eq!(
        message,
        r#"expected a table for operation `build`, e.g. [operations.build] with run = "...", found string"#
    );
    let (line, column, message) = error("operations = [\"build\"]\n");
    assert_eq!((line, column), (1, 14));
    assert_eq!(message, "expected a table for [operations], found array");
    let (line, column, message) = error("server = \"amqp://x\"\n");
    assert_eq!((line, column), (1, 10));
    assert_eq!(message, "expected a table for [server], found string");
}

#[test]
fn the_nodes_of_a_cluster_are_a_list_of_urls() {
    let project = parse_text("[server]\nurls = [\"amqp://a:5681/%2f\", \" amqp://b:5682/%2f\"]\n").expect("valid");
    assert_eq!(project.server.expect("a server").url, "amqp://a:5681/%2f,amqp://b:5682/%2f");
    let (line, column, message) = error("[server]\nurls = [\"amqp://a/\", \"\"]\n");
    assert_eq!((line, column), (2, 22));
    assert_eq!(message, "entry 2 of `urls` in [server] is empty");
    let (_, _, message) = error("[server]\nurls = [\"amqp://a/,amqp://b/\"]\n");
    assert_eq!(message, "entry 1 of `urls` in [server] holds a comma (give each node its own entry)");
    let (_, _, message) = error("[server]\nurls = []\n");
    assert_eq!(message, "empty `urls` in [server], expected at least one address");
    let (line, _, message) = error("[server]\nurl = \"amqp://a/\"\nurls = [\"amqp://b/\"]\n");
    assert_eq!(line, 3);
    assert!(message.starts_with("both `url` and `urls` in [server]"), "{message}");
}

#[test]
fn the_server_needs_a_url_and_a_valid_namespace() {
    let (line, column, message) = error("[server]\nnamespace = \"ci\"\n");
    assert_eq!((line, column), (1, 2));
    assert!(message.starts_with("missing `url` in [server], expected the broker's address"), "{message}");
    let (line, column, message) = error("[server]\nurl = \" \"\n");
    assert_eq!((line, column), (2, 7));
    assert_eq!(message, "empty `url` in [server]");
    let (line, column, message) = error("[server]\nurl = \"amqp://x\"\nnamespace = \"a b\"\n");
    assert_eq!((line, column), (3, 13));
    assert!(message.starts_with("invalid namespace `a b`") && message.ends_with(" in [server]"), "{message}");
}

#[test]
fn an_empty_project_name_is_rejected() {
    let (line, column, message) = error("[project]\nname = \"\"\n");
    assert_eq!((line, column), (2, 8));
    assert_eq!(message, "empty project name in [project]");
}

#[test]
fn the_first_problem_in_the_file_is_reported() {
    let (line, _, message) = error("[operations.zz]\nrun = \"\"\n[operations.aa]\nrun = 1\n[zzz]\n");
    assert_eq!(line, 2, "{message}");
}

#[test]
fn an_invalid_file_displays_as_path_line_column_message() {
    let err = parse_text("[operations.build]\nrun = []\n").expect_err("invalid");
    assert_eq!(err.to_string(), format!("{PATH}:2:7: empty command in operation `build`"));
    assert!(!err.is_not_found());
}

#[test]
fn columns_count_characters_not_bytes() {
    assert_eq!(line_column("ab\ncd", 4), (2, 2));
    assert_eq!(line_column("é\nx", 3), (2, 1));
    assert_eq!(line_column("éé = 1", 4), (1, 3));
    assert_eq!(line_column("", 0), (1, 1));
    let (line, column, _) = error("# café\n[operations.é]\nrun = \"x\"\n");
    assert_eq!((line, column), (2, 13));
}

#[test]
fn find_walks_up_from_a_nested_directory() {
    let root = tempfile::tempdir().expect("temp dir");
    let nested = root.path().join("a/b/c");
    std::fs::create_dir_all(&nested).expect("create nested directories");
    std::fs::write(root.path().join(FILE_NAME), "").expect("write the project file");
    assert_eq!(find(&nested).expect("found"), root.path().join(FILE_NAME));
    std::fs::write(root.path().join("a").join(FILE_NAME), "").expect("write the nearer project file");
    assert_eq!(find(&nested).expect("found"), root.path().join("a").join(FILE_NAME));
    assert_eq!(find(root.path()).expect("found"), root.path().join(FILE_NAME));
}

#[test]
fn find_names_the_start_directory_when_there_is_no_file() {
    let root = tempfile::tempdir().expect("temp dir");
    let nested = root.path().join("a/b");
    std::fs::create_dir_all(&nested).expect("create nested directories");
    // A directory named like the file is not the file.
    std::fs::create_dir(root.path().join("a").join(FILE_NAME)).expect("create a decoy directory");
    let err = find(&nested).expect_err("no project file");
    assert!(err.is_not_found());
    assert!(matches!(&err, ProjectError::NotFound { start } if *start == nested), "{err:?}");
    assert!(err.to_string().contains(&nested.display().to_string()), "{err}");
}

#[test]
fn load_reads_the_file_and_makes_its_directory_canonical() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("shop");
    std::fs::create_dir_all(dir.join("sub")).expect("create directories");
    std::fs::write(dir.join(FILE_NAME), "[operations.build]\nrun = \"make\"\n").expect("write the project file");
    let project = load(&dir.join("sub/..").join(FILE_NAME)).expect("valid");
    let canonical = dir.canonicalize().expect("canonical directory");
    assert_eq!(project.dir, canonical);
    assert_eq!(project.path, canonical.join(FILE_NAME));
    assert_eq!(project.name, "shop");
    assert_eq!(project.operations["build"].command, Command::Shell("make".to_owned()));
}

#[test]
fn load_reports_an_unreadable_file_with_its_path() {
    let root = tempfile::tempdir().expect("temp dir");
    let path = root.path().join(FILE_NAME);
    let err = load(&path).expect_err("no file");
    assert!(matches!(&err, ProjectError::Read { path: reported, .. } if *reported == path), "{err:?}");
    assert!(!err.is_not_found());
    assert!(err.to_string().starts_with(&format!("cannot read project file {}: ", path.display())), "{err}");
}

#[test]
fn load_reports_an_invalid_file_at_its_canonical_path() {
    let root = tempfile::tempdir().expect("temp dir");
    let path = root.path().join(FILE_NAME);
    std::fs::write(&path, "[operations.build]\nrun = 1\n").expect("write the project file");
    let err = load(&path).expect_err("invalid");
    let canonical = path.canonicalize().expect("canonical path");
    assert!(err.to_string().starts_with(&format!("{}:2:7: ", canonical.display())), "{err}");
}

#[test]
fn a_builtin_operation_is_read_and_an_unknown_one_is_named() {
    let path = Path::new("/p/runway.toml");
    let project = parse(path, "[operations.ping]\nrun = { builtin = \"noop\" }\n").expect("valid");
    assert_eq!(project.operations["ping"].command, Command::Builtin(Builtin::Noop));
    let err = parse(path, "[operations.ping]\nrun = { builtin = \"nope\" }\n").expect_err("unknown builtin");
    let text = err.to_string();
    assert!(text.starts_with("/p/runway.toml:2:"), "{text}");
    assert!(text.contains("unknown builtin `nope`, expected one of: noop"), "{text}");
    let err = parse(path, "[operations.ping]\nrun = { program = \"x\" }\n").expect_err("unknown key");
    assert!(err.to_string().contains("program"), "{err}");
}

#[test]
fn concurrency_is_a_group_name_or_false() {
    let project = parse_text(
        "[operations.deploy]\nrun = \"d\"\nconcurrency = false\n\n[operations.migrate]\nrun = \"m\"\nconcurrency = \"db-prod\"\n\n[operations.build]\nrun = \"b\"\n",
    )
    .expect("valid");
    assert_eq!(project.operations["deploy"].concurrency, super::Concurrency::Off);
    assert_eq!(project.operations["migrate"].concurrency, super::Concurrency::Group("db-prod".to_owned()));
    assert_eq!(project.operations["build"].concurrency, super::Concurrency::Default);
    let (line, _, message) = error("[operations.deploy]\nrun = \"d\"\nconcurrency = true\n");
    assert_eq!(line, 3);
    assert!(message.contains("name the group"), "{message}");
    let (_, _, message) = error("[operations.deploy]\nrun = \"d\"\nconcurrency = \"a b\"\n");
    assert!(message.contains("invalid concurrency group"), "{message}");
}

#[test]
fn secrets_are_names_each_once() {
    let project = parse(
        Path::new("/p/runway.toml"),
        "[operations.deploy]\nrun = \"./deploy\"\nsecrets = [\"DEPLOY_TOKEN\", \"DB_PASSWORD\", \"DEPLOY_TOKEN\"]\n",
    )
    .expect("valid");
    assert_eq!(project.operations["deploy"].secrets, ["DEPLOY_TOKEN", "DB_PASSWORD"]);
    let (line, column, message) = error("[operations.deploy]\nrun = \"x\"\nsecrets = [\"OK\", \"A=B\"]\n");
    assert_eq!((line, column), (3, 18));
    assert!(message.starts_with("invalid secret name `A=B` in operation `deploy`"), "{message}");
}

#[test]
fn retry_keys_default_what_they_do_not_say_and_scheduling_keys_parse() {
    use runway_broker::protocol::{Retry, Status};
    let project = parse_text(
        "[operations.a]\nrun = \"x\"\nretry = {}\n\n[operations.b]\nrun = \"x\"\nretry = { attempts = 5, on = [\"lost\"], \
         delay = \"30s\", exit_codes = [1, 75] }\ndelay = \"10m\"\nconcurrency_pending = \"cancel\"\n",
    )
    .expect("parses");
    let a = &project.operations["a"];
    let all = vec![Status::Failed, Status::Lost, Status::TimedOut];
    assert_eq!(a.retry, Some(Retry { attempts: 3, on: all, delay_ms: 0, exit_codes: vec![] }));
    assert_eq!((a.delay, a.concurrency_pending), (None, Pending::Queue));
    let b = &project.operations["b"];
    assert_eq!(b.retry, Some(Retry { attempts: 5, on: vec![Status::Lost], delay_ms: 30_000, exit_codes: vec![1, 75] }));
    assert_eq!((b.delay, b.concurrency_pending), (Some(Duration::from_secs(600)), Pending::Cancel));
    let (line, column, message) = error("[operations.a]\nrun = \"x\"\nconcurrency_pending = \"later\"\n");
    assert_eq!((line, column), (3, 23));
    assert!(message.starts_with("unknown `concurrency_pending` `later` in operation `a`"), "{message}");
}
