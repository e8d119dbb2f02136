//! A test certificate authority and a server certificate it signs, made with rcgen.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::slapd::TlsFiles;

/// A CA and a server certificate for `names` (DNS names or IP addresses).
pub struct TestPki {
    /// The CA certificate (PEM).
    pub ca_pem: String,
    /// The server certificate (PEM).
    pub cert_pem: String,
    /// The server key (PEM, PKCS#8).
    pub key_pem: String,
}

impl TestPki {
    /// Make a CA and a server certificate it signs.
    pub fn new(names: &[&str]) -> TestPki {
        let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
        let mut ca = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("CA params: {e}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "splitmx test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca
            .self_signed(&ca_key)
            .unwrap_or_else(|e| panic!("CA cert: {e}"));
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().unwrap_or_else(|e| panic!("server key: {e}"));
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap_or_else(|e| panic!("server params: {e}"));
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &issuer)
            .unwrap_or_else(|e| panic!("server cert: {e}"));
        TestPki {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Write the files slapd needs into `dir`.
    pub fn write(&self, dir: &Path) -> TlsFiles {
        let files = TlsFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            ca: dir.join("ca.pem"),
        };
        for (path, text) in [
            (&files.cert, &self.cert_pem),
            (&files.key, &self.key_pem),
            (&files.ca, &self.ca_pem),
        ] {
            std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        files
    }
}
