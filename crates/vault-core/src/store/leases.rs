//! Leases: acquire, renew, release, rotate.

use super::*;

impl Store {
    pub(crate) async fn acquire(&self, pool: &str, a: &AcquireArgs) -> Result<LeaseGrant> {
        let v: reply::Lease = self
            .call(
                pool,
                &scripts::Acquire {
                    lease_id: a.lease_id.clone(),
                    worker: a.worker.clone(),
                    units: a.units.max(1),
                    costs: crate::model::map_arg(&a.costs),
                    ttl_ms: a.ttl_ms,
                    min_token_ttl_ms: a.min_ttl_ms,
                    session: a.session.clone(),
                    idem: a.idempotency_key.clone(),
                    idem_fp: a.request_fp.clone(),
                    pipeline: a.pipeline.clone(),
                },
            )
            .await?;
        self.tally_lease(pool, &v.lease);
        Ok(v.lease)
    }

    pub(crate) async fn renew(
        &self,
        pool: &str,
        lease_id: &str,
        ttl_ms: Option<u64>,
        units: Option<u64>,
    ) -> Result<LeaseGrant> {
        let v: reply::Lease = self
            .call(
                pool,
                &scripts::Renew {
                    lease_id: lease_id.into(),
                    ttl_ms,
                    units,
                },
            )
            .await?;
        Ok(v.lease)
    }

    pub(crate) async fn release(
        &self,
        pool: &str,
        lease_id: &str,
        report: &Report,
    ) -> Result<Released> {
        let call = scripts::Release {
            lease_id: lease_id.to_string(),
            report: report_args(report),
        };
        self.call(pool, &call).await
    }

    /// Release `lease_id` with `report` and lease another token in one step. When no other
    /// token is eligible the release still happened and the answer is `PoolExhausted`.
    pub(crate) async fn rotate(
        &self,
        pool: &str,
        lease_id: &str,
        report: &Report,
        new_lease_id: &str,
    ) -> Result<(Released, Result<LeaseGrant>)> {
        let call = scripts::Rotate {
            lease_id: lease_id.to_string(),
            report: report_args(report),
            new_lease_id: new_lease_id.to_string(),
        };
        let v = self.call_raw(pool, &call).await?;
        let Some(rel) = v.get("released").cloned() else {
            // The release itself failed (lease gone, bad report): nothing changed.
            let code = v.get("err").and_then(Value::as_str).unwrap_or("internal");
            return Err(VaultError::from_script(code, &v));
        };
        let released: Released = typed(&scripts::ROTATE, rel)?;
        let lease = match v.get("err").and_then(Value::as_str) {
            Some(code) => Err(VaultError::from_script(code, &v)),
            None => typed::<reply::Lease>(&scripts::ROTATE, v).map(|l| l.lease),
        };
        if let Ok(l) = &lease {
            self.tally_lease(pool, l);
        }
        Ok((released, lease))
    }
}
