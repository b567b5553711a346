//! The Helm chart: its CRDs are the generated ones, it lints and renders, the API server accepts what it
//! renders, and its RBAC is enough for the real operator, and no more: the operator runs with the chart's
//! ServiceAccount token (not admin) and reconciles the example under RBAC without a forbidden error.

mod common;

use std::time::Duration;

use common::{Operator, run_tool, run_tool_ok};
use k8s_openapi::api::events::v1::Event;
use kappa_operator::crd::{EventLog, MaterializedView, ViewPhase};
use kube::Api;
use kube::api::ListParams;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/kappa-operator");

/// `helm template` checks the chart's `kubeVersion` against the Kubernetes version it assumes when no
/// cluster is asked (v1.20 for the stack's helm, built from source): render for the stack's version.
const KUBE_VERSION: &str = "1.35.4";

fn example(file: &str) -> String {
    let path = format!("{}/examples/game/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `helm template` of the chart into `ns`, with `--set` values, returning the manifests.
fn render(ns: &str, sets: &[&str], extra: &[&str]) -> String {
    let mut args = vec![
        "template",
        "kappa",
        CHART,
        "--namespace",
        ns,
        "--kube-version",
        KUBE_VERSION,
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    args.extend(extra);
    run_tool_ok("helm", &args, None)
}

/// The rendered manifests as objects, keyed by kind.
fn objects(manifests: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(manifests)
        .map(|doc| serde_json::Value::deserialize(doc).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("the chart renders no {kind}"))
}

#[test]
fn the_charts_crds_are_the_generated_crds() {
    let root = env!("CARGO_MANIFEST_DIR");
    let generated = std::fs::read(format!("{root}/crds/kappa.dev_crds.yaml")).unwrap();
    let chart = std::fs::read(format!("{CHART}/crds/kappa.dev_crds.yaml")).unwrap();
    assert!(
        generated == chart,
        "charts/kappa-operator/crds/kappa.dev_crds.yaml differs from crds/kappa.dev_crds.yaml: run `make crds`"
    );
}

#[test]
fn the_chart_lints_and_requires_a_valid_cluster_id() {
    run_tool_ok("helm", &["lint", CHART, "--set", "clusterId=test"], None);

    let out = run_tool(
        "helm",
        &["template", "kappa", CHART, "--kube-version", KUBE_VERSION],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rendering without clusterId must fail");
    assert!(stderr.contains("clusterId is required"), "{stderr}");

    let args = [
        "template",
        "kappa",
        CHART,
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "clusterId=Prod_1",
    ];
    let out = run_tool("helm", &args, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an invalid clusterId must be refused by values.schema.json"
    );
    assert!(
        stderr.contains("/clusterId") && stderr.contains("does not match pattern"),
        "{stderr}"
    );
}

#[test]
fn the_deployment_runs_the_settings_from_values_hardened() {
    let sets = [
        "clusterId=prod-eu1",
        "watchNamespaces={game,shop}",
        "resyncSeconds=120",
        "logFormat=text",
        "aws.region=eu-west-1",
        "aws.endpointUrl=http://moto:5000",
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/kappa-op",
        "serviceMonitor.enabled=true",
    ];
    let objs = objects(&render("kappa-system", &sets, &[]));
    let deployment = find(&objs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for want in [
        "run",
        "--cluster-id=prod-eu1",
        "--watch-namespaces=game,shop",
        "--resync-seconds=120",
        "--log-format=text",
        "--http-addr=0.0.0.0:8080",
        "--push-addr=0.0.0.0:8081",
    ] {
        assert!(args.contains(&want), "{want} missing from {args:?}");
    }
    let env = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no env {name}"))
            .clone()
    };
    assert_eq!(
        env("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env("POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(env("AWS_REGION")["value"], "eu-west-1");
    assert_eq!(env("AWS_ENDPOINT_URL")["value"], "http://moto:5000");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    // The push endpoint: a port, a Service, and the URL clients are given.
    assert_eq!(container["ports"][1]["name"], "push");
    assert_eq!(container["ports"][1]["containerPort"], 8081);
    let push = objs
        .iter()
        .find(|o| o["kind"] == "Service" && o["spec"]["ports"][0]["name"] == "push")
        .expect("the push Service");
    assert_eq!(push["spec"]["ports"][0]["port"], 8081);
    let push_url = env("KAPPA_PUSH_URL")["value"].as_str().unwrap().to_string();
    assert_eq!(
        push_url,
        format!(
            "ws://{}.kappa-system.svc:8081",
            push["metadata"]["name"].as_str().unwrap()
        )
    );
    assert!(container["resources"]["requests"].is_object() && container["resources"]["limits"].is_object());
    let sc = &container["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");

    let sa = find(&objs, "ServiceAccount");
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/kappa-op"
    );
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(
        find(&objs, "ServiceMonitor")["apiVersion"],
        "monitoring.coreos.com/v1"
    );

    // Off by default; no AWS env when the values are empty (the SDK's chain decides).
    let objs = objects(&render("kappa-system", &["clusterId=test"], &[]));
    assert!(!objs.iter().any(|o| o["kind"] == "ServiceMonitor"));
    let env = &find(&objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(!env.to_string().contains("AWS_"), "{env}");
}

/// Actions IAM authorizes on `"Resource": "*"` only; each is justified in docs/iam-policy.md.
const UNSCOPED_ACTIONS: [&str; 4] = [
    "sns:ListTopics",
    "lambda:CreateEventSourceMapping",
    "lambda:ListEventSourceMappings",
    "tag:GetResources",
];

#[test]
fn the_iam_policy_is_scoped_to_the_operators_resources() {
    let text = std::fs::read_to_string(format!("{CHART}/docs/iam-policy.json")).unwrap();
    let policy: serde_json::Value = serde_json::from_str(&text).expect("docs/iam-policy.json is JSON");
    let doc = std::fs::read_to_string(format!("{CHART}/docs/iam-policy.md")).unwrap();
    assert_eq!(policy["Version"], "2012-10-17");
    let statements = policy["Statement"].as_array().unwrap();
    let as_strings = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            v => v
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect(),
        }
    };
    for st in statements {
        let sid = st["Sid"].as_str().expect("every statement has a Sid");
        assert_eq!(st["Effect"], "Allow", "{sid}");
        let actions = as_strings(&st["Action"]);
        assert!(
            actions.iter().all(|a| !a.contains('*')),
            "{sid}: no wildcard actions"
        );
        for resource in as_strings(&st["Resource"]) {
            if resource == "*" {
                assert!(
                    actions.iter().all(|a| UNSCOPED_ACTIONS.contains(&a.as_str())),
                    "{sid}: {actions:?} on \"*\""
                );
                assert!(
                    doc.contains(&format!("`{sid}`")),
                    "{sid} is not justified in iam-policy.md"
                );
            } else {
                assert!(
                    resource.contains(":kappa-")
                        || resource.contains("/kappa-")
                        || resource.contains(":event-source-mapping:")
                        || resource.contains("replace-with-your-export-bucket")
                        || resource.contains("/replace-with-your-named-tables")
                        || resource.contains(":replace-with-your-functions")
                        || (resource.starts_with("arn:aws:apigateway:*::/")
                            && (resource.ends_with("/apis")
                                || st["Condition"].to_string().contains("kappa.dev/managed-by"))),
                    "{sid}: {resource} is not scoped to the operator's resources"
                );
            }
        }
        // Deletes need the ownership tag (SNS topics are scoped by name only: see iam-policy.md), creates
        // must set it.
        let condition = st["Condition"].to_string();
        if actions
            .iter()
            .any(|a| a.contains(":Delete") && !a.starts_with("s3:"))
        {
            assert!(
                condition.contains("aws:ResourceTag/kappa.dev/managed-by")
                    || condition.contains("lambda:FunctionArn")
                    || sid.starts_with("SNS"),
                "{sid}: deletes must be conditioned on the ownership tag"
            );
        }
        if actions
            .iter()
            .any(|a| a.contains(":Create") && a != "lambda:CreateEventSourceMapping")
        {
            assert!(
                condition.contains("aws:RequestTag/kappa.dev/managed-by"),
                "{sid}: creates must tag"
            );
        }
    }
    let pass_role = statements
        .iter()
        .find(|s| s["Action"].to_string().contains("iam:PassRole"))
        .expect("iam:PassRole");
    assert_eq!(
        pass_role["Resource"],
        serde_json::json!(["arn:aws:iam::*:role/kappa-*"])
    );
    assert_eq!(
        pass_role["Condition"]["StringEquals"]["iam:PassedToService"],
        "lambda.amazonaws.com"
    );
    for action in [
        "dynamodb:ExportTableToPointInTime",
        "dynamodb:DescribeExport",
        "s3:GetObject",
    ] {
        assert!(text.contains(action), "{action} missing");
    }
}

#[tokio::test]
async fn the_api_server_accepts_the_rendered_chart() {
    let (client, ns) = common::setup("chart-dry-run").await;
    let name = format!("kappa-{ns}");
    let manifests = render(&ns, &["clusterId=test", &format!("fullnameOverride={name}")], &[]);
    let out = run_tool_ok(
        "kubectl",
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&manifests),
    );
    for kind in [
        "serviceaccount",
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "role.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
        "service",
        "deployment.apps",
    ] {
        assert!(
            out.contains(&format!("{kind}/{name}")),
            "{kind} not applied: {out}"
        );
    }
    common::delete_namespace(&client, &ns).await;
}

/// Deletes the cluster-scoped RBAC objects of one test when dropped, so a failing test leaves none.
struct ClusterRbac(String);

impl Drop for ClusterRbac {
    fn drop(&mut self) {
        for kind in ["clusterrolebinding", "clusterrole"] {
            run_tool("kubectl", &["delete", kind, &self.0, "--ignore-not-found"], None);
        }
    }
}

/// A kubeconfig for the stack's API server (server and CA from the admin's) authenticating with `token`.
fn token_kubeconfig(token: &str, path: &std::path::Path) {
    let admin = std::fs::read_to_string(common::stack_var("KUBECONFIG")).unwrap();
    let admin: serde_yaml::Value = serde_yaml::from_str(&admin).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": cluster["server"].as_str().unwrap(),
            "certificate-authority-data": cluster["certificate-authority-data"].as_str().unwrap(),
        }}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
    });
    std::fs::write(path, serde_yaml::to_string(&config).unwrap()).unwrap();
}

/// `kubectl auth can-i` as the holder of `kubeconfig`.
fn can_i(kubeconfig: &str, ns: &str, verb: &str, resource: &str) -> bool {
    let out = run_tool(
        "kubectl",
        &[
            "--kubeconfig",
            kubeconfig,
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            ns,
        ],
        None,
    );
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "can-i {verb} {resource}: {answer} {out:?}"
    );
    answer == "yes"
}

#[tokio::test]
async fn the_operator_reconciles_with_the_charts_service_account() {
    let (client, ns) = common::setup("chart-rbac").await;
    // Cluster-scoped names unique per run, so parallel runs and leftovers never collide.
    let name = format!("kappa-{ns}");
    let _rbac = ClusterRbac(name.clone());
    let sets = ["clusterId=test", &format!("fullnameOverride={name}")];
    let only = [
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ];
    let manifests = render(&ns, &sets, &only);
    assert!(!manifests.contains("kind: Deployment"));
    run_tool_ok("kubectl", &["apply", "-f", "-"], Some(&manifests));

    let token = run_tool_ok("kubectl", &["create", "token", &name, "-n", &ns], None);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("operator.kubeconfig");
    token_kubeconfig(token.trim(), &kubeconfig);
    let kubeconfig = kubeconfig.to_str().unwrap();

    // What the chart grants, and what it does not.
    let whoami = run_tool_ok("kubectl", &["--kubeconfig", kubeconfig, "auth", "whoami"], None);
    assert!(
        whoami.contains(&format!("system:serviceaccount:{ns}:{name}")),
        "{whoami}"
    );
    assert!(can_i(
        kubeconfig,
        &ns,
        "patch",
        "materializedviews.kappa.dev/status"
    ));
    assert!(can_i(kubeconfig, &ns, "create", "events.events.k8s.io"));
    assert!(can_i(
        kubeconfig,
        &ns,
        "update",
        "leases.coordination.k8s.io/kappa-operator-leader"
    ));
    assert!(!can_i(kubeconfig, &ns, "delete", "secrets"));
    assert!(!can_i(kubeconfig, &ns, "get", "secrets"));
    assert!(!can_i(kubeconfig, &ns, "delete", "eventlogs.kappa.dev"));
    assert!(!can_i(kubeconfig, &ns, "create", "pods"));
    assert!(!can_i(
        kubeconfig,
        &ns,
        "update",
        "leases.coordination.k8s.io/someone-elses-lease"
    ));
    assert!(!can_i(
        kubeconfig,
        "default",
        "create",
        "leases.coordination.k8s.io"
    ));

    // The example log exports to this bucket; the example view backfills from it.
    let aws = common::aws_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .force_path_style(true)
            .build(),
    );
    let _ = s3.create_bucket().bucket("kappa-game-exports").send().await;
    let mut operator = Operator::start_with_env(&ns, "chart-sa", 15, &[("KUBECONFIG", kubeconfig)]);
    common::create_yaml(&client, &ns, &example("game-events.yaml"))
        .await
        .unwrap();
    common::create_yaml(&client, &ns, &example("players.yaml"))
        .await
        .unwrap();

    let views: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    common::eventually(
        Duration::from_secs(120),
        "view players Live and Ready (backfilled, stream checkpointed in a ConfigMap) under the chart's RBAC",
        || async {
            let v = views.get("players").await.ok()?;
            let status = v.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.is_true());
            (status.phase == Some(ViewPhase::Live)
                && ready
                && status.observed_generation == v.metadata.generation)
                .then_some(())
        },
    )
    .await;
    let logs: Api<EventLog> = Api::namespaced(client.clone(), &ns);
    common::eventually(
        Duration::from_secs(30),
        "the EventLog counting its view",
        || async {
            let log = logs.get("game-events").await.ok()?;
            (log.status?.views == 1).then_some(())
        },
    )
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    common::eventually(
        Duration::from_secs(20),
        "an Event from kappa-operator on players",
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("players")
                        && e.reporting_controller.as_deref() == Some("kappa-operator")
                })
                .then_some(())
        },
    )
    .await;

    // Deleting goes through the finalizer: the operator's cleanup must be allowed too.
    for (kind, obj) in [("mv", "players"), ("elog", "game-events")] {
        run_tool_ok(
            "kubectl",
            &["-n", &ns, "delete", kind, obj, "--timeout=30s"],
            None,
        );
    }

    let log = operator.log();
    assert!(
        log.contains("became leader"),
        "the operator never took its Lease:\n{log}"
    );
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "RBAC refused a call:\n{log}"
    );
    assert!(!log.contains("could not publish an Event"), "{log}");
    operator.kill();
    common::delete_namespace(&client, &ns).await;
}

/// Found by the #20 breaker: the operator writes the items of every views table it tags (dedicated:
/// `MaterializedView`, shared: `ViewsTable`), so the documented policy must allow both kinds, and the
/// item actions the views writer uses (transactions' condition checks, a fold's scan).
#[test]
fn the_iam_policy_lets_the_operator_write_every_views_table_it_tags() {
    let text = std::fs::read_to_string(format!("{CHART}/docs/iam-policy.json")).unwrap();
    let policy: serde_json::Value = serde_json::from_str(&text).unwrap();
    let st = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "DynamoDBWriteOwnViews")
        .expect("DynamoDBWriteOwnViews");
    let kinds = st["Condition"]["StringEquals"]["aws:ResourceTag/kappa.dev/kind"].to_string();
    for kind in [
        kappa_operator::plan::view::VIEW_KIND,
        kappa_operator::plan::view::SHARED_TABLE_KIND,
    ] {
        assert!(kinds.contains(&format!("\"{kind}\"")), "{kind} not in {kinds}");
    }
    let actions = st["Action"].to_string();
    for action in [
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:ConditionCheckItem",
        "dynamodb:Scan",
        "dynamodb:Query",
        "dynamodb:GetItem",
    ] {
        assert!(actions.contains(action), "{action} missing: {actions}");
    }
}

/// The CRD upgrade step the operator prints when its CRDs are not its own (`crd_skew::fix_command`) is the
/// one the README's Upgrading section and the chart's NOTES give (Helm never upgrades `crds/`).
#[test]
fn the_crd_upgrade_step_is_documented_with_the_operators_command() {
    let command = kappa_operator::controller::crd_skew::fix_command();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let upgrading = readme
        .split("\n### Upgrading\n")
        .nth(1)
        .expect("README.md has an Upgrading section");
    assert!(
        upgrading.contains(&command),
        "README.md's Upgrading section does not give `{command}`"
    );
    let notes = std::fs::read_to_string(format!("{CHART}/templates/NOTES.txt")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let rendered = notes.replace("{{ .Chart.AppVersion }}", version);
    assert!(
        rendered.contains(&command),
        "the chart's NOTES.txt does not give `{command}` (with .Chart.AppVersion = {version})"
    );
    // The release attaches the CRDs under the name the command downloads.
    let release = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.github/workflows/release.yml"
    ))
    .unwrap();
    assert!(release.contains(r#"dist/kappa-operator-$VERSION-crds.yaml"#));
}

/// `helm template <release>` into kappa-system with clusterId and one `--set`, as run: the caller checks
/// whether the chart refused it.
fn refused(release: &str, set: &str) -> std::process::Output {
    run_tool(
        "helm",
        &[
            "template",
            release,
            CHART,
            "--namespace",
            "kappa-system",
            "--kube-version",
            KUBE_VERSION,
            "--set",
            "clusterId=t",
            "--set",
            set,
        ],
        None,
    )
}

/// Found by a breaker (#19): names past 63 characters, an image pinned by digest, a second release in the
/// same cluster, and values the schema must refuse.
#[test]
fn the_chart_renders_valid_names_pins_digests_and_refuses_bad_image_values() {
    // A release name that makes `<release>-kappa-operator-metrics` 71 characters: every name stays a valid
    // DNS label, the suffix kept, and the push URL follows the push Service's name.
    let long = "a-very-long-release-name-that-goes-on-and-on-for-ever";
    let override_63 = format!("fullnameOverride={}", "x".repeat(63));
    for (release, extra) in [(long, None), ("kappa", Some(override_63.as_str()))] {
        let out = refused(release, extra.unwrap_or("clusterId=t"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let manifests = String::from_utf8(out.stdout).unwrap();
        let objs = objects(&manifests);
        let mut services = Vec::new();
        for o in &objs {
            let name = o["metadata"]["name"].as_str().unwrap();
            assert!(
                name.len() <= 63,
                "{} {name} is {} characters",
                o["kind"],
                name.len()
            );
            assert!(!name.ends_with('-'), "{name}");
            if o["kind"] == "Service" {
                services.push(name.to_string());
            }
        }
        assert!(services.iter().any(|s| s.ends_with("-metrics")), "{services:?}");
        let push = services
            .iter()
            .find(|s| s.ends_with("-push"))
            .expect("a push Service");
        assert!(
            manifests.contains(&format!("ws://{push}.kappa-system.svc:")),
            "the push URL names another Service than {push}"
        );
    }

    // Pinned by digest, in place of the tag.
    let digest = format!("sha256:{}", "ab".repeat(32));
    let objs = objects(&render(
        "kappa-system",
        &["clusterId=t", &format!("image.digest={digest}")],
        &[],
    ));
    let image = find(&objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(image, format!("ghcr.io/kappa-dev/kappa-operator@{digest}"));

    // A second release of the same cluster shares the first one's user ClusterRoles.
    let objs = objects(&render("kappa-2", &["clusterId=t", "rbac.userRoles=false"], &[]));
    let roles: Vec<&str> = objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRole")
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(
        !roles.contains(&"kappa-editor") && !roles.contains(&"kappa-viewer"),
        "{roles:?}"
    );
    assert!(
        !roles.is_empty(),
        "the operator's own ClusterRole stays: {roles:?}"
    );

    // The schema refuses references that would not pull, naming the value.
    for (set, field) in [
        ("image.tag=@sha256:0123", "/image/tag"),
        ("image.repository=repo@sha256:0123", "/image/repository"),
        ("image.repository=repo:1.0", "/image/repository"),
        ("image.digest=sha256:short", "/image/digest"),
        ("image.digest=md5:0123", "/image/digest"),
    ] {
        let out = refused("kappa", set);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(field), "{set}: {stderr}");
    }
    // Observability values: what Prometheus and Grafana accept is accepted, what would break them refused.
    for set in [
        "grafanaDashboard.label=bad label!",
        "grafanaDashboard.label=app.kubernetes.io/name",
        "grafanaDashboard.namespace=Monitoring_NS",
        "prometheusRule.lagFor=soon",
        // Prometheus refuses a scrape whose timeout is longer than its interval (default 30s).
        "serviceMonitor.enabled=true,serviceMonitor.scrapeTimeout=1m",
    ] {
        let out = refused("kappa", set);
        assert!(!out.status.success(), "{set} was accepted");
    }
    let objs = objects(&render(
        "kappa-system",
        &[
            "clusterId=t",
            "image.tag=20240101",
            "grafanaDashboard.enabled=true",
            "grafanaDashboard.labelValue=1",
            "prometheusRule.enabled=true",
            "prometheusRule.lagFor=1h30m",
            "serviceMonitor.enabled=true",
            "serviceMonitor.interval=1m30s",
        ],
        &[],
    ));
    let image = &find(&objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image, "ghcr.io/kappa-dev/kappa-operator:20240101");
    let dashboard = objs
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"].as_str().unwrap().ends_with("-dashboard"))
        .expect("the dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");

    // A registry with a port is a repository, not a tag.
    run_tool_ok(
        "helm",
        &[
            "template",
            "kappa",
            CHART,
            "--kube-version",
            KUBE_VERSION,
            "--set",
            "clusterId=t",
            "--set",
            "image.repository=registry.example.com:5000/team/kappa-operator",
        ],
        None,
    );
}
