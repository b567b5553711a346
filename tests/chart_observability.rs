//! The chart's observability, off by default: the Grafana dashboard (a ConfigMap for the Grafana
//! sidecar), the PrometheusRule, and kube-state-metrics' configuration for per-view state. Rendered by
//! helm; the rules and every dashboard query are checked by `promtool check rules`, the alerts are
//! exercised by `promtool test rules`, and every metric they use is one the operator exports or one the
//! kube-state-metrics configuration derives from a field of the view's status schema.

mod tooling;

use std::collections::BTreeSet;
use std::path::Path;

use tooling::{CHART, REPO, render, run, run_ok, tool};

/// The series names the operator's /metrics can have, from its registry's `# TYPE` lines.
fn operator_series() -> BTreeSet<String> {
    // (a family without samples is not rendered: give each one)
    let metrics = kappa_operator::metrics::Metrics::default();
    drop(metrics.reconcile_started("MaterializedView"));
    metrics.reconcile_failed("MaterializedView", "aws");
    metrics.aws_call("dynamodb", "PutItem", true);
    metrics
        .record_errors
        .get_or_create(&kappa_operator::metrics::ViewLabels {
            namespace: "game".into(),
            view: "players".into(),
        })
        .inc();
    let text = metrics.render();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["bucket", "sum", "count"] {
                    names.insert(format!("{name}_{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

fn ksm_config() -> serde_json::Value {
    let text = std::fs::read_to_string(format!("{CHART}/files/kube-state-metrics.yaml")).unwrap();
    serde_yaml::from_str(&text).expect("files/kube-state-metrics.yaml is YAML")
}

/// The series kube-state-metrics derives from files/kube-state-metrics.yaml.
fn ksm_series() -> BTreeSet<String> {
    let config = ksm_config();
    let mut names = BTreeSet::new();
    for resource in config["spec"]["resources"].as_array().unwrap() {
        let prefix = resource["metricNamePrefix"].as_str().unwrap();
        for metric in resource["metrics"].as_array().unwrap() {
            let name = format!("{prefix}_{}", metric["name"].as_str().unwrap());
            // Two families of one name would repeat its HELP and TYPE lines, which Prometheus refuses.
            assert!(names.insert(name.clone()), "{name} is defined twice");
        }
    }
    names
}

/// The `kappa_*` metric names a PromQL expression uses.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("kappa_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn assert_known_metrics(what: &str, expr: &str) {
    let known: BTreeSet<String> = operator_series().union(&ksm_series()).cloned().collect();
    for name in metrics_in(expr) {
        assert!(
            known.contains(&name),
            "{what} uses {name}, which neither the operator nor files/kube-state-metrics.yaml exports: {expr}"
        );
    }
}

fn rendered_dashboard(objs: &[serde_json::Value]) -> serde_json::Value {
    let cm = objs
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a ConfigMap labelled grafana_dashboard=1 for the sidecar");
    let text = cm["data"]["kappa-operator.json"]
        .as_str()
        .expect("the dashboard under data.kappa-operator.json");
    serde_json::from_str(text).expect("the dashboard is JSON")
}

/// Every query of the dashboard, with Grafana's variables replaced by values PromQL accepts.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$view", ".*");
            queries.push((title.to_string(), expr));
        }
    }
    queries
}

#[test]
fn the_dashboard_is_a_valid_grafana_dashboard_on_exported_metrics() {
    let objs = render(&[]);
    assert!(
        !objs.iter().any(|o| o["kind"] == "ConfigMap"),
        "the dashboard is off by default"
    );

    let objs = render(&[
        "grafanaDashboard.enabled=true",
        "grafanaDashboard.namespace=monitoring",
        "grafanaDashboard.annotations.grafana_folder=Kappa",
    ]);
    let cm = objs.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Kappa");
    let dashboard = rendered_dashboard(&objs);
    // What the sidecar passes to Grafana unchanged: the file in the chart.
    let file = std::fs::read_to_string(format!("{CHART}/dashboards/kappa-operator.json")).unwrap();
    assert_eq!(
        dashboard,
        serde_json::from_str::<serde_json::Value>(&file).unwrap()
    );

    assert_eq!(dashboard["uid"], "kappa-operator");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["schemaVersion"].as_i64().unwrap() >= 36);
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, BTreeSet::from(["datasource", "namespace", "view"]));

    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "panel ids repeat: {title}"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_i64().unwrap(), grid["w"].as_i64().unwrap());
        assert!(
            x >= 0 && w > 0 && x + w <= 24,
            "{title} is off the 24-column grid"
        );
        assert!(grid["h"].as_i64().unwrap() > 0 && grid["y"].as_i64().unwrap() >= 0);
        if panel["type"] == "row" {
            continue;
        }
        titles.push(title.to_string());
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            for var in ["$namespace", "$view"] {
                if expr.contains("kappa_materializedview") {
                    assert!(
                        expr.contains(var),
                        "{title}: a view panel filters by {var}: {expr}"
                    );
                }
            }
            assert_known_metrics(&format!("panel {title}"), expr);
        }
    }
    // What the issue asks the dashboard to show.
    for want in [
        "lag",
        "Backfill progress",
        "Backfill rate",
        "Record errors",
        "AWS calls by service",
        "Reconcile rate",
        "Reconcile errors",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no panel on {want}: {titles:?}"
        );
    }
}

/// The rule groups of the rendered PrometheusRule, as a rule file for promtool.
fn rendered_rules(sets: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let mut all = vec!["prometheusRule.enabled=true"];
    all.extend(sets);
    let objs = render(&all);
    let rule = objs
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .expect("a PrometheusRule")
        .clone();
    let file = serde_json::json!({"groups": rule["spec"]["groups"]});
    (rule, file)
}

fn write(dir: &Path, name: &str, value: &serde_json::Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_yaml::to_string(value).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn the_rules_and_the_dashboard_queries_pass_promtool() {
    assert!(
        !render(&[]).iter().any(|o| o["kind"] == "PrometheusRule"),
        "the PrometheusRule is off by default"
    );
    let promtool = tool("promtool");
    let dir = tempfile::tempdir().unwrap();
    let (rule, file) = rendered_rules(&["prometheusRule.labels.release=monitoring"]);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["labels"]["release"], "monitoring");
    let rules_path = write(dir.path(), "rules.yaml", &file);
    let out = run_ok(
        &promtool,
        &["check", "rules", "--lint=all", "--lint-fatal", &rules_path],
        None,
    );
    assert!(out.contains("SUCCESS"), "{out}");

    let mut alerts = BTreeSet::new();
    for group in file["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().expect("every rule is an alert");
            alerts.insert(name.to_string());
            assert_known_metrics(&format!("alert {name}"), r["expr"].as_str().unwrap());
            assert!(
                ["warning", "critical"].contains(&r["labels"]["severity"].as_str().unwrap()),
                "{name}"
            );
            for key in ["summary", "description"] {
                assert!(r["annotations"][key].is_string(), "{name} has no {key}");
            }
        }
    }
    for want in [
        "KappaViewNotReady",
        "KappaViewLagOverMaxLag",
        "KappaViewRecordErrors",
        "KappaBackfillStalled",
        "KappaReconcileErrors",
        "KappaOperatorNoLeader",
    ] {
        assert!(alerts.contains(want), "no alert {want}: {alerts:?}");
    }

    // Every dashboard query is valid PromQL: promtool checks it as a recording rule.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{CHART}/dashboards/kappa-operator.json")).unwrap(),
    )
    .unwrap();
    let recording: Vec<serde_json::Value> = dashboard_queries(&dashboard)
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| serde_json::json!({"record": format!("kappa:dashboard_query_{i}"), "expr": expr}))
        .collect();
    let queries_path = write(
        dir.path(),
        "dashboard.yaml",
        &serde_json::json!({"groups": [{"name": "dashboard", "rules": recording}]}),
    );
    let out = run(&promtool, &["check", "rules", &queries_path], None);
    assert!(
        out.status.success(),
        "a dashboard query is not valid PromQL: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alerts_fire_on_the_series_they_watch() {
    let promtool = tool("promtool");
    let dir = tempfile::tempdir().unwrap();
    let (_, file) = rendered_rules(&[]);
    write(dir.path(), "rules.yaml", &file);
    let tests = std::fs::read_to_string(format!("{REPO}/tests/fixtures/alerts.test.yaml")).unwrap();
    // The scenarios feed series the operator or kube-state-metrics really produce.
    let parsed: serde_json::Value = serde_yaml::from_str(&tests).unwrap();
    for case in parsed["tests"].as_array().unwrap() {
        for series in case["input_series"].as_array().unwrap() {
            assert_known_metrics("alerts.test.yaml", series["series"].as_str().unwrap());
        }
    }
    std::fs::write(dir.path().join("alerts.test.yaml"), tests).unwrap();
    let out = run(
        &promtool,
        &[
            "test",
            "rules",
            dir.path().join("alerts.test.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The CRD's openAPI schema of the MaterializedView (or EventLog) status.
fn status_schema(kind: &str) -> serde_json::Value {
    use serde::Deserialize;
    let text = std::fs::read_to_string(format!("{REPO}/crds/kappa.dev_crds.yaml")).unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd = serde_json::Value::deserialize(doc).unwrap();
        if crd["spec"]["names"]["kind"] == kind {
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"].clone();
        }
    }
    panic!("no CRD of kind {kind}");
}

/// The schema at `path` below `schema` (objects' properties, arrays' items), if the path exists.
fn at<'a>(mut schema: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    for step in path {
        if schema["type"] == "array" {
            schema = &schema["items"];
        }
        schema = schema["properties"].get(step)?;
    }
    Some(schema)
}

#[test]
fn the_kube_state_metrics_config_reads_fields_the_status_has() {
    let config = ksm_config();
    assert_eq!(config["kind"], "CustomResourceStateMetrics");
    let crds = std::fs::read_to_string(format!("{REPO}/crds/kappa.dev_crds.yaml")).unwrap();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        // (an enum of a nullable field lists null too)
        v.as_array()
            .map(|a| a.iter().filter_map(|s| Some(s.as_str()?.to_string())).collect())
            .unwrap_or_default()
    };
    for resource in config["spec"]["resources"].as_array().unwrap() {
        let gvk = &resource["groupVersionKind"];
        let kind = gvk["kind"].as_str().unwrap();
        assert_eq!(gvk["group"], "kappa.dev");
        assert!(crds.contains(&format!("name: {}", gvk["version"].as_str().unwrap())));
        let status = status_schema(kind);
        for metric in resource["metrics"].as_array().unwrap() {
            let name = metric["name"].as_str().unwrap();
            let each = &metric["each"];
            let spec = match each["type"].as_str().unwrap() {
                "Gauge" => &each["gauge"],
                "StateSet" => &each["stateSet"],
                other => panic!("{name}: unexpected metric type {other}"),
            };
            let path = strings(&spec["path"]);
            assert_eq!(path[0], "status", "{name}");
            let field = at(&status, &path[1..]).unwrap_or_else(|| panic!("{name}: no status field {path:?}"));
            let value_from = strings(&spec["valueFrom"]);
            if !value_from.is_empty() {
                let inner = if field["type"] == "array" {
                    &field["items"]
                } else {
                    field
                };
                at(inner, &value_from)
                    .unwrap_or_else(|| panic!("{name}: no field {value_from:?} under {path:?}"));
            }
            if each["type"] == "StateSet" {
                let phases: BTreeSet<String> = strings(&field["enum"]).into_iter().collect();
                let listed: BTreeSet<String> = strings(&spec["list"]).into_iter().collect();
                assert_eq!(phases, listed, "{name}: the phases listed are the schema's");
            }
        }
    }

    let objs = render(&["kubeStateMetrics.customResourceState=true"]);
    let cm = objs
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("the kube-state-metrics ConfigMap");
    let rendered: serde_json::Value =
        serde_yaml::from_str(cm["data"]["config.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(rendered, config);
}

/// The operator's per-view series carry the view's own `namespace` label (kappa_view_record_errors_total,
/// kappa_view_dead_letters, ...): the ServiceMonitor keeps it (honorLabels), or Prometheus would replace it
/// with the operator's namespace and every per-view alert and panel would name the wrong namespace.
#[test]
fn the_service_monitor_keeps_the_views_namespace_label() {
    let objs = render(&["serviceMonitor.enabled=true"]);
    let monitor = objs
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .expect("a ServiceMonitor");
    let endpoints = monitor["spec"]["endpoints"].as_array().unwrap();
    assert!(!endpoints.is_empty());
    for e in endpoints {
        assert_eq!(e["honorLabels"], true, "{e}");
    }
    // And the operator does label per-view series with the view's namespace.
    let sources = std::fs::read_to_string(format!("{REPO}/src/metrics.rs")).unwrap();
    assert!(
        sources.contains("namespace"),
        "src/metrics.rs labels no series by namespace"
    );
}
