//! Certificates for TLS tests: a CA, a server certificate and a client certificate (for
//! mutual TLS) signed by it, as PEM files in a temporary directory.
//!
//! Every key is a fresh ECDSA P-256 key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), which
//! rustls, reqwest, OpenSSL and Go all accept; signatures are ECDSA with SHA-256. The server
//! certificate is for `localhost` and `127.0.0.1` (DNS and IP subject alternative names,
//! extended key usage serverAuth); the client certificate has the common name
//! [`CLIENT_NAME`] and the extended key usage clientAuth. All are valid from 1975 to 4096
//! (rcgen's defaults), so no test ever meets an expired certificate. Dropping the [`Certs`]
//! removes the directory.
//!
//! ```no_run
//! use opsbook_testkit::tls::Certs;
//!
//! let certs = Certs::generate()?;
//! let ca_pem = std::fs::read_to_string(certs.ca_cert()).map_err(|e| e.to_string())?;
//! assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! # Ok::<(), String>(())
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

/// The common name of the CA certificate.
pub const CA_NAME: &str = "opsbook-testkit CA";
/// The common name of the client certificate.
pub const CLIENT_NAME: &str = "opsbook-testkit-client";
/// The names the server certificate is valid for (subject alternative names).
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

const CA_CERT: &str = "ca.pem";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server-key.pem";
const CLIENT_CERT: &str = "client.pem";
const CLIENT_KEY: &str = "client-key.pem";

/// A CA and a server and a client certificate signed by it, as PEM files in a temporary
/// directory that is removed on drop.
#[derive(Debug)]
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// Generates the CA, the server certificate (for `localhost` and `127.0.0.1`) and the
    /// client certificate with fresh keys and writes them into a new temporary directory:
    /// `ca.pem`, `server.pem`, `server-key.pem`, `client.pem`, `client-key.pem` (keys mode
    /// 0600). The CA's key is not kept.
    pub fn generate() -> Result<Certs, String> {
        let dir = tempfile::Builder::new()
            .prefix("opsbook-certs-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;

        let ca_key = new_key("the CA")?;
        let mut ca_params = params(&[], CA_NAME)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(|e| format!("cannot sign the CA certificate: {e}"))?;
        let ca = Issuer::new(ca_params, ca_key);

        let server_key = new_key("the server")?;
        let mut server_params = params(&SERVER_NAMES, SERVER_NAMES[0])?;
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = leaf(server_params, &server_key, &ca, "server")?;

        let client_key = new_key("the client")?;
        let mut client_params = params(&[], CLIENT_NAME)?;
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = leaf(client_params, &client_key, &ca, "client")?;

        let certs = Certs { dir };
        write_pem(&certs.ca_cert(), &ca_cert.pem(), 0o644)?;
        write_pem(&certs.server_cert(), &server_cert, 0o644)?;
        write_pem(&certs.server_key(), &server_key.serialize_pem(), 0o600)?;
        write_pem(&certs.client_cert(), &client_cert, 0o644)?;
        write_pem(&certs.client_key(), &client_key.serialize_pem(), 0o600)?;
        Ok(certs)
    }

    /// The CA certificate (`ca.pem`): the trust root for both sides.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir().join(CA_CERT)
    }

    /// The server certificate (`server.pem`), for `localhost` and `127.0.0.1`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir().join(SERVER_CERT)
    }

    /// The server's private key (`server-key.pem`, PKCS#8).
    pub fn server_key(&self) -> PathBuf {
        self.dir().join(SERVER_KEY)
    }

    /// The client certificate for mutual TLS (`client.pem`, common name [`CLIENT_NAME`]).
    pub fn client_cert(&self) -> PathBuf {
        self.dir().join(CLIENT_CERT)
    }

    /// The client's private key (`client-key.pem`, PKCS#8).
    pub fn client_key(&self) -> PathBuf {
        self.dir().join(CLIENT_KEY)
    }

    /// The temporary directory holding the five files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A fresh ECDSA P-256 key.
fn new_key(what: &str) -> Result<KeyPair, String> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot generate a key for {what}: {e}"))
}

/// Parameters with subject alternative names `names` (IP addresses become IP names) and
/// the subject `CN=common_name, O=opsbook-testkit`.
fn params(names: &[&str], common_name: &str) -> Result<CertificateParams, String> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone())
        .map_err(|e| format!("invalid certificate names {names:?}: {e}"))?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, common_name);
    subject.push(DnType::OrganizationName, "opsbook-testkit");
    params.distinguished_name = subject;
    Ok(params)
}

/// An end-entity certificate for `key` signed by `ca`, in PEM.
fn leaf(
    mut params: CertificateParams,
    key: &KeyPair,
    ca: &Issuer<'_, KeyPair>,
    what: &str,
) -> Result<String, String> {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params
        .signed_by(key, ca)
        .map(|cert| cert.pem())
        .map_err(|e| format!("cannot sign the {what} certificate: {e}"))
}

/// Writes `pem` to a new file `path` with `mode`.
fn write_pem(path: &Path, pem: &str, mode: u32) -> Result<(), String> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(pem.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
