//! The runner's secrets store: values loaded once at start from a secrets file readable only by
//! the runner's user (`NAME=value` lines) and from variables of the runner's own environment
//! that the operator lists, and resolved by name for each job that asks.
//!
//! A value never leaves this module but into a job's environment and the job's masker: its
//! `Debug` shows names only, and no error carries a value or a line of the file.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::environment::{is_variable_name, is_withheld};

/// Named secret values.
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets").field("names", &self.values.keys().collect::<Vec<_>>()).finish()
    }
}

/// Why the store cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    #[error("cannot read secrets file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "secrets file {} is readable by others (mode {mode:o}): make it readable only by its user, e.g. chmod 600 {}",
        path.display(),
        path.display()
    )]
    Readable { path: PathBuf, mode: u32 },
    /// The line is not shown: it may hold a value.
    #[error("secrets file {}:{line}: expected NAME=value", path.display())]
    Syntax { path: PathBuf, line: usize },
    #[error("secrets file {}:{line}: `{name}` is a connection setting or one of runway's own variables", path.display())]
    Withheld { path: PathBuf, line: usize, name: String },
    #[error("--secret-env {name}: no such variable (or not UTF-8) in the runner's environment")]
    MissingVariable { name: String },
    #[error("--secret-env {name}: the runner's connection settings and runway's own variables are never given to jobs")]
    WithheldVariable { name: String },
}

/// The secrets a job names that the runner does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the runner has no secret {}", names.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", "))]
pub struct MissingSecrets {
    pub names: Vec<String>,
}

impl Secrets {
    /// The store of a daemon: the secrets file, if any, then the listed variables of `env`
    /// (which win over the file).
    pub fn load(
        file: Option<&Path>,
        env_names: &[String],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Secrets, SecretsError> {
        let mut values = match file {
            Some(path) => read_file(path)?,
            None => BTreeMap::new(),
        };
        for name in env_names {
            if is_withheld(name) {
                return Err(SecretsError::WithheldVariable { name: name.clone() });
            }
            let value = env(name).ok_or_else(|| SecretsError::MissingVariable { name: name.clone() })?;
            values.insert(name.clone(), value);
        }
        Ok(Secrets { values })
    }

    /// A store of every variable in `vars` that a job may be given: the runner inside the CLI
    /// resolves a secret from the developer's variable of the same name.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Secrets {
        Secrets { values: vars.into_iter().filter(|(name, _)| !is_withheld(name)).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values of `names`, in their order, or every name missing.
    pub(crate) fn resolve(&self, names: &[String]) -> Result<Vec<(String, String)>, MissingSecrets> {
        let missing: Vec<String> = names.iter().filter(|name| !self.values.contains_key(*name)).cloned().collect();
        if !missing.is_empty() {
            return Err(MissingSecrets { names: missing });
        }
        Ok(names.iter().filter_map(|name| self.values.get(name).map(|value| (name.clone(), value.clone()))).collect())
    }
}

/// Read a secrets file: `NAME=value` lines, the value taken as is up to the end of the line (no
/// quotes, no escapes); blank lines and lines starting with `#` are skipped.
fn read_file(path: &Path) -> Result<BTreeMap<String, String>, SecretsError> {
    let read_error = |source| SecretsError::Read { path: path.to_path_buf(), source };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretsError::Readable { path: path.to_path_buf(), mode });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<BTreeMap<String, String>, SecretsError> {
    let mut values = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(SecretsError::Syntax { path: path.to_path_buf(), line: line_number });
        };
        let name = name.trim();
        if !is_variable_name(name) {
            return Err(SecretsError::Syntax { path: path.to_path_buf(), line: line_number });
        }
        if is_withheld(name) {
            return Err(SecretsError::Withheld { path: path.to_path_buf(), line: line_number, name: name.to_owned() });
        }
        values.insert(name.to_owned(), value.to_owned());
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str, mode: u32) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).expect("chmod");
        file
    }

    #[test]
    fn a_file_readable_only_by_its_user_is_read() {
        let file = file("# tokens\nDEPLOY_TOKEN=abc=def \n\nOTHER=x\n", 0o600);
        let secrets = Secrets::load(Some(file.path()), &[], |_| None).expect("loads");
        let resolved = secrets.resolve(&["DEPLOY_TOKEN".to_owned()]).expect("present");
        assert_eq!(resolved, [("DEPLOY_TOKEN".to_owned(), "abc=def ".to_owned())]);
        assert_eq!(format!("{secrets:?}"), r#"Secrets { names: ["DEPLOY_TOKEN", "OTHER"] }"#);
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        for mode in [0o640, 0o604, 0o644] {
            let file = file("A=b\n", mode);
            let err = Secrets::load(Some(file.path()), &[], |_| None).expect_err("refused");
            assert!(matches!(err, SecretsError::Readable { .. }), "{err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
    }

    #[test]
    fn errors_never_show_a_line() {
        let file = file("A=b\nhunter2hunter2\n", 0o600);
        let err = Secrets::load(Some(file.path()), &[], |_| None).expect_err("bad line");
        assert!(err.to_string().ends_with(":2: expected NAME=value"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn listed_variables_are_secrets_and_missing_ones_stop_the_start() {
        let env = |name: &str| (name == "TOKEN").then(|| "t0ken".to_owned());
        let secrets = Secrets::load(None, &["TOKEN".to_owned()], env).expect("loads");
        assert_eq!(secrets.resolve(&["TOKEN".to_owned()]).expect("present")[0].1, "t0ken");
        let err = Secrets::load(None, &["NOPE".to_owned()], env).expect_err("missing");
        assert!(matches!(err, SecretsError::MissingVariable { .. }), "{err}");
        let err = Secrets::load(None, &["RUNWAY_SERVER".to_owned()], env).expect_err("withheld");
        assert!(matches!(err, SecretsError::WithheldVariable { .. }), "{err}");
    }

    #[test]
    fn a_job_naming_unknown_secrets_gets_all_their_names() {
        let secrets = Secrets::from_vars([("A".to_owned(), "1".to_owned())]);
        let err = secrets.resolve(&["A".to_owned(), "B".to_owned(), "C".to_owned()]).expect_err("missing");
        assert_eq!(err.names, ["B", "C"]);
        assert_eq!(err.to_string(), "the runner has no secret `B`, `C`");
    }
}
