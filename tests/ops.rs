//! The operator's kit in `ops/` speaks of the metrics the crate exports: every
//! expression of the Grafana dashboard and every metric of the Prometheus rules
//! is one of `metrics::ALL`, and the README has a runbook line for each alert.
//! (`promtool check rules` and `promtool test rules` check the rules themselves, in CI.)

use vshard_ghosts::metrics::{ALL, MetricKind};

/// The exported metric a series name in PromQL stands for: a histogram's
/// `_bucket`, `_sum` and `_count` series are its own.
fn metric_of(series: &str) -> Option<&'static str> {
    ALL.iter().find_map(|m| {
        let own = series == m.name
            || (m.kind == MetricKind::Histogram
                && ["_bucket", "_sum", "_count"].iter().any(|s| series.strip_suffix(s) == Some(m.name)));
        own.then_some(m.name)
    })
}

/// Every `vshard_ghosts_…` name in `text` that is not part of a recording
/// rule's name (`level:metric:operations`, the colons give it away).
fn series_names(text: &str) -> Vec<&str> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    for (at, _) in text.match_indices("vshard_ghosts_") {
        if at > 0 && text[..at].ends_with(is_name) {
            continue;
        }
        let end = text[at..].find(|c| !is_name(c)).map_or(text.len(), |n| at + n);
        let name = &text[at..end];
        if !name.contains(':') {
            names.push(name);
        }
    }
    names
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn every_dashboard_expression_names_exported_metrics() {
    let text = std::fs::read_to_string("ops/dashboard.json").unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut found = Vec::new();
    exprs(&dashboard["panels"], &mut found);
    assert!(found.len() >= 10, "the dashboard's panels have their expressions: {found:?}");
    exprs(&dashboard["templating"], &mut found);
    for expr in &found {
        let names = series_names(expr);
        assert!(!names.is_empty(), "names no metric: {expr}");
        for name in names {
            assert!(metric_of(name).is_some(), "`{name}` in `{expr}` is not in metrics::ALL");
        }
    }
}

#[test]
fn every_rule_names_exported_metrics_and_has_a_runbook_line() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let runbook = readme.split_once("\n### Alerts\n").expect("a README `### Alerts` section").1;
    let runbook = runbook.split("\n## ").next().unwrap();
    let mut alerts = 0;
    for file in ["ops/alerts.yml", "ops/recording.yml", "ops/tests.yml"] {
        let text = std::fs::read_to_string(file).unwrap();
        let names = series_names(&text);
        assert!(!names.is_empty(), "{file} names no metric");
        for name in names {
            assert!(metric_of(name).is_some(), "`{name}` in {file} is not in metrics::ALL");
        }
        for line in text.lines() {
            if let Some(alert) = line.trim().strip_prefix("- alert: ") {
                alerts += 1;
                assert!(runbook.contains(&format!("| `{alert}` |")), "no runbook line for {alert}");
            }
        }
    }
    assert!(alerts >= 10, "ops/alerts.yml holds the alerts ({alerts})");
}

#[test]
fn the_name_scan_sees_series_and_skips_recorded_ones() {
    let expr = "rate(vshard_ghosts_verify_seconds_bucket[5m]) / instance:vshard_ghosts_sweep_checked:rate5m";
    assert_eq!(series_names(expr), ["vshard_ghosts_verify_seconds_bucket"]);
    assert_eq!(metric_of("vshard_ghosts_verify_seconds_bucket"), Some("vshard_ghosts_verify_seconds"));
    assert_eq!(metric_of("vshard_ghosts_ghosts_bucket"), None, "a gauge has no buckets");
    assert_eq!(metric_of("vshard_ghosts_no_such_metric"), None);
}
