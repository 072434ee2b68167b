//! `AcmeIssuer`: an ACME CA (Let's Encrypt, a company's own, Pebble locally)
//! that Certificates may name as their issuer, with the account the operator
//! registers there.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Conditions;
use crate::tenant::SecretKeyRef;

/// An ACME CA and the operator's account there. Cluster-scoped: one issuer
/// serves every tenant; each Certificate still obtains only names its tenant
/// owns. The account key is kept in a Secret of the operator's issuer
/// namespace (`--acme-namespace`), never in this object.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ossature.dev",
    doc = "An ACME CA Certificates may name as their issuer, with the operator's account there.",
    version = "v1alpha1",
    kind = "AcmeIssuer",
    plural = "acmeissuers",
    shortname = "acmeissuer",
    shortname = "ai",
    category = "ossature",
    status = "AcmeIssuerStatus",
    printcolumn = r#"{"name":"Directory","type":"string","jsonPath":".spec.directory"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Account","type":"string","jsonPath":".status.accountURL","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("size(self.metadata.name) <= 63").message("issuer name must be at most 63 characters")
)]
#[x_kube(
    validation = Rule::new("!has(self.externalAccountBinding) || !has(oldSelf.externalAccountBinding) || self.externalAccountBinding.keyID == oldSelf.externalAccountBinding.keyID").message("externalAccountBinding.keyID is immutable: an account is bound once; create a new issuer")
)]
#[serde(rename_all = "camelCase")]
pub struct AcmeIssuerSpec {
    /// The CA's ACME directory URL, e.g.
    /// `https://acme-v02.api.letsencrypt.org/directory`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != ''").message("directory must be an http or https URL"))]
    pub directory: String,

    /// Contact addresses of the account, where the CA writes about expiring
    /// certificates and incidents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 10),
        inner(length(max = 254), regex(pattern = r"^[^@\s:/]+@[^@\s:/]+\.[^@\s:/]+$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub emails: Vec<String>,

    /// PEM certificates trusted for the directory's HTTPS (a private CA's
    /// API); without it, the platform's roots. Public certificates only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    #[x_kube(validation = Rule::new("self.contains('-----BEGIN CERTIFICATE-----') && self.contains('-----END CERTIFICATE-----') && !self.contains('PRIVATE KEY')").message("caBundle must be PEM certificates (and no key)"))]
    pub ca_bundle: Option<String>,

    /// External Account Binding, for CAs that register accounts of their
    /// customers only. Used once, when the account is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_account_binding: Option<ExternalAccountBinding>,

    /// How the CA checks that a name is ours: `HTTP01` (the default; no
    /// wildcards) or `DNS01` (also wildcards).
    #[serde(default)]
    pub challenge: ChallengeType,

    /// What publishes the answers to challenges.
    pub solver: Solver,

    /// Certificate profile asked of the CA (ACME profiles, e.g. Let's
    /// Encrypt's `shortlived`); without it the CA's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9][-_.A-Za-z0-9]*$")
    )]
    pub profile: Option<String>,

    /// The CA's rate limits, as the operator counts them before asking: a
    /// Certificate past one waits (`RateLimited`) without calling the CA.
    /// Defaults follow Let's Encrypt's published limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimits>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAccountBinding {
    /// The key id the CA handed out.
    #[serde(rename = "keyID")]
    #[schemars(length(min = 1, max = 256))]
    pub key_id: String,
    /// The HMAC key the CA handed out (base64url), in a Secret of the
    /// operator's issuer namespace (`--acme-namespace`); never inline.
    pub hmac_key_secret_ref: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ChallengeType {
    /// A token served over HTTP on port 80 of each name.
    #[default]
    #[serde(rename = "HTTP01")]
    Http01,
    /// A TXT record at `_acme-challenge.<name>`; the only one for wildcards.
    #[serde(rename = "DNS01")]
    Dns01,
}

/// Who publishes challenge answers. One kind for now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.challTestSrv)").message("solver names exactly one responder: challTestSrv"))]
pub struct Solver {
    /// pebble-challtestsrv's management API: it serves HTTP-01 tokens and
    /// DNS-01 TXT records to a test CA (Pebble). For local stacks and tests
    /// only; it answers nothing a public CA would ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chall_test_srv: Option<ChallTestSrvSolver>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
pub struct ChallTestSrvSolver {
    /// Its management API, e.g. `http://127.0.0.1:8055`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != ''").message("challTestSrv.url must be an http or https URL"))]
    pub url: String,
}

/// Limits as sliding windows: at most `count` within any `period`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimits {
    /// New orders of the account. Default: 300 per 3h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_orders: Option<RateWindow>,
    /// Certificates per registered domain (`<tenant>.<root-domain>` counts
    /// as one). Default: 50 per 168h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates_per_domain: Option<RateWindow>,
    /// Certificates for exactly the same names. Default: 5 per 168h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_certificates: Option<RateWindow>,
    /// Failed validations per name. Default: 5 per 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_validations: Option<RateWindow>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
pub struct RateWindow {
    #[schemars(range(min = 1, max = 1_000_000))]
    pub count: i32,
    /// A duration such as `3h` or `168h`, at least `1s`.
    #[schemars(regex(pattern = r"^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$"))]
    #[x_kube(validation = Rule::new("self != '' && duration(self) >= duration('1s')").message("period must be a duration of at least 1s, such as 3h"))]
    pub period: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcmeIssuerStatus {
    /// `Ready` once the account is registered (or found) at the CA.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The account at the CA.
    #[serde(
        rename = "accountURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub account_url: Option<String>,
}

crate::conditioned!(AcmeIssuerStatus);
