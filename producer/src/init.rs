//! `runway init`: a commented `runway.toml` for the current directory (or `--file PATH`), with
//! an operation that works as written, so `runway build` runs at once in local mode.
//!
//! It never overwrites: an existing file is an error (exit 73), and the file is created with
//! `create_new`, so a file made meanwhile by someone else is not replaced either.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::exit::{self, CliError};
use crate::project::FILE_NAME;

/// Write the template to `file`, or to `runway.toml` in the current directory; says where.
pub fn init(file: Option<&Path>) -> Result<u8, CliError> {
    let path = match file {
        Some(path) => path.to_path_buf(),
        None => std::env::current_dir()
            .map_err(|err| CliError::Internal(format!("cannot read the current directory: {err}")))?
            .join(FILE_NAME),
    };
    let name = project_name(&path);
    let mut created = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::CannotCreate(format!(
                "{} already exists; runway init never overwrites a project file (edit it, or remove it first)",
                path.display()
            ))
        } else {
            CliError::CannotCreate(format!("cannot create {}: {err}", path.display()))
        }
    })?;
    created
        .write_all(template(&name).as_bytes())
        .map_err(|err| CliError::CannotCreate(format!("cannot write {}: {err}", path.display())))?;
    eprintln!("runway: wrote {}; try `runway build`", shown(&path).display());
    Ok(exit::SUCCESS)
}

/// The project's name: its directory's, as the project file would default to.
fn project_name(path: &Path) -> String {
    let dir = path.parent().map(Path::to_path_buf).filter(|dir| !dir.as_os_str().is_empty());
    let dir = dir.or_else(|| std::env::current_dir().ok()).and_then(|dir| dir.canonicalize().ok());
    dir.and_then(|dir| dir.file_name().map(|name| name.to_string_lossy().into_owned()))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "project".to_owned())
}

/// The path as the user would name it: relative to the current directory when it is under it.
fn shown(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
}

/// The file `runway init` writes for a project called `name`.
pub fn template(name: &str) -> String {
    // A TOML string, quoted and escaped whatever the directory is called.
    let quoted = toml::Value::String(name.to_owned()).to_string();
    format!(
        r#"# runway.toml: the operations of this project, which `runway` runs as jobs on runners.
# `runway build` runs [operations.build]; `runway run NAME` runs any operation below.
# Every key is described in runway's README ("The project file").

[project]
name = {quoted}                   # shown in `runway job list`; default: the directory's name

# Without [server], runway runs in local mode: an in-memory broker and a runner inside the CLI,
# so nothing needs to be installed. With a server, jobs go through RabbitMQ to runners
# (`runway-worker`) and are kept in its history.
# [server]
# url = "amqp://guest:guest@127.0.0.1:5672/%2f"   # or several nodes: urls = ["amqp://...", ...]
# namespace = "runway"                            # the prefix of every exchange and queue

[operations.build]
description = "build the project"
run = "echo building, job $RUNWAY_JOB_ID"   # replace with your build; a string runs under sh -c; args after `--` become $1...
# run = ["make", "all"]           # an array is argv; args after `--` are appended
# timeout = "30m"                 # then the job ends timed_out (SIGTERM, SIGKILL after kill_grace)
# kill_grace = "10s"
# env = {{ RUST_LOG = "info" }}     # sent in the job message: never put secrets here
# secrets = ["TOKEN"]             # names only: the runner injects the values from its own store

# [operations.deploy]
# run = ["./deploy.sh", "production"]
# target = {{ labels = {{ env = "prod" }} }}   # which runners may run it: "any", {{ runner = "ID" }} or labels
# concurrency = "production"      # one job of this group at a time (deploy and release get one by default)
# retry_on_lost = false           # run again on another runner if this one goes silent

# [operations.ping]
# run = {{ builtin = "noop" }}      # done by the runner itself: checks that a runner answers
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_a_valid_project_file_whatever_the_directory_is_called() {
        for name in ["shop", "with \"quotes\" and \\ backslash", "ünïcode dir"] {
            let project = crate::project::parse(Path::new("/tmp/x/runway.toml"), &template(name))
                .unwrap_or_else(|err| panic!("{name}: {err}"));
            assert_eq!(project.name, name);
            assert!(project.server.is_none(), "the template is local mode");
            assert_eq!(project.operations.keys().collect::<Vec<_>>(), ["build"]);
        }
    }
}
