//! What every etcd client of the crate does the same way: reading endpoint addresses and
//! building the one-worker runtime a client lives on. `EtcdStore` and the cluster's owner
//! watch both use it.

/// Endpoints as the etcd client takes them: `etcd://host:port` becomes
/// `http://host:port`; `http://…` and `host:port` stay as they are.
pub(crate) fn endpoints<E: AsRef<str>>(endpoints: impl IntoIterator<Item = E>) -> Vec<String> {
    endpoints
        .into_iter()
        .map(|e| {
            let e = e.as_ref();
            e.strip_prefix("etcd://").map_or_else(|| e.to_owned(), |rest| format!("http://{rest}"))
        })
        .collect()
}

/// A multi-thread tokio runtime of one worker named `name`, with time and I/O:
/// a client's calls and background tasks run there, never on a caller's thread.
pub(crate) fn runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name(name).enable_all().build()
}

#[cfg(test)]
mod tests {
    #[test]
    fn etcd_scheme_becomes_http() {
        let got = super::endpoints(["etcd://a:1", "http://b:2", "c:3"]);
        assert_eq!(got, vec!["http://a:1", "http://b:2", "c:3"]);
    }
}
