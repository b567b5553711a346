//! Tenancy on the local stack: two namespaces, and a user (`bob`) who may only manage kappa objects in one
//! of them, by a RoleBinding to the chart's `kappa-editor` ClusterRole. Every way bob could reach the
//! other namespace's AWS resources is refused, visibly to bob (status and an Event), and nothing of the
//! other namespace changes:
//! - naming its log table in `spec.table.name` (with `deletionPolicy: Delete`), or adopting it;
//! - naming a table in the operator's own name space (`kappa-...`, another log's derived name);
//! - adopting an existing table the administrator did not allow for bob's namespace;
//! - making another namespace's function the projector of one's own view (`functionArn`);
//! - a re-created object of the same name claiming what an earlier one (another uid) left behind;
//! - watching its views on the push endpoint.
//!
//! Also: every role the operator creates carries the permissions boundary, read back from IAM.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Operator;
use k8s_openapi::api::events::v1::Event;
use kappa_operator::crd::EventLog;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};

const BOB: &str = "bob";

/// Binds `subject` (`User:bob` or `ServiceAccount:<ns>:<name>`) to the chart's `role` in `ns`.
fn bind(ns: &str, role: &str, subject: &str) {
    let mut args = vec!["-n", ns, "create", "rolebinding"];
    let name = format!("{role}-{}", subject.replace(':', "-"));
    args.push(&name);
    let role_arg = format!("--clusterrole={role}");
    args.push(&role_arg);
    let subject_arg = match subject.split_once(':') {
        Some(("User", user)) => format!("--user={user}"),
        Some(("ServiceAccount", sa)) => format!("--serviceaccount={sa}"),
        _ => panic!("subject {subject}"),
    };
    args.push(&subject_arg);
    common::kubectl(&args);
}

/// A client acting as `user` (impersonated by the admin client).
async fn client_as(user: &str) -> Client {
    let mut config = kube::Config::infer().await.expect("kubeconfig");
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).expect("impersonating client")
}

/// Two namespaces (a for the victim, b for bob), bob an editor of b only.
async fn two_tenants(test: &str) -> (Client, String, String) {
    let (admin, a) = common::setup(&format!("{test}-a")).await;
    let b = common::namespace(&admin, &format!("{test}-b")).await;
    common::apply_user_cluster_roles();
    bind(&b, "kappa-editor", &format!("User:{BOB}"));
    (admin, a, b)
}

fn log_yaml(name: &str, table: &str, policy: &str) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {{name: {name}}}
spec:
  recordTypes: [salary]
  table: {table}
  fanOut: {{mode: Direct}}
  deletionPolicy: {policy}
"#
    )
}

/// The log's Stalled condition once it has `reason`; returns its message.
async fn wait_stalled(api: &Api<EventLog>, name: &str, reason: &str) -> String {
    common::eventually(
        Duration::from_secs(40),
        &format!("EventLog {name} Stalled with reason {reason}"),
        || async {
            let l = api.get(name).await.ok()?;
            let s = l.status?;
            let c = s
                .conditions
                .iter()
                .find(|c| c.type_ == "Stalled" && c.status == kappa_operator::crd::ConditionStatus::True)?;
            (c.reason == reason).then(|| c.message.clone())
        },
    )
    .await
}

async fn wait_ready(api: &Api<EventLog>, name: &str) -> EventLog {
    common::eventually(
        Duration::from_secs(40),
        &format!("EventLog {name} Ready"),
        || async {
            let l = api.get(name).await.ok()?;
            let s = l.status.as_ref()?;
            (s.phase == Some(kappa_operator::crd::EventLogPhase::Ready)
                && s.observed_generation == l.metadata.generation)
                .then_some(l)
        },
    )
    .await
}

/// The Warning Event with `reason` on the object `name`, as `client` (the user who tried) sees it.
async fn event_seen_by(client: &Client, ns: &str, name: &str, reason: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    common::eventually(
        Duration::from_secs(20),
        &format!("an Event {reason} on {name} visible to its user"),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find_map(|e| {
                (e.regarding.as_ref()?.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason))
                    .then(|| e.note.unwrap_or_default())
            })
        },
    )
    .await
}

async fn table_tags(ddb: &aws_sdk_dynamodb::Client, table: &str) -> BTreeMap<String, String> {
    let arn = ddb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap()
        .table_arn
        .unwrap();
    ddb.list_tags_of_resource()
        .resource_arn(arn)
        .send()
        .await
        .unwrap()
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

async fn deletion_protected(ddb: &aws_sdk_dynamodb::Client, table: &str) -> bool {
    ddb.describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap()
        .deletion_protection_enabled
        .unwrap_or(false)
}

async fn item_count(ddb: &aws_sdk_dynamodb::Client, table: &str) -> usize {
    common::scan_all(ddb, table).await.len()
}

#[tokio::test]
async fn another_namespace_cannot_take_over_adopt_or_delete_a_log_table() {
    let (admin, a, b) = two_tenants("tenancy-table").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let iam = aws_sdk_iam::Client::new(&aws);
    let boundary = common::ensure_boundary_policy(&iam).await;
    let adoptable = format!("{b}=legacy-.*");
    let op = Operator::start_with_args(&[&a, &b], "solo", 5, &["--adoptable-tables", &adoptable], &[]);
    let bob = client_as(BOB).await;
    let a_logs: Api<EventLog> = Api::namespaced(admin.clone(), &a);
    let b_logs: Api<EventLog> = Api::namespaced(bob.clone(), &b);

    // Tenant a: a log with a table name of its own choosing, Retain, and an ingest queue (a writer role).
    let victim = format!("payroll-{a}");
    let payroll = log_yaml(
        "payroll",
        &format!("{{name: {victim}, sortKey: sk}}\n  ingest: {{queueType: Standard}}"),
        "Retain",
    );
    common::create_yaml(&admin, &a, &payroll).await.unwrap();
    let ready = wait_ready(&a_logs, "payroll").await;
    ddb.put_item()
        .table_name(&victim)
        .item("pk", aws_sdk_dynamodb::types::AttributeValue::S("emp-1".into()))
        .item("sk", aws_sdk_dynamodb::types::AttributeValue::S("0001".into()))
        .item(
            "type",
            aws_sdk_dynamodb::types::AttributeValue::S("salary".into()),
        )
        .send()
        .await
        .unwrap();
    let tags_before = table_tags(&ddb, &victim).await;
    let payroll_uid = ready.metadata.uid.clone().unwrap();
    assert_eq!(tags_before["kappa.dev/uid"], payroll_uid);
    assert!(deletion_protected(&ddb, &victim).await);

    // Every role the operator created carries the permissions boundary.
    let writer_role = ready.status.as_ref().unwrap().resources["role/writer"].clone();
    let role_name = writer_role.rsplit('/').next().unwrap();
    let role = iam
        .get_role()
        .role_name(role_name)
        .send()
        .await
        .unwrap()
        .role
        .unwrap();
    assert_eq!(
        role.permissions_boundary
            .as_ref()
            .and_then(|b| b.permissions_boundary_arn()),
        Some(boundary.as_str()),
        "the writer role's permissions boundary"
    );

    // Bob may not even create objects in a.
    let denied = common::create_yaml(&bob, &a, &log_yaml("mine", "{}", "Delete")).await;
    assert!(
        denied.as_ref().is_err_and(|e| e.contains("forbidden")),
        "{denied:?}"
    );

    // 1. Naming a's table, with deletionPolicy Delete: refused, untouched, visible to bob.
    let takeover = log_yaml("mine", &format!("{{name: {victim}, sortKey: sk}}"), "Delete");
    common::create_yaml(&bob, &b, &takeover).await.unwrap();
    let message = wait_stalled(&b_logs, "mine", "OwnedByAnother").await;
    assert!(
        message.contains(&format!("EventLog {a}/payroll")) && message.contains("spec.table.name"),
        "{message}"
    );
    let note = event_seen_by(&bob, &b, "mine", "OwnedByAnother").await;
    assert!(note.contains(&victim), "{note}");

    // 2. Adopting it: refused too (it carries a's tags, whatever the adoption rules say).
    let adopt = log_yaml(
        "mine-adopted",
        &format!("{{name: {victim}, sortKey: sk, adoptExisting: true}}"),
        "Delete",
    );
    common::create_yaml(&bob, &b, &adopt).await.unwrap();
    wait_stalled(&b_logs, "mine-adopted", "OwnedByAnother").await;

    // 3. Another log's derived name (the operator's name space): refused before any AWS call.
    let derived = kappa_operator::plan::names::resource_name(
        "test",
        &a,
        "ledger",
        "log",
        kappa_operator::plan::names::NameKind::Table,
    );
    let squat = log_yaml("squat", &format!("{{name: {derived}, sortKey: sk}}"), "Delete");
    common::create_yaml(&bob, &b, &squat).await.unwrap();
    let message = wait_stalled(&b_logs, "squat", "InvalidSpec").await;
    assert!(message.contains("reserved"), "{message}");
    assert!(
        ddb.describe_table().table_name(&derived).send().await.is_err(),
        "no table was created under a's future name"
    );

    // 4. A view of bob's whose own projector is a's function: never subscribed or given permissions.
    let a_writer = ready.status.as_ref().unwrap().resources["function/writer"].clone();
    common::create_yaml(
        &bob,
        &b,
        &log_yaml("feed", "{sortKey: sk}", "Delete").replace("Direct", "Sns"),
    )
    .await
    .unwrap();
    wait_ready(&b_logs, "feed").await;
    let hijack = format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {{name: hijack}}
spec:
  eventLogRef: {{name: feed}}
  recordTypes: [salary]
  projector:
    code: {{functionArn: "{a_writer}"}}
  store: {{table: Dedicated}}
  backfill: {{source: None}}
  deletionPolicy: Delete
"#
    );
    common::create_yaml(&bob, &b, &hijack).await.unwrap();
    let views: Api<kappa_operator::crd::MaterializedView> = Api::namespaced(bob.clone(), &b);
    let message = common::eventually(
        Duration::from_secs(40),
        "hijack Stalled OwnedByAnother",
        || async {
            let s = views.get("hijack").await.ok()?.status?;
            let c = s.conditions.iter().find(|c| c.type_ == "Stalled")?;
            (c.reason == "OwnedByAnother").then(|| c.message.clone())
        },
    )
    .await;
    assert!(message.contains(&format!("EventLog {a}/payroll")), "{message}");
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let policy = lambda.get_policy().function_name(&a_writer).send().await;
    assert!(
        policy
            .as_ref()
            .map_or(true, |p| !p.policy().unwrap_or_default().contains("sns")),
        "a's writer got an SNS invoke permission: {policy:?}"
    );
    event_seen_by(&bob, &b, "hijack", "OwnedByAnother").await;
    views.delete("hijack", &DeleteParams::default()).await.unwrap();

    // Deleting bob's logs deletes nothing of a's.
    for name in ["mine", "mine-adopted", "squat", "feed"] {
        b_logs.delete(name, &DeleteParams::default()).await.unwrap();
    }
    common::eventually(Duration::from_secs(30), "bob's logs gone", || async {
        b_logs
            .list(&ListParams::default())
            .await
            .ok()
            .filter(|l| l.items.is_empty())
    })
    .await;
    assert_eq!(
        table_tags(&ddb, &victim).await,
        tags_before,
        "a's table tags changed"
    );
    assert!(
        deletion_protected(&ddb, &victim).await,
        "a's deletion protection changed"
    );
    assert_eq!(item_count(&ddb, &victim).await, 1, "a's records");
    assert_eq!(
        wait_ready(&a_logs, "payroll").await.metadata.uid.as_deref(),
        Some(payroll_uid.as_str())
    );

    // 5. Adoption is the administrator's decision: only untagged tables, only where the rules allow.
    let legacy = format!("legacy-{b}");
    let elsewhere = format!("other-{b}");
    common::create_pk_sk_table(&ddb, &legacy).await;
    common::create_pk_sk_table(&ddb, &elsewhere).await;
    let not_allowed = log_yaml(
        "other",
        &format!("{{name: {elsewhere}, sortKey: sk, partitionKey: pk, adoptExisting: true}}"),
        "Delete",
    );
    common::create_yaml(&bob, &b, &not_allowed).await.unwrap();
    let message = wait_stalled(&b_logs, "other", "AdoptionRefused").await;
    assert!(message.contains("--adoptable-tables"), "{message}");
    let without_adopt = log_yaml("implicit", &format!("{{name: {legacy}, sortKey: sk}}"), "Delete");
    common::create_yaml(&bob, &b, &without_adopt).await.unwrap();
    let message = wait_stalled(&b_logs, "implicit", "AdoptionRefused").await;
    assert!(message.contains("adoptExisting"), "{message}");
    let allowed = log_yaml(
        "legacy",
        &format!("{{name: {legacy}, sortKey: sk, adoptExisting: true}}"),
        "Delete",
    );
    common::create_yaml(&bob, &b, &allowed).await.unwrap();
    let adopted = wait_ready(&b_logs, "legacy").await;
    let tags = table_tags(&ddb, &legacy).await;
    assert_eq!(
        tags.get("kappa.dev/adopted-by"),
        Some(&format!(
            "test/{b}/EventLog/legacy/{}",
            adopted.metadata.uid.unwrap()
        ))
    );
    assert!(
        !tags.contains_key("kappa.dev/namespace"),
        "an adopted table is not taken over"
    );
    // a's namespace has no rule, and the table is b's adoption now.
    common::create_yaml(
        &admin,
        &a,
        &log_yaml(
            "grab",
            &format!("{{name: {legacy}, sortKey: sk, adoptExisting: true}}"),
            "Retain",
        ),
    )
    .await
    .unwrap();
    let message = wait_stalled(&a_logs, "grab", "OwnedByAnother").await;
    assert!(
        message.contains(&format!("adopted by EventLog {b}/legacy")),
        "{message}"
    );
    // Deleting the adopting log (Delete policy) keeps the table and releases it.
    b_logs.delete("legacy", &DeleteParams::default()).await.unwrap();
    common::eventually(Duration::from_secs(30), "the adopted table released", || async {
        let tags = table_tags(&ddb, &legacy).await;
        (!tags.contains_key("kappa.dev/adopted-by")).then_some(())
    })
    .await;

    // 6. A re-created object of the same name (a namespace handed to someone else, say) is another owner.
    a_logs.delete("payroll", &DeleteParams::default()).await.unwrap();
    common::eventually(Duration::from_secs(30), "payroll deleted", || async {
        a_logs
            .get_opt("payroll")
            .await
            .ok()
            .filter(Option::is_none)
            .map(|_| ())
    })
    .await;
    common::create_yaml(&admin, &a, &payroll).await.unwrap();
    let message = wait_stalled(&a_logs, "payroll", "OwnedByAnother").await;
    assert!(
        message.contains(&payroll_uid),
        "names the earlier owner's uid: {message}"
    );
    assert_eq!(item_count(&ddb, &victim).await, 1, "the retained log is intact");
    assert_eq!(table_tags(&ddb, &victim).await, tags_before);

    drop(op);
    common::delete_namespace(&admin, &a).await;
    common::delete_namespace(&admin, &b).await;
}

/// A ServiceAccount token of `sa` in `ns` (the TokenRequest API).
fn token_of(ns: &str, sa: &str) -> String {
    common::kubectl(&["-n", ns, "create", "serviceaccount", sa]);
    common::kubectl(&["-n", ns, "create", "token", sa])
        .trim()
        .to_string()
}

#[tokio::test]
async fn the_push_endpoint_lets_a_client_watch_only_the_namespaces_rbac_allows() {
    let (admin, a, b) = two_tenants("tenancy-push").await;
    bind(&b, "kappa-viewer", &format!("ServiceAccount:{b}:reader"));
    let token = token_of(&b, "reader");
    let op = Operator::start_with_args(&[&a, &b], "solo", 5, &[], &[]);
    let base = format!("ws://127.0.0.1:{}", op.push_port);
    use kappa_operator::push::watch::WatchClient;
    let status_of = |r: Result<WatchClient, kappa_operator::push::watch::WatchError>| match r {
        Ok(_) => "connected".to_string(),
        Err(e) => e.to_string(),
    };
    // Its own namespace: the upgrade is accepted.
    let own = common::eventually(Duration::from_secs(20), "the push endpoint up", || async {
        let r = WatchClient::connect_with_token(&base, &b, Some(&token)).await;
        let s = status_of(r);
        (!s.contains("Connection refused")).then_some(s)
    })
    .await;
    assert_eq!(own, "connected");
    // The other namespace: 403; no token or a forged one: 401.
    let other = status_of(WatchClient::connect_with_token(&base, &a, Some(&token)).await);
    assert!(other.contains("403"), "{other}");
    let none = status_of(WatchClient::connect(&base, &b).await);
    assert!(none.contains("401"), "{none}");
    let forged = status_of(WatchClient::connect_with_token(&base, &b, Some("not-a-token")).await);
    assert!(forged.contains("401"), "{forged}");

    // `kappa-operator watch` presents the kubeconfig's token.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("reader.kubeconfig");
    std::fs::copy(common::stack_var("KUBECONFIG"), &kubeconfig).unwrap();
    let kc = kubeconfig.to_str().unwrap();
    let token_arg = format!("--token={token}");
    common::kubectl(&[
        "--kubeconfig",
        kc,
        "config",
        "set-credentials",
        "reader",
        &token_arg,
    ]);
    common::kubectl(&[
        "--kubeconfig",
        kc,
        "config",
        "set-context",
        "--current",
        "--user=reader",
    ]);
    let watch = |ns: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kappa-operator"))
            .args(["watch", "players", "-n", ns, "--url", &base, "--timeout", "5"])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KAPPA_PUSH_TOKEN_FILE")
            .output()
            .unwrap()
    };
    let refused = watch(&a);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("403"), "{stderr}");
    let allowed = watch(&b);
    let stderr = String::from_utf8_lossy(&allowed.stderr);
    assert!(
        !stderr.contains("403") && !stderr.contains("401"),
        "authorized in its own namespace (the view does not exist, which is another error): {stderr}"
    );

    drop(op);
    common::delete_namespace(&admin, &a).await;
    common::delete_namespace(&admin, &b).await;
}
