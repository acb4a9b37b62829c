//! Dialling the broker the settings name (RabbitMQ, or the in-memory broker in local mode) and
//! making sure the topology is there.
//!
//! One connection and nothing on it: sessions and the in-process runner are `session`'s.

use std::time::Duration;

use runway_broker::topology::{Retention, Topology};
use runway_broker::{Broker, Connection, TlsFiles};

use runway_broker::roles::Role;

use crate::exit::CliError;
use crate::roles;
use crate::settings::Settings;

/// How long to wait for the broker to answer a connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker of `server`, dialled with the TLS files `tls`, or the in-memory one for local mode
/// (`None`; `tls` is not used then).
pub fn broker(server: Option<&str>, tls: &TlsFiles) -> Result<Broker, CliError> {
    match server {
        None => Ok(Broker::memory()),
        Some(url) => Broker::amqp_with_tls(url, CONNECT_TIMEOUT, tls).map_err(|err| CliError::Usage(err.to_string())),
    }
}

/// Connect to `broker` and declare the topology if it is not there yet.
pub async fn connect(broker: &Broker, topology: &Topology) -> Result<Connection, CliError> {
    let conn = broker.connect().await?;
    match topology.ensure(&conn, &Retention::default()).await {
        Ok(()) => {}
        // The topology is missing, and only an admin may declare it.
        Err(err @ runway_broker::Error::AccessRefused { .. }) => {
            let hint = format!(
                "namespace `{}` is not set up, and declaring it {}",
                topology.namespace(),
                roles::hint(Role::Admin, &conn.login(), topology.namespace())
            );
            return Err(CliError::Refused { source: err, hint });
        }
        Err(err) => return Err(err.into()),
    }
    Ok(conn)
}

/// Connect to the configured server, for the commands that read its history or ask its runners:
/// local mode keeps no history, so they need a server.
pub async fn connect_server(settings: &Settings) -> Result<(Connection, Topology), CliError> {
    let Some(url) = settings.server.as_deref() else {
        return Err(CliError::Usage(
            "job history and runners live on a server, and none is configured: pass --server URL, set RUNWAY_SERVER, \
             or add [server] url to runway.toml (local mode keeps no history beyond one run)"
                .to_owned(),
        ));
    };
    let topology = settings.topology()?;
    let conn = connect(&broker(Some(url), &settings.tls)?, &topology).await?;
    Ok((conn, topology))
}
