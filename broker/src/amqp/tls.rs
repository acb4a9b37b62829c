//! TLS for `amqps://`: the files a user names (a CA to trust besides the system's, a client
//! certificate and key for EXTERNAL authentication), read and checked once, and what a failed
//! handshake means, in words.
//!
//! It does not dial: `dial.rs` hands this config to the TLS connector beside the URL. It never
//! shows a key: only file paths appear in errors and `Debug`. Host names are always checked
//! against the server's certificate; there is no switch to turn that off.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig, TLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri, SASLMechanism};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::{CertificateError, Error as RustlsError};

use crate::{Error, Result, TlsProblem};

/// The TLS files a user named (`--tls-ca`, `--tls-cert`, `--tls-key`); all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificates of CAs to trust in addition to the system's.
    pub ca: Option<PathBuf>,
    /// The client certificate (PEM), sent to the server; with it, EXTERNAL authentication is used
    /// unless the URL names another `auth_mechanism`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1, unencrypted).
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// The TLS files, read and checked: what the connector needs.
#[derive(Clone, Default)]
pub(super) struct Tls {
    /// Holds the client key: never print it.
    config: OwnedTLSConfig,
    files: TlsFiles,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl Tls {
    /// Read and check `files` for dialling `uri`, and make EXTERNAL the login when a client
    /// certificate is given and the URL names no mechanism. `shown` is the URL as it may be printed.
    pub(super) fn load(files: &TlsFiles, uri: &mut AMQPUri, shown: &str) -> Result<Tls> {
        if !files.is_empty() && uri.scheme == AMQPScheme::AMQP {
            return Err(Error::TlsSettings(format!(
                "TLS files are given (--tls-ca, --tls-cert or --tls-key) but {shown} does not use TLS: use amqps://"
            )));
        }
        let cert_chain = match &files.ca {
            Some(path) => Some(read_certificates(path, "CA file (--tls-ca)")?),
            None => None,
        };
        let identity = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                read_certificates(cert, "client certificate (--tls-cert)")?;
                let key_pem = read(key, "client key (--tls-key)")?;
                // The reason is the parser's kind of failure; it never quotes the key.
                PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| {
                    Error::TlsSettings(format!(
                        "the client key (--tls-key) {} holds no unencrypted PEM private key: {err}",
                        key.display()
                    ))
                })?;
                Some(OwnedIdentity::PKCS8 { pem: read(cert, "client certificate (--tls-cert)")?, key: key_pem })
            }
            (Some(cert), None) => {
                return Err(Error::TlsSettings(format!(
                    "the client certificate {} is given without its key: give --tls-key too",
                    cert.display()
                )));
            }
            (None, Some(key)) => {
                return Err(Error::TlsSettings(format!(
                    "the client key {} is given without its certificate: give --tls-cert too",
                    key.display()
                )));
            }
            (None, None) => None,
        };
        match (identity.is_some(), uri.query.auth_mechanism) {
            (true, None) => uri.query.auth_mechanism = Some(SASLMechanism::External),
            (false, Some(SASLMechanism::External)) => {
                return Err(Error::TlsSettings(format!(
                    "{shown} asks for EXTERNAL authentication, which needs a client certificate: give --tls-cert and --tls-key"
                )));
            }
            _ => {}
        }
        Ok(Tls { config: OwnedTLSConfig { identity, cert_chain }, files: files.clone() })
    }

    pub(super) fn config(&self) -> TLSConfig<'_, '_, '_> {
        self.config.as_ref()
    }

    /// Why dialling `host` failed, in words when TLS refused it; the socket's own error otherwise.
    pub(super) fn dial_error(&self, host: &str, error: &std::io::Error) -> Error {
        match rustls_error(error) {
            Some(tls) => Error::Tls { host: host.to_owned(), problem: self.problem(tls) },
            None => Error::Unreachable { host: host.to_owned(), reason: error.to_string() },
        }
    }

    fn problem(&self, error: &RustlsError) -> TlsProblem {
        match error {
            RustlsError::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => TlsProblem::UnknownCa { ca: self.files.ca.clone() },
                CertificateError::NotValidForNameContext { expected, presented } => TlsProblem::WrongHost {
                    name: expected.to_str().into_owned(),
                    names: presented.iter().map(|name| plain_name(name)).collect(),
                },
                CertificateError::NotValidForName => TlsProblem::WrongHost { name: String::new(), names: Vec::new() },
                CertificateError::ExpiredContext { not_after, .. } => {
                    TlsProblem::Expired { not_after: Some(system_time(*not_after)) }
                }
                CertificateError::Expired => TlsProblem::Expired { not_after: None },
                CertificateError::NotValidYetContext { not_before, .. } => {
                    TlsProblem::NotYetValid { not_before: Some(system_time(*not_before)) }
                }
                CertificateError::NotValidYet => TlsProblem::NotYetValid { not_before: None },
                other => TlsProblem::Other(format!("the server's certificate is refused: {other}")),
            },
            RustlsError::AlertReceived(alert) => TlsProblem::Refused { alert: format!("{alert:?}") },
            other => TlsProblem::Other(other.to_string()),
        }
    }
}

/// The bytes of `path`, which is the user's `what`.
fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|err| Error::TlsSettings(format!("cannot read the {what} {}: {err}", path.display())))
}

/// The text of a PEM file of certificates, checked to hold at least one and nothing unreadable:
/// the connector skips certificates it cannot parse without a word.
fn read_certificates(path: &Path, what: &str) -> Result<String> {
    let bytes = read(path, what)?;
    let invalid = |reason: String| Error::TlsSettings(format!("the {what} {}: {reason}", path.display()));
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(&bytes) {
        certificate.map_err(|err| invalid(format!("invalid PEM: {err}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned()));
    }
    String::from_utf8(bytes).map_err(|_| invalid("is not text".to_owned()))
}

/// The rustls error behind an I/O error of the TLS connector, if TLS is what failed.
fn rustls_error(error: &std::io::Error) -> Option<&RustlsError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = error.get_ref().map(|inner| inner as _);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<RustlsError>() {
            return Some(tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            source = Some(inner as _);
            continue;
        }
        source = err.source();
    }
    None
}

/// A certificate name as rustls presents it (`DnsName("localhost")`, `IpAddress(127.0.0.1)`),
/// without the kind: `localhost`, `127.0.0.1`.
fn plain_name(presented: &str) -> String {
    match presented.split_once('(') {
        Some((_kind, rest)) if rest.ends_with(')') => rest[..rest.len() - 1].trim_matches('"').to_owned(),
        _ => presented.to_owned(),
    }
}

fn system_time(time: UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(time.as_secs())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::AmqpBroker;
    use super::*;

    fn files(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> TlsFiles {
        TlsFiles { ca: ca.map(Path::to_path_buf), cert: cert.map(Path::to_path_buf), key: key.map(Path::to_path_buf) }
    }

    fn settings_error(url: &str, files: &TlsFiles) -> String {
        let err = AmqpBroker::new_with_tls(url, Duration::from_secs(1), files).expect_err("refused settings");
        assert!(matches!(err, Error::TlsSettings(_)), "got {err:?}");
        err.to_string()
    }

    #[test]
    fn tls_files_that_cannot_work_are_refused_in_words() {
        let dir = std::env::temp_dir().join(format!("runway-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let not_pem = dir.join("not-pem.txt");
        std::fs::write(&not_pem, "hello\n").expect("write");
        let missing = dir.join("missing.pem");
        let url = "amqps://u:s3cret@rabbit.example/%2f";

        let message = settings_error(url, &files(Some(&missing), None, None));
        assert!(message.contains("cannot read the CA file (--tls-ca)") && message.contains("missing.pem"), "{message}");
        let message = settings_error(url, &files(Some(&not_pem), None, None));
        assert!(message.contains("holds no PEM certificate"), "{message}");
        let message = settings_error(url, &files(None, Some(&not_pem), None));
        assert!(message.contains("without its key"), "{message}");
        let message = settings_error(url, &files(None, None, Some(&not_pem)));
        assert!(message.contains("without its certificate"), "{message}");
        let message = settings_error("amqp://u:s3cret@rabbit.example/%2f", &files(Some(&not_pem), None, None));
        assert!(message.contains("does not use TLS: use amqps://"), "{message}");
        let message = settings_error("amqps://rabbit.example/%2f?auth_mechanism=external", &TlsFiles::default());
        assert!(message.contains("needs a client certificate: give --tls-cert and --tls-key"), "{message}");
        assert!(!message.contains("s3cret"));
        std::fs::remove_dir_all(&dir).expect("remove temp dir");
    }

    #[test]
    fn handshake_failures_read_as_what_failed() {
        let tls = Tls::default();
        let wrapped = |error: RustlsError| std::io::Error::new(std::io::ErrorKind::InvalidData, error);
        let unknown = tls.dial_error("amqps://h:5671/%2f", &wrapped(CertificateError::UnknownIssuer.into()));
        assert!(
            unknown
                .to_string()
                .contains("the server's certificate is not signed by a CA runway trusts; give the CA with --tls-ca"),
            "{unknown}"
        );
        assert!(unknown.is_unreachable());
        let expired = tls.dial_error(
            "amqps://h:5671/%2f",
            &wrapped(
                CertificateError::ExpiredContext {
                    time: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
                    not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_577_923_200)),
                }
                .into(),
            ),
        );
        assert!(expired.to_string().contains("the server's certificate expired on 2020-01-02T00:00:00Z"), "{expired}");
        let wrong_host = tls.dial_error(
            "amqps://127.0.0.2:5671/%2f",
            &wrapped(
                CertificateError::NotValidForNameContext {
                    expected: rustls::pki_types::ServerName::try_from("127.0.0.2").expect("an address"),
                    presented: vec![r#"DnsName("localhost")"#.to_owned(), "IpAddress(127.0.0.1)".to_owned()],
                }
                .into(),
            ),
        );
        assert!(
            wrong_host.to_string().contains(
                "the server's certificate is not valid for the host name `127.0.0.2` (it names localhost, 127.0.0.1)"
            ),
            "{wrong_host}"
        );
        let refused = tls.dial_error("amqps://h:1/%2f", &std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(refused, Error::Unreachable { .. }), "{refused:?}");
    }
}
