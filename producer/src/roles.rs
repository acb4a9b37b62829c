//! `runway roles ROLE --user USER`: the `rabbitmqctl` commands that give a user a role's rights
//! in a namespace, printed, or with `--apply` run.
//!
//! The rights themselves are decided in `runway_broker::roles`; this only shows or runs them.
//! It never creates users or sets passwords.

use std::process::Command;

use runway_broker::roles::{self, Role, shell_quote};
use runway_broker::topology::Topology;

use crate::exit::{CliError, SUCCESS};

/// What `runway roles` was asked.
#[derive(Debug, Clone)]
pub struct RolesRequest<'a> {
    pub role: Role,
    pub user: &'a str,
    pub vhost: &'a str,
    pub apply: bool,
}

/// Print the commands for `request`, and run them through `rabbitmqctl` if it says `apply`.
pub fn roles(topology: &Topology, request: &RolesRequest<'_>) -> Result<u8, CliError> {
    let grant = roles::grant(topology, request.role);
    for args in grant.rabbitmqctl_args(request.user, request.vhost) {
        let line: Vec<String> = args.iter().map(|arg| shell_quote(arg)).collect();
        println!("rabbitmqctl {}", line.join(" "));
        if request.apply {
            apply(&args)?;
        }
    }
    Ok(SUCCESS)
}

fn apply(args: &[String]) -> Result<(), CliError> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|err| CliError::Internal(format!("cannot run rabbitmqctl: {err}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(CliError::Internal(format!("rabbitmqctl {} failed ({}): {}", args[0], output.status, stderr.trim())))
}

/// The hint for an account that lacks a right: the role a command needs.
pub fn hint(role: Role, user: &str, namespace: &str) -> String {
    format!("it needs the {role} role (runway roles {role} --user {user} --namespace {namespace} --apply)")
}

/// A refusal with the hint for `role`; the user is the one the broker named ("... refused for
/// user 'alice'").
pub fn refused(err: runway_broker::Error, role: Role, namespace: &str) -> CliError {
    let user = match &err {
        runway_broker::Error::AccessRefused { reason, .. } => reason
            .rsplit_once("for user '")
            .and_then(|(_, rest)| rest.split_once('\''))
            .map(|(user, _)| user.to_owned()),
        _ => None,
    };
    let hint = hint(role, user.as_deref().unwrap_or("USER"), namespace);
    CliError::Refused { source: err, hint }
}
