//! Observability: every metric is documented in the README exactly as `src/metrics.rs`
//! lists it, and a Prometheus scrape over HTTP shows them described, with buckets.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;
use vshard_ghosts::messages::{InjectPanic, InsertGhost};
use vshard_ghosts::metrics::{ALL, MetricKind};
use vshard_ghosts::*;

/// The rows of the README's metric table: (name, kind, unit, labels, meaning).
fn readme_rows() -> Vec<[String; 5]> {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let section = readme.split_once("\n## Metrics\n").expect("a `## Metrics` section").1;
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<String> =
                l.trim_matches('|').split(" | ").map(|c| c.trim().trim_matches('`').to_owned()).collect();
            assert_eq!(cells.len(), 5, "a metric row has 5 cells: {l}");
            [0, 1, 2, 3, 4].map(|i| cells[i].clone())
        })
        .collect()
}

#[test]
fn the_readme_lists_every_metric_as_the_code_does() {
    let rows = readme_rows();
    let code: Vec<[String; 5]> = ALL
        .iter()
        .map(|m| {
            let labels = if m.labels.is_empty() { "none" } else { m.labels };
            [m.name.into(), m.kind.as_str().into(), m.unit.as_str().into(), labels.into(), m.help.into()]
        })
        .collect();
    assert_eq!(rows, code, "README `## Metrics` table vs vshard_ghosts::metrics::ALL");
    let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), ALL.len(), "metric names are unique");
    for m in ALL {
        assert!(m.name.starts_with("vshard_ghosts_"), "{}", m.name);
        assert_eq!(
            m.kind == MetricKind::Histogram,
            !m.buckets.is_empty(),
            "{}: buckets only for histograms",
            m.name
        );
        assert!(m.buckets.windows(2).all(|w| w[0] < w[1]), "{}: buckets ascend", m.name);
        assert!(!m.labels.contains("node"), "{}: no unbounded label", m.name);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `GET /metrics`, waiting (bounded) for the listener to come up.
fn scrape(port: u16) -> String {
    for _ in 0..400 {
        let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            std::thread::sleep(Duration::from_millis(25));
            continue;
        };
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        return response;
    }
    panic!("the metrics listener never came up on port {port}");
}

#[test]
fn a_prometheus_scrape_shows_every_metric_described() {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let port = free_port();
    let mut builder = PrometheusBuilder::new().with_http_listener(([127, 0, 0, 1], port));
    for m in ALL.iter().filter(|m| !m.buckets.is_empty()) {
        builder = builder.set_buckets_for_metric(Matcher::Full(m.name.into()), m.buckets).unwrap();
    }
    builder.install().unwrap();
    vshard_ghosts::metrics::describe();

    actix::System::new().block_on(async {
        let dir = DirectoryVerifier::new();
        let table = TableConfig { grace: Duration::ZERO, ..TableConfig::default() };
        let shard = ShardConfig { table, fault_injection: true, ..ShardConfig::default() };
        let sweep = SweeperConfig { pass_interval: None, ..SweeperConfig::default() };
        let rt = GhostRuntime::builder()
            .shards((0..3).map(ShardId))
            .shard_config(shard)
            .store(StoreChoice::Memory)
            .sweeper(Arc::new(dir.clone()), sweep)
            .start()
            .unwrap();
        // Ghosts on shard 0 pointing at 1 (reachable) and 2 (not: inconclusive).
        for (node, target) in [("a", 1), ("b", 1), ("c", 2)] {
            rt.insert_ghost(
                ShardId(0),
                InsertGhost { node_id: node.into(), target: ShardId(target), refcount: 2, epoch: Epoch(1) },
            )
            .await
            .unwrap();
            dir.record_move(node, ShardId(target), Epoch(1));
        }
        dir.set_unreachable(ShardId(2), true);
        let mut batch = EdgeEvents::new();
        batch.added("a");
        batch.removed("b");
        rt.edge_batch(ShardId(0), Some(1), batch.clone()).await.unwrap();
        assert!(rt.edge_batch(ShardId(0), Some(1), batch).await.unwrap().skipped);
        rt.pause_sweeper().await.unwrap();
        rt.resume_sweeper().await.unwrap();
        rt.run_sweep_pass().await.unwrap();
        assert!(rt.request(ShardId(1), InjectPanic).await.is_err());
        rt.flush().await.unwrap();
        rt.export_metrics().await;

        let body = scrape(port);
        // Shard 1 restarted; its reload may still be under way at the scrape, so
        // that the sweep's and the handlers' series are the ones checked exactly.
        for m in ALL.iter().filter(|m| m.name != vshard_ghosts::metrics::FAILED_CLOSED) {
            let help = format!("# HELP {} {}", m.name, m.help);
            assert!(body.contains(&help), "no `{help}` in the scrape:\n{body}");
            let kind = format!("# TYPE {} {}", m.name, m.kind.as_str());
            assert!(body.contains(&kind), "no `{kind}` in the scrape");
        }
        for expected in [
            "vshard_ghosts_handler_seconds_bucket{kind=\"edge_batch\",le=\"0.00001\"}",
            "vshard_ghosts_skipped_batches_total{shard=\"0\"} 1",
            "vshard_ghosts_shard_state{shard=\"0\",state=\"ready\"} 1",
            "vshard_ghosts_shard_state{shard=\"0\",state=\"down\"} 0",
            "vshard_ghosts_sweep_inconclusive_streak{target=\"2\"} 1",
            "vshard_ghosts_sweep_due{shard=\"0\"} 3",
            "vshard_ghosts_restarts_total{shard=\"1\"} 1",
            "vshard_ghosts_verify_seconds_count 3",
        ] {
            assert!(body.contains(expected), "no `{expected}` in the scrape:\n{body}");
        }
        rt.shutdown().await.unwrap();
    });
}
