//! What the reconciles of a Topic, a ServiceIdentity and a Workload make.

use kube::ResourceExt;
use ossature_crds::{Isolation, ServiceIdentity, Topic, Workload};
use serde_json::json;

use super::environments::{certificate_record, pulsar_namespace};
use super::tenant::{identity_home, to_json};
use super::{Backend, Key, Kind, Object, Owned, Settings, kubernetes, object};
use crate::conditions::{
    ACCOUNT_READY, CERTIFICATE_READY, DEPLOYMENT_READY, GRANTS_READY, MESSAGING_READY, REALM_READY,
    SCALING_READY, SCHEMA_READY, SECRETS_READY,
};
use crate::services::{
    CLIENT_ID_KEY, CLIENT_SECRET_KEY, PULSAR_TOKEN_EXPIRES_KEY, PULSAR_TOKEN_KEY, ROTATION_POLICY,
    ROTATION_PROFILE, ServiceNames, rotation_policy, rotation_profile, service_client,
    service_objects, subscriptions_in,
};
use crate::topics::{PulsarTopic, desired_schema};
use crate::workloads::{
    Identity, Scaler, SubscribedTopic, WorkloadInput, WorkloadObjects, desired,
};

/// The Pulsar topic, its schema, and each service's grant on it.
pub(super) fn topic(owned: &Owned, topic: &Topic) -> Vec<Object> {
    let owner = Key::of(Kind::Topic, topic);
    let (Some(pulsar), Some(namespace)) = (PulsarTopic::of_topic(topic), topic.namespace()) else {
        return Vec::new();
    };
    let environment = crate::names::environment_of(&namespace).map(|(_, e)| e);
    let parent = environment.map(|e| pulsar_namespace(&owned.names, e));
    let key = topic_key(&pulsar);
    let mut all = vec![object(
        key.clone(),
        parent.as_ref(),
        &owner,
        MESSAGING_READY,
        json!({"partitions": topic.spec.partitions, "policies": topic.spec.policies}),
    )];
    if let Some(schema) = &topic.spec.schema {
        let fingerprint = desired_schema(schema).ok().map(|s| s.fingerprint);
        all.push(object(
            Key::new(Backend::Pulsar, Kind::Schema, pulsar.to_string()),
            Some(&key),
            &owner,
            SCHEMA_READY,
            json!({"fingerprint": fingerprint, "compatibility": schema.compatibility.as_str()}),
        ));
    }
    let grants = owned.grants.on(&namespace, &topic.name_any());
    for (role, actions) in grants {
        let actions: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
        all.push(object(
            Key::new(
                Backend::Pulsar,
                Kind::TopicGrant,
                format!("{pulsar}/{role}"),
            ),
            Some(&key),
            &owner,
            GRANTS_READY,
            json!({"role": role, "actions": actions}),
        ));
    }
    all
}

fn topic_key(topic: &PulsarTopic) -> Key {
    Key::new(Backend::Pulsar, Kind::PulsarTopic, topic.to_string())
}

/// Its ServiceAccount and Certificate (with the certificate's record and
/// Secret), Keycloak client, OpenBao policy, role and credentials, the
/// Secret its Workloads mount, and the subscriptions it is allowed.
pub(super) fn identity(
    owned: &Owned,
    identity: &ServiceIdentity,
    settings: &Settings,
) -> Vec<Object> {
    let owner = Key::of(Kind::ServiceIdentity, identity);
    let Some(names) = ServiceNames::of(identity) else {
        return Vec::new();
    };
    let objects = service_objects(identity, &names, &settings.platform.root_domain);
    let mut all = vec![
        kubernetes(
            Kind::ServiceAccount,
            &objects.service_account,
            None,
            &owner,
            ACCOUNT_READY,
        ),
        kubernetes(
            Kind::Certificate,
            &objects.certificate,
            None,
            &owner,
            ACCOUNT_READY,
        ),
    ];
    all.extend(certificate_record(
        &owned.names,
        &objects.certificate,
        CERTIFICATE_READY,
    ));
    let (realm, _) = identity_home(owned);
    let isolation = owned.isolation;
    all.push(client(&names, &realm, isolation, &owner));
    let first = owned
        .identities
        .first()
        .is_some_and(|f| std::ptr::eq(*f, identity));
    if isolation == Isolation::Realm && first {
        all.extend(rotation(&realm, &owner));
    }
    all.extend(secrets(&names, &owner));
    all.extend(subscriptions(owned, identity, &names, &owner));
    all
}

fn client(names: &ServiceNames, realm: &str, isolation: Isolation, owner: &Key) -> Object {
    let client = service_client(names, isolation);
    object(
        Key::new(
            Backend::Keycloak,
            Kind::Client,
            format!("{realm}/{}", client.client_id),
        ),
        None,
        owner,
        REALM_READY,
        to_json(&client),
    )
}

/// The client profile and policy that rotate service secrets in a realm
/// of the tenant's own (a shared realm's are the platform's), shown under
/// its first service.
fn rotation(realm: &str, owner: &Key) -> Vec<Object> {
    let entry = |kind, name: &str, fields| {
        let key = Key::new(Backend::Keycloak, kind, format!("{realm}/{name}"));
        object(key, None, owner, REALM_READY, fields)
    };
    vec![
        entry(Kind::ClientProfile, ROTATION_PROFILE, rotation_profile()),
        entry(Kind::ClientPolicy, ROTATION_POLICY, rotation_policy()),
    ]
}

fn secrets(names: &ServiceNames, owner: &Key) -> Vec<Object> {
    let mut secret = k8s_openapi::api::core::v1::Secret::default();
    secret.metadata.name = Some(names.secret_name.clone());
    secret.metadata.namespace = Some(names.namespace.clone());
    secret.metadata.labels = Some(crate::names::labels(
        &names.tenant,
        Some(&names.environment),
    ));
    secret.type_ = Some("Opaque".into());
    vec![
        object(
            Key::new(Backend::OpenBao, Kind::Policy, &names.openbao_policy),
            None,
            owner,
            SECRETS_READY,
            json!({"policy": names.openbao_policy_hcl()}),
        ),
        object(
            Key::new(
                Backend::OpenBao,
                Kind::KubernetesAuthRole,
                &names.openbao_role,
            ),
            None,
            owner,
            SECRETS_READY,
            names.openbao_role_settings(),
        ),
        object(
            Key::new(
                Backend::OpenBao,
                Kind::KvSecret,
                format!("{}/{}", names.kv_mount, names.credentials_key()),
            ),
            None,
            owner,
            SECRETS_READY,
            json!({"keys": [CLIENT_ID_KEY, CLIENT_SECRET_KEY, PULSAR_TOKEN_KEY, PULSAR_TOKEN_EXPIRES_KEY]}),
        ),
        kubernetes(Kind::Secret, &secret, None, owner, SECRETS_READY),
    ]
}

/// The subscriptions of its Pulsar namespace this service is the first
/// (by name) to be allowed: the permissions of a subscription are one
/// object, shown under one of the services it names.
fn subscriptions(
    owned: &Owned,
    identity: &ServiceIdentity,
    names: &ServiceNames,
    owner: &Key,
) -> Vec<Object> {
    let namespace = pulsar_namespace(&owned.names, &names.environment);
    subscriptions_in(&owned.grants, &names.namespace)
        .into_iter()
        .filter(|(subscription, roles)| {
            let first = roles.iter().next();
            first == Some(&names.pulsar_role)
                && identity
                    .spec
                    .grants
                    .iter()
                    .any(|g| g.subscriptions.contains(subscription))
        })
        .map(|(subscription, roles)| {
            object(
                Key::new(
                    Backend::Pulsar,
                    Kind::SubscriptionGrant,
                    format!("{}/{subscription}", namespace.name),
                ),
                Some(&namespace),
                owner,
                MESSAGING_READY,
                json!({"roles": roles}),
            )
        })
        .collect()
}

/// Its Deployment, Service, NetworkPolicy, disruption budget, autoscaler,
/// and the subscription its consumers read; none while its
/// ServiceIdentity (or subscribed Topic) is missing: it waits for them.
pub(super) fn workload(owned: &Owned, workload: &Workload, settings: &Settings) -> Vec<Object> {
    let owner = Key::of(Kind::Workload, workload);
    let Some((objects, subscribed)) = workload_objects(owned, workload, settings) else {
        return Vec::new();
    };
    let running = DEPLOYMENT_READY;
    let mut all = vec![
        kubernetes(Kind::Deployment, &objects.deployment, None, &owner, running),
        kubernetes(Kind::Service, &objects.service, None, &owner, running),
        kubernetes(
            Kind::NetworkPolicy,
            &objects.network_policy,
            None,
            &owner,
            running,
        ),
    ];
    if let Some(budget) = &objects.disruption_budget {
        all.push(kubernetes(
            Kind::PodDisruptionBudget,
            budget,
            None,
            &owner,
            running,
        ));
    }
    all.extend(scaler(objects.scaler.as_ref(), &owner));
    if let (Some(subscription), Some(subscribed)) = (&workload.spec.subscription, &subscribed)
        && subscribed.topic.persistent
    {
        all.push(object(
            Key::new(
                Backend::Pulsar,
                Kind::Subscription,
                format!("{}/{}", subscribed.topic, subscription.name),
            ),
            Some(&topic_key(&subscribed.topic)),
            &owner,
            MESSAGING_READY,
            json!({"type": subscription.subscription_type}),
        ));
    }
    all
}

/// The Workload's objects as its controller builds them, from its
/// ServiceIdentity's names (and, for a consumer, its Topic).
fn workload_objects(
    owned: &Owned,
    workload: &Workload,
    settings: &Settings,
) -> Option<(WorkloadObjects, Option<SubscribedTopic>)> {
    let namespace = workload.namespace()?;
    let service = &workload.spec.service_identity;
    let found = owned.identity(&namespace, service)?;
    let names = ServiceNames::of(found)?;
    let identity = Identity {
        id: found.spec.id.clone(),
        service_account: names.service_account.clone(),
        secret_name: names.secret_name.clone(),
        secrets_hash: found
            .status
            .as_ref()
            .and_then(|s| s.secrets_hash.clone())
            .unwrap_or_default(),
    };
    let subscribed = match &workload.spec.subscription {
        None => None,
        Some(subscription) => {
            let topic = owned.topic(&namespace, &subscription.topic)?;
            Some(SubscribedTopic {
                topic: PulsarTopic::of_topic(topic)?,
                partitions: topic.spec.partitions,
            })
        }
    };
    let objects = desired(&WorkloadInput {
        workload,
        service: &identity.names(&namespace, service)?,
        service_id: &identity.id,
        secrets_hash: &identity.secrets_hash,
        subscribed: subscribed.as_ref(),
        autoscaler: settings.autoscaler,
        pulsar_admin_url: settings.pulsar_admin_url,
    })
    .ok()?;
    Some((objects, subscribed))
}

/// Its autoscaler: KEDA's ScaledObject and TriggerAuthentication, or an HPA.
fn scaler(scaler: Option<&Scaler>, owner: &Key) -> Vec<Object> {
    match scaler {
        Some(Scaler::Keda {
            scaled_object,
            trigger_authentication,
        }) => [
            (Kind::ScaledObject, scaled_object),
            (Kind::TriggerAuthentication, trigger_authentication),
        ]
        .into_iter()
        .map(|(kind, value)| {
            let meta = &value["metadata"];
            let name = format!(
                "{}/{}",
                meta["namespace"].as_str().unwrap_or_default(),
                meta["name"].as_str().unwrap_or_default()
            );
            object(
                Key::new(Backend::Kubernetes, kind, name),
                None,
                owner,
                SCALING_READY,
                value.clone(),
            )
        })
        .collect(),
        Some(Scaler::Hpa(hpa)) => vec![kubernetes(
            Kind::HorizontalPodAutoscaler,
            hpa.as_ref(),
            None,
            owner,
            SCALING_READY,
        )],
        None => Vec::new(),
    }
}
