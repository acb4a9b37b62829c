//! The project file `runway.toml`: where it is, what it says, and every way it can be wrong,
//! reported as `path:line:column: what was expected`.
//!
//! It only reads and validates; it does not pick the execution mode, apply flags or environment
//! variables, or build jobs (see `settings` and `plan`).
//!
//! Longer than most files (about 600 lines): every key of the file has its validation and its
//! error messages here, and splitting them by key would scatter one schema over several files.
//! The scheduling keys are in `project/schedule.rs`; the hand-written readers of `run`,
//! durations and `target` are in `project/values.rs`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runway_broker::TlsFiles;
use runway_broker::protocol::{Command, Target};
use runway_broker::topology::{self, NameError, Topology};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use values::{DurationText, Run, TargetSection};

/// The file name searched for.
pub const FILE_NAME: &str = "runway.toml";

/// The longest operation name.
const MAX_OPERATION_NAME: usize = 64;

/// What every duration error suggests instead.
const DURATION_EXAMPLES: &str = r#"e.g. "90s", "30m", "1h 30m""#;

/// What every target error suggests instead.
const TARGET_EXAMPLES: &str = r#""any", { runner = "ID" } or { labels = { KEY = "VALUE" } }"#;

/// A parsed, validated project file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// The file, as given to [`parse`] ([`load`] makes it canonical).
    pub path: PathBuf,
    /// The directory holding the file: jobs run there in local and CLI-runner modes.
    pub dir: PathBuf,
    /// `[project] name`, or the name of [`Project::dir`].
    pub name: String,
    /// `[server]`; `None` means local mode unless a flag or the environment names a server.
    pub server: Option<Server>,
    pub operations: BTreeMap<String, Operation>,
}

/// The `[server]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The broker's address, or the nodes of a cluster comma-separated (`urls = [...]`); it may
    /// hold credentials, so it is never put in a message.
    pub url: String,
    pub namespace: Option<String>,
    /// `tls_ca`, `tls_cert`, `tls_key`, relative to the project file's directory.
    pub tls: TlsFiles,
}

/// One `[operations.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub name: String,
    /// Never empty (see [`Command::is_empty`]).
    pub command: Command,
    /// Never zero.
    pub timeout: Option<Duration>,
    /// How long SIGTERM gets before SIGKILL on timeout or cancel; zero means SIGKILL at once.
    pub kill_grace: Option<Duration>,
    pub env: BTreeMap<String, String>,
    /// The names of the secrets the runner injects from its own store.
    pub secrets: Vec<String>,
    pub target: Option<Target>,
    pub retry_on_lost: bool,
    pub description: Option<String>,
    /// `concurrency`: the operation's concurrency group.
    pub concurrency: Concurrency,
    /// `retry`: its jobs' automatic retries.
    pub retry: Option<runway_broker::protocol::Retry>,
    /// `delay`: its jobs wait this long after they are queued.
    pub delay: Option<Duration>,
    /// `concurrency_pending`: what a new job does to the jobs waiting in its group.
    pub concurrency_pending: Pending,
}

/// `concurrency_pending`: what a new job of a group does to the jobs of the group that wait
/// (not the one running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pending {
    /// `"queue"`: they keep waiting, and the new job waits after them.
    #[default]
    Queue,
    /// `"cancel"`: they are cancelled; the new job waits only for the running one.
    Cancel,
}

/// An operation's concurrency group, as the file says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// Not set: `deploy` and `release` get a group of their own per project, others none.
    #[default]
    Default,
    /// `concurrency = false`.
    Off,
    /// `concurrency = "NAME"`.
    Group(String),
}

/// Why the project file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectError {
    #[error("no {FILE_NAME} in {} or any parent directory; create one, or pass --file PATH", start.display())]
    NotFound { start: PathBuf },
    #[error("cannot read project file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// `line` and `column` are 1-based; the column counts characters, not bytes.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid { path: PathBuf, line: usize, column: usize, message: String },
}

impl ProjectError {
    /// There is no project file: some commands can do without one.
    pub fn is_not_found(&self) -> bool {
        match self {
            ProjectError::NotFound { .. } => true,
            ProjectError::Read { .. } | ProjectError::Invalid { .. } => false,
        }
    }
}

/// The project file in `start` or the nearest parent directory, as cargo and git find theirs.
pub fn find(start: &Path) -> Result<PathBuf, ProjectError> {
    start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| ProjectError::NotFound { start: start.to_path_buf() })
}

/// Read, parse and validate the file at `path`.
///
/// The path is made canonical first, so [`Project::dir`] is the real, absolute directory that
/// runners are sent to, whatever `..` or symlinks the caller's path went through.
pub fn load(path: &Path) -> Result<Project, ProjectError> {
    let read_error = |source| ProjectError::Read { path: path.to_path_buf(), source };
    let path = path.canonicalize().map_err(read_error)?;
    let text = std::fs::read_to_string(&path).map_err(read_error)?;
    parse(&path, &text)
}

/// Parse and validate `text`, the contents of `path`; this reads nothing from disk.
///
/// `path` names the file in errors, and its directory is the project's (made absolute against
/// the current directory if it is relative).
pub fn parse(path: &Path, text: &str) -> Result<Project, ProjectError> {
    let file = SourceFile { path, text };
    let root = DeTable::parse(text).map_err(|err| file.syntax_error(&err))?;
    let dir = directory_of(path);
    let mut name = None;
    let mut server = None;
    let mut operations = BTreeMap::new();
    for (key, value) in in_file_order(root.into_inner()) {
        match key.get_ref().as_ref() {
            "project" => name = file.project_name(value)?,
            "server" => server = Some(file.server(&key, value)?),
            "operations" => operations = file.operations(value)?,
            other => {
                return Err(file.invalid(
                    key.span(),
                    format!(
                        "unknown key `{other}` at the top level, expected one of `project`, `server`, `operations`"
                    ),
                ));
            }
        }
    }
    let name = match name {
        Some(name) => name,
        None => match dir.file_name() {
            Some(dir_name) => dir_name.to_string_lossy().into_owned(),
            None => {
                return Err(file.invalid(
                    0..0,
                    format!("cannot name the project after directory {}; set name in [project]", dir.display()),
                ));
            }
        },
    };
    Ok(Project { path: path.to_path_buf(), dir, name, server, operations })
}

/// The `[project]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectSection {
    name: Option<Spanned<String>>,
}

/// The `[server]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    url: Option<Spanned<String>>,
    /// The nodes of a cluster, instead of `url`.
    urls: Option<Spanned<Vec<Spanned<String>>>>,
    namespace: Option<Spanned<String>>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// An `[operations.NAME]` table as written; [`SourceFile::operation`] validates it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperationSection {
    run: Option<Spanned<Run>>,
    timeout: Option<Spanned<DurationText>>,
    kill_grace: Option<Spanned<DurationText>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    secrets: Vec<Spanned<String>>,
    target: Option<Spanned<TargetSection>>,
    #[serde(default)]
    retry_on_lost: bool,
    description: Option<String>,
    concurrency: Option<Spanned<ConcurrencySection>>,
    retry: Option<schedule::RetrySection>,
    delay: Option<Spanned<DurationText>>,
    concurrency_pending: Option<Spanned<String>>,
}

/// `concurrency` as written: a group name, or `false`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ConcurrencySection {
    Group(String),
    Flag(bool),
}

/// The text being parsed and where it came from, to turn byte spans into located errors.
struct SourceFile<'a> {
    path: &'a Path,
    text: &'a str,
}

impl SourceFile<'_> {
    fn invalid(&self, span: Range<usize>, message: String) -> ProjectError {
        let (line, column) = line_column(self.text, span.start);
        ProjectError::Invalid { path: self.path.to_path_buf(), line, column, message }
    }

    fn syntax_error(&self, err: &toml::de::Error) -> ProjectError {
        self.invalid(err.span().unwrap_or(0..0), format!("invalid TOML: {}", first_line(err.message())))
    }

    /// Deserialise the table `value` into `T`, naming `header` in every error.
    fn section<'i, T: Deserialize<'i>>(&self, value: Spanned<DeValue<'i>>, header: &str) -> Result<T, ProjectError> {
        let span = value.span();
        if !value.get_ref().is_table() {
            let found = value.get_ref().type_str();
            return Err(self.invalid(span, format!("expected a table for {header}, found {found}")));
        }
        T::deserialize(ValueDeserializer::from(value))
            .map_err(|err| self.invalid(err.span().unwrap_or(span), in_section(first_line(err.message()), header)))
    }

    fn project_name(&self, value: Spanned<DeValue<'_>>) -> Result<Option<String>, ProjectError> {
        let section: ProjectSection = self.section(value, "[project]")?;
        match section.name {
            Some(name) if name.get_ref().trim().is_empty() => {
                Err(self.invalid(name.span(), "empty project name in [project]".to_owned()))
            }
            Some(name) => Ok(Some(name.into_inner())),
            None => Ok(None),
        }
    }

    fn server(&self, key: &Spanned<Cow<'_, str>>, value: Spanned<DeValue<'_>>) -> Result<Server, ProjectError> {
        let section: ServerSection = self.section(value, "[server]")?;
        let url = match (section.url, section.urls) {
            (Some(url), None) => {
                if url.get_ref().trim().is_empty() {
                    return Err(self.invalid(url.span(), "empty `url` in [server]".to_owned()));
                }
                url.into_inner()
            }
            (None, Some(urls)) => self.server_urls(urls)?,
            (Some(_), Some(urls)) => {
                return Err(self.invalid(
                    urls.span(),
                    "both `url` and `urls` in [server]: give one address as `url`, or the nodes of a cluster as `urls`"
                        .to_owned(),
                ));
            }
            (None, None) => {
                return Err(self.invalid(
                    key.span(),
                    r#"missing `url` in [server], expected the broker's address, e.g. url = "amqp://127.0.0.1:5672/%2f""#
                        .to_owned(),
                ));
            }
        };
        let namespace = match section.namespace {
            Some(namespace) => {
                Topology::new(namespace.get_ref())
                    .map_err(|err| self.invalid(namespace.span(), format!("{err} in [server]")))?;
                Some(namespace.into_inner())
            }
            None => None,
        };
        let dir = self.path.parent().unwrap_or(Path::new(""));
        let tls = TlsFiles {
            ca: section.tls_ca.map(|path| dir.join(path)),
            cert: section.tls_cert.map(|path| dir.join(path)),
            key: section.tls_key.map(|path| dir.join(path)),
        };
        Ok(Server { url, namespace, tls })
    }

    /// `urls = [...]` as one comma-separated server list; each entry is checked for what would
    /// break the list (the URLs themselves are checked when dialled).
    fn server_urls(&self, urls: Spanned<Vec<Spanned<String>>>) -> Result<String, ProjectError> {
        if urls.get_ref().is_empty() {
            return Err(self.invalid(urls.span(), "empty `urls` in [server], expected at least one address".to_owned()));
        }
        let mut list = Vec::with_capacity(urls.get_ref().len());
        for (at, url) in urls.into_inner().into_iter().enumerate() {
            let problem = if url.get_ref().trim().is_empty() {
                Some("is empty")
            } else if url.get_ref().contains(',') {
                Some("holds a comma (give each node its own entry)")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(self.invalid(url.span(), format!("entry {} of `urls` in [server] {problem}", at + 1)));
            }
            list.push(url.into_inner().trim().to_owned());
        }
        Ok(list.join(","))
    }

    fn operations(&self, value: Spanned<DeValue<'_>>) -> Result<BTreeMap<String, Operation>, ProjectError> {
        let span = value.span();
        let found = value.get_ref().type_str();
        let DeValue::Table(table) = value.into_inner() else {
            return Err(self.invalid(span, format!("expected a table for [operations], found {found}")));
        };
        let mut operations = BTreeMap::new();
        for (name, value) in in_file_order(table) {
            let operation = self.operation(&name, value)?;
            operations.insert(operation.name.clone(), operation);
        }
        Ok(operations)
    }

    fn operation(&self, key: &Spanned<Cow<'_, str>>, value: Spanned<DeValue<'_>>) -> Result<Operation, ProjectError> {
        let name = key.get_ref().as_ref();
        if !is_operation_name(name) {
            return Err(self.invalid(
                key.span(),
                format!(
                    "invalid operation name `{name}`: use 1 to {MAX_OPERATION_NAME} letters, digits, `-`, `_` or `.`"
                ),
            ));
        }
        let header = operation_header(name);
        if !value.get_ref().is_table() {
            let found = value.get_ref().type_str();
            return Err(self.invalid(
                value.span(),
                format!(r#"expected a table for operation `{name}`, e.g. {header} with run = "...", found {found}"#),
            ));
        }
        let section: OperationSection = self.section(value, &header)?;
        let Some(run) = section.run else {
            return Err(self.invalid(
                key.span(),
                format!(
                    "missing `run` in operation `{name}`, expected a command string, an array of strings, \
                     or {{ builtin = \"noop\" }}"
                ),
            ));
        };
        if run.get_ref().0.is_empty() {
            return Err(self.invalid(run.span(), format!("empty command in operation `{name}`")));
        }
        let timeout = match section.timeout {
            Some(text) => {
                let timeout = self.duration(&text, "timeout")?;
                if timeout.is_zero() {
                    return Err(self.invalid(
                        text.span(),
                        format!(
                            "zero `timeout` in operation `{name}`, expected a positive duration, {DURATION_EXAMPLES}"
                        ),
                    ));
                }
                // The wire carries milliseconds: under one would be sent as 0.
                if timeout.as_millis() == 0 {
                    let value = &text.get_ref().0;
                    return Err(self.invalid(
                        text.span(),
                        format!(
                            "`timeout` `{value}` in operation `{name}` is under a millisecond (timeouts are \
                             sent in whole ms), expected at least 1ms, {DURATION_EXAMPLES}"
                        ),
                    ));
                }
                Some(timeout)
            }
            None => None,
        };
        let kill_grace = section.kill_grace.map(|text| self.duration(&text, "kill_grace")).transpose()?;
        let mut env = BTreeMap::new();
        for (key, value) in section.env {
            let valid = !key.get_ref().is_empty() && !key.get_ref().contains(['=', '\0']);
            if !valid {
                return Err(self.invalid(
                    key.span(),
                    format!(
                        "invalid environment variable name `{}` in operation `{name}`: it must be non-empty, \
                         without `=` or NUL",
                        key.get_ref().escape_debug()
                    ),
                ));
            }
            env.insert(key.into_inner(), value);
        }
        let secrets = self.secret_names(section.secrets, name)?;
        let target = section.target.map(|target| self.target(target.into_inner(), name)).transpose()?;
        let concurrency = match section.concurrency {
            None => Concurrency::Default,
            Some(spanned) => {
                let span = spanned.span();
                match spanned.into_inner() {
                    ConcurrencySection::Flag(false) => Concurrency::Off,
                    ConcurrencySection::Flag(true) => {
                        return Err(self.invalid(
                            span,
                            format!("`concurrency = true` in operation `{name}`: name the group, or write false"),
                        ));
                    }
                    ConcurrencySection::Group(group) => {
                        runway_broker::topology::check_group(&group)
                            .map_err(|err| self.invalid(span, format!("{err} (operation `{name}`)")))?;
                        Concurrency::Group(group)
                    }
                }
            }
        };
        let retry = section.retry.map(|retry| self.retry(retry, name)).transpose()?;
        let delay = section.delay.map(|text| self.delay(&text, name)).transpose()?;
        let concurrency_pending =
            section.concurrency_pending.map(|text| self.pending(&text, name)).transpose()?.unwrap_or_default();
        Ok(Operation {
            name: name.to_owned(),
            command: run.into_inner().0,
            timeout,
            kill_grace,
            env,
            secrets,
            target,
            retry_on_lost: section.retry_on_lost,
            description: section.description,
            concurrency,
            retry,
            delay,
            concurrency_pending,
        })
    }

    /// The `secrets` of operation `name`: variable names, each once.
    fn secret_names(&self, names: Vec<Spanned<String>>, name: &str) -> Result<Vec<String>, ProjectError> {
        let mut secrets = Vec::new();
        for secret in names {
            if !runway_worker::environment::is_variable_name(secret.get_ref()) {
                return Err(self.invalid(
                    secret.span(),
                    format!(
                        "invalid secret name `{}` in operation `{name}`: it must be non-empty, without `=` or NUL",
                        secret.get_ref().escape_debug()
                    ),
                ));
            }
            if !secrets.contains(secret.get_ref()) {
                secrets.push(secret.into_inner());
            }
        }
        Ok(secrets)
    }

    fn duration(&self, text: &Spanned<DurationText>, key: &str) -> Result<Duration, ProjectError> {
        let value = &text.get_ref().0;
        humantime::parse_duration(value).map_err(|err| {
            self.invalid(
                text.span(),
                format!("invalid duration `{value}` for `{key}`: {err}; expected {DURATION_EXAMPLES}"),
            )
        })
    }

    fn target(&self, target: TargetSection, operation: &str) -> Result<Target, ProjectError> {
        match target {
            TargetSection::Any => Ok(Target::Any),
            TargetSection::Runner(id) => {
                topology::check_runner_id(id.get_ref()).map_err(|err| {
                    self.invalid(id.span(), format!("{err} in the target of operation `{operation}`"))
                })?;
                Ok(Target::Runner(id.into_inner()))
            }
            TargetSection::Labels(labels) => {
                let plain: BTreeMap<String, String> = labels
                    .get_ref()
                    .iter()
                    .map(|(key, value)| (key.get_ref().clone(), value.get_ref().clone()))
                    .collect();
                if let Err(err) = topology::check_labels(&plain) {
                    let span = offending_label(&labels, &err).unwrap_or_else(|| labels.span());
                    return Err(self.invalid(span, format!("{err} in the target of operation `{operation}`")));
                }
                Ok(Target::Labels(plain))
            }
        }
    }
}

/// Where in the `labels` table the value that `err` complains about is written, if it names one.
fn offending_label(
    labels: &Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
    err: &NameError,
) -> Option<Range<usize>> {
    let NameError::Invalid { value: bad, .. } = err else {
        return None;
    };
    labels.get_ref().iter().find_map(|(key, value)| {
        if key.get_ref() == bad {
            Some(key.span())
        } else if value.get_ref() == bad {
            Some(value.span())
        } else {
            None
        }
    })
}

/// The entries of a table in the order they are written, so the first problem reported is the
/// first one in the file whatever order toml's map keeps.
fn in_file_order<'i>(table: DeTable<'i>) -> Vec<(Spanned<Cow<'i, str>>, Spanned<DeValue<'i>>)> {
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// Say in which table a deserialisation message happened, in TOML's words rather than serde's:
/// "unknown field `tiemout`, expected ..." becomes "unknown key `tiemout` in [operations.build],
/// expected ...".
fn in_section(message: &str, header: &str) -> String {
    match message.strip_prefix("unknown field ").and_then(|rest| rest.split_once("`, ")) {
        Some((key, expected)) => format!("unknown key {key}` in {header}, {expected}"),
        None => format!("{header}: {message}"),
    }
}

/// toml's messages may go on over several lines; a located error keeps the first.
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message).trim().trim_end_matches('.')
}

/// The table header of an operation, quoting a name that holds a `.`.
fn operation_header(name: &str) -> String {
    if name.contains('.') { format!("[operations.\"{name}\"]") } else { format!("[operations.{name}]") }
}

fn is_operation_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_OPERATION_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The absolute directory holding `path`.
fn directory_of(path: &Path) -> PathBuf {
    let parent = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // `absolute` fails only on an empty path or without a current directory; the relative
    // directory then still names the right place for this process.
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

/// 1-based line and column (in characters) of a byte offset into `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for (index, character) in text.char_indices() {
        if index >= offset {
            break;
        }
        if character == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

mod schedule;
mod values;

#[cfg(test)]
mod tests;
