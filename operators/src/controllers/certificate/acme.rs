//! One certificate's order at an ACME issuer, crash-safe: the key is
//! generated, the order placed, and the order written with the key into
//! the certificate's record in one write before it is driven; a restart
//! completes that same order with that same key, never a second one.

use std::sync::Mutex;
use std::time::SystemTime;

use k8s_openapi::jiff::Timestamp;
use ossature_crds::CertificateSpec;
use ossature_model::certificates::{Issued, Record, Wanted, new_key, read_leaf};

use super::status::Found;
use crate::acme_accounts::Handle;
use crate::adapters::Failure;
use crate::adapters::acme::{AcmeError, OrderRecord};
use crate::context::Context;
use crate::signing::{Target, key_failure};

/// One certificate's order at an ACME issuer.
pub(super) struct Ordering<'a> {
    pub ctx: &'a Context,
    pub spec: &'a CertificateSpec,
    pub at: &'a Target<'a>,
    pub wanted: &'a Wanted,
    pub issuer: &'a str,
    pub handle: &'a Handle,
    pub found: &'a Mutex<Found>,
}

impl Ordering<'_> {
    /// Completes the recorded order, or places one (within the budget) and
    /// records it with its key in one write before driving it. `None`: held
    /// back by a rate limit, nothing asked of the CA.
    pub async fn obtain(&self, held: Option<Record>) -> Result<Option<Record>, Failure> {
        let names = Issued::of(self.spec).dns_names;
        let recorded = held
            .as_ref()
            .filter(|r| !r.order.is_empty() && r.order_issuer == self.wanted.issuer)
            .and_then(|r| Some((serde_json::from_str::<OrderRecord>(&r.order).ok()?, r)))
            .filter(|(order, _)| order.names == names)
            .map(|(order, r)| (order, r.order_key.clone()));
        // What stays beside the order: the certificate held until now.
        let kept = held.map(Record::without_order).unwrap_or_else(|| Record {
            issued_for: self.wanted.issued_for.clone(),
            ..Default::default()
        });
        let (order, key) = match recorded {
            Some(resumed) => resumed,
            None => match self.begin(&names, &kept).await? {
                Some(begun) => begun,
                None => return Ok(None),
            },
        };
        self.found.lock().expect("never poisoned").order_url = Some(order.url.clone());
        match self.handle.account.complete(&order, &key).await {
            Ok(issued) => {
                self.handle
                    .budget
                    .lock()
                    .expect("never poisoned")
                    .record_issued(&order.names, SystemTime::now());
                let leaf = read_leaf(&issued.chain_pem)
                    .map_err(|detail| Failure::new("BackendUnreadable", detail))?;
                let record = Record {
                    key,
                    ca: leaf.rest.clone(),
                    certificate: issued.chain_pem,
                    issued_for: self.wanted.issued_for.clone(),
                    serial: leaf.serial,
                    not_before: leaf.not_before.to_string(),
                    not_after: leaf.not_after.to_string(),
                    generation: 0,
                    issuer: self.wanted.issuer.clone(),
                    certificate_id: issued.certificate_id,
                    issued_by_order: issued.order_url,
                    ..Default::default()
                };
                self.put(&record).await?;
                self.found.lock().expect("never poisoned").order_url = None;
                Ok(Some(record))
            }
            Err(e) if e.is_transient() || matches!(e, AcmeError::RateLimited { .. }) => {
                // The order goes on at the CA: the next call resumes it.
                self.failed(e)
            }
            Err(e) => {
                if let AcmeError::ValidationFailed { names, .. } = &e {
                    let mut budget = self.handle.budget.lock().expect("never poisoned");
                    for name in names {
                        budget.record_failed_validation(name, SystemTime::now());
                    }
                }
                self.put(&kept).await?;
                self.found.lock().expect("never poisoned").order_url = None;
                let discarded = Failure {
                    message: format!("order {} was discarded: {e}", order.url),
                    ..Failure::from(e)
                };
                Err(discarded)
            }
        }
    }

    /// Places a new order within the issuer's budget and records it with a
    /// new key beside what is `kept`, in one write.
    async fn begin(
        &self,
        names: &[String],
        kept: &Record,
    ) -> Result<Option<(OrderRecord, String)>, Failure> {
        let now = SystemTime::now();
        let reserved = {
            // Checked and counted at once: certificates ordering together
            // cannot both take the last place.
            let mut budget = self.handle.budget.lock().expect("never poisoned");
            budget.check(names, now).map(|()| budget.record_order(now))
        };
        if let Err(retry) = reserved {
            let why = format!("{} for {} reached", retry.limit.as_str(), retry.subject);
            return Ok(self.hold_back(retry.at, why));
        }
        let key = new_key(self.spec).map_err(key_failure)?;
        let replaces = (kept.issuer() == self.wanted.issuer && !kept.certificate.is_empty())
            .then_some(kept.certificate_id.as_str())
            .filter(|id| !id.is_empty());
        let order = match self
            .handle
            .account
            .begin(names, self.handle.profile.as_deref(), replaces)
            .await
        {
            Ok(order) => order,
            Err(e) => return self.failed(e),
        };
        let pending = Record {
            order: serde_json::to_string(&order).map_err(|e| {
                Failure::new(
                    "BackendUnreadable",
                    format!("the order record cannot be written: {e}"),
                )
            })?,
            order_key: key.clone(),
            order_issuer: self.wanted.issuer.clone(),
            ..kept.clone()
        };
        self.put(&pending).await?;
        crate::failpoint::hit(crate::failpoint::ACME_ORDER_RECORDED);
        Ok(Some((order, key)))
    }

    async fn put(&self, record: &Record) -> Result<(), Failure> {
        self.ctx
            .openbao
            .write_secret(&self.at.names.kv_mount, self.at.path, &record.to_map())
            .await?;
        Ok(())
    }

    /// Held back until `until`: the found status says so, nothing failed.
    fn hold_back<T>(&self, until: SystemTime, why: String) -> Option<T> {
        let until = Timestamp::try_from(until).unwrap_or_else(|_| Timestamp::now());
        self.found.lock().expect("never poisoned").retry = Some((until, why));
        None
    }

    /// An error of the CA as the step's outcome: a rate limit with a time
    /// holds the certificate back; an account the CA forgot is loaded again.
    fn failed<T>(&self, e: AcmeError) -> Result<Option<T>, Failure> {
        if let Some(at) = e.retry_after() {
            return Ok(self.hold_back(at, e.to_string()));
        }
        if let AcmeError::Refused {
            problem_type: Some(t),
            ..
        } = &e
            && t.ends_with(":accountDoesNotExist")
        {
            self.ctx.acme.forget(self.issuer);
        }
        Err(Failure::from(e))
    }
}
