//! The #20 breaker's push case, kept as a regression: access to a namespace's views on the push endpoint
//! ends when RBAC no longer grants it. The open connection's next request is checked again (and every
//! `REAUTHORIZE_EVERY` while it only listens), so a revoked client is told and disconnected.

mod common;

use std::time::Duration;

use common::Operator;

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

fn token_of(ns: &str, sa: &str) -> String {
    common::kubectl(&["-n", ns, "create", "serviceaccount", sa]);
    common::kubectl(&["-n", ns, "create", "token", sa])
        .trim()
        .to_string()
}

#[tokio::test]
async fn a_push_connection_ends_when_its_access_is_revoked() {
    let (admin, a) = common::setup("push-revoke-a").await;
    let b = common::namespace(&admin, "push-revoke-b").await;
    common::apply_user_cluster_roles();
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
    // The old connection: its next request is checked again, and the client is told and disconnected.
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
    assert!(answer.contains("revoked"), "the client is told why: {answer}");
}
