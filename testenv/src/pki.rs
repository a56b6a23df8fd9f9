//! The control plane's keys: a CA, the apiserver's serving certificate
//! (127.0.0.1, ::1, localhost and any extra address it listens on) and the
//! service-account signing key. Generated in-process, no openssl CLI.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::Error;
use crate::workspace::write_private;

/// The files the apiserver is started with, plus the CA for kubeconfigs.
#[derive(Clone, Debug)]
pub(crate) struct Pki {
    pub ca_pem: String,
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
    /// A client certificate of the CA for the controller's user (the
    /// apiserver trusts the CA for clients too), PEM.
    pub controller_cert_pem: String,
    pub controller_key_pem: String,
}

impl Pki {
    /// Generates everything into `dir`.
    pub(crate) fn generate(dir: &Path, extra_address: Option<IpAddr>) -> Result<Self, Error> {
        let pki = |e: rcgen::Error| Error::Pki(e.to_string());
        std::fs::create_dir_all(dir).map_err(|e| Error::path(dir, e))?;

        let ca_key = KeyPair::generate().map_err(pki)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "robot-byoc testenv CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(pki)?;
        let ca = Issuer::new(ca_params, ca_key);

        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).map_err(pki)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let mut addresses: Vec<IpAddr> =
            vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
        addresses.extend(extra_address);
        for ip in addresses {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate().map_err(pki)?;
        let serving_cert = params.signed_by(&serving_key, &ca).map_err(pki)?;

        // The controller's identity as a client certificate: CN is the user.
        let mut client = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
        client
            .distinguished_name
            .push(DnType::CommonName, crate::controlplane::CONTROLLER_USER);
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().map_err(pki)?;
        let client_cert = client.signed_by(&client_key, &ca).map_err(pki)?;

        // ECDSA P-256: the apiserver signs service-account tokens with ES256.
        let sa_key = KeyPair::generate().map_err(pki)?;

        let files = Self {
            ca_pem: ca_cert.pem(),
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            service_account_key: dir.join("sa.key"),
            service_account_pub: dir.join("sa.pub"),
            controller_cert_pem: client_cert.pem(),
            controller_key_pem: client_key.serialize_pem(),
        };
        let write = |path: &Path, text: &str| write_private(path, text.as_bytes());
        write(&files.ca_cert, &files.ca_pem)?;
        write(&files.serving_cert, &serving_cert.pem())?;
        write(&files.serving_key, &serving_key.serialize_pem())?;
        write(&files.service_account_key, &sa_key.serialize_pem())?;
        write(&files.service_account_pub, &sa_key.public_key_pem())?;
        Ok(files)
    }
}
