//! What is left of deleted Topics and services, asked of each backend
//! directly: topics, their schemas and grants, and subscription roles in
//! Pulsar; service clients in Keycloak; policies, Kubernetes-auth roles and
//! secrets (credentials, certificate records) in OpenBao; ServiceAccounts,
//! Secrets, Certificates, Topics and services in Kubernetes (given a while
//! for the garbage collector).

use std::collections::BTreeSet;
use std::fmt::Display;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, ListParams};
use ossature_crds::{Certificate, ServiceIdentity, Topic};
use ossature_model::names::TenantNames;
use reqwest::Method;
use serde_json::Value;

use crate::{Backends, found_json};

/// How long the garbage collector gets to remove what services owned.
const COLLECTOR_GRACE: Duration = Duration::from_secs(120);

/// One tenant's Topics and services of one environment.
pub(in crate::messaging) struct Placed {
    pub tenant: String,
    pub environment: String,
    /// Where its service clients are; none when it has no realm yet.
    pub realm: Option<String>,
    pub topics: Vec<String>,
    pub services: Vec<String>,
}

impl Placed {
    fn namespace(&self) -> String {
        TenantNames::new(&self.tenant)
            .environment(&self.environment)
            .namespace
    }

    /// The prefix of its services' names in Pulsar, Keycloak and OpenBao:
    /// `<tenant>.<environment>.`.
    fn role_prefix(&self) -> String {
        format!("{}.{}.", self.tenant, self.environment)
    }
}

/// What is left, by backend and kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(in crate::messaging) struct Left {
    pub topics: usize,
    pub schemas: usize,
    /// Roles granted on topics, as the namespace's policies hold them.
    pub topic_grants: usize,
    pub subscription_roles: usize,
    pub keycloak_clients: usize,
    pub openbao_policies: usize,
    pub openbao_roles: usize,
    /// Credentials and certificate records in the tenant's KV.
    pub openbao_secrets: usize,
    pub kubernetes: usize,
}

impl Left {
    pub fn total(&self) -> usize {
        self.topics
            + self.schemas
            + self.topic_grants
            + self.subscription_roles
            + self.keycloak_clients
            + self.openbao_policies
            + self.openbao_roles
            + self.openbao_secrets
            + self.kubernetes
    }

    fn add(&mut self, other: &Left) {
        self.topics += other.topics;
        self.schemas += other.schemas;
        self.topic_grants += other.topic_grants;
        self.subscription_roles += other.subscription_roles;
        self.keycloak_clients += other.keycloak_clients;
        self.openbao_policies += other.openbao_policies;
        self.openbao_roles += other.openbao_roles;
        self.openbao_secrets += other.openbao_secrets;
        self.kubernetes += other.kubernetes;
    }
}

impl Display for Left {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.total() == 0 {
            return f.write_str("nothing");
        }
        write!(
            f,
            "pulsar: topics {} schemas {} topic grants {} subscription roles {}; \
             keycloak: clients {}; openbao: policies {} roles {} secrets {}; kubernetes {}",
            self.topics,
            self.schemas,
            self.topic_grants,
            self.subscription_roles,
            self.keycloak_clients,
            self.openbao_policies,
            self.openbao_roles,
            self.openbao_secrets,
            self.kubernetes
        )
    }
}

/// What is left of every tenant's Topics and services in `placed`.
pub(in crate::messaging) async fn left(
    client: &kube::Client,
    backends: &Backends,
    placed: &[Placed],
    concurrency: usize,
) -> Result<Left> {
    let policies = openbao_list(backends, "sys/policies/acl").await?;
    let roles = openbao_list(backends, "auth/kubernetes/role").await?;
    let mut left = Left::default();
    for p in placed {
        let prefix = p.role_prefix();
        let ours = |names: &BTreeSet<String>, prefix: &str| {
            names.iter().filter(|n| n.starts_with(prefix)).count()
        };
        let tenant = Left {
            openbao_policies: ours(&policies, &format!("tenant-{prefix}")),
            openbao_roles: ours(&roles, &format!("tenant-{prefix}")),
            ..pulsar_left(backends, p, concurrency).await?
        };
        left.add(&tenant);
        left.keycloak_clients += keycloak_left(backends, p).await?;
        left.openbao_secrets += openbao_secrets_left(backends, p).await?;
    }
    left.kubernetes = kubernetes_left(client, placed).await?;
    Ok(left)
}

/// Topics of the environment's Pulsar namespace, the schemas of the
/// Topics, and the grants and subscription roles its policies hold.
async fn pulsar_left(backends: &Backends, p: &Placed, concurrency: usize) -> Result<Left> {
    let names = TenantNames::new(&p.tenant);
    let namespace = format!(
        "{}/{}",
        names.pulsar_tenant,
        names.environment(&p.environment).pulsar_namespace
    );
    let topics = pulsar_get(backends, &format!("namespaces/{namespace}/topics"))
        .await?
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0);
    let namespace = namespace.as_str();
    let schemas = stream::iter(&p.topics)
        .map(|topic| async move {
            let path = format!("schemas/{namespace}/{topic}/schema");
            anyhow::Ok(usize::from(pulsar_get(backends, &path).await?.is_some()))
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<usize>>()
        .await?
        .into_iter()
        .sum();
    let policies = pulsar_get(backends, &format!("namespaces/{namespace}"))
        .await?
        .unwrap_or_default();
    let (topic_grants, subscription_roles) = grants_in(&policies, &p.role_prefix());
    Ok(Left {
        topics,
        schemas,
        topic_grants,
        subscription_roles,
        ..Left::default()
    })
}

/// From a namespace's policies: the roles granted on its topics (any
/// role), and the subscription roles of services named `<prefix>*`.
fn grants_in(policies: &Value, prefix: &str) -> (usize, usize) {
    let auth = &policies["auth_policies"];
    let topic_grants = auth["destination_auth"].as_object().map_or(0, |topics| {
        topics
            .values()
            .map(|roles| roles.as_object().map_or(0, |r| r.len()))
            .sum()
    });
    let subscription_roles =
        auth["subscription_auth_roles"]
            .as_object()
            .map_or(0, |subscriptions| {
                subscriptions
                    .values()
                    .flat_map(|roles| roles.as_array().into_iter().flatten())
                    .filter(|role| role.as_str().is_some_and(|r| r.starts_with(prefix)))
                    .count()
            });
    (topic_grants, subscription_roles)
}

/// A Pulsar admin GET; `None` on 404.
async fn pulsar_get(backends: &Backends, path: &str) -> Result<Option<Value>> {
    let request = backends.pulsar(Method::GET, path);
    found_json(request, &format!("read Pulsar's {path}")).await
}

/// Service clients of the environment in the tenant's realm.
async fn keycloak_left(backends: &Backends, p: &Placed) -> Result<usize> {
    let Some(realm) = &p.realm else {
        return Ok(0);
    };
    let prefix = p.role_prefix();
    // Client ids are DNS labels and dots: nothing in the query needs escaping.
    let path = format!("/{realm}/clients?clientId={prefix}&search=true&max=100000");
    let action = format!("search clients {prefix}* in realm {realm}");
    let request = backends.keycloak(Method::GET, &path).await?;
    let clients: Vec<Value> = found_json(request, &action).await?.unwrap_or_default();
    Ok(clients
        .iter()
        .filter(|c| {
            c["clientId"]
                .as_str()
                .is_some_and(|id| id.starts_with(&prefix))
        })
        .count())
}

/// Credentials under the environment's services path and certificate
/// records of its namespace, in the tenant's KV.
async fn openbao_secrets_left(backends: &Backends, p: &Placed) -> Result<usize> {
    let kv = TenantNames::new(&p.tenant).kv_mount;
    let services = openbao_list(
        backends,
        &format!("{kv}/metadata/{}/services", p.environment),
    )
    .await?;
    let mut left = 0;
    for service in services {
        // A service's folder: what is under it.
        left += match service.strip_suffix('/') {
            Some(folder) => {
                let path = format!("{kv}/metadata/{}/services/{folder}", p.environment);
                openbao_list(backends, &path).await?.len()
            }
            None => 1,
        };
    }
    let records = openbao_list(
        backends,
        &format!("{kv}/metadata/certificates/{}", p.namespace()),
    )
    .await?;
    Ok(left + records.len())
}

/// The keys OpenBao lists at `path`; none when there is nothing (404).
async fn openbao_list(backends: &Backends, path: &str) -> Result<BTreeSet<String>> {
    let request = backends.openbao(Method::GET, &format!("{path}?list=true"));
    let action = format!("list OpenBao's {path}");
    let answer: Value = found_json(request, &action).await?.unwrap_or_default();
    Ok(answer["data"]["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(String::from))
        .collect())
}

/// Objects of the services and Topics still in the environments'
/// namespaces, once the garbage collector has had its time.
async fn kubernetes_left(client: &kube::Client, placed: &[Placed]) -> Result<usize> {
    let began = Instant::now();
    loop {
        let mut left = 0;
        for p in placed {
            left += kubernetes_left_in(client, p).await?;
        }
        if left == 0 || began.elapsed() > COLLECTOR_GRACE {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn kubernetes_left_in(client: &kube::Client, p: &Placed) -> Result<usize> {
    let namespace = p.namespace();
    let services: BTreeSet<String> = p.services.iter().cloned().collect();
    let secrets: BTreeSet<String> = p
        .services
        .iter()
        .flat_map(|s| [format!("{s}-secrets"), format!("{s}-tls")])
        .collect();
    let named = |names: Vec<String>, wanted: &BTreeSet<String>| {
        names.iter().filter(|n| wanted.contains(*n)).count()
    };
    Ok(named(
        names_in::<ServiceAccount>(client, &namespace).await?,
        &services,
    ) + named(names_in::<Secret>(client, &namespace).await?, &secrets)
        + names_in::<Certificate>(client, &namespace).await?.len()
        + names_in::<Topic>(client, &namespace).await?.len()
        + names_in::<ServiceIdentity>(client, &namespace).await?.len())
}

/// The names of the objects of kind `K` in `namespace`.
async fn names_in<K>(client: &kube::Client, namespace: &str) -> Result<Vec<String>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let listed = Api::<K>::namespaced(client.clone(), namespace)
        .list_metadata(&ListParams::default())
        .await
        .with_context(|| format!("listing {} of {namespace}", K::plural(&())))?;
    Ok(listed
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn grants_left_are_counted_from_the_namespace_policies() {
        let policies = json!({"auth_policies": {
            "namespace_auth": {"admin": ["produce"]},
            "destination_auth": {
                "persistent://bm-1/prod/t-0": {"bm-1.prod.s-0": ["produce"], "bm-1.prod.s-1": ["consume"]},
                "persistent://bm-1/prod/t-1": {},
            },
            "subscription_auth_roles": {
                "s-1": ["bm-1.prod.s-1", "ops-tool"],
                "s-2": [],
            },
        }});
        assert_eq!(grants_in(&policies, "bm-1.prod."), (2, 1));
        assert_eq!(grants_in(&json!({}), "bm-1.prod."), (0, 0));
    }

    #[test]
    fn nothing_left_reads_as_nothing() {
        assert_eq!(Left::default().to_string(), "nothing");
        let mut left = Left::default();
        left.add(&Left {
            schemas: 2,
            kubernetes: 1,
            ..Left::default()
        });
        assert_eq!(left.total(), 3);
        assert!(left.to_string().contains("schemas 2"), "{left}");
    }

    #[test]
    fn a_placement_names_its_namespace_and_roles() {
        let p = Placed {
            tenant: "bm-1".into(),
            environment: "prod".into(),
            realm: None,
            topics: Vec::new(),
            services: Vec::new(),
        };
        assert_eq!(p.namespace(), "tn-bm-1--prod");
        assert_eq!(p.role_prefix(), "bm-1.prod.");
    }
}
