//! Where the CLI connects: the server and the namespace, merged once from the flags, the
//! environment (clap reads `RUNWAY_SERVER` and `RUNWAY_NAMESPACE` into the flags) and the
//! project file, in that order (each TLS file on its own); and finding and loading that project file.
//!
//! It decides; it does not dial (see `connect`).

use std::path::Path;

use runway_broker::TlsFiles;
use runway_broker::topology::{DEFAULT_NAMESPACE, Topology};

use crate::cli::Cli;
use crate::exit::CliError;
use crate::project::{self, Project};

/// The server and namespace a command uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The broker's URL; `None` is local mode (no server, or the server `local`). It may hold
    /// credentials, so it is never put in a message.
    pub server: Option<String>,
    pub namespace: String,
    /// The TLS files for an `amqps://` server.
    pub tls: TlsFiles,
}

impl Settings {
    /// Flags (and the environment through them) beat the project file; without either, local
    /// mode and the default namespace.
    pub fn merge(cli: &Cli, project: Option<&Project>) -> Settings {
        let file = project.and_then(|project| project.server.as_ref());
        let server = cli.server.clone().or_else(|| file.map(|server| server.url.clone()));
        let namespace = cli
            .namespace
            .clone()
            .or_else(|| file.and_then(|server| server.namespace.clone()))
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let tls = TlsFiles {
            ca: cli.tls_ca.clone().or_else(|| file.and_then(|server| server.tls.ca.clone())),
            cert: cli.tls_cert.clone().or_else(|| file.and_then(|server| server.tls.cert.clone())),
            key: cli.tls_key.clone().or_else(|| file.and_then(|server| server.tls.key.clone())),
        };
        Settings { server: server.filter(|url| url != "local"), namespace, tls }
    }

    /// The names under the namespace; a namespace that cannot be a name is a usage error.
    pub fn topology(&self) -> Result<Topology, CliError> {
        Topology::new(&self.namespace).map_err(|err| CliError::Usage(err.to_string()))
    }
}

/// The project file: `--file`, or else the nearest `runway.toml` from the current directory up.
pub fn load_project(file: Option<&Path>) -> Result<Project, CliError> {
    let path = match file {
        Some(path) => path.to_path_buf(),
        None => {
            let cwd = std::env::current_dir()
                .map_err(|err| CliError::Internal(format!("cannot read the current directory: {err}")))?;
            project::find(&cwd)?
        }
    };
    Ok(project::load(&path)?)
}

/// The project file if there is one: commands that only talk to a server can do without it,
/// unless `--file` named one.
pub fn optional_project(file: Option<&Path>) -> Result<Option<Project>, CliError> {
    match load_project(file) {
        Ok(project) => Ok(Some(project)),
        Err(CliError::Project(err)) if err.is_not_found() && file.is_none() => Ok(None),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut argv = vec!["runway"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["job", "list"]);
        Cli::try_parse_from(argv).expect("valid command line")
    }

    fn project(server: &str) -> Project {
        project::parse(Path::new("/nonexistent/runway.toml"), server).expect("valid project file")
    }

    #[test]
    fn flags_beat_the_project_file() {
        let file = project("[server]\nurl = \"amqp://file\"\nnamespace = \"from-file\"\n");
        let flagged = cli(&["--server", "amqp://flag", "--namespace", "from-flag"]);
        let settings = Settings::merge(&flagged, Some(&file));
        assert_eq!(settings.server.as_deref(), Some("amqp://flag"));
        assert_eq!(settings.namespace, "from-flag");
        let settings = Settings::merge(&cli(&[]), Some(&file));
        assert_eq!(settings.server.as_deref(), Some("amqp://file"));
        assert_eq!(settings.namespace, "from-file");
    }

    #[test]
    fn each_tls_file_comes_from_a_flag_or_else_the_project_file() {
        let file =
            project("[server]\nurl = \"amqps://file\"\ntls_ca = \"/file/ca.pem\"\ntls_key = \"/file/key.pem\"\n");
        let settings =
            Settings::merge(&cli(&["--tls-ca", "/flag/ca.pem", "--tls-cert", "/flag/cert.pem"]), Some(&file));
        assert_eq!(settings.tls.ca.as_deref(), Some(Path::new("/flag/ca.pem")));
        assert_eq!(settings.tls.cert.as_deref(), Some(Path::new("/flag/cert.pem")));
        assert_eq!(settings.tls.key.as_deref(), Some(Path::new("/file/key.pem")));
    }

    #[test]
    fn the_server_local_and_no_server_are_local_mode() {
        let file = project("[server]\nurl = \"amqp://file\"\n");
        assert_eq!(Settings::merge(&cli(&["--server", "local"]), Some(&file)).server, None);
        let settings = Settings::merge(&cli(&[]), None);
        assert_eq!(
            settings,
            Settings { server: None, namespace: DEFAULT_NAMESPACE.to_owned(), tls: TlsFiles::default() }
        );
    }
}
