//! Keys, requests and the certificates a CA sends back.

use k8s_openapi::jiff::Timestamp;
use ossature_crds::{CertificateSpec, KeyAlgorithm, Usage};

/// A fresh key of the spec's algorithm, as PKCS#8 PEM.
pub fn new_key(spec: &CertificateSpec) -> Result<String, rcgen::Error> {
    let algorithm = match spec.key_algorithm {
        KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
    };
    Ok(rcgen::KeyPair::generate_for(algorithm)?.serialize_pem())
}

/// A certificate request for exactly `names`, signed by `key`: with the
/// first name as common name and the usages as extended key usages when
/// given (a tenant CA reads them); bare for an ACME CA, which takes the
/// names only.
pub fn request(
    names: &[String],
    uris: &[String],
    common_name: Option<&str>,
    usages: &[Usage],
    key: &rcgen::KeyPair,
) -> Result<rcgen::CertificateSigningRequest, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    for uri in uris {
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(uri.as_str().try_into()?));
    }
    let mut name = rcgen::DistinguishedName::new();
    if let Some(common_name) = common_name {
        name.push(rcgen::DnType::CommonName, common_name);
    }
    params.distinguished_name = name;
    params.extended_key_usages = usages
        .iter()
        .map(|u| match u {
            Usage::Server => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        })
        .collect();
    params.serialize_request(key)
}

/// The request (PEM) for a certificate of `spec` with the key `key_pem`.
pub fn request_for(spec: &CertificateSpec, key_pem: &str) -> Result<String, rcgen::Error> {
    let key = rcgen::KeyPair::from_pem(key_pem)?;
    request(
        &spec.dns_names,
        &spec.uris,
        spec.dns_names.first().map(String::as_str),
        &spec.usages,
        &key,
    )?
    .pem()
}

/// How many certificates a PEM bundle holds.
pub fn pem_count(bundle: &str) -> usize {
    bundle.matches("-----BEGIN CERTIFICATE-----").count()
}

/// The CA certificates of every live generation, one after the other: what
/// clients trust, both CAs while a rotation is under way.
pub fn trust_bundle<'a>(certificates: impl IntoIterator<Item = &'a str>) -> String {
    let mut bundle = String::new();
    for certificate in certificates {
        bundle.push_str(certificate.trim_end());
        bundle.push('\n');
    }
    bundle
}

/// What is read from a chain's leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// Hex, colon-separated.
    pub serial: String,
    /// The certificates after the leaf, PEM.
    pub rest: String,
}

/// The validity and serial of a chain's leaf, read from its PEM; the error
/// says why it cannot be read.
pub fn read_leaf(chain: &str) -> Result<Leaf, String> {
    let unreadable = |e: String| format!("the signed certificate cannot be read: {e}");
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain.as_bytes())
        .map_err(|e| unreadable(e.to_string()))?;
    let parsed = pem.parse_x509().map_err(|e| unreadable(e.to_string()))?;
    let validity = parsed.validity();
    let at = |t: &x509_parser::time::ASN1Time| {
        Timestamp::from_second(t.timestamp()).map_err(|e| unreadable(e.to_string()))
    };
    const END: &str = "-----END CERTIFICATE-----";
    let rest = chain
        .find(END)
        .map(|i| chain[i + END.len()..].trim_start())
        .unwrap_or_default();
    Ok(Leaf {
        not_before: at(&validity.not_before)?,
        not_after: at(&validity.not_after)?,
        serial: parsed.raw_serial_as_string(),
        rest: rest.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossature_crds::{DeletionPolicy, IssuerRef, TenantCaRef};

    fn spec(names: &[&str]) -> CertificateSpec {
        CertificateSpec {
            dns_names: names.iter().map(|n| n.to_string()).collect(),
            uris: Vec::new(),
            usages: vec![Usage::Server],
            lifetime: None,
            renew_before: None,
            key_algorithm: KeyAlgorithm::EcdsaP256,
            secret_name: None,
            deletion_policy: DeletionPolicy::Delete,
            issuer: IssuerRef {
                tenant_ca: Some(TenantCaRef {}),
                acme: None,
            },
        }
    }

    #[test]
    fn a_request_carries_the_names_and_a_key_of_the_asked_algorithm() {
        for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
            let mut s = spec(&["acme.ossature.test", "api.acme.ossature.test"]);
            s.key_algorithm = algorithm;
            let key = new_key(&s).unwrap();
            let request = request_for(&s, &key).unwrap();
            assert!(key.contains("BEGIN PRIVATE KEY"));
            let parsed = rcgen::CertificateSigningRequestParams::from_pem(&request).unwrap();
            assert_eq!(parsed.params.subject_alt_names.len(), 2);
            let rebuilt = rcgen::KeyPair::from_pem(&key).unwrap();
            use rcgen::PublicKeyData;
            assert_eq!(
                parsed.public_key.der_bytes(),
                rebuilt.der_bytes(),
                "the request is for the key returned"
            );
        }
    }

    #[test]
    fn an_acme_request_names_only_the_names() {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = vec!["a.test".to_string(), "b.a.test".to_string()];
        let der = request(&names, &[], None, &[], &key)
            .unwrap()
            .der()
            .to_vec();
        let parsed = rcgen::CertificateSigningRequestParams::from_der(&der.into()).unwrap();
        assert_eq!(parsed.params.subject_alt_names.len(), 2);
        assert!(parsed.params.extended_key_usages.is_empty());
        assert_eq!(
            parsed.params.distinguished_name.iter().count(),
            0,
            "no subject"
        );
    }

    #[test]
    fn a_workload_request_carries_its_spiffe_id() {
        let key = rcgen::KeyPair::generate().unwrap();
        let uri = "spiffe://acme.ossature.test/ns/tn-acme--prod/sa/billing".to_string();
        let der = request(
            &[],
            std::slice::from_ref(&uri),
            None,
            &[Usage::Client],
            &key,
        )
        .unwrap()
        .der()
        .to_vec();
        let parsed = rcgen::CertificateSigningRequestParams::from_der(&der.into()).unwrap();
        assert_eq!(
            parsed.params.subject_alt_names,
            vec![rcgen::SanType::URI(uri.as_str().try_into().unwrap())]
        );
    }

    #[test]
    fn trust_bundles_hold_each_ca_once_per_line() {
        let bundle = trust_bundle([
            "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----",
        ]);
        assert_eq!(pem_count(&bundle), 2);
        assert!(bundle.ends_with("-----END CERTIFICATE-----\n"));
    }
    #[test]
    fn a_leaf_gives_its_validity_serial_and_the_rest_of_its_chain() {
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["a.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        let other = rcgen::CertificateParams::new(vec!["ca.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        let read = read_leaf(&format!("{leaf}{other}")).unwrap();
        assert_eq!(read.rest.trim(), other.trim());
        assert!(read.not_before < read.not_after);
        assert!(read.serial.contains(':'), "{}", read.serial);
        assert_eq!(read_leaf(&leaf).unwrap().rest, "");
    }
}
