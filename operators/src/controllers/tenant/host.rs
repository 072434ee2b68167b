//! A tenant's host at the edge, `<tenant>.<root-domain>`: its certificate
//! (`CertificateReady`) and its route with the tenant's mutual TLS and
//! allowed source ranges (`EdgeReady`), in the Tenant's own reconcile.
//!
//! Signed by the tenant's CA, the host certificate is issued here, after
//! the namespace, the OpenBao paths and the CA, so a new tenant is served
//! after one reconcile; the Certificate `ossature-host` is the record users
//! see, which its controller reports and never issues. From the platform's
//! ACME issuer, the Certificate controller orders it (the order's own time
//! is the floor) and its change brings the Tenant back.

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use ossature_crds::{Certificate, ClientAuthMode, Tenant, TenantStatus};
use ossature_model::certificates::host::{self, HOST, check_at, renewal_check};
use ossature_model::certificates::{CaState, Record, Wanted, record_path, replace_reason};
use ossature_model::conditions::{self, Outcome, reasons};
use ossature_model::objects::differs;
use tokio::sync::oneshot;

use super::Provisioning;
use crate::adapters::edge::{self, EdgeCertificate, HostState, Upstream};
use crate::adapters::openbao::pki::Issuer;
use crate::adapters::{Change, Failure};
use crate::context::Context;
use crate::edge::Edges;
use crate::kubernetes;
use crate::reconcile::{Plan, Report, Step};
use crate::signing::{self, Target};

impl<'a> Provisioning<'a> {
    /// The host's certificate step and, after it, its edge step. `held`:
    /// the custom domains the tenant holds (served with the host).
    pub(super) fn serve(
        &self,
        plan: &mut Plan<'a, TenantStatus>,
        edges: &'a Edges,
        held: &[String],
        issuers: oneshot::Receiver<Vec<Issuer>>,
    ) {
        let (tenant, ctx) = (self.tenant, self.ctx);
        let name = self.host();
        let issuer = ctx.settings.platform.host_issuer.as_deref();
        let desired = host::certificate(tenant, &self.names, &name, held, issuer);
        plan.status.host = Some(name.clone());
        // The host and each custom domain held: one certificate serves them all.
        let hosts = desired.spec.dns_names.clone();
        let handed = match issuer {
            None => {
                let (hand, handed) = oneshot::channel();
                plan.step(self.signed(desired, hand, issuers));
                Some(handed)
            }
            Some(_) => {
                plan.step(self.ordered(desired));
                None
            }
        };
        let names = self.names.clone();
        plan.step(
            Step::new(
                conditions::EDGE_READY,
                format!("edge host {}", hosts.join(", ")),
                async move {
                    let record = match handed {
                        Some(handed) => handed.await.ok(),
                        None => None,
                    };
                    let record = match record {
                        Some(record) => record,
                        None => recorded(ctx, &names, &name).await?,
                    };
                    let state = host_state(tenant, ctx, &names, name, record).await?;
                    let applied = hosts.into_iter().map(|host| {
                        let state = HostState {
                            host,
                            ..state.clone()
                        };
                        edges.apply(state)
                    });
                    let changes = futures::future::try_join_all(applied).await?;
                    Ok::<_, Failure>(changes.into_iter().map(|c| c.change).collect())
                },
            )
            .after(
                &[conditions::CERTIFICATE_READY],
                reasons::WAITING_FOR_CERTIFICATE,
                format!("{} waits for its certificate", self.host()),
            ),
        );
    }

    /// Signed by the tenant's CA, here: the certificate is issued (or
    /// renewed, or moved to a rotated CA) once the namespace, the OpenBao
    /// paths and the CA are in place, and handed to the edge step.
    fn signed(
        &self,
        desired: Certificate,
        hand: oneshot::Sender<Record>,
        issuers: oneshot::Receiver<Vec<Issuer>>,
    ) -> Step<'a, TenantStatus> {
        let (tenant, ctx) = (self.tenant, self.ctx);
        let names = self.names.clone();
        let name = self.host();
        // The CA step ran first: the generation asked for is the one signing.
        let ca = CaState {
            generation: tenant.spec.certificate_authority.generation,
            ..CaState::of(tenant)
        };
        Step::reporting(
            conditions::CERTIFICATE_READY,
            format!("certificate of {name}"),
            async move {
                let path = record_path(&names.namespace, HOST);
                let at = Target {
                    tenant: &names.tenant,
                    names: &names,
                    path: &path,
                    ca,
                    issuers: issuers.await.ok(),
                };
                match issue(ctx, &at, &desired).await {
                    Ok((changes, record)) => {
                        let generation = record.generation;
                        if changes.iter().any(|c| c.wrote()) {
                            // Its controller reports what was issued.
                            ctx.nudges
                                .nudge(ObjectRef::<Certificate>::from_obj(&desired));
                        }
                        let due = record
                            .validity()
                            .zip(record.renewal_by_rule(None))
                            .and_then(|((_, expires), renews)| {
                                check_at(renews, expires, Timestamp::now())
                            });
                        let _ = hand.send(record);
                        Report::of(Ok(changes))
                            .outcome(Outcome::ready(
                                conditions::CERTIFICATE_READY,
                                format!("the certificate of {name} is issued"),
                            ))
                            .found(move |status: &mut TenantStatus| {
                                // The CA's status counts this certificate too.
                                let counted = status
                                    .certificate_authority
                                    .iter_mut()
                                    .flat_map(|ca| ca.generations.iter_mut())
                                    .find(|g| g.generation == generation);
                                if let Some(counted) = counted {
                                    counted.certificates += 1;
                                }
                                due
                            })
                    }
                    Err(failure) => Report::of(Err(failure)),
                }
            },
        )
        .after(
            &[
                conditions::NAMESPACE_READY,
                conditions::SECRETS_READY,
                conditions::CERTIFICATE_AUTHORITY_READY,
            ],
            reasons::PROGRESSING,
            format!("the certificate of {} is being issued", self.host()),
        )
    }

    /// From the platform's ACME issuer: the Certificate is written here and
    /// ordered by its controller; its change brings the Tenant back.
    fn ordered(&self, desired: Certificate) -> Step<'a, TenantStatus> {
        let ctx = self.ctx;
        let name = self.host();
        let namespace = self.names.namespace.clone();
        Step::reporting(
            conditions::CERTIFICATE_READY,
            format!("certificate of {name}"),
            async move {
                let change = match ensure_certificate(ctx, &desired).await {
                    Ok(change) => change,
                    Err(e) => return Report::of(Err(e.into())),
                };
                let live = ctx.stores.get_in::<Certificate>(&namespace, HOST);
                let current = live
                    .as_deref()
                    .filter(|l| l.spec == desired.spec)
                    .filter(|l| issued(l));
                let Some(current) = current else {
                    return Report::of(Ok(vec![change])).outcome(Outcome::failed(
                        conditions::CERTIFICATE_READY,
                        reasons::PROGRESSING,
                        format!("the certificate of {name} is being issued"),
                    ));
                };
                // The renewed certificate's change brings the tenant back; in
                // case it is missed, it also comes back once the renewal is due.
                let due = current
                    .status
                    .as_ref()
                    .and_then(|s| renewal_check(s, Timestamp::now()));
                Report::of(Ok(vec![change]))
                    .outcome(Outcome::ready(
                        conditions::CERTIFICATE_READY,
                        format!("the certificate of {name} is issued"),
                    ))
                    .found(move |_| due)
            },
        )
        .after(
            &[conditions::NAMESPACE_READY],
            reasons::PROGRESSING,
            format!("the certificate of {} is being issued", self.host()),
        )
    }
}

/// The host certificate as held, issued anew when it does not do; then the
/// Certificate users see in line with it.
async fn issue(
    ctx: &Context,
    at: &Target<'_>,
    desired: &Certificate,
) -> Result<(Vec<Change>, Record), Failure> {
    let wanted = Wanted::of(&desired.spec);
    let held = signing::held(ctx, at).await?;
    let renews = held.as_ref().and_then(|r| r.renewal_by_rule(None));
    let mut changes = Vec::new();
    let reason = replace_reason(
        held.as_ref(),
        &wanted,
        renews,
        Timestamp::now(),
        Some(at.ca.generation),
    );
    // The record users see and the signing do not depend on each other:
    // its controller is nudged once the certificate is signed.
    let recorded = async {
        match (reason, held) {
            (None, Some(mut record)) => {
                let refreshed = signing::follow_trust(ctx, at, &mut record).await?;
                Ok::<_, Failure>((refreshed, record))
            }
            (_, held) => {
                let record = signing::sign(ctx, &desired.spec, at, held, &wanted).await?;
                Ok((Some(Change::Created), record))
            }
        }
    };
    let written = async { ensure_certificate(ctx, desired).await.map_err(Failure::from) };
    let ((issued, record), written) = tokio::try_join!(recorded, written)?;
    changes.extend(issued);
    changes.push(written);
    Ok((changes, record))
}

/// Writes the host's Certificate unless it already matches: as watched,
/// or, before the watch has seen it (a restart), as read.
async fn ensure_certificate(ctx: &Context, desired: &Certificate) -> Result<Change, kube::Error> {
    let namespace = desired.metadata.namespace.clone().unwrap_or_default();
    let api = Api::<Certificate>::namespaced(ctx.client.clone(), &namespace);
    let Some(live) = ctx.stores.get_in::<Certificate>(&namespace, HOST) else {
        return kubernetes::ensure(&api, desired, &ctx.calls).await;
    };
    if !differs(desired, live.as_ref()).map_err(kube::Error::SerdeError)? {
        return Ok(Change::Unchanged);
    }
    kubernetes::apply(&api, desired, &ctx.calls).await?;
    Ok(Change::Updated)
}

/// Whether the watched host Certificate is Ready for its current spec.
fn issued(live: &Certificate) -> bool {
    live.status.as_ref().is_some_and(|s| {
        conditions::ready_for(
            &s.conditions,
            s.observed_generation,
            live.metadata.generation,
        )
    })
}

/// The host certificate as recorded in OpenBao.
async fn recorded(
    ctx: &Context,
    names: &ossature_model::TenantNames,
    host: &str,
) -> Result<Record, Failure> {
    ctx.openbao
        .get_secret(&names.kv_mount, &record_path(&names.namespace, HOST))
        .await?
        .map(|m| Record::from_map(&m))
        .filter(|r| !r.certificate.is_empty())
        .ok_or_else(|| {
            Failure::new(
                reasons::WAITING_FOR_CERTIFICATE,
                format!("the certificate of {host} is not in OpenBao yet"),
            )
        })
}

/// The host as the edge should serve it: the issued certificate and key,
/// the client CA and mode, the allowed ranges.
async fn host_state(
    tenant: &Tenant,
    ctx: &Context,
    names: &ossature_model::TenantNames,
    host: String,
    record: Record,
) -> Result<HostState, Failure> {
    let client_auth = match &tenant.spec.edge.client_auth {
        None => None,
        Some(wanted) => {
            let ca_pem_bundle = match &wanted.ca_bundle {
                Some(bundle) => bundle.clone(),
                None => signing::bundle_of(&ctx.openbao.ca_bundle(&names.pki_mount).await?),
            };
            Some(edge::ClientAuth {
                ca_pem_bundle,
                mode: match wanted.mode {
                    ClientAuthMode::Optional => edge::ClientAuthMode::Optional,
                    ClientAuthMode::Required => edge::ClientAuthMode::Required,
                },
            })
        }
    };
    Ok(HostState {
        host,
        owner: names.tenant.clone(),
        certificate: EdgeCertificate::Pem {
            chain: record.certificate,
            key: record.key,
        },
        client_auth,
        allowed_ranges: tenant.spec.edge.allowed_source_ranges.clone(),
        upstream: Upstream::Static {
            body: format!("ossature edge: {}\n", names.tenant),
        },
    })
}
