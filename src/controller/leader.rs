//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas never reconcile at once.
//!
//! A candidate takes the Lease when it is free, released, or expired (`renewTime + leaseDurationSeconds`
//! has passed), and the leader renews it every third of the duration. Every write is a replace with the
//! Lease's `resourceVersion`, so of two candidates racing for an expired Lease exactly one wins. A leader
//! that cannot renew (an error, or a request with no answer within a renew period) before the Lease would
//! expire stops leading (its controllers are dropped) before anyone else can take over. On shutdown the
//! leader releases the Lease so a standby takes over at once. Expiry compares the Lease's `renewTime` with
//! the local clock: it assumes the replicas' clocks agree to well within the lease duration (NTP), as
//! kube-controller-manager's own election does in practice.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{info, warn};

/// One replica's view of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn retry_period(&self) -> Duration {
        (self.duration / 5).max(Duration::from_millis(500))
    }

    fn renew_period(&self) -> Duration {
        self.duration / 3
    }

    /// Takes or renews the Lease once; `Ok(true)` when this replica holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(self.held_spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.identity;
        if !mine && !holder.is_empty() && !expired(&spec, now) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquired = match (&spec.acquire_time, mine) {
            (Some(t), true) => t.0,
            _ => now,
        };
        let mut next = current;
        next.spec = Some(self.held_spec(acquired, now, transitions));
        match self.api.replace(&self.name, &PostParams::default(), &next).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn held_spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Gives the Lease up if this replica holds it, so a standby can take over without waiting.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    /// Waits until this replica leads; returns the instant before the request that took the Lease (its
    /// `renewTime` is not earlier), for [`LeaderElector::hold`].
    pub async fn acquire(&self) -> tokio::time::Instant {
        loop {
            let sent = tokio::time::Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => return sent,
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, lease = %self.name, "leader election: could not read or write the Lease")
                }
            }
            tokio::time::sleep(self.retry_period()).await;
        }
    }

    /// Renews the Lease, taken at `acquired` (see [`LeaderElector::acquire`]), until it cannot; returns
    /// when leadership is lost. A renewal that does not answer (an API server that stopped responding, a
    /// dropped network) counts as failed after a renew period, so the leader stops a renew period before
    /// the Lease can expire even when requests hang.
    pub async fn hold(&self, acquired: tokio::time::Instant) {
        let mut last_renewal = acquired;
        loop {
            tokio::time::sleep(self.renew_period()).await;
            let sent = tokio::time::Instant::now();
            match tokio::time::timeout(self.renew_period(), self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => last_renewal = sent,
                Ok(Ok(false)) => return,
                Ok(Err(e)) => warn!(error = %e, "leader election: renewal failed"),
                Err(_) => warn!(
                    timeout_ms = self.renew_period().as_millis() as u64,
                    "leader election: renewal got no answer"
                ),
            }
            // Give up before the Lease can expire, so two leaders never overlap.
            if last_renewal.elapsed() + self.renew_period() >= self.duration {
                return;
            }
        }
    }

    /// Runs `work` whenever this replica leads; stops it as soon as leadership is lost and campaigns
    /// again. Returns when `work` returns (it watches for shutdown itself), after releasing the Lease, or
    /// when `shutdown` completes while standing by.
    pub async fn run<F, Fut, S>(&self, mut work: F, shutdown: S, on_change: impl Fn(bool))
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
        S: Future<Output = ()> + Clone,
    {
        loop {
            let acquired = tokio::select! {
                acquired = self.acquire() => acquired,
                _ = shutdown.clone() => return,
            };
            info!(identity = %self.identity, lease = %self.name, "became leader");
            on_change(true);
            tokio::select! {
                _ = work() => {
                    on_change(false);
                    if let Err(e) = self.release().await {
                        warn!(error = %e, "could not release the leader Lease");
                    }
                    return;
                }
                _ = self.hold(acquired) => {
                    warn!(identity = %self.identity, "lost leadership; controllers stopped");
                    on_change(false);
                }
            }
        }
    }
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let (Some(renewed), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    renewed.0 + SignedDuration::from_secs(i64::from(secs)) < now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        let now = Timestamp::now();
        LeaseSpec {
            holder_identity: Some("other".into()),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_expires_after_its_duration() {
        assert!(!expired(&spec(5, 15), Timestamp::now()));
        assert!(expired(&spec(16, 15), Timestamp::now()));
        assert!(expired(&LeaseSpec::default(), Timestamp::now()));
    }
}
