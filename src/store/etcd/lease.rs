//! `EtcdStore`'s lease: granting it, its keep-alive task, the local deadline its claims are
//! watched by, and giving it up.

use super::EtcdConfig;
use super::retry::retry;
use super::state::{Inner, Lease, Shard, State};
use crate::store::ClaimWatch;
use etcd_client::Client;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Until when a lease renewed (or granted) by a request sent at `sent`, for
/// `ttl`, surely holds. etcd starts the TTL over when the request arrives,
/// after `sent`; the margin covers the clocks' rates and the time between a
/// shard's check and its answer, so that a shard stops answering before
/// etcd can expire the lease and another owner take the shard.
fn deadline(sent: Instant, ttl: Duration) -> Instant {
    let margin = (ttl / 10).max(Duration::from_millis(100)).min(ttl / 2);
    sent + (ttl - margin)
}

impl Inner {
    /// Gives up the lease if etcd reported it gone or its deadline passed:
    /// every shard held under it is lost, and the next claim takes a new lease.
    pub(super) fn check_lease(&self, st: &mut State) {
        let gone = |l: &mut Lease| l.lost.load(Ordering::Acquire) || !l.watch.is_valid();
        if let Some(lease) = st.lease.take_if(gone) {
            // Not renewed from here on: etcd expires it within its TTL.
            lease.keeper.abort();
            lease.watch.expire();
            tracing::error!(
                lease = lease.id,
                "etcd lease expired or not renewed in time; its shards are fenced"
            );
            for s in st.shards.values_mut() {
                if matches!(s, Shard::Owned(o) if o.lease == lease.id) {
                    *s = Shard::Lost(format!("lease {:x} expired or not renewed within its TTL", lease.id));
                }
            }
        }
    }

    /// The live lease, granted (and kept alive) if there is none.
    pub(super) async fn lease(&self, st: &mut State) -> crate::Result<(i64, ClaimWatch)> {
        self.check_lease(st);
        if let Some(l) = &st.lease {
            return Ok((l.id, l.watch.clone()));
        }
        let ttl = i64::from(self.config.lease_ttl_secs);
        let sent = Instant::now();
        let grant = retry(&self.config, "grant lease", || {
            let mut lc = self.client.lease_client();
            async move { lc.grant(ttl, None).await }
        })
        .await?;
        let (id, granted) = (grant.id(), Duration::from_secs(grant.ttl().max(1) as u64));
        let lost = Arc::new(AtomicBool::new(false));
        let watch = ClaimWatch::until(deadline(sent, granted));
        let task =
            keep_alive(self.client.clone(), id, granted, lost.clone(), watch.clone(), self.config.clone());
        let keeper = tokio::spawn(task);
        st.lease = Some(Lease { id, lost, keeper, watch: watch.clone() });
        Ok((id, watch))
    }

    pub(super) async fn release_all(&self) -> crate::Result<()> {
        let mut st = self.state.lock().await;
        if let Some(lease) = &st.lease {
            let id = lease.id;
            let revoked = retry(&self.config, "revoke lease", || {
                let mut lc = self.client.lease_client();
                async move { lc.revoke(id).await.map(drop) }
            })
            .await;
            // A lease that already lapsed has released everything too.
            match revoked {
                // The cause is etcd's own error, below the store error's context.
                Err(e) if !e.chain().contains("requested lease not found") => return Err(e),
                _ => {}
            }
            tracing::info!(lease = id, shards = st.shards.len(), "revoked lease: released every shard");
        }
        if let Some(lease) = st.lease.take() {
            lease.keeper.abort();
            lease.watch.expire();
        }
        for s in st.shards.values_mut() {
            if let Shard::Owned(o) = s {
                o.watch.revoke();
            }
            *s = Shard::Released;
        }
        Ok(())
    }

    pub(super) async fn stop_keep_alive(&self) {
        if let Some(lease) = &self.state.lock().await.lease {
            lease.keeper.abort();
            tracing::warn!(lease = lease.id, "lease keep-alive stopped; the shards will lapse");
        }
    }
}

/// Renews lease `id` every third of its time-to-live, moving `watch`'s
/// deadline on with each answer, until etcd says the lease is gone, the
/// deadline passes first (then it sets `lost`: a lease renewed too late may
/// have lapsed, and this store's shards have stopped answering; it is given
/// up, so that etcd expires it and another owner can take the shards), or
/// the task is aborted. A broken stream is reopened; while etcd is
/// unreachable the renewals simply fail.
async fn keep_alive(
    client: Client,
    id: i64,
    ttl: Duration,
    lost: Arc<AtomicBool>,
    watch: ClaimWatch,
    config: EtcdConfig,
) {
    let period = ttl / 3;
    let timeout = config.op_timeout.min(period.max(Duration::from_millis(200)));
    let give_up = || {
        lost.store(true, Ordering::Release);
        watch.expire();
    };
    loop {
        let mut lc = client.lease_client();
        match tokio::time::timeout(timeout, lc.keep_alive(id)).await {
            Ok(Ok((mut keeper, mut stream))) => loop {
                tokio::time::sleep(period).await;
                if !watch.is_valid() {
                    return give_up();
                }
                let sent = Instant::now();
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(timeout, stream.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {
                        watch.extend(deadline(sent, Duration::from_secs(r.ttl() as u64)));
                    }
                    Ok(Ok(Some(_))) => return give_up(),
                    _ => break,
                }
            },
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("not found") => {
                return give_up();
            }
            Ok(Err(e)) => tracing::debug!(lease = id, error = %e, "lease keep-alive failed; retrying"),
            Err(_) => tracing::debug!(lease = id, "lease keep-alive timed out; retrying"),
        }
        if !watch.is_valid() {
            return give_up();
        }
        tokio::time::sleep(config.retry_delay.max(Duration::from_millis(100))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_falls_before_the_ttl_runs_out() {
        let sent = Instant::now();
        for (ttl, margin) in [(2_000, 200), (10_000, 1_000), (1_000, 100), (100, 50)] {
            let d = deadline(sent, Duration::from_millis(ttl));
            assert_eq!(d - sent, Duration::from_millis(ttl - margin), "ttl {ttl} ms");
        }
    }
}
