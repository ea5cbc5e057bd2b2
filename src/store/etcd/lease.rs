//! The keep-alive task of `EtcdStore`'s lease, on the store's runtime.

use super::EtcdConfig;
use etcd_client::Client;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Renews lease `id` every third of its time-to-live until etcd says it is
/// gone (then sets `lost`) or the task is aborted. A broken stream is
/// reopened; while etcd is unreachable the renewals simply fail, and if the
/// lease lapses meanwhile, the owner keys go with it and writes are fenced.
pub(super) async fn keep_alive(
    client: Client,
    id: i64,
    ttl: Duration,
    lost: Arc<AtomicBool>,
    config: EtcdConfig,
) {
    let period = ttl / 3;
    let timeout = config.op_timeout.min(period.max(Duration::from_millis(200)));
    loop {
        let mut lc = client.lease_client();
        match tokio::time::timeout(timeout, lc.keep_alive(id)).await {
            Ok(Ok((mut keeper, mut stream))) => loop {
                tokio::time::sleep(period).await;
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(timeout, stream.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                    Ok(Ok(Some(_))) => {
                        lost.store(true, Ordering::Release);
                        return;
                    }
                    _ => break,
                }
            },
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("not found") => {
                lost.store(true, Ordering::Release);
                return;
            }
            Ok(Err(e)) => tracing::debug!(lease = id, error = %e, "lease keep-alive failed; retrying"),
            Err(_) => tracing::debug!(lease = id, "lease keep-alive timed out; retrying"),
        }
        tokio::time::sleep(config.retry_delay.max(Duration::from_millis(100))).await;
    }
}
