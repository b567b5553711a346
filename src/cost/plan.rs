//! `kappa-operator plan -f <files|dirs>`: what applying manifests would do, before they are applied, in
//! the manner of a Terraform plan: per EventLog, the AWS resources it and its views create (names as the
//! operator derives them), the cost per million writes, what each view's backfill reads, writes, costs
//! and takes, and the topology as a Mermaid flowchart (the shape of the design's topology diagram).
//!
//! Pure but for reading the files: nothing is asked of AWS or the cluster. The log's size is given
//! (`--log-items`, `--log-item-kb`) or, for a log not yet created, zero (its backfills read nothing yet).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::backfill::{BackfillEstimate, LogSize};
use super::{Assumptions, Prices, estimate, load_manifests};
use crate::crd::{BackfillSource, EventLog, MaterializedView, ProjectorRuntime, StoreTable};
use crate::plan::log::{LogPlan, plan_log};
use crate::plan::names::NameKind;
use crate::plan::view::{ViewPlan, plan_view};
use crate::plan::{ResolvedFanOut, lambdas};

/// What the plan is computed for.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanInputs {
    /// The chart's `clusterId`: AWS names start `kappa-<clusterId>-`.
    pub cluster_id: String,
    /// The log's size now (an existing log backfilled by a new view); zero for a new log.
    pub log: LogSize,
    pub prices: Prices,
    pub assumptions: Assumptions,
}

/// The plan of every EventLog in `paths` (files or directories of YAML), with optional price and
/// assumption overrides (YAML files, as for `kappa-operator cost`).
pub fn plan_report(
    paths: &[PathBuf],
    prices: Option<&Path>,
    assumptions: Option<&Path>,
    cluster_id: &str,
    log: LogSize,
) -> Result<String, String> {
    let inputs = PlanInputs {
        cluster_id: cluster_id.to_string(),
        log,
        prices: super::report::overrides(prices, "prices")?,
        assumptions: super::report::overrides(assumptions, "assumptions")?,
    };
    inputs.prices.validate().map_err(|e| e.to_string())?;
    inputs.assumptions.validate().map_err(|e| e.to_string())?;
    let logs = load_manifests(paths).map_err(|e| e.to_string())?;
    if logs.is_empty() {
        return Err(
            "no EventLog (kappa.dev/v1alpha1) found: point -f at the manifests of a log and its views".into(),
        );
    }
    Ok(logs
        .iter()
        .map(|(log, views)| render(log, views, &inputs))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// One AWS resource the manifests create: its kind, its name and what it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedResource {
    pub kind: &'static str,
    pub name: String,
    pub note: String,
}

/// The AWS resources `log` and its `views` create, in the order of the topology.
pub fn resources(cluster: &str, log: &EventLog, views: &[MaterializedView]) -> Vec<PlannedResource> {
    let plan = plan_log(cluster, log, views);
    let mut out = Vec::new();
    let mut add =
        |kind: &'static str, name: String, note: String| out.push(PlannedResource { kind, name, note });
    let table = &plan.table;
    add("DynamoDB table", table.name.clone(), log_table_note(table));
    if let Some(q) = &plan.queue {
        add(
            "SQS queue",
            q.name.clone(),
            "ingest: producers send records here".into(),
        );
    }
    if let (Some(q), Some(dlq)) = (&plan.queue, &plan.dead_letter_queue) {
        add(
            "SQS queue",
            dlq.name.clone(),
            format!(
                "the ingest queue's dead-letter queue: messages the writer failed {} times, kept 14 days",
                q.redrive.as_ref().map_or(0, |r| r.max_receive_count)
            ),
        );
    }
    // A built-in function of the log and its role.
    let function = |role: &str, note: &str| {
        [
            PlannedResource {
                kind: "Lambda function",
                name: plan.owner.resource_name(role, NameKind::Function),
                note: format!("{role}: {note}"),
            },
            PlannedResource {
                kind: "IAM role",
                name: plan.owner.resource_name(role, NameKind::Role),
                note: format!("the {role}'s"),
            },
        ]
    };
    if plan.queue.is_some() {
        for r in function(
            "writer",
            "drains the ingest queue into the log (the only writer of the log)",
        ) {
            add(r.kind, r.name, r.note);
        }
    }
    let router = lambdas::router_needed(plan.fan_out, views);
    for t in &plan.topics {
        add(
            "SNS topic",
            t.name.clone(),
            format!("record types {}", t.record_types.join(", ")),
        );
    }
    if router {
        for r in function("router", "fans the log's stream out to the topics") {
            add(r.kind, r.name, r.note);
        }
        if let Some(q) = &plan.router_failure_queue {
            add(
                "SQS queue",
                q.name.clone(),
                "the router's failure queue: stream batches it failed after its retries, kept 14 days".into(),
            );
        }
    }
    for view in views {
        let vp = plan_view(cluster, view, views);
        let name = view.metadata.name.clone().unwrap_or_default();
        match vp.shared {
            true => add(
                "DynamoDB table",
                vp.table.name.clone(),
                format!(
                    "shared views table {:?} (view {name} under key prefix {:?})",
                    view.spec.store.shared_table_name,
                    vp.key_prefix.clone().unwrap_or_default()
                ),
            ),
            false => add(
                "DynamoDB table",
                vp.table.name.clone(),
                format!("view {name}'s own views table"),
            ),
        }
        if view.spec.projector.runtime == ProjectorRuntime::Lambda
            && view
                .spec
                .projector
                .code
                .as_ref()
                .is_none_or(|c| c.function_arn.is_none())
        {
            add(
                "Lambda function",
                lambdas::projector_name(&vp),
                format!("view {name}'s projector ({})", live_source(&plan, view)),
            );
            add(
                "IAM role",
                vp.owner.resource_name("projector", NameKind::Role),
                format!("view {name}'s projector's"),
            );
        }
        if view.spec.projector.runtime == ProjectorRuntime::Lambda {
            add(
                "SQS queue",
                vp.failure_queue().name,
                format!(
                    "view {name}'s projector's failure queue: records it failed after its retries, kept 14 days"
                ),
            );
        }
    }
    // A shared table is listed once.
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|r| {
        r.kind != "DynamoDB table" || seen.insert(r.name.clone()) || !r.note.starts_with("shared")
    });
    out
}

fn live_source(plan: &LogPlan, view: &MaterializedView) -> &'static str {
    match (view.spec.projector.runtime, plan.fan_out) {
        (ProjectorRuntime::InCluster, _) => "the operator reads the log's stream",
        (ProjectorRuntime::Lambda, ResolvedFanOut::Sns) => "subscribed to its record types' topics",
        (ProjectorRuntime::Lambda, ResolvedFanOut::Direct) => {
            "reads the log's stream, filtered by record type"
        }
    }
}

/// What the plan says of the log table: streams, billing (with a provisioned table's capacity, billed per
/// hour whatever the traffic), point-in-time recovery and adoption.
fn log_table_note(table: &crate::plan::log::TablePlan) -> String {
    let mut note = String::from("the log");
    if let Some(s) = table.stream {
        let _ = write!(note, ", Streams {s:?}");
    }
    match (table.billing, table.capacity) {
        (crate::crd::BillingMode::Provisioned, Some((read, write))) => {
            let _ = write!(
                note,
                ", Provisioned {read} read / {write} write capacity units (billed per hour whatever the traffic)"
            );
        }
        (crate::crd::BillingMode::Provisioned, None) => note.push_str(", Provisioned"),
        (crate::crd::BillingMode::OnDemand, _) => note.push_str(", on-demand"),
    }
    if table.point_in_time_recovery {
        note.push_str(", PITR");
    }
    if table.adopted {
        note.push_str(", adopted (exists already)");
    }
    note
}

/// The topology of `log` and its `views` as a Mermaid flowchart.
pub fn mermaid(cluster: &str, log: &EventLog, views: &[MaterializedView]) -> String {
    let plan = plan_log(cluster, log, views);
    let name = log.metadata.name.clone().unwrap_or_default();
    let mut m = String::from("flowchart LR\n");
    let pitr = if plan.table.point_in_time_recovery {
        " + PITR"
    } else {
        ""
    };
    let log_node = format!("log[(log {name}<br/>DynamoDB{pitr})]");
    if plan.queue.is_some() {
        let _ = writeln!(m, "  producers([producers]) --> ingest[[SQS ingest queue]]");
        let _ = writeln!(m, "  ingest --> writer(writer λ)");
        let _ = writeln!(m, "  writer --> {log_node}");
    } else {
        let _ = writeln!(m, "  producers([producers]) --> {log_node}");
    }
    let _ = writeln!(m, "  log -. Streams .-> stream{{{{log stream}}}}");
    let router = lambdas::router_needed(plan.fan_out, views);
    if router {
        let _ = writeln!(m, "  stream --> router(router λ)");
        for (i, t) in plan.topics.iter().enumerate() {
            let _ = writeln!(m, "  router --> topic{i}>SNS {}]", t.record_types.join(", "));
        }
    }
    let mut tables = std::collections::BTreeMap::new();
    for (i, view) in views.iter().enumerate() {
        let vp: ViewPlan = plan_view(cluster, view, views);
        let vname = view.metadata.name.clone().unwrap_or_default();
        let table_id = format!("t{}", tables.len());
        let table = tables.entry(vp.table.name.clone()).or_insert_with(|| {
            let label = match view.spec.store.table {
                StoreTable::Shared => format!("views table {}", view.spec.store.shared_table_name),
                StoreTable::Dedicated => format!("views table of {vname}"),
            };
            let _ = writeln!(m, "  {table_id}[({label})]");
            table_id
        });
        let table = table.clone();
        match view.spec.projector.runtime {
            ProjectorRuntime::InCluster => {
                let _ = writeln!(m, "  stream --> v{i}[operator: {vname}]");
            }
            ProjectorRuntime::Lambda if router => {
                let types: Vec<&str> = view.spec.record_types.iter().map(|r| r.as_str()).collect();
                for (j, t) in plan.topics.iter().enumerate() {
                    if t.record_types.iter().any(|r| types.contains(&r.as_str())) {
                        let _ = writeln!(m, "  topic{j} --> v{i}({vname} λ)");
                    }
                }
            }
            ProjectorRuntime::Lambda => {
                let _ = writeln!(m, "  stream -- filter --> v{i}({vname} λ)");
            }
        }
        let _ = writeln!(m, "  v{i} --> {table}");
        if view.spec.backfill.source != BackfillSource::None {
            let _ = writeln!(m, "  log -. {:?} backfill .-> v{i}", view.spec.backfill.source);
        }
        if view.spec.subscribers.is_some() {
            let _ = writeln!(m, "  {table} -. Streams .-> push{i}([subscribers of {vname}])");
        }
    }
    m
}

fn render(log: &EventLog, views: &[MaterializedView], inputs: &PlanInputs) -> String {
    let cluster = &inputs.cluster_id;
    let ns = log.metadata.namespace.as_deref().unwrap_or("default");
    let name = log.metadata.name.as_deref().unwrap_or_default();
    let est = estimate(log, views, &inputs.prices, &inputs.assumptions);
    let mut out = format!("EventLog {ns}/{name} with {} view(s)\n\n", views.len());
    out.push_str("AWS resources to create:\n");
    for r in resources(cluster, log, views) {
        let _ = writeln!(out, "  + {:<16} {}  ({})", r.kind, r.name, r.note);
    }
    let _ = writeln!(out, "\nCost: {}", est.summary());
    for note in &est.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    out.push_str("\nBackfills:\n");
    let shares = shares(log, &inputs.assumptions);
    for view in views {
        let share: f64 = view
            .spec
            .record_types
            .iter()
            .filter_map(|t| shares.get(t.as_str()))
            .sum();
        let vname = view.metadata.name.as_deref().unwrap_or_default();
        // What the operator would refuse is said instead of priced (the same checks as its reconcile).
        let problems = crate::controller::validate::view_against_log(view, log);
        if !problems.is_empty() {
            let _ = writeln!(
                out,
                "  {vname}: REFUSED, the view would stay Stalled: {}",
                problems.join("; ")
            );
            continue;
        }
        let e = BackfillEstimate::new(view, inputs.log, share, None, &inputs.prices);
        let _ = writeln!(out, "  {vname}: {}", e.summary());
    }
    out.push_str("\nTopology:\n```mermaid\n");
    out.push_str(&mermaid(cluster, log, views));
    out.push_str("```\n");
    out
}

/// Each record type's share of the log's records, as the cost estimate assumes it.
fn shares(log: &EventLog, assumptions: &Assumptions) -> std::collections::BTreeMap<String, f64> {
    super::model::shares_of(log, assumptions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects() -> (EventLog, Vec<MaterializedView>) {
        let log: EventLog = serde_yaml::from_str(
            "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {name: orders, namespace: shop}\nspec:\n  \
             recordTypes: [order, payment]\n  table: {sortKey: sk}\n  fanOut: {mode: Sns}\n  ingest: {}\n  \
             export: {bucket: exports}\n",
        )
        .unwrap();
        let view = |name: &str, extra: &str| -> MaterializedView {
            serde_yaml::from_str(&format!(
                "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: {name}, namespace: shop}}\n\
                 spec:\n  eventLogRef: {{name: orders}}\n  recordTypes: [order]\n  \
                 projection: {{mode: Count, key: {{partitionKey: 'C#{{id}}'}}}}\n{extra}"
            ))
            .unwrap()
        };
        (
            log,
            vec![
                view("counts", "  projector: {runtime: Lambda}\n"),
                view(
                    "local",
                    "  projector: {runtime: InCluster}\n  store: {table: Dedicated}\n",
                ),
            ],
        )
    }

    #[test]
    fn the_plan_lists_every_resource_with_the_names_the_operator_uses() {
        let (log, views) = objects();
        let r = resources("prod", &log, &views);
        let plan = plan_log("prod", &log, &views);
        assert_eq!(r[0].name, plan.table.name);
        let kinds: Vec<&str> = r.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                "DynamoDB table",
                "SQS queue",
                "SQS queue",
                "Lambda function",
                "IAM role",
                "SNS topic",
                "SNS topic",
                "Lambda function",
                "IAM role",
                "SQS queue",
                "DynamoDB table",
                "Lambda function",
                "IAM role",
                "SQS queue",
                "DynamoDB table"
            ]
        );
        assert!(r.iter().all(|r| r.name.starts_with("kappa-prod-shop-")), "{r:?}");
        assert_eq!(r[2].name, plan.dead_letter_queue.unwrap().name);
        assert!(
            r[2].note.contains("dead-letter queue") && r[2].note.contains("5 times"),
            "{r:?}"
        );
    }

    #[test]
    fn the_topology_is_a_mermaid_flowchart_of_the_design() {
        let (log, views) = objects();
        let m = mermaid("prod", &log, &views);
        assert!(m.starts_with("flowchart LR\n"), "{m}");
        for part in [
            "ingest[[SQS ingest queue]]",
            "stream --> router",
            "counts λ",
            "operator: local",
            "Export backfill",
        ] {
            assert!(m.contains(part), "{part:?} in\n{m}");
        }
    }

    #[test]
    fn a_report_names_resources_cost_backfills_and_topology() {
        let dir = std::env::temp_dir().join(format!("kappa-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (log, views) = objects();
        let mut yaml = serde_yaml::to_string(&log).unwrap();
        for v in &views {
            yaml.push_str("---\n");
            yaml.push_str(&serde_yaml::to_string(v).unwrap());
        }
        std::fs::write(dir.join("all.yaml"), yaml).unwrap();
        let size = LogSize { items: 1_000_000, bytes: 1_000_000 * 2048 };
        let out = plan_report(std::slice::from_ref(&dir), None, None, "prod", size).unwrap();
        for part in [
            "AWS resources to create:",
            "Cost: $",
            "counts: exports 1000000 items",
            "```mermaid",
        ] {
            assert!(out.contains(part), "{part:?} in\n{out}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_plan_says_what_the_operator_would_refuse_and_how_the_log_is_billed() {
        let (mut log, views) = objects();
        log.spec.export = None;
        log.spec.table.point_in_time_recovery = false;
        log.spec.table.billing.mode = crate::crd::BillingMode::Provisioned;
        log.spec.table.billing.read_capacity_units = Some(40000);
        log.spec.table.billing.write_capacity_units = Some(300);
        let inputs = PlanInputs {
            cluster_id: "prod".into(),
            log: LogSize::default(),
            prices: Prices::default(),
            assumptions: Assumptions::default(),
        };
        let out = render(&log, &views, &inputs);
        assert!(
            out.contains("counts: REFUSED") && out.contains("pointInTimeRecovery false"),
            "{out}"
        );
        assert!(
            out.contains("Provisioned 40000 read / 300 write capacity units"),
            "{out}"
        );
        assert!(out.contains("  note: "), "the estimate's notes: {out}");
        let topology = out.split("```mermaid").nth(1).unwrap();
        assert!(!topology.contains("PITR"), "no PITR drawn: {topology}");
        log.spec.table.point_in_time_recovery = true;
        assert!(mermaid("prod", &log, &views).contains("DynamoDB + PITR"));
    }
}
