//! Breaking the tenancy work of #20, as a tenant of one namespace (`bob`, an editor of namespace b only)
//! attacking another (namespace a), with inputs the tenancy suite (tests/tenancy.rs) does not try.
//!
//! The first tests are pure (plans and the chart's IAM documents); the others run the real operator on
//! the local stack (`hack/stack.sh up`), like tests/tenancy.rs.
//!
//! Each test states the behaviour it expects; a failing one shows a fault.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Operator;
use kappa_operator::crd::{EventLog, MaterializedView};
use kappa_operator::plan::function::{Architecture, FunctionCode};
use kappa_operator::plan::iam::AwsScope;
use kappa_operator::plan::lambdas::BuiltInCode;
use kappa_operator::plan::names::{NameKind, resource_name};
use kube::api::DeleteParams;
use kube::{Api, Client};
use serde_json::Value;

const BOB: &str = "bob";

// ---------------------------------------------------------------------------------------------------
// Helpers: IAM documents.

fn chart_doc(file: &str) -> Value {
    chart_doc_for(
        file,
        "replace-with-your-named-tables",
        "replace-with-your-functions",
    )
}

/// A chart IAM document with its placeholders replaced as docs/iam-policy.md tells the administrator:
/// `tables` for the tables users may name or adopt, `functions` for the functions they may bring.
fn chart_doc_for(file: &str, tables: &str, functions: &str) -> Value {
    let path = format!("{}/charts/kappa-operator/docs/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("replace-with-your-named-tables", tables)
        .replace("replace-with-your-functions", functions);
    serde_json::from_str(&text).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        _ => vec![],
    }
}

/// IAM's wildcard match (`*` any run, `?` one character), case-sensitive as for ARNs.
fn iam_like(pattern: &str, value: &str) -> bool {
    fn go(p: &[char], v: &[char]) -> bool {
        match (p.first(), v.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], v) || (!v.is_empty() && go(p, &v[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &v[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &v[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    go(&p, &v)
}

/// Whether an Allow statement of `doc` (ignoring conditions) allows `action` on `resource`.
fn allows(doc: &Value, action: &str, resource: &str) -> bool {
    doc["Statement"].as_array().unwrap().iter().any(|s| {
        s["Effect"] == "Allow"
            && strings(&s["Action"])
                .iter()
                .any(|a| iam_like(&a.to_lowercase(), &action.to_lowercase()))
            && strings(&s["Resource"]).iter().any(|r| iam_like(r, resource))
    })
}

fn scope() -> AwsScope {
    AwsScope {
        partition: "aws".into(),
        region: "us-east-1".into(),
        account: "123456789012".into(),
    }
}

/// (action, resource) pairs a role policy allows that `boundary` does not.
fn outside_boundary(policy: &Value, boundary: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for s in policy["Statement"].as_array().unwrap() {
        for a in strings(&s["Action"]) {
            for r in strings(&s["Resource"]) {
                // Resource patterns of the role are concrete enough to test as values (a `/stream/*`
                // or `:*` suffix is matched literally by the boundary's own wildcard).
                if !allows(boundary, &a, &r) {
                    out.push(format!("{a} on {r}"));
                }
            }
        }
    }
    out
}

fn log_from(yaml: &str) -> EventLog {
    serde_yaml::from_str(yaml).unwrap()
}

// ---------------------------------------------------------------------------------------------------
// Pure tests.

/// Expected: the roles the operator plans for a log with an explicit table name (which must not start
/// with `kappa-`, `check_table_name`) stay within the permissions boundary it puts on every role; else
/// the log is Ready but its writer (and router) fail with AccessDenied on real AWS. Fault: the boundary
/// (charts/kappa-operator/docs/boundary-policy.json) allows table items and streams only on
/// `table/kappa-*`, while `spec.table.name` may only be outside `kappa-*`.
#[test]
fn boundary_denies_the_writer_and_router_of_a_log_with_an_explicit_table_name() {
    // The administrator lets namespaces name `payroll-*` tables (docs/iam-policy.md).
    let boundary = chart_doc_for("boundary-policy.json", "payroll-*", "replace-with-your-functions");
    let log = log_from(
        "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {name: payroll, namespace: team-a, uid: u1}\n\
         spec:\n  recordTypes: [salary]\n  table: {name: payroll-a, sortKey: sk}\n  \
         ingest: {queueType: Standard}\n  fanOut: {mode: Sns}\n",
    );
    let plan = kappa_operator::plan::log::plan_log("test", &log, kappa_operator::plan::NO_VIEWS);
    assert!(
        kappa_operator::plan::log::check_table_name(&plan, log.spec.table.name.as_deref()).is_ok(),
        "the explicit name is accepted"
    );
    let mut denied = Vec::new();
    for role in kappa_operator::plan::log::roles(&plan, &scope()) {
        for d in outside_boundary(&role.policy, &boundary) {
            denied.push(format!("{} role: {d}", role.role));
        }
    }
    assert!(
        denied.is_empty(),
        "the boundary denies what the planned roles need:\n{}",
        denied.join("\n")
    );
}

/// Expected: the operator's documented IAM policy lets it do what the README promises for adoption
/// (read and tag an existing table the administrator allows, e.g. `--adoptable-tables b=legacy-.*`) and
/// for explicit `spec.table.name` values (which must be outside `kappa-*`). Fault: every DynamoDB
/// statement of charts/kappa-operator/docs/iam-policy.json is limited to `table/kappa-*`, so the
/// operator cannot even DescribeTable a `legacy-orders` table: adoption and explicit names cannot work.
#[test]
fn operator_policy_cannot_read_or_adopt_the_tables_adoption_is_for() {
    // The administrator lets namespace b adopt `legacy-*` tables (`--adoptable-tables b=legacy-.*`) and
    // puts the same pattern in the policy, as docs/iam-policy.md says.
    let policy = chart_doc_for("iam-policy.json", "legacy-*", "replace-with-your-functions");
    let legacy = "arn:aws:dynamodb:us-east-1:123456789012:table/legacy-orders";
    let missing: Vec<&str> = [
        "dynamodb:DescribeTable",
        "dynamodb:ListTagsOfResource",
        "dynamodb:TagResource",
        "dynamodb:CreateTable",
    ]
    .into_iter()
    .filter(|a| !allows(&policy, a, legacy))
    .collect();
    assert!(
        missing.is_empty(),
        "the operator's policy does not allow {missing:?} on {legacy}"
    );
}

/// Expected: the operator's policy lets it write the items of the views tables it creates (the in-cluster
/// runtime writes views from the operator): the kinds in the `DynamoDBWriteOwnViews` condition are the
/// kinds it tags views tables with. Fault: the policy says `Namespace`, the operator tags shared views
/// tables `kappa.dev/kind: ViewsTable` (src/plan/view.rs SHARED_TABLE_KIND), so every write to a shared
/// views table (the default store) is denied on real AWS.
#[test]
fn operator_policy_names_a_kind_no_views_table_carries() {
    let policy = chart_doc("iam-policy.json");
    let stmt = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "DynamoDBWriteOwnViews")
        .expect("DynamoDBWriteOwnViews");
    let kinds = strings(&stmt["Condition"]["StringEquals"]["aws:ResourceTag/kappa.dev/kind"]);
    assert!(
        kinds.contains(&kappa_operator::plan::view::SHARED_TABLE_KIND.to_string()),
        "kinds allowed to be written: {kinds:?}, shared views tables are tagged {:?}",
        kappa_operator::plan::view::SHARED_TABLE_KIND
    );
}

/// Expected: a user's `spec.projector.environment` cannot change the built-in projector's own
/// configuration (`PROJECTION`: the views table and key prefix it writes, the projection): either the
/// operator's value wins or the spec is refused. Fault: src/plan/lambdas.rs `projector_function` ends
/// with `f.environment.extend(spec.projector.environment)`, so bob's view can point its projector at
/// namespace a's views table (and any key prefix); only the role's inline policy stands in the way (the
/// permissions boundary allows items of every `kappa-*` table).
#[test]
fn a_views_environment_overrides_the_projectors_target_table() {
    let a_table = resource_name("test", "team-a", "views", "views", NameKind::Table);
    let injected = serde_json::json!({
        "view": "salaries", "table": a_table, "keyPrefix": "",
        "recordTypes": ["salary"],
        "projection": {"mode": "Append", "key": {"partitionKey": "P#{id}"}},
        "log": {"partitionKey": "pk", "sortKey": "sk", "recordTypeAttribute": "type"}
    })
    .to_string();
    let view: MaterializedView = serde_yaml::from_str(&format!(
        "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: salaries, namespace: team-b, uid: u2}}\n\
         spec:\n  eventLogRef: {{name: feed}}\n  recordTypes: [salary]\n  \
         projection: {{mode: Append, key: {{partitionKey: 'P#{{id}}'}}}}\n  \
         projector: {{environment: {{PROJECTION: '{injected}'}}}}\n"
    ))
    .unwrap();
    let log = log_from(
        "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {name: feed, namespace: team-b, uid: u3}\n\
         spec:\n  recordTypes: [salary]\n  table: {sortKey: sk}\n  fanOut: {mode: Sns}\n",
    );
    let plan = kappa_operator::plan::view::plan_view("test", &view, kappa_operator::plan::NO_VIEWS);
    let code = BuiltInCode {
        code: FunctionCode::Zip { bytes: Arc::new(vec![1]), sha256_base64: "x".into() },
        architecture: Architecture::X86_64,
    };
    let f = match kappa_operator::plan::lambdas::projector_function(
        &view,
        &plan,
        &log.spec,
        "kappa-log",
        "arn:role",
        &code,
    ) {
        // The fix refuses the spec, naming the field: the other accepted outcome.
        Err(refused) => {
            let refused = refused.to_string();
            assert!(
                refused.contains("spec.projector.environment.PROJECTION"),
                "{refused}"
            );
            return;
        }
        Ok(f) => f.unwrap(),
    };
    let projection: Value = serde_json::from_str(&f.environment["PROJECTION"]).unwrap();
    assert_eq!(
        projection["table"].as_str(),
        Some(plan.table.name.as_str()),
        "bob's projector writes to {} (namespace a's views table is {a_table})",
        projection["table"]
    );
}

/// Expected (passes): derived names never collide between namespaces or objects whose names differ only
/// in characters the derivation drops (`.` becomes `-`), in case, or beyond the cut of a long name.
#[test]
fn derived_names_do_not_collide_across_dots_case_or_truncation() {
    let long = "x".repeat(200);
    let pairs = [
        (("team-a", "pay.roll"), ("team-a", "pay-roll")),
        (("team-a", "payroll"), ("team", "a-payroll")),
        (("team-a", &*format!("{long}1")), ("team-a", &*format!("{long}2"))),
        (("a", &*format!("x-{long}")), ("a-x", &*long.clone())),
    ];
    for ((ns1, n1), (ns2, n2)) in pairs {
        for kind in [
            NameKind::Table,
            NameKind::Function,
            NameKind::Role,
            NameKind::Topic,
            NameKind::Queue { fifo: false },
            NameKind::Queue { fifo: true },
        ] {
            for role in ["log", "writer", "projector", "views", "view"] {
                let x = resource_name("test", ns1, n1, role, kind);
                let y = resource_name("test", ns2, n2, role, kind);
                assert_ne!(x, y, "{ns1}/{n1} and {ns2}/{n2} ({role}, {kind:?})");
            }
        }
    }
    // A view's shared table name chosen as another namespace's derived views table name is still a
    // name in the view's own namespace.
    let theirs = resource_name("test", "team-a", "views", "views", NameKind::Table);
    let mine = resource_name("test", "team-b", &theirs, "views", NameKind::Table);
    assert_ne!(theirs, mine);
    assert!(mine.starts_with("kappa-test-team-b-"), "{mine}");
}

// ---------------------------------------------------------------------------------------------------
// Stack helpers (as in tests/tenancy.rs).

fn bind(ns: &str, role: &str, subject: &str) -> String {
    let name = format!("{role}-{}", subject.replace(':', "-"));
    let subject_arg = match subject.split_once(':') {
        Some(("User", user)) => format!("--user={user}"),
        Some(("ServiceAccount", sa)) => format!("--serviceaccount={sa}"),
        _ => panic!("subject {subject}"),
    };
    common::kubectl(&[
        "-n",
        ns,
        "create",
        "rolebinding",
        &name,
        &format!("--clusterrole={role}"),
        &subject_arg,
    ]);
    name
}

async fn client_as(user: &str) -> Client {
    let mut config = kube::Config::infer().await.expect("kubeconfig");
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).expect("impersonating client")
}

async fn two_tenants(test: &str) -> (Client, String, String) {
    let (admin, a) = common::setup(&format!("{test}-a")).await;
    let b = common::namespace(&admin, &format!("{test}-b")).await;
    common::apply_user_cluster_roles();
    bind(&b, "kappa-editor", &format!("User:{BOB}"));
    (admin, a, b)
}

fn token_of(ns: &str, sa: &str) -> String {
    common::kubectl(&["-n", ns, "create", "serviceaccount", sa]);
    common::kubectl(&["-n", ns, "create", "token", sa])
        .trim()
        .to_string()
}

async fn wait_ready(api: &Api<EventLog>, name: &str) -> EventLog {
    common::eventually(
        Duration::from_secs(60),
        &format!("EventLog {name} Ready"),
        || async {
            let l = api.get(name).await.ok()?;
            let ready = l
                .status
                .as_ref()?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == kappa_operator::crd::ConditionStatus::True);
            ready.then_some(l)
        },
    )
    .await
}

/// The view's Stalled reason and message once it is Stalled (or `None` after `wait`).
async fn view_stalled(api: &Api<MaterializedView>, name: &str, wait: Duration) -> Option<(String, String)> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Ok(v) = api.get(name).await
            && let Some(c) = v.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "Stalled" && c.status == kappa_operator::crd::ConditionStatus::True)
            })
        {
            return Some((c.reason.clone(), c.message.clone()));
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

// ---------------------------------------------------------------------------------------------------
// Stack tests.

/// Expected (passes): a view's `spec.projector.code.functionArn` naming another namespace's function is
/// refused whatever form names it: the bare function name and `name:$LATEST` at admission (the schema
/// wants an ARN), a qualified ARN (`:$LATEST`) by the operator; and the function gets no invoke
/// permission from bob's topics. (On the local stack the qualified ARN ends as `AwsError` "Unknown", not
/// `OwnedByAnother`: moto's Lambda routes do not accept `$` in a function name, a stack limitation.)
#[tokio::test]
async fn function_arn_of_another_namespace_in_any_form_gets_no_permission() {
    let (admin, a, b) = two_tenants("brk-fnarn").await;
    let aws = common::aws_config().await;
    let iam = aws_sdk_iam::Client::new(&aws);
    common::ensure_boundary_policy(&iam).await;
    let op = Operator::start_with_args(&[&a, &b], "solo", 5, &[], &[]);
    let bob = client_as(BOB).await;
    let a_logs: Api<EventLog> = Api::namespaced(admin.clone(), &a);
    let b_logs: Api<EventLog> = Api::namespaced(bob.clone(), &b);
    let log = |name: &str| {
        format!(
            "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {{name: {name}}}\nspec:\n  \
             recordTypes: [salary]\n  table: {{sortKey: sk}}\n  ingest: {{queueType: Standard}}\n  \
             fanOut: {{mode: Sns}}\n  deletionPolicy: Delete\n"
        )
    };
    common::create_yaml(&admin, &a, &log("payroll")).await.unwrap();
    common::create_yaml(&bob, &b, &log("feed")).await.unwrap();
    let payroll = wait_ready(&a_logs, "payroll").await;
    wait_ready(&b_logs, "feed").await;
    let a_writer_arn = payroll.status.as_ref().unwrap().resources["function/writer"].clone();
    let a_writer_name = a_writer_arn.rsplit(':').next().unwrap().to_string();
    let forms = [
        ("name", a_writer_name.clone()),
        ("qualified-arn", format!("{a_writer_arn}:$LATEST")),
        ("qualified-name", format!("{a_writer_name}:$LATEST")),
    ];
    let views: Api<MaterializedView> = Api::namespaced(bob.clone(), &b);
    let mut accepted = Vec::new();
    for (label, arn) in &forms {
        let yaml = format!(
            "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: hijack-{label}}}\nspec:\n  \
             eventLogRef: {{name: feed}}\n  recordTypes: [salary]\n  \
             projector:\n    code: {{functionArn: \"{arn}\"}}\n  store: {{table: Dedicated}}\n  \
             backfill: {{source: None}}\n  deletionPolicy: Delete\n"
        );
        if let Err(e) = common::create_yaml(&bob, &b, &yaml).await {
            // Refused at admission: fine.
            eprintln!("{label}: refused at admission: {e}");
            continue;
        }
    }
    for (label, arn) in &forms {
        let name = format!("hijack-{label}");
        match view_stalled(&views, &name, Duration::from_secs(40)).await {
            Some((reason, _)) if reason == "OwnedByAnother" => {}
            // Refused at admission (no such view) or by an AWS error before any permission.
            None if views.get_opt(&name).await.ok().flatten().is_none() => {}
            Some((reason, message)) if reason == "AwsError" && message.contains("GetFunction") => {
                eprintln!("{label}: {message}")
            }
            other => accepted.push(format!("{label} ({arn}): {other:?}")),
        }
    }
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let policy = lambda
        .get_policy()
        .function_name(&a_writer_arn)
        .send()
        .await
        .ok()
        .and_then(|p| p.policy().map(str::to_string))
        .unwrap_or_default();
    for (label, _) in &forms {
        let _ = views
            .delete(&format!("hijack-{label}"), &DeleteParams::default())
            .await;
    }
    drop(op);
    common::delete_namespace(&admin, &a).await;
    common::delete_namespace(&admin, &b).await;
    assert!(
        !policy.contains("sns.amazonaws.com"),
        "a's writer got an SNS invoke permission: {policy}"
    );
    assert!(accepted.is_empty(), "not refused as another's: {accepted:#?}");
}

/// Expected (passes): the push endpoint refuses a b token for any other namespace however the path spells
/// it (percent-encoded `/`, `..`, upper case, a NUL), and a malformed Authorization header; it never
/// connects.
#[tokio::test]
async fn push_refuses_odd_namespace_paths_and_malformed_tokens() {
    let (admin, a, b) = two_tenants("brk-pushpath").await;
    bind(&b, "kappa-viewer", &format!("ServiceAccount:{b}:reader"));
    let token = token_of(&b, "reader");
    let op = Operator::start_with_args(&[&a, &b], "solo", 5, &[], &[]);
    let base = format!("ws://127.0.0.1:{}", op.push_port);
    use kappa_operator::push::watch::WatchClient;
    let status_of = |r: Result<WatchClient, kappa_operator::push::watch::WatchError>| match r {
        Ok(_) => "connected".to_string(),
        Err(e) => e.to_string(),
    };
    let own = common::eventually(Duration::from_secs(20), "the push endpoint up", || async {
        let s = status_of(WatchClient::connect_with_token(&base, &b, Some(&token)).await);
        (!s.contains("Connection refused")).then_some(s)
    })
    .await;
    assert_eq!(own, "connected");
    let mut connected = Vec::new();
    let odd = [
        format!("{b}%2F..%2F{a}"),
        format!("{a}%2F"),
        b.to_uppercase(),
        format!("{a}%00"),
        format!("%20{a}"),
        "..".to_string(),
        "%2E%2E".to_string(),
    ];
    for ns in &odd {
        // Raw URL, so nothing on the client side re-encodes it.
        let url = format!("{base}/v1/namespaces/{ns}/watch");
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str())
                .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => connected.push(ns.clone()),
            Err(e) => eprintln!("{ns}: {e}"),
        }
    }
    for header in [
        format!("Bearer {token}x"),
        format!("Bearer  {token}, Bearer {token}"),
        format!("Basic {token}"),
    ] {
        let url = format!("{base}/v1/namespaces/{a}/watch");
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str())
                .unwrap();
        req.headers_mut().insert("authorization", header.parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => connected.push(format!("header {header:.20}...")),
            Err(e) => eprintln!("header {header:.12}...: {e}"),
        }
    }
    drop(op);
    common::delete_namespace(&admin, &a).await;
    common::delete_namespace(&admin, &b).await;
    assert!(connected.is_empty(), "connected: {connected:?}");
}

/// Expected: access to a namespace's views on the push endpoint ends when RBAC no longer grants it (the
/// RoleBinding deleted, the ServiceAccount and so its token gone): an open connection is closed, or at
/// least refuses new subscriptions, as a new connection with the same token is refused. Fault:
/// src/push/server.rs authorizes only the upgrade; the connection keeps being served (subscribe
/// requests answered, changes delivered) for as long as the client keeps it open.
#[tokio::test]
async fn push_connection_outlives_the_revocation_of_its_access() {
    let (admin, a, b) = two_tenants("brk-pushrevoke").await;
    let binding = bind(&b, "kappa-viewer", &format!("ServiceAccount:{b}:reader"));
    let token = token_of(&b, "reader");
    let op = Operator::start_with_args(&[&a, &b], "solo", 5, &[], &[]);
    let base = format!("ws://127.0.0.1:{}", op.push_port);
    use kappa_operator::push::watch::WatchClient;
    let mut client = common::eventually(Duration::from_secs(20), "connected", || async {
        WatchClient::connect_with_token(&base, &b, Some(&token))
            .await
            .ok()
    })
    .await;
    // While allowed, a subscribe request is answered (refused: the view does not exist, which is the
    // server's answer, not the authorization's).
    let before = format!("{:?}", client.subscribe("players", None).await);
    eprintln!("before revocation: {before}");
    assert!(before.contains("not a reactive view"), "{before}");
    // Revoke: the RoleBinding and the ServiceAccount (which invalidates its tokens).
    common::kubectl(&["-n", &b, "delete", "rolebinding", &binding]);
    common::kubectl(&["-n", &b, "delete", "serviceaccount", "reader"]);
    let refused = common::eventually(Duration::from_secs(20), "a new connection refused", || async {
        match WatchClient::connect_with_token(&base, &b, Some(&token)).await {
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        }
    })
    .await;
    assert!(refused.contains("401") || refused.contains("403"), "{refused}");
    // The old connection: still answering?
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answer = format!("{:?}", client.subscribe("players", None).await);
    eprintln!("after revocation: {answer}");
    drop(op);
    common::delete_namespace(&admin, &a).await;
    common::delete_namespace(&admin, &b).await;
    assert!(
        !answer.contains("not a reactive view"),
        "the revoked client's connection still serves namespace {b}: {answer}"
    );
}

/// Expected (passes): an export prefix that tries to climb out of the log's root (`..` segments, a leading
/// `/`) cannot take the log's exports elsewhere: the root is derived from the log alone and the user's
/// prefix is only appended (S3 keys are not paths: `..` is kept literally, below the root), and the
/// deletion filter (`starts_with(root + "/")`, src/controller/materialized_view/backfill.rs) holds for it.
#[test]
fn export_prefix_with_dot_dot_is_kept_below_the_log_root() {
    let log = log_from(
        "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {name: mine, namespace: team-b, uid: u9}\n\
         spec:\n  recordTypes: [salary]\n  table: {sortKey: sk}\n  fanOut: {mode: Direct}\n  \
         export: {bucket: shared-exports, prefix: '/../../../../team-a/payroll/u1/'}\n",
    );
    let root = kappa_operator::plan::log::export_root("test", &log);
    assert_eq!(root, "kappa-exports/test/team-b/mine/u9");
    let base = log
        .spec
        .export
        .as_ref()
        .unwrap()
        .prefix
        .trim_matches('/')
        .to_string();
    let key = format!("{root}/{base}/views/v/1");
    assert!(key.starts_with(&format!("{root}/")), "{key}");
    // Another log's root is never a prefix of this one's (uids differ, the root ends with `/`).
    let other = log_from(
        "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {name: mine, namespace: team-b, uid: u9x}\n\
         spec:\n  recordTypes: [salary]\n  table: {sortKey: sk}\n  fanOut: {mode: Direct}\n",
    );
    let other_root = kappa_operator::plan::log::export_root("test", &other);
    assert!(!key.starts_with(&format!("{other_root}/")));
}

/// Expected (passes): an adoption rule is anchored on the whole table name, alternations included, and
/// applies to exactly the namespace it names (not one that merely starts with it), so a rule written for
/// b's legacy tables never lets b adopt a's or lets `b2` adopt anything.
#[test]
fn adoption_rules_are_anchored_and_exact_per_namespace() {
    let rules = kappa_operator::settings::AdoptionRules::parse(&[
        "b=legacy-.*|orders".to_string(),
        "c=^x$".to_string(),
    ])
    .unwrap();
    assert!(rules.allows("b", "legacy-1").is_ok());
    assert!(rules.allows("b", "orders").is_ok());
    for (ns, table) in [
        ("b", "payroll-legacy-1"),
        ("b", "orders-of-a"),
        ("b", "a-orders"),
        ("b2", "legacy-1"),
        ("B", "legacy-1"),
        ("", "legacy-1"),
        ("c", "xx"),
        ("b", "legacy-1\n"),
    ] {
        assert!(rules.allows(ns, table).is_err(), "{ns:?} may adopt {table:?}");
    }
}

/// Expected: a namespace deleted and created again (handed to another team) does not inherit the shared
/// views table its predecessor retained: a view of the new namespace using the same `sharedTableName`
/// is Stalled `OwnedByAnother` (the table carries the old Namespace object's uid), and the old items
/// stay as they were.
#[tokio::test]
async fn a_recreated_namespace_does_not_inherit_a_retained_shared_views_table() {
    let (admin, lease) = common::setup("brk-nsre-lease").await;
    let x = common::namespace(&admin, "brk-nsre-x").await;
    common::apply_user_cluster_roles();
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let op = Operator::start_with_args(&[&lease, &x], "solo", 5, &[], &[]);
    let log = |name: &str| {
        format!(
            "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {{name: {name}}}\nspec:\n  \
             recordTypes: [salary]\n  table: {{sortKey: sk}}\n  fanOut: {{mode: Direct}}\n  deletionPolicy: Retain\n"
        )
    };
    let view = |name: &str, log: &str| {
        format!(
            "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: {name}}}\nspec:\n  \
             eventLogRef: {{name: {log}}}\n  recordTypes: [salary]\n  \
             projection: {{mode: Append, key: {{partitionKey: \"P#{{id}}\"}}}}\n  \
             projector: {{runtime: InCluster}}\n  store: {{table: Shared, sharedTableName: views}}\n  \
             backfill: {{source: None}}\n  deletionPolicy: Retain\n"
        )
    };
    common::create_yaml(&admin, &x, &log("feed")).await.unwrap();
    common::create_yaml(&admin, &x, &view("salaries", "feed"))
        .await
        .unwrap();
    let views: Api<MaterializedView> = Api::namespaced(admin.clone(), &x);
    let table = common::eventually(Duration::from_secs(90), "the shared views table", || async {
        views.get("salaries").await.ok()?.status?.table_name
    })
    .await;
    common::eventually(Duration::from_secs(60), "the table exists", || async {
        ddb.describe_table().table_name(&table).send().await.ok()
    })
    .await;
    ddb.put_item()
        .table_name(&table)
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("salaries#P#1".into()),
        )
        .item("sk", aws_sdk_dynamodb::types::AttributeValue::S("secret".into()))
        .send()
        .await
        .unwrap();
    let tags_before = {
        let arn = ddb
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .unwrap()
            .table
            .unwrap()
            .table_arn
            .unwrap();
        ddb.list_tags_of_resource()
            .resource_arn(&arn)
            .send()
            .await
            .unwrap()
            .tags
            .unwrap_or_default()
            .into_iter()
            .map(|t| (t.key, t.value))
            .collect::<Vec<_>>()
    };
    // The namespace goes (its objects Retain their AWS resources) and comes back for bob.
    common::delete_namespace(&admin, &x).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    common::eventually(Duration::from_secs(120), "namespace gone", || async {
        namespaces
            .get_opt(&x)
            .await
            .ok()
            .filter(Option::is_none)
            .map(|_| ())
    })
    .await;
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": x}})).unwrap();
    namespaces.create(&Default::default(), &ns).await.unwrap();
    bind(&x, "kappa-editor", &format!("User:{BOB}"));
    let bob = client_as(BOB).await;
    common::create_yaml(&bob, &x, &log("feed2")).await.unwrap();
    common::create_yaml(&bob, &x, &view("peek", "feed2"))
        .await
        .unwrap();
    let bob_views: Api<MaterializedView> = Api::namespaced(bob.clone(), &x);
    let stalled = view_stalled(&bob_views, "peek", Duration::from_secs(90)).await;
    let status = bob_views.get("peek").await.ok().and_then(|v| v.status);
    // The retained view item (the table's owner items, `~applied#owner`, are the operator's own).
    let items = common::scan_all(&ddb, &table)
        .await
        .iter()
        .filter(|i| !matches!(i.get("pk"), Some(aws_sdk_dynamodb::types::AttributeValue::S(pk)) if pk.contains("~applied#")))
        .count();
    drop(op);
    common::delete_namespace(&admin, &x).await;
    common::delete_namespace(&admin, &lease).await;
    assert_eq!(items, 1, "the retained items");
    assert!(
        stalled.as_ref().is_some_and(|(r, _)| r == "OwnedByAnother"),
        "the new namespace's view on {table} (tags {tags_before:?}): {stalled:?}, status {status:?}"
    );
}

/// The same fault as [`a_views_environment_overrides_the_projectors_target_table`], end to end: bob's
/// view (namespace b) sets `spec.projector.environment.PROJECTION` naming namespace a's shared views
/// table; the operator deploys bob's projector function with that configuration. Expected: the deployed
/// function's `PROJECTION` names b's own views table (or the view is refused).
#[tokio::test]
async fn deployed_projector_of_bobs_view_targets_namespace_as_views_table() {
    let (admin, a, b) = two_tenants("brk-projenv").await;
    let aws = common::aws_config().await;
    let iam = aws_sdk_iam::Client::new(&aws);
    common::ensure_boundary_policy(&iam).await;
    let op = Operator::start_with_args(&[&a, &b], "solo", 5, &[], &[]);
    let bob = client_as(BOB).await;
    let b_logs: Api<EventLog> = Api::namespaced(bob.clone(), &b);
    common::create_yaml(
        &bob,
        &b,
        "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {name: feed}\nspec:\n  \
         recordTypes: [salary]\n  table: {sortKey: sk}\n  fanOut: {mode: Sns}\n  deletionPolicy: Delete\n",
    )
    .await
    .unwrap();
    wait_ready(&b_logs, "feed").await;
    let a_table = resource_name("test", &a, "views", "views", NameKind::Table);
    let injected = serde_json::json!({
        "view": "salaries", "table": a_table, "keyPrefix": "",
        "recordTypes": ["salary"],
        "projection": {"mode": "Append", "key": {"partitionKey": "P#{id}"}},
        "log": {"partitionKey": "pk", "sortKey": "sk", "recordTypeAttribute": "type"}
    })
    .to_string();
    common::create_yaml(
        &bob,
        &b,
        &format!(
            "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: salaries}}\nspec:\n  \
             eventLogRef: {{name: feed}}\n  recordTypes: [salary]\n  \
             projection: {{mode: Append, key: {{partitionKey: \"P#{{id}}\"}}}}\n  \
             projector: {{environment: {{PROJECTION: '{injected}'}}}}\n  \
             backfill: {{source: None}}\n  deletionPolicy: Delete\n"
        ),
    )
    .await
    .unwrap();
    let views: Api<MaterializedView> = Api::namespaced(bob.clone(), &b);
    // Either a projector function is deployed (checked below) or the view is refused naming the field.
    let outcome = common::eventually(
        Duration::from_secs(90),
        "bob's projector function or a refusal",
        || async {
            let status = views.get("salaries").await.ok()?.status?;
            if let Some(f) = status.resources.get("function/projector") {
                return Some(Ok(f.clone()));
            }
            let stalled = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Stalled" && c.status == kappa_operator::crd::ConditionStatus::True)?;
            Some(Err(stalled.message.clone()))
        },
    )
    .await;
    let function = match outcome {
        Ok(function) => function,
        Err(refused) => {
            assert!(
                refused.contains("spec.projector.environment.PROJECTION"),
                "{refused}"
            );
            drop(op);
            common::delete_namespace(&admin, &a).await;
            common::delete_namespace(&admin, &b).await;
            return;
        }
    };
    let own_table = views.get("salaries").await.unwrap().status.unwrap().table_name;
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let config = lambda
        .get_function_configuration()
        .function_name(&function)
        .send()
        .await
        .unwrap();
    let env = config
        .environment()
        .and_then(|e| e.variables())
        .cloned()
        .unwrap_or_default();
    let deployed: Value =
        serde_json::from_str(env.get("PROJECTION").map(String::as_str).unwrap_or("{}")).unwrap();
    let _ = views.delete("salaries", &DeleteParams::default()).await;
    drop(op);
    common::delete_namespace(&admin, &a).await;
    common::delete_namespace(&admin, &b).await;
    assert_ne!(
        deployed["table"].as_str(),
        Some(a_table.as_str()),
        "bob's deployed projector {function} writes to namespace a's views table (own table: {own_table:?})"
    );
}

/// Expected: the operator's documented IAM policy lets it do what it does for a view that brings its own
/// function (`spec.projector.code.functionArn`, which README's Multi-tenancy section says is the user's
/// when it carries no kappa tags): read its tags (GetFunction), let the log's topic invoke it
/// (AddPermission), map the log's stream to it (CreateEventSourceMapping). Fault: every Lambda statement
/// of charts/kappa-operator/docs/iam-policy.json is limited to `function:kappa-*` (AddPermission even to
/// functions tagged managed-by kappa-operator, which are always another owner's and refused): a user's
/// own function can never be used; the view is Stalled with AWS's AccessDenied.
#[test]
fn operator_policy_cannot_serve_a_users_own_function() {
    // The administrator lets users bring `payroll-*` functions (docs/iam-policy.md).
    let policy = chart_doc_for("iam-policy.json", "replace-with-your-named-tables", "payroll-*");
    let function = "arn:aws:lambda:us-east-1:123456789012:function:payroll-projector";
    let missing: Vec<&str> = ["lambda:GetFunction", "lambda:AddPermission", "lambda:GetPolicy"]
        .into_iter()
        .filter(|a| !allows(&policy, a, function))
        .collect();
    assert!(
        missing.is_empty(),
        "the operator's policy does not allow {missing:?} on {function}"
    );
}
