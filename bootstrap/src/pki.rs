//! The local certificate authority and every key and certificate the stack needs.
//!
//! Material is made once and kept in the state directory, so clients configured
//! against one `up` keep working after `down`/`up`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::files::write_private;

/// Names every local server certificate is valid for: loopback, plus what
/// in-cluster clients use to reach the apiserver.
const SERVING_NAMES: &[&str] = &[
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];
const SERVING_IPS: &[[u8; 4]] = &[[127, 0, 0, 1], [10, 96, 0, 1]];

/// A client identity of the apiserver: common name is the user, organisation the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    Admin,
    ControllerManager,
    Scheduler,
}

impl Identity {
    pub const ALL: [Identity; 3] = [
        Identity::Admin,
        Identity::ControllerManager,
        Identity::Scheduler,
    ];

    fn file_stem(self) -> &'static str {
        match self {
            Identity::Admin => "admin",
            Identity::ControllerManager => "kube-controller-manager",
            Identity::Scheduler => "kube-scheduler",
        }
    }

    fn user(self) -> &'static str {
        match self {
            Identity::Admin => "ossature-admin",
            Identity::ControllerManager => "system:kube-controller-manager",
            Identity::Scheduler => "system:kube-scheduler",
        }
    }

    fn group(self) -> Option<&'static str> {
        match self {
            Identity::Admin => Some("system:masters"),
            _ => None,
        }
    }
}

/// Paths of the material in `<state>/pki`.
#[derive(Clone, Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn serving_cert(&self) -> PathBuf {
        self.dir.join("serving.crt")
    }
    pub fn serving_key(&self) -> PathBuf {
        self.dir.join("serving.key")
    }
    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("service-account.key")
    }
    pub fn service_account_pub(&self) -> PathBuf {
        self.dir.join("service-account.pub")
    }
    pub fn client_cert(&self, id: Identity) -> PathBuf {
        self.dir.join(format!("{}.crt", id.file_stem()))
    }
    pub fn client_key(&self, id: Identity) -> PathBuf {
        self.dir.join(format!("{}.key", id.file_stem()))
    }
    pub fn kubeconfig(&self, id: Identity) -> PathBuf {
        self.dir.join(format!("{}.kubeconfig", id.file_stem()))
    }

    /// Creates whatever is missing; existing material is kept as it is.
    pub fn ensure(&self, apiserver_url: &str) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        if !self.ca_cert().exists() || !self.ca_key().exists() {
            let key = KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?;
            write_private(&self.ca_key(), key.serialize_pem().as_bytes())?;
            std::fs::write(self.ca_cert(), cert.pem())?;
        }
        let ca_key = KeyPair::from_pem(&read(&self.ca_key())?)?;
        let issuer = Issuer::from_ca_cert_pem(&read(&self.ca_cert())?, ca_key)?;

        if !self.serving_cert().exists() || !self.serving_key().exists() {
            let key = KeyPair::generate()?;
            let cert = serving_params()?.signed_by(&key, &issuer)?;
            write_private(&self.serving_key(), key.serialize_pem().as_bytes())?;
            std::fs::write(self.serving_cert(), cert.pem())?;
        }
        if !self.service_account_key().exists() || !self.service_account_pub().exists() {
            let key = KeyPair::generate()?;
            write_private(&self.service_account_key(), key.serialize_pem().as_bytes())?;
            std::fs::write(self.service_account_pub(), key.public_key_pem())?;
        }
        for id in Identity::ALL {
            if !self.client_cert(id).exists() || !self.client_key(id).exists() {
                let key = KeyPair::generate()?;
                let cert = client_params(id).signed_by(&key, &issuer)?;
                write_private(&self.client_key(id), key.serialize_pem().as_bytes())?;
                std::fs::write(self.client_cert(id), cert.pem())?;
            }
            // Cheap to rewrite and keeps the server address current.
            let kubeconfig = kubeconfig(
                apiserver_url,
                &self.ca_cert(),
                &self.client_cert(id),
                &self.client_key(id),
            );
            write_private(
                &self.kubeconfig(id),
                serde_json::to_string_pretty(&kubeconfig)?.as_bytes(),
            )?;
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name = name("Ossature local CA", None);
    params
}

fn serving_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(
        SERVING_NAMES
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
    )?;
    params.subject_alt_names.extend(
        SERVING_IPS
            .iter()
            .map(|ip| SanType::IpAddress((*ip).into())),
    );
    params.distinguished_name = name("ossature-local", None);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

fn client_params(id: Identity) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(id.user(), id.group());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

fn name(common: &str, organisation: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    if let Some(org) = organisation {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

/// A kubeconfig with file references; JSON is valid kubeconfig syntax.
fn kubeconfig(server: &str, ca: &Path, cert: &Path, key: &Path) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ossature", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": "ossature", "user": {
            "client-certificate": cert,
            "client-key": key,
        }}],
        "contexts": [{"name": "ossature", "context": {"cluster": "ossature", "user": "ossature"}}],
        "current-context": "ossature",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn material_is_created_once_and_chains_to_the_ca() {
        let dir = std::env::temp_dir().join(format!("ossature-pki-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = Pki::new(dir.clone());
        pki.ensure("https://127.0.0.1:6443").unwrap();
        let first = std::fs::read(pki.serving_cert()).unwrap();
        pki.ensure("https://127.0.0.1:6443").unwrap();
        assert_eq!(first, std::fs::read(pki.serving_cert()).unwrap());

        let serving = read(&pki.serving_cert()).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(serving.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let ca_pem = read(&pki.ca_cert()).unwrap();
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).unwrap();
        let ca = ca_pem.parse_x509().unwrap();
        cert.verify_signature(Some(ca.public_key())).unwrap();
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        let text = format!("{:?}", sans.value.general_names);
        assert!(text.contains("127.0.0.1") || text.contains("[127, 0, 0, 1]"));
        assert!(text.contains("kubernetes.default.svc"));

        let admin = read(&pki.client_cert(Identity::Admin)).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(admin.as_bytes()).unwrap();
        let admin = pem.parse_x509().unwrap();
        assert!(admin.subject().to_string().contains("O=system:masters"));

        let kubeconfig: serde_json::Value =
            serde_json::from_slice(&std::fs::read(pki.kubeconfig(Identity::Admin)).unwrap())
                .unwrap();
        assert_eq!(
            kubeconfig["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
