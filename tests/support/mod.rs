//! Test support: locate the built binaries, make a temporary project, run `runway` in it and
//! capture what it printed.
//!
//! The binaries are built by `make test` (cargo builds only this crate's own binaries for its
//! tests); a missing binary fails with that instruction rather than a confusing error.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// How long one CLI run may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A built binary of the workspace, next to this test executable's directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let dir = exe.parent().and_then(Path::parent).expect("test binaries live in target/<profile>/deps");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: build the binaries first (`cargo build --workspace --bins`, as `make test` does)", path.display());
    path
}

/// A temporary project directory with a runway.toml.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(toml: &str) -> Project {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("runway.toml"), toml).expect("write runway.toml");
        Project { dir }
    }

    /// A directory with no project file anywhere above it that we control.
    pub fn empty() -> Project {
        Project { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run `runway` with `args` in the project directory.
    pub async fn runway(&self, args: &[&str]) -> Run {
        self.runway_env(args, &[]).await
    }

    pub async fn runway_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = tokio::process::Command::new(binary("runway"));
        command
            .args(args)
            .current_dir(self.path())
            .env_remove("RUNWAY_SERVER")
            .env_remove("RUNWAY_NAMESPACE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(PATIENCE, command.output())
            .await
            .unwrap_or_else(|_| panic!("runway {args:?} did not finish within {PATIENCE:?}"))
            .expect("runway runs");
        Run {
            code: output.status.code(),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// What one run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The events of a `--json` run.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}")))
            .collect()
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) {
        assert_eq!(self.code, Some(code), "exit code; stderr:\n{}", self.stderr);
    }
}
