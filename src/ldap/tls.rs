//! TLS for `ldaps://` and StartTLS: the rustls client configuration, with the ring
//! provider and the configured CA certificates.
//!
//! Input: the optional `ca_file` (PEM). Output: the configuration handed to `ldap3`, or
//! `None` to let `ldap3` use the system trust store. Certificates are always verified
//! against the host name (or IP address) in the server URL; there is no switch to turn
//! verification off.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::error::LdapError;

/// Install the ring provider as the process default (once; an already installed
/// provider is kept). `ldap3` builds its default TLS configuration with it.
pub(crate) fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The client configuration for `ca_file`, or `None` without one.
pub(crate) fn client_config(
    ca_file: Option<&Path>,
) -> Result<Option<Arc<ClientConfig>>, LdapError> {
    install_provider();
    let Some(path) = ca_file else {
        return Ok(None);
    };
    let file_error = |error: String| LdapError::File {
        what: "ca_file",
        path: path.to_path_buf(),
        error,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| file_error(e.to_string()))? {
        let cert = cert.map_err(|e| file_error(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| file_error(format!("bad CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(file_error("no PEM certificate in the file".to_string()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}
