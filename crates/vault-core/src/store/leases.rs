//! Leases: acquire, renew, release, rotate.

use super::*;

impl Store {
    pub async fn acquire(&self, pool: &str, a: &AcquireArgs) -> Result<LeaseGrant> {
        let v: reply::Lease = self
            .eval(
                &scripts::ACQUIRE,
                pool,
                &[
                    a.lease_id.clone(),
                    a.worker.clone(),
                    a.units.max(1).to_string(),
                    opt_arg(a.ttl_ms),
                    opt_arg(a.min_ttl_ms),
                    a.session.clone(),
                    a.idempotency_key.clone(),
                    a.request_fp.clone(),
                ],
            )
            .await?;
        self.tally_lease(pool, &v.lease);
        Ok(v.lease)
    }

    pub async fn renew(
        &self,
        pool: &str,
        lease_id: &str,
        ttl_ms: Option<u64>,
        units: Option<u64>,
    ) -> Result<LeaseGrant> {
        let v: reply::Lease = self
            .eval(
                &scripts::RENEW,
                pool,
                &[lease_id.into(), opt_arg(ttl_ms), opt_arg(units)],
            )
            .await?;
        Ok(v.lease)
    }

    pub async fn release(&self, pool: &str, lease_id: &str, report: &Report) -> Result<Released> {
        let mut args = vec![lease_id.to_string()];
        args.extend(report_args(report));
        self.eval(&scripts::RELEASE, pool, &args).await
    }

    /// Release `lease_id` with `report` and lease another token in one step. When no other
    /// token is eligible the release still happened and the answer is `PoolExhausted`.
    pub async fn rotate(
        &self,
        pool: &str,
        lease_id: &str,
        report: &Report,
        new_lease_id: &str,
    ) -> Result<(Released, Result<LeaseGrant>)> {
        let mut args = vec![lease_id.to_string()];
        args.extend(report_args(report));
        args.push(new_lease_id.to_string());
        let v = self.eval_raw(&scripts::ROTATE, pool, &args).await?;
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
