//! What the plugin reads from the apiserver: the tenant, its custom
//! resources in its namespaces (with status), and Events. Nothing else:
//! no backend is asked.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use futures::future::try_join_all;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource, ResourceExt};
use ossature_crds::{
    Certificate, Environment, Scope, ServiceIdentity, Tenant, TenantRole, Topic, Workload,
};
use ossature_model::names::TenantNames;
use ossature_model::tree::{Found, TenantObjects};
use serde::de::DeserializeOwned;

use crate::cli::KubeFlags;
use crate::why::Subject;

/// A client of the cluster the flags (or the kubeconfig) name, and the
/// namespace of its context.
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

pub async fn connect(flags: &KubeFlags) -> Result<Cluster> {
    let options = KubeConfigOptions {
        context: flags.context.clone(),
        cluster: flags.cluster.clone(),
        user: flags.user.clone(),
    };
    let mut config = match &flags.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None if flags.context.is_some() || flags.cluster.is_some() || flags.user.is_some() => {
            Config::from_kubeconfig(&options)
                .await
                .context("using the kubeconfig ($KUBECONFIG, else ~/.kube/config)")?
        }
        // Its message holds what each way of finding a cluster said.
        None => Config::infer().await.map_err(|e| {
            anyhow!("no cluster to talk to: set KUBECONFIG, pass --kubeconfig, or run inside a cluster ({e})")
        })?,
    };
    config.connect_timeout = Some(flags.request_timeout);
    config.read_timeout = Some(flags.request_timeout);
    config.write_timeout = Some(flags.request_timeout);
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    Ok(Cluster { client, namespace })
}

/// A tenant's objects with their status, as the apiserver holds them now:
/// its custom resources in its namespace and its environments'.
pub async fn tenant_objects(client: &Client, tenant: &str) -> Result<TenantObjects> {
    let tenants: Api<Tenant> = Api::all(client.clone());
    let Some(object) = tenants
        .get_opt(tenant)
        .await
        .map_err(|e| explained(e, "reading", "tenants", None))?
    else {
        return Err(missing(&tenants, tenant).await);
    };
    let names = TenantNames::new(tenant);
    let own = names.namespace.as_str();
    let (scopes, environments, roles) = futures::try_join!(
        list::<Scope>(client, own),
        list::<Environment>(client, own),
        list::<TenantRole>(client, own),
    )?;
    let mut namespaces = vec![own.to_string()];
    namespaces.extend(
        environments
            .iter()
            .map(|e| names.environment(&e.name_any()).namespace),
    );
    let products = try_join_all(namespaces.iter().map(|namespace| async move {
        futures::try_join!(
            list::<Certificate>(client, namespace),
            list::<Topic>(client, namespace),
            list::<ServiceIdentity>(client, namespace),
            list::<Workload>(client, namespace),
        )
    }))
    .await?;
    let mut found = Found {
        scopes: scopes.into_iter().map(Arc::new).collect(),
        environments: environments.into_iter().map(Arc::new).collect(),
        ..Found::default()
    };
    for (certificates, topics, identities, workloads) in products {
        found
            .certificates
            .extend(certificates.into_iter().map(Arc::new));
        found.topics.extend(topics.into_iter().map(Arc::new));
        found
            .service_identities
            .extend(identities.into_iter().map(Arc::new));
        found.workloads.extend(workloads.into_iter().map(Arc::new));
    }
    let role_rules = ossature_policy::own_scope_rules(&roles);
    Ok(TenantObjects::gather(object, found, role_rules))
}

/// Why a tenant was not found: it does not exist, or Ossature is not
/// installed in this cluster.
async fn missing(tenants: &Api<Tenant>, tenant: &str) -> anyhow::Error {
    match tenants.list_metadata(&ListParams::default().limit(1)).await {
        Err(kube::Error::Api(status)) if status.is_not_found() => anyhow!(
            "this cluster has no Tenant kind (ossature.dev/v1alpha1): Ossature is not installed here, or the context is another cluster's"
        ),
        _ => anyhow!(
            "tenant {tenant} not found: this cluster has no Tenant named {tenant}; `kubectl get tenants` lists them"
        ),
    }
}

async fn list<K>(client: &Client, namespace: &str) -> Result<Vec<K>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let plural = K::plural(&()).to_string();
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| explained(e, "listing", &plural, Some(namespace)))
}

/// An apiserver error in words that say what was being read and what to do.
fn explained(
    error: kube::Error,
    doing: &str,
    what: &str,
    namespace: Option<&str>,
) -> anyhow::Error {
    let place = namespace.map(|n| format!(" in {n}")).unwrap_or_default();
    match &error {
        kube::Error::Api(status) if status.code == 403 => anyhow!(
            "not allowed {doing} {what}{place}: {}; ask for read access (get, list) to Ossature's kinds and Events there",
            status.message
        ),
        kube::Error::Api(status) if status.is_not_found() && namespace.is_some() => anyhow!(
            "the apiserver does not serve {what}: install Ossature's CRDs (crds/yaml/) of this release"
        ),
        _ => anyhow!(error).context(format!("{doing} {what}{place}")),
    }
}

/// The core/v1 Events about each subject, in the namespace Events about
/// it are kept in (a cluster-scoped object's go to `default`).
pub async fn events_about(client: &Client, subjects: &[Subject]) -> Result<Vec<Event>> {
    let lists = try_join_all(subjects.iter().map(|subject| async move {
        let namespace = subject.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(client.clone(), namespace);
        let mut fields = format!(
            "involvedObject.kind={},involvedObject.name={}",
            subject.kind, subject.name
        );
        if let Some(uid) = &subject.uid {
            fields.push_str(&format!(",involvedObject.uid={uid}"));
        }
        api.list(&ListParams::default().fields(&fields))
            .await
            .map(|l| l.items)
            .map_err(|e| explained(e, "listing", "events", Some(namespace)))
    }))
    .await?;
    Ok(lists.into_iter().flatten().collect())
}
