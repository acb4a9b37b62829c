//! The project file `runway.toml`: where it is, what it says, and every way it can be wrong,
//! reported as `path:line:column: what was expected`.
//!
//! It only reads and validates; it does not decide the mode or build jobs (see `commands`).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runway_broker::protocol::{Command, Target};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

/// The file name searched for.
pub const FILE_NAME: &str = "runway.toml";

/// A parsed, validated project file.
#[derive(Debug, Clone)]
pub struct Project {
    pub path: PathBuf,
    /// The directory holding the file: jobs run there in local and CLI-runner modes.
    pub dir: PathBuf,
    pub name: String,
    pub server: Option<Server>,
    pub operations: BTreeMap<String, Operation>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub url: String,
    pub namespace: Option<String>,
}

/// One operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub name: String,
    pub command: Command,
    pub timeout: Option<Duration>,
    pub kill_grace: Option<Duration>,
    pub env: BTreeMap<String, String>,
    pub target: Option<Target>,
    pub retry_on_lost: bool,
    pub description: Option<String>,
}

/// Why the project file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectError {
    #[error("no {FILE_NAME} in {} or any parent directory; create one, or pass --file PATH", start.display())]
    NotFound { start: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid { path: PathBuf, line: usize, column: usize, message: String },
}

impl ProjectError {
    pub fn is_not_found(&self) -> bool {
        match self {
            ProjectError::NotFound { .. } => true,
            ProjectError::Read { .. } | ProjectError::Invalid { .. } => false,
        }
    }
}

/// The project file in `start` or the nearest parent directory.
pub fn find(start: &Path) -> Result<PathBuf, ProjectError> {
    start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| ProjectError::NotFound { start: start.to_path_buf() })
}

/// Read, parse and validate the file at `path`.
pub fn load(path: &Path) -> Result<Project, ProjectError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ProjectError::Read { path: path.to_path_buf(), source })?;
    parse(path, &text)
}

/// Parse and validate `text`, read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Project, ProjectError> {
    let invalid = |span: Option<Range<usize>>, message: String| {
        let (line, column) = line_column(text, span.map_or(0, |span| span.start));
        ProjectError::Invalid { path: path.to_path_buf(), line, column, message }
    };
    let file: File = toml::from_str(text).map_err(|err| invalid(err.span(), describe_toml_error(&err)))?;
    let dir = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    let dir = dir.canonicalize().unwrap_or(dir);
    let name = match file.project.and_then(|project| project.name) {
        Some(name) if name.get_ref().trim().is_empty() => {
            return Err(invalid(Some(name.span()), "empty project name".to_owned()));
        }
        Some(name) => name.into_inner(),
        None => dir.file_name().map_or_else(|| "project".to_owned(), |name| name.to_string_lossy().into_owned()),
    };
    let server = match file.server {
        Some(server) => {
            if server.url.get_ref().trim().is_empty() {
                return Err(invalid(Some(server.url.span()), "empty server url".to_owned()));
            }
            Some(Server { url: server.url.into_inner(), namespace: server.namespace })
        }
        None => None,
    };
    let mut operations = BTreeMap::new();
    for (name, spanned) in file.operations {
        let span = spanned.span();
        let raw = spanned.into_inner();
        if !valid_operation_name(&name) {
            return Err(invalid(
                Some(span),
                format!("invalid operation name `{name}`: use 1 to 64 letters, digits, `-`, `_` or `.`"),
            ));
        }
        let Some(run) = raw.run else {
            return Err(invalid(
                Some(span),
                format!("operation `{name}` has no `run`: expected a command string or an array of strings"),
            ));
        };
        let run_span = run.span();
        let command = run.into_inner().0;
        if command.is_empty() {
            return Err(invalid(Some(run_span), format!("empty command in operation `{name}`")));
        }
        let timeout = raw
            .timeout
            .map(|value| duration(&value, "timeout"))
            .transpose()
            .map_err(|(span, message)| invalid(Some(span), message))?;
        let kill_grace = raw
            .kill_grace
            .map(|value| duration(&value, "kill_grace"))
            .transpose()
            .map_err(|(span, message)| invalid(Some(span), message))?;
        let mut env = BTreeMap::new();
        for (key, value) in raw.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(invalid(
                    Some(value.span()),
                    format!("invalid env name `{key}` in operation `{name}`: it must be non-empty, without `=` or NUL"),
                ));
            }
            env.insert(key, value.into_inner());
        }
        let target = raw
            .target
            .map(|target| {
                let span = target.span();
                resolve_target(target.into_inner()).map_err(|message| invalid(Some(span), message))
            })
            .transpose()?;
        operations.insert(
            name.clone(),
            Operation {
                name,
                command,
                timeout,
                kill_grace,
                env,
                target,
                retry_on_lost: raw.retry_on_lost,
                description: raw.description,
            },
        );
    }
    Ok(Project { path: path.to_path_buf(), dir, name, server, operations })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    project: Option<ProjectSection>,
    server: Option<ServerSection>,
    #[serde(default)]
    operations: BTreeMap<String, Spanned<RawOperation>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectSection {
    name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    url: Spanned<String>,
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperation {
    run: Option<Spanned<RunSpec>>,
    timeout: Option<Spanned<String>>,
    kill_grace: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    target: Option<Spanned<RawTarget>>,
    #[serde(default)]
    retry_on_lost: bool,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargetTable {
    runner: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug)]
enum RawTarget {
    Any,
    Table(RawTargetTable),
}

impl<'de> Deserialize<'de> for RawTarget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TargetVisitor;
        impl<'de> Visitor<'de> for TargetVisitor {
            type Value = RawTarget;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"any\", { runner = \"ID\" } or { labels = { key = \"value\" } }")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawTarget, E> {
                if value == "any" {
                    Ok(RawTarget::Any)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(value), &self))
                }
            }
            fn visit_map<M: de::MapAccess<'de>>(self, map: M) -> Result<RawTarget, M::Error> {
                RawTargetTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawTarget::Table)
            }
        }
        deserializer.deserialize_any(TargetVisitor)
    }
}

fn resolve_target(raw: RawTarget) -> Result<Target, String> {
    match raw {
        RawTarget::Any => Ok(Target::Any),
        RawTarget::Table(RawTargetTable { runner: Some(id), labels: None }) => {
            runway_broker::topology::check_runner_id(&id).map_err(|err| format!("invalid target: {err}"))?;
            Ok(Target::Runner(id))
        }
        RawTarget::Table(RawTargetTable { runner: None, labels: Some(labels) }) => {
            runway_broker::topology::check_labels(&labels).map_err(|err| format!("invalid target: {err}"))?;
            Ok(Target::Labels(labels))
        }
        RawTarget::Table(_) => {
            Err("invalid target: expected exactly one of `runner` or `labels`, e.g. { labels = { env = \"prod\" } }"
                .to_owned())
        }
    }
}

/// The `run` value: a shell string or an argv array.
#[derive(Debug)]
struct RunSpec(Command);

impl<'de> Deserialize<'de> for RunSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RunVisitor;
        impl<'de> Visitor<'de> for RunVisitor {
            type Value = RunSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RunSpec, E> {
                Ok(RunSpec(Command::Shell(value.to_owned())))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<RunSpec, S::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                Ok(RunSpec(Command::Argv(argv)))
            }
        }
        deserializer.deserialize_any(RunVisitor)
    }
}

fn duration(value: &Spanned<String>, key: &str) -> Result<Duration, (Range<usize>, String)> {
    let text = value.get_ref();
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => {
            Err((value.span(), format!("`{key}` is zero; expected a positive duration")))
        }
        Ok(duration) => Ok(duration),
        Err(err) => Err((
            value.span(),
            format!("invalid duration `{text}` for `{key}`: {err}; expected e.g. \"90s\", \"30m\", \"1h 30m\""),
        )),
    }
}

fn valid_operation_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// toml's message is multi-line with a source excerpt; keep its first line, in our words.
fn describe_toml_error(err: &toml::de::Error) -> String {
    let message = err.message().trim().trim_end_matches('.').to_owned();
    let message = message.replace("unknown field", "unknown key");
    message.lines().next().unwrap_or("invalid TOML").to_owned()
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |last| last.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Project, ProjectError> {
        parse(Path::new("/nonexistent/shop/runway.toml"), text)
    }

    #[track_caller]
    fn error(text: &str) -> (usize, usize, String) {
        match parse_text(text) {
            Err(ProjectError::Invalid { line, column, message, .. }) => (line, column, message),
            other => panic!("expected an invalid-file error, got {other:?}"),
        }
    }

    #[test]
    fn a_full_file_parses() {
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
kill_grace = "5s"
env = { RUST_LOG = "info" }
description = "compile"

[operations.deploy]
run = ["./deploy.sh", "production"]
target = { labels = { env = "prod" } }
retry_on_lost = true

[operations.pinned]
run = "true"
target = { runner = "build-01" }

[operations.anywhere]
run = "true"
target = "any"
"#,
        )
        .expect("valid");
        assert_eq!(project.name, "shop");
        let server = project.server.expect("server");
        assert_eq!(server.namespace.as_deref(), Some("ci"));
        let build = &project.operations["build"];
        assert_eq!(build.command, Command::Shell("cargo build --release".into()));
        assert_eq!(build.timeout, Some(Duration::from_secs(1800)));
        assert_eq!(build.kill_grace, Some(Duration::from_secs(5)));
        assert_eq!(build.env["RUST_LOG"], "info");
        assert_eq!(build.description.as_deref(), Some("compile"));
        let deploy = &project.operations["deploy"];
        assert_eq!(deploy.command, Command::Argv(vec!["./deploy.sh".into(), "production".into()]));
        assert_eq!(deploy.target, Some(Target::Labels(BTreeMap::from([("env".into(), "prod".into())]))));
        assert!(deploy.retry_on_lost);
        assert_eq!(project.operations["pinned"].target, Some(Target::Runner("build-01".into())));
        assert_eq!(project.operations["anywhere"].target, Some(Target::Any));
    }

    #[test]
    fn the_project_name_defaults_to_the_directory() {
        let project = parse_text("[operations.a]\nrun = \"true\"\n").expect("valid");
        assert_eq!(project.name, "shop");
        assert!(project.server.is_none());
    }

    #[test]
    fn an_empty_file_is_an_empty_project() {
        assert!(parse_text("").expect("valid").operations.is_empty());
    }

    #[test]
    fn unknown_keys_are_named_at_their_position() {
        let (line, column, message) = error("[operations.build]\nrun = \"make\"\ntiemout = \"1m\"\n");
        assert_eq!((line, column), (3, 1));
        assert!(message.contains("tiemout") && message.contains("timeout"), "{message}");
        let (line, column, message) = error("[project]\nname = \"x\"\n\n[sever]\nurl = \"amqp://x\"\n");
        assert_eq!((line, column), (4, 2));
        assert!(message.contains("sever") && message.contains("server"), "{message}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let (line, _, message) = error("[operations.build]\nrun = \"make\n");
        assert_eq!(line, 2);
        assert!(!message.is_empty());
    }

    #[test]
    fn run_is_required_and_typed() {
        let (line, _, message) = error("[operations.build]\ntimeout = \"1m\"\n");
        assert_eq!(line, 1, "the operation's table is named: {message}");
        assert!(message.contains("no `run`"), "{message}");
        let (line, column, message) = error("[operations.build]\nrun = 42\n");
        assert_eq!((line, column), (2, 7));
        assert!(message.contains("a command string or an array of strings"), "{message}");
    }

    #[test]
    fn empty_commands_are_rejected() {
        for run in ["\"   \"", "[]", "[\"\", \"x\"]"] {
            let (line, column, message) = error(&format!("[operations.build]\nrun = {run}\n"));
            assert_eq!((line, column), (2, 7), "{run}");
            assert!(message.contains("empty command in operation `build`"), "{message}");
        }
    }

    #[test]
    fn bad_and_zero_durations_are_rejected() {
        let (line, column, message) = error("[operations.build]\nrun = \"x\"\ntimeout = \"soon\"\n");
        assert_eq!((line, column), (3, 11));
        assert!(
            message.contains("invalid duration `soon` for `timeout`") && message.contains("expected e.g."),
            "{message}"
        );
        let (_, _, message) = error("[operations.build]\nrun = \"x\"\nkill_grace = \"0s\"\n");
        assert!(message.contains("`kill_grace` is zero"), "{message}");
    }

    #[test]
    fn bad_targets_are_rejected() {
        let (line, _, message) = error("[operations.d]\nrun = \"x\"\ntarget = { labels = { env = \"pr od\" } }\n");
        assert_eq!(line, 3);
        assert!(message.contains("invalid target") && message.contains("label value"), "{message}");
        let (_, _, message) =
            error("[operations.d]\nrun = \"x\"\ntarget = { runner = \"a\", labels = { a = \"b\" } }\n");
        assert!(message.contains("exactly one of"), "{message}");
        let (_, _, message) = error("[operations.d]\nrun = \"x\"\ntarget = \"everywhere\"\n");
        assert!(message.contains("\"any\""), "{message}");
    }

    #[test]
    fn bad_names_are_rejected() {
        let (_, _, message) = error("[operations.\"a b\"]\nrun = \"x\"\n");
        assert!(message.contains("invalid operation name `a b`"), "{message}");
        let (_, _, message) = error("[operations.a]\nrun = \"x\"\nenv = { \"A=B\" = \"c\" }\n");
        assert!(message.contains("invalid env name `A=B`"), "{message}");
    }

    #[test]
    fn find_walks_up_and_names_the_start_when_absent() {
        let root = tempfile::tempdir().expect("temp dir");
        let nested = root.path().join("a/b");
        std::fs::create_dir_all(&nested).expect("mkdir");
        let err = find(&nested).expect_err("none yet");
        assert!(err.is_not_found());
        assert!(err.to_string().contains(&nested.display().to_string()), "{err}");
        std::fs::write(root.path().join(FILE_NAME), "").expect("write");
        assert_eq!(find(&nested).expect("found"), root.path().join(FILE_NAME));
    }

    #[test]
    fn line_columns_count_characters() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
        assert_eq!(line_column("", 0), (1, 1));
    }
}
