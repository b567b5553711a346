//! Helpers for integration tests on the local stack (kube-apiserver + etcd + the AWS API server).
//!
//! Every test runs in a namespace of its own. When the stack's environment is missing, tests fail with
//! the command that starts it: they never skip.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};

pub mod events;
pub mod faults;
pub mod orders_counts;
pub mod points;
pub mod scores;

/// An EventLog `game-events` (record types `player` and `game`) fanning out through SNS, for views on the
/// Lambda runtime.
pub const GAME_EVENTS_SNS_LOG: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {name: game-events}
spec:
  recordTypes: [player, game]
  table: {sortKey: sk, orderingAttribute: seq}
  fanOut: {mode: Sns}
  deletionPolicy: Delete
"#;

pub const START_STACK: &str = "the local stack is not running: run `make stack-up && source .stack/env`, or run the tests with `make test`";

/// Reads a variable the stack's env file exports, or fails the test saying how to start the stack.
pub fn stack_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set; {START_STACK}"))
}

/// A client for the stack's API server, as admin.
pub async fn kube_client() -> Client {
    stack_var("KUBECONFIG");
    let client = Client::try_default()
        .await
        .unwrap_or_else(|e| panic!("kube client: {e}; {START_STACK}"));
    client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| panic!("kube-apiserver does not answer: {e}; {START_STACK}"));
    client
}

/// The AWS SDK configuration for the stack's AWS API server (through the standard AWS_ENDPOINT_URL).
pub async fn aws_config() -> aws_config::SdkConfig {
    stack_var("AWS_ENDPOINT_URL");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// Sends `bodies` to the queue at `queue_url` with `SendMessageBatch`es of up to 10 messages and 256 KiB,
/// eight calls at a time; fails the test on any failed entry.
pub async fn send_messages(sqs: &aws_sdk_sqs::Client, queue_url: &str, bodies: &[String]) {
    let mut batches: Vec<Vec<&String>> = vec![Vec::new()];
    let mut size = 0;
    for body in bodies {
        let last = batches.last_mut().unwrap();
        if last.len() == 10 || size + body.len() > 256 * 1024 {
            batches.push(Vec::new());
            size = 0;
        }
        batches.last_mut().unwrap().push(body);
        size += body.len();
    }
    for group in batches.chunks(8) {
        let calls = group.iter().map(|batch| {
            let entries = batch
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .message_body(b.as_str())
                        .build()
                        .unwrap()
                })
                .collect::<Vec<_>>();
            sqs.send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
        });
        for out in futures::future::join_all(calls).await {
            let out = out.expect("SendMessageBatch");
            assert!(out.failed().is_empty(), "{:?}", out.failed());
        }
    }
}

/// The usual start of a test on the cluster: an admin client, the CRDs installed, a fresh namespace.
pub async fn setup(test: &str) -> (Client, String) {
    let client = kube_client().await;
    install_crds(&client).await;
    let ns = namespace(&client, test).await;
    (client, ns)
}

/// A namespace of one test's own, named after the test with a random suffix.
pub async fn namespace(client: &Client, test: &str) -> String {
    let suffix: u32 = rand_suffix();
    let name = format!(
        "t-{}-{suffix:05}",
        test.replace('_', "-").chars().take(40).collect::<String>()
    );
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    (h.finish() % 100_000) as u32
}

/// Deletes a namespace (the controller manager finishes it once finalizers are gone).
pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// Installs (server-side applies) the operator's CRDs and waits until they are established.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kappa_operator::crd::all_crds() {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("kappa-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not established in 30s"))
        .unwrap();
    }
}

/// Applies a YAML manifest (one object) with kubectl semantics through kube's dynamic API, returning the
/// API server's error text on refusal.
pub async fn create_yaml(client: &Client, ns: &str, yaml: &str) -> Result<(), String> {
    let obj: kube::api::DynamicObject =
        serde_yaml::from_str(yaml).map_err(|e| format!("bad test YAML: {e}"))?;
    let tm = obj.types.clone().expect("test YAML has apiVersion and kind");
    let gvk = kube::api::GroupVersionKind::try_from(&tm).unwrap();
    let ar = kube::api::ApiResource::from_gvk(&gvk);
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(s.message),
        Err(e) => Err(e.to_string()),
    }
}

/// The note of the first Warning Event with `reason` in namespace `ns`, waiting up to `timeout`.
pub async fn warning_note(client: &Client, ns: &str, reason: &str, timeout: Duration) -> String {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(client.clone(), ns);
    eventually(timeout, &format!("a Warning {reason}"), || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items.into_iter().find_map(|e| {
            (e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning"))
                .then(|| e.note.unwrap_or_default())
        })
    })
    .await
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The operator binary the tests start: the one built with them, or `KAPPA_OPERATOR_BINARY` when set
/// (benches/operator_scale.rs measures a release build with a harness built for debug that way).
pub fn operator_binary() -> String {
    std::env::var("KAPPA_OPERATOR_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_kappa-operator").to_string())
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An operator process (the real binary), killed when dropped.
pub struct Operator {
    pub child: Child,
    pub http_port: u16,
    /// The push endpoint's port (`ws://127.0.0.1:<push_port>`).
    pub push_port: u16,
    pub identity: String,
    pub log_path: std::path::PathBuf,
}

impl Operator {
    /// Starts `kappa-operator run` watching only `ns`, with its leader Lease in `ns`.
    pub fn start(ns: &str, identity: &str, lease_seconds: u64) -> Operator {
        Operator::start_with_env(ns, identity, lease_seconds, &[])
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The body of GET /metrics, or None while the server is not up.
    pub async fn metrics(&self) -> Option<String> {
        http_get(self.http_port, "/metrics").await
    }

    /// `kappa_reconciles_total` summed over kinds.
    pub async fn reconciles(&self) -> u64 {
        let text = self.metrics().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("kappa_reconciles_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// `kappa_reconciles_total` of one kind (`MaterializedView`, `EventLog`).
    pub async fn reconciles_of(&self, kind: &str) -> u64 {
        let text = self.metrics().await.unwrap_or_default();
        let label = format!("kind=\"{kind}\"");
        text.lines()
            .filter(|l| l.starts_with("kappa_reconciles_total") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    /// Stops the operator; when the test is failing, prints the end of the operator's log first (what
    /// it did and why it waited is otherwise lost with the CI machine).
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- the last {} lines of operator {} ({}) ---\n{}\n--- end of the operator's log ---",
                tail.len(),
                self.identity,
                self.log_path.display(),
                tail.join("\n")
            );
        }
    }
}

/// A minimal HTTP/1.1 GET on loopback; None when nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Runs the stack's kubectl with the test's KUBECONFIG and returns stdout, failing on a non-zero exit.
pub fn kubectl(args: &[&str]) -> String {
    stack_var("KUBECONFIG");
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("kubectl: {e}; {START_STACK}"));
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Operator {
    /// Like [`Operator::start`], with extra environment for the process (e.g. a `KUBECONFIG` holding a
    /// ServiceAccount's token instead of the admin's certificate).
    pub fn start_with_env(ns: &str, identity: &str, lease_seconds: u64, env: &[(&str, &str)]) -> Operator {
        Operator::start_with_args(&[ns], identity, lease_seconds, &[], env)
    }

    /// Starts `kappa-operator run` watching `namespaces` (its Lease in the first), with extra arguments
    /// and environment.
    pub fn start_with_args(
        namespaces: &[&str],
        identity: &str,
        lease_seconds: u64,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        let ns = namespaces[0];
        let watched = namespaces.join(",");
        let dir = std::env::temp_dir().join("kappa-operator-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let log_path = dir.join(format!("{ns}-{identity}.log"));
        // `free_port` only finds a port free now: a test running beside this one may take it before the
        // operator binds it. Such a start is tried again on other ports.
        let mut attempt = 0;
        let (child, http_port, push_port) = loop {
            attempt += 1;
            let http_port = free_port();
            let push_port = free_port();
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new(operator_binary())
                .args(["run", "--cluster-id", "test", "--watch-namespaces", &watched])
                .args([
                    "--lease-namespace",
                    ns,
                    "--lease-seconds",
                    &lease_seconds.to_string(),
                ])
                .args([
                    "--identity",
                    identity,
                    "--http-addr",
                    &format!("127.0.0.1:{http_port}"),
                ])
                .args(["--push-addr", &format!("127.0.0.1:{push_port}")])
                .args(["--resync-seconds", "30"])
                .args(args)
                .env("RUST_LOG", "info,kappa_operator=debug")
                .env(
                    "KAPPA_LAMBDA_CODE",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/hack/lambda-bootstrap-standin.sh"),
                )
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start kappa-operator");
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let collided = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    break log.contains("Address already in use");
                }
                // Both ports bound (the push port right after the HTTP one): the start got past them.
                let bound = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
                if (bound(http_port) && bound(push_port)) || std::time::Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            if !collided || attempt == 5 {
                break (child, http_port, push_port);
            }
        };
        Operator {
            child,
            http_port,
            push_port,
            identity: identity.to_string(),
            log_path,
        }
    }
}

/// Runs a command from the stack's PATH (`helm`, `kubectl`, ...) with `stdin` as its input, returning
/// its output whatever the exit status; fails the test, saying how to start the stack, when it is missing.
pub fn run_tool(program: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    stack_var("KUBECONFIG");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}; {START_STACK}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Like [`run_tool`], failing the test on a non-zero exit; returns stdout.
pub fn run_tool_ok(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = run_tool(program, args, stdin);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The permissions boundary of the operator's roles (the chart's docs/boundary-policy.json), created in the
/// stack's IAM as `kappa-functions-boundary` if missing; returns its ARN.
pub async fn ensure_boundary_policy(iam: &aws_sdk_iam::Client) -> String {
    // Looked up first (a read), so tests counting mutating calls see none from here once it exists.
    let listed = iam
        .list_policies()
        .scope(aws_sdk_iam::types::PolicyScopeType::Local)
        .send()
        .await
        .expect("ListPolicies");
    if let Some(arn) = listed
        .policies()
        .iter()
        .find(|p| p.policy_name() == Some("kappa-functions-boundary"))
        .and_then(|p| p.arn())
    {
        return arn.to_string();
    }
    let document = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/kappa-operator/docs/boundary-policy.json"
    ))
    .unwrap();
    match iam
        .create_policy()
        .policy_name("kappa-functions-boundary")
        .policy_document(document)
        .send()
        .await
    {
        Ok(out) => out.policy.and_then(|p| p.arn).unwrap(),
        Err(e) => {
            let code = e.as_service_error().and_then(|s| {
                use aws_sdk_iam::error::ProvideErrorMetadata;
                s.code().map(str::to_string)
            });
            assert_eq!(
                code.as_deref(),
                Some("EntityAlreadyExists"),
                "CreatePolicy: {e:?}"
            );
            "arn:aws:iam::123456789012:policy/kappa-functions-boundary".to_string()
        }
    }
}

/// A new pk/sk table ([`create_pk_sk_table`]) named `<stem>-<nanoseconds>`; returns its name.
pub async fn fresh_pk_sk_table(ddb: &aws_sdk_dynamodb::Client, stem: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let table = format!("{stem}-{nanos}");
    create_pk_sk_table(ddb, &table).await;
    table
}

/// Creates an on-demand table keyed by the strings `pk` and `sk` (a log's or a views table's shape).
pub async fn create_pk_sk_table(ddb: &aws_sdk_dynamodb::Client, name: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let key = |n: &str, t| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    ddb.create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateTable {name}: {e:?}"));
}

/// Every item of `table`, page after page (a full scan: for checking a test's results).
pub async fn scan_all(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = ddb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Scan of {table}: {e}"));
        items.extend(page.items().iter().cloned());
        start = page.last_evaluated_key;
        if start.is_none() {
            return items;
        }
    }
}

/// Fails the test unless the local stack's Lambda functions run the binary under test: the harness execs
/// the binary `.stack/lambda-binary` names (hack/local_lambda.py; `make test` writes it).
pub fn assert_functions_run_this_binary() {
    let binary = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".stack/lambda-binary");
    assert_eq!(
        std::fs::read_to_string(&binary).unwrap_or_default().trim(),
        env!("CARGO_BIN_EXE_kappa-operator"),
        "the local stack's functions must run the binary under test: echo {} > {}",
        env!("CARGO_BIN_EXE_kappa-operator"),
        binary.display()
    );
}

/// An EventLog `orders` of record type `order` with sort key `sk`, its stream read in cluster.
pub const ORDERS_LOG: &str = "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {name: orders}\n\
    spec:\n  recordTypes: [order]\n  table: {sortKey: sk}\n  deletionPolicy: Delete\n";

/// A MaterializedView `name` of record type `order` on EventLog `log`, on the in-cluster runtime, with
/// `deletionPolicy: Delete`: `projection` is the YAML flow value of `spec.projection`, `extra` more lines
/// of `spec` (two spaces in, each ending in a newline; `""` for none).
pub fn in_cluster_order_view(log: &str, name: &str, projection: &str, extra: &str) -> String {
    format!(
        "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: {name}}}\nspec:\n  \
         eventLogRef: {{name: {log}}}\n  recordTypes: [order]\n  projector: {{runtime: InCluster}}\n  \
         projection: {projection}\n{extra}  deletionPolicy: Delete\n"
    )
}

/// An in-cluster `Count` view `name` of log `orders` (key `C#{id}`) without backfill: it reads the
/// log's stream from its oldest record.
pub fn orders_count_view(name: &str) -> String {
    in_cluster_order_view(
        "orders",
        name,
        "{mode: Count, key: {partitionKey: 'C#{id}'}}",
        "  backfill: {source: None}\n",
    )
}

/// Whether view `name` has its `Ready` condition true.
pub async fn view_ready(mvs: &Api<kappa_operator::crd::MaterializedView>, name: &str) -> bool {
    let Ok(v) = mvs.get(name).await else { return false };
    v.status
        .map(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.is_true()))
        .unwrap_or(false)
}

/// The last `lines` lines of the logs of the local stack's functions of namespace `ns`
/// (`.stack/logs/lambda-<function>.log`, hack/local_lambda.py), each headed by its file name: what a
/// Lambda-topology test's failure message shows, so a failure on CI says what the functions did.
pub fn function_logs(ns: &str, lines: usize) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".stack/logs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("lambda-") && n.contains(ns))
        })
        .collect();
    files.sort();
    let mut out = String::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        out.push_str(&format!("\n--- {}\n", f.display()));
        for line in &all[all.len().saturating_sub(lines)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The name of EventLog `name`'s table, once its stream exists. Waits up to 3 minutes: with several
/// tests at once on the single-process emulator, provisioning a log (table, stream, queues, topics,
/// functions, roles) has taken over a minute on CI. On a timeout the failure shows the log's last status.
pub async fn log_table(client: &kube::Client, ns: &str, name: &str) -> String {
    let logs: Api<kappa_operator::crd::EventLog> = Api::namespaced(client.clone(), ns);
    let last = std::sync::Mutex::new(None);
    let found = tokio::time::timeout(
        Duration::from_secs(180),
        eventually(
            Duration::from_secs(3600),
            "the EventLog's table and stream",
            || async {
                let status = logs.get(name).await.ok()?.status?;
                *last.lock().unwrap() = Some(status.clone());
                let t = status.table?;
                t.stream_arn?;
                Some(t.name)
            },
        ),
    )
    .await;
    found.unwrap_or_else(|_| {
        let status = serde_json::to_string_pretty(&*last.lock().unwrap()).unwrap_or_default();
        panic!("timed out after 180 s waiting for EventLog {ns}/{name}'s table and stream; its last status: {status}")
    })
}

/// Writes `items` to `table` with `BatchWriteItem`s of 25, eight at a time, sending unprocessed items
/// again.
pub async fn put_items(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    items: Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
) {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    use futures::StreamExt;
    let batches: Vec<Vec<_>> = items.chunks(25).map(<[_]>::to_vec).collect();
    futures::stream::iter(batches)
        .for_each_concurrent(8, |batch| async move {
            let mut requests: Vec<WriteRequest> = batch
                .into_iter()
                .map(|item| {
                    let put = PutRequest::builder().set_item(Some(item)).build().unwrap();
                    WriteRequest::builder().put_request(put).build()
                })
                .collect();
            while !requests.is_empty() {
                let out = ddb
                    .batch_write_item()
                    .request_items(table, requests)
                    .send()
                    .await
                    .expect("BatchWriteItem");
                requests = out
                    .unprocessed_items
                    .unwrap_or_default()
                    .remove(table)
                    .unwrap_or_default();
            }
        })
        .await;
}

/// Backfill checkpoints in memory, as the ConfigMap holds them.
#[derive(Clone, Default)]
pub struct MemoryCheckpoints(pub std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>);

impl kappa_operator::backfill::worker::FileCheckpoints for MemoryCheckpoints {
    async fn done(
        &self,
    ) -> Result<std::collections::BTreeSet<String>, kappa_operator::backfill::worker::CheckpointError> {
        Ok(self.0.lock().unwrap().clone())
    }
    async fn mark_done(
        &self,
        file: &str,
        _items: u64,
    ) -> Result<(), kappa_operator::backfill::worker::CheckpointError> {
        self.0.lock().unwrap().insert(file.to_string());
        Ok(())
    }
}

/// Applies the chart's user ClusterRoles (`kappa-editor`, `kappa-viewer`), as `helm install` would.
pub fn apply_user_cluster_roles() {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/kappa-operator");
    let rendered = run_tool_ok(
        "helm",
        &[
            "template",
            "kappa",
            chart,
            "--set",
            "clusterId=test",
            "--kube-version",
            "1.35.4",
            "--show-only",
            "templates/rbac.yaml",
        ],
        None,
    );
    let roles: Vec<String> = rendered
        .split("\n---")
        .filter(|doc| {
            doc.contains("kind: ClusterRole\n")
                && (doc.contains("name: kappa-editor") || doc.contains("name: kappa-viewer"))
        })
        .map(str::to_string)
        .collect();
    assert_eq!(roles.len(), 2, "the chart renders kappa-editor and kappa-viewer");
    run_tool_ok(
        "kubectl",
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&roles.join("\n---\n")),
    );
}

/// One HTTP/1.1 request without a body to the local Lambda harness (`KAPPA_LOCAL_EXECUTE_API`, its
/// `_connections` API: `PUT` a client connection, `DELETE` it, `GET .../posts`); the response body. Fails
/// the test on a status other than 2xx.
pub async fn harness_http(method: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let base = stack_var("KAPPA_LOCAL_EXECUTE_API");
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .unwrap_or_else(|e| panic!("the harness at {base}: {e}; {START_STACK}"));
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).to_string();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(
        head.split_whitespace()
            .nth(1)
            .is_some_and(|code| code.starts_with('2')),
        "{method} {path}: {head}"
    );
    body.to_string()
}

/// A WebSocket client `connection` of API `api_id` connects (the harness's connection, then `$connect`)
/// and subscribes to `view`: API Gateway invokes the connections function `connections_fn` for each route
/// with its WebSocket event shape. Fails the test when a route fails.
pub async fn connect_and_subscribe(
    lambda: &aws_sdk_lambda::Client,
    connections_fn: &str,
    api_id: &str,
    connection: &str,
    view: &str,
) {
    harness_http("PUT", &format!("/_connections/{api_id}/{connection}")).await;
    let subscribe = serde_json::json!({"action": "subscribe", "view": view}).to_string();
    for (route, event_type, body) in [
        ("$connect", "CONNECT", None),
        ("subscribe", "MESSAGE", Some(subscribe.as_str())),
    ] {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let event = serde_json::json!({
            "requestContext": {
                "routeKey": route, "eventType": event_type, "connectionId": connection,
                "connectedAt": now, "requestTimeEpoch": now, "apiId": api_id,
                "stage": "live", "domainName": format!("{api_id}.execute-api.us-east-1.amazonaws.com"),
            },
            "body": body, "isBase64Encoded": false,
        });
        let out = lambda
            .invoke()
            .function_name(connections_fn)
            .payload(aws_sdk_lambda::primitives::Blob::new(event.to_string()))
            .send()
            .await
            .unwrap();
        let answer =
            String::from_utf8_lossy(out.payload().map(|b| b.as_ref()).unwrap_or_default()).to_string();
        assert!(
            out.function_error().is_none() && answer.contains("200"),
            "{connection} {route}: {answer}"
        );
    }
}
