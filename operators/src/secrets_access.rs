//! Where the operator may touch Secrets: in every namespace, or only in the
//! namespaces of its tenants and environments. RBAC cannot limit a
//! cluster-wide grant to labelled Secrets, so the narrow way binds a
//! ClusterRole (named by `--secrets-role`, holding only the Secret verbs)
//! to the operator itself, with a RoleBinding in each namespace it makes,
//! and watches Secrets in exactly the namespaces bound so.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::stream::{AbortHandle, BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use ossature_model::names::MANAGED_BY;

/// The label of the RoleBindings granting Secrets to one shard's
/// instances; its value is the shard's Lease name.
pub const READER_LABEL: &str = "ossature.dev/secrets-reader";

/// The name of that RoleBinding in each namespace it is made in.
pub const BINDING_NAME: &str = "ossature-operator-secrets";

#[derive(Debug, Clone, PartialEq)]
pub enum SecretsAccess {
    /// Secrets are read and watched in every namespace.
    Cluster,
    /// Only where a RoleBinding of this shard grants them.
    Namespaces(Binding),
}

/// What each tenant or environment namespace binds the operator to.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    role: String,
    subject: Subject,
    shard: String,
}

impl SecretsAccess {
    /// The access `--secrets-role` asks for. With a role, the operator's
    /// own identity is asked of the apiserver (a SelfSubjectReview), so
    /// that it binds whoever it runs as: its ServiceAccount in a cluster.
    pub async fn resolve(
        client: &Client,
        role: Option<&str>,
        shard: &str,
    ) -> anyhow::Result<SecretsAccess> {
        use anyhow::Context as _;
        let Some(role) = role else {
            return Ok(SecretsAccess::Cluster);
        };
        let review = Api::<SelfSubjectReview>::all(client.clone())
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .context("asking the apiserver who the operator is (SelfSubjectReview), to bind --secrets-role to it")?;
        let username = review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .context("the apiserver's SelfSubjectReview names no user")?;
        Ok(SecretsAccess::Namespaces(Binding {
            role: role.to_string(),
            subject: subject_of(&username),
            shard: shard.to_string(),
        }))
    }

    /// The RoleBinding `namespace` should hold, if any.
    pub fn binding(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<RoleBinding> {
        let SecretsAccess::Namespaces(binding) = self else {
            return None;
        };
        let mut labels = labels.clone();
        labels.insert(READER_LABEL.into(), binding.shard.clone());
        labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
        Some(RoleBinding {
            metadata: ObjectMeta {
                name: Some(BINDING_NAME.into()),
                namespace: Some(namespace.into()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: binding.role.clone(),
            },
            subjects: Some(vec![binding.subject.clone()]),
        })
    }

    /// Secrets labelled `label` (a key), as one watch stream: cluster-wide,
    /// or merged from one watch per namespace this shard is bound in,
    /// started and stopped as its RoleBindings come and go.
    pub fn watch(
        &self,
        client: &Client,
        label: &'static str,
    ) -> BoxStream<'static, Result<watcher::Event<Secret>, watcher::Error>> {
        let config = watcher::Config::default().labels(label);
        match self {
            SecretsAccess::Cluster => watcher(Api::<Secret>::all(client.clone()), config)
                .default_backoff()
                .boxed(),
            SecretsAccess::Namespaces(binding) => {
                let bindings = watcher(
                    Api::<RoleBinding>::all(client.clone()),
                    watcher::Config::default().labels(&format!("{READER_LABEL}={}", binding.shard)),
                )
                .default_backoff();
                per_namespace(bindings, {
                    let client = client.clone();
                    move |namespace: &str| {
                        let watch = watcher(
                            Api::<Secret>::namespaced(client.clone(), namespace),
                            config.clone(),
                        )
                        .default_backoff();
                        // The apiserver's authorizer learns of a new binding
                        // a moment after its watch does: the watch starts
                        // once the binding is in force, not with a 403.
                        let allowed = allowed(client.clone(), namespace.to_string());
                        futures::stream::once(async move {
                            allowed.await;
                            watch
                        })
                        .flatten()
                        .boxed()
                    }
                })
                .boxed()
            }
        }
    }
}

/// Waits until the apiserver lets this client list Secrets in `namespace`
/// (asked with SelfSubjectAccessReviews, which anyone may make), a few
/// seconds at most: past that the watch starts anyway and backs off.
async fn allowed(client: Client, namespace: String) {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace),
                verb: Some("list".into()),
                resource: Some("secrets".into()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let reviews = Api::<SelfSubjectAccessReview>::all(client);
    let mut pause = std::time::Duration::from_millis(20);
    for _ in 0..10 {
        let answer = reviews.create(&PostParams::default(), &review).await;
        if answer.is_ok_and(|r| r.status.is_some_and(|s| s.allowed)) {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(1));
    }
}

/// The RBAC subject of an authenticated user name.
fn subject_of(username: &str) -> Subject {
    match username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((namespace, name)) => Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some(namespace.into()),
            api_group: None,
        },
        None => Subject {
            kind: "User".into(),
            name: username.into(),
            namespace: None,
            api_group: Some("rbac.authorization.k8s.io".into()),
        },
    }
}

type Events<T> = BoxStream<'static, Result<watcher::Event<T>, watcher::Error>>;

/// The namespaced watches the RoleBindings of `bindings` call for, merged:
/// one per namespace holding a binding, stopped when it goes (or when a
/// relist no longer finds it).
fn per_namespace<T, S>(
    bindings: S,
    start: impl Fn(&str) -> Events<T> + Send + 'static,
) -> impl Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static
where
    T: Send + 'static,
    S: Stream<Item = Result<watcher::Event<RoleBinding>, watcher::Error>> + Send + 'static,
{
    struct State<T, S, F> {
        bindings: std::pin::Pin<Box<S>>,
        watches: SelectAll<futures::stream::Abortable<Events<T>>>,
        running: HashMap<String, AbortHandle>,
        relisted: Option<HashSet<String>>,
        start: F,
    }
    impl<T, S, F: Fn(&str) -> Events<T>> State<T, S, F> {
        fn begin(&mut self, namespace: String) {
            if self.running.contains_key(&namespace) {
                return;
            }
            let (watch, handle) = futures::stream::abortable((self.start)(&namespace));
            self.watches.push(watch);
            self.running.insert(namespace, handle);
        }
        fn end(&mut self, namespace: &str) {
            if let Some(handle) = self.running.remove(namespace) {
                handle.abort();
            }
        }
    }
    let state = State {
        bindings: Box::pin(bindings),
        watches: SelectAll::new(),
        running: HashMap::new(),
        relisted: None,
        start,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            tokio::select! {
                event = state.bindings.next() => match event? {
                    Ok(watcher::Event::Apply(b)) => state.begin(b.namespace().unwrap_or_default()),
                    Ok(watcher::Event::Delete(b)) => state.end(&b.namespace().unwrap_or_default()),
                    Ok(watcher::Event::Init) => state.relisted = Some(HashSet::new()),
                    Ok(watcher::Event::InitApply(b)) => {
                        let namespace = b.namespace().unwrap_or_default();
                        if let Some(seen) = state.relisted.as_mut() {
                            seen.insert(namespace.clone());
                        }
                        state.begin(namespace);
                    }
                    Ok(watcher::Event::InitDone) => {
                        let seen = state.relisted.take().unwrap_or_default();
                        let gone: Vec<String> = state
                            .running
                            .keys()
                            .filter(|n| !seen.contains(*n))
                            .cloned()
                            .collect();
                        for namespace in gone {
                            state.end(&namespace);
                        }
                    }
                    Err(e) => return Some((Err(e), state)),
                },
                Some(event) = state.watches.next(), if !state.watches.is_empty() => {
                    return Some((event, state));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_account_is_bound_as_one() {
        let subject = subject_of("system:serviceaccount:ossature-system:r-ossature-operator");
        assert_eq!(subject.kind, "ServiceAccount");
        assert_eq!(subject.name, "r-ossature-operator");
        assert_eq!(subject.namespace.as_deref(), Some("ossature-system"));
        let user = subject_of("kubernetes-admin");
        assert_eq!(user.kind, "User");
        assert_eq!(user.name, "kubernetes-admin");
        assert_eq!(user.api_group.as_deref(), Some("rbac.authorization.k8s.io"));
    }

    fn binding(namespace: &str) -> RoleBinding {
        RoleBinding {
            metadata: ObjectMeta {
                name: Some(BINDING_NAME.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            ..RoleBinding::default()
        }
    }

    /// Each namespace's watch yields its name while it runs.
    fn named_watch(namespace: &str) -> Events<String> {
        let name = namespace.to_string();
        futures::stream::once(async move { Ok(watcher::Event::Apply(name)) })
            .chain(futures::stream::pending())
            .boxed()
    }

    /// The next namespace the merged watches yield, if one comes within a second.
    async fn next_name(
        merged: &mut (impl Stream<Item = Result<watcher::Event<String>, watcher::Error>> + Unpin),
    ) -> Option<String> {
        match tokio::time::timeout(std::time::Duration::from_secs(1), merged.next()).await {
            Ok(Some(Ok(watcher::Event::Apply(name)))) => Some(name),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn watches_follow_the_bindings() {
        use watcher::Event::*;
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut merged = Box::pin(per_namespace(rx, named_watch));
        tx.unbounded_send(Ok(Init)).unwrap();
        tx.unbounded_send(Ok(InitApply(binding("tn-a")))).unwrap();
        tx.unbounded_send(Ok(InitDone)).unwrap();
        assert_eq!(next_name(&mut merged).await.as_deref(), Some("tn-a"));
        // The same binding again starts nothing new.
        tx.unbounded_send(Ok(Apply(binding("tn-a")))).unwrap();
        tx.unbounded_send(Ok(Apply(binding("tn-b")))).unwrap();
        assert_eq!(next_name(&mut merged).await.as_deref(), Some("tn-b"));
        assert_eq!(next_name(&mut merged).await, None);
        // A binding deleted, and one missing from a relist, end their
        // watches: a new binding in those namespaces starts them again.
        tx.unbounded_send(Ok(Delete(binding("tn-a")))).unwrap();
        tx.unbounded_send(Ok(Init)).unwrap();
        tx.unbounded_send(Ok(InitDone)).unwrap();
        assert_eq!(next_name(&mut merged).await, None);
        tx.unbounded_send(Ok(Apply(binding("tn-a")))).unwrap();
        tx.unbounded_send(Ok(Apply(binding("tn-b")))).unwrap();
        let mut seen = vec![
            next_name(&mut merged).await.unwrap(),
            next_name(&mut merged).await.unwrap(),
        ];
        seen.sort();
        assert_eq!(seen, ["tn-a", "tn-b"]);
    }
}
