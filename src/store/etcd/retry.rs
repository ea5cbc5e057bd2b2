//! Calls to etcd with a timeout each, retried with back-off on errors that may pass.

use super::EtcdConfig;
use crate::error::Cause;
use crate::error::{Error, Result};
use std::future::Future;
use std::time::Duration;

/// True for failures that a later attempt may not meet: the connection (down,
/// refused, reset), the cluster (no leader, leader changed, request timed
/// out: all `Unavailable` in etcd v3), overload. A refused request (too large,
/// too many operations, bad argument) fails the same way every time.
pub(super) fn transient(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    if out_of_space(e) {
        return false;
    }
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::ResourceExhausted
                | Code::Unknown
                | Code::Cancelled
        ),
        _ => false,
    }
}

/// True for etcd's refusal to write while its `NOSPACE` alarm is raised
/// (`ResourceExhausted`, "mvcc: database space exceeded"): it stays until an
/// operator frees space, so it is not retried but reported as
/// [`Error::StoreFull`].
pub(super) fn out_of_space(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == tonic::Code::ResourceExhausted && s.message().contains("database space exceeded"))
}

pub(super) fn store_err(what: &str, e: etcd_client::Error) -> Error {
    if out_of_space(&e) {
        return Error::StoreFull { what: format!("etcd {what}"), source: Some(Cause::new(e)) };
    }
    Error::store_from(format!("etcd {what}"), e)
}

/// Runs `call` until it succeeds, a non-transient error, or `config.retries`
/// retries: each attempt bounded by `op_timeout`, the waits doubling from
/// `retry_delay` up to `retry_delay_cap`, with jitter so that many stores do
/// not retry in step. Worst case: `(retries + 1) × op_timeout` plus the waits.
pub(super) async fn retry<T, F, Fut>(config: &EtcdConfig, what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut delay = config.retry_delay;
    let mut attempt = 0;
    loop {
        let why = match tokio::time::timeout(config.op_timeout, call()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if !transient(&e) => return Err(store_err(what, e)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", config.op_timeout),
        };
        if attempt >= config.retries {
            let why = format!("{why} (gave up after {} attempts)", attempt + 1);
            return Err(Error::Store { what: format!("etcd {what}"), source: Some(Cause::msg(why)) });
        }
        tracing::warn!(what, attempt, error = %why, "etcd call failed; retrying");
        tokio::time::sleep(jittered(delay)).await;
        delay = delay.saturating_mul(2).min(config.retry_delay_cap);
        attempt += 1;
    }
}

/// `d` scaled by a random factor in [0.5, 1.0).
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64() / 2.0)
}
