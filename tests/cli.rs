//! The binary's offline subcommands, as users run them.

use std::process::Command;

fn kappa(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kappa-operator"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run kappa-operator")
}

#[test]
fn cost_prints_a_table_per_event_log_of_the_examples() {
    let out = kappa(&["cost", "-f", "examples/"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("EventLog default/game-events with 6 view(s): $"),
        "{text}"
    );
    for line in [
        "SQS send requests",
        "writer Lambda",
        "log stream (in-cluster reader)",
        "view player-scores",
        // examples/reactive/live-games.yaml: a dedicated views table with Streams.
        "stream",
        // The examples' views run in the cluster: no router, idle topics.
        "the operator runs no router",
        "Total",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

#[test]
fn cost_without_manifests_fails_with_the_fix() {
    let out = kappa(&["cost", "-f", "crds/"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no EventLog") && err.contains("-f"), "{err}");
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        &["--help"][..],
        &["run", "--help"],
        &["crds", "--help"],
        &["cost", "--help"],
        &["replay", "--help"],
        &["status", "--help"],
    ] {
        let out = kappa(sub);
        assert!(out.status.success(), "{sub:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"), "{sub:?}");
    }
}

#[test]
fn plan_prints_the_resources_backfills_and_topology_of_the_examples() {
    let out = kappa(&[
        "plan",
        "-f",
        "examples/",
        "--cluster-id",
        "prod",
        "--log-items",
        "1000000",
        "--log-item-kb",
        "2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("EventLog default/game-events with 6 view(s)"),
        "{text}"
    );
    for line in [
        "AWS resources to create:",
        "+ DynamoDB table   kappa-prod-default-game-events-log-",
        "+ SQS queue        kappa-prod-default-game-events-ingest-",
        // One shared views table for the examples' shared views, listed once.
        "shared views table \"views\"",
        "Cost: $",
        // 2 GB of log exported at $0.10 per GB.
        "player-scores: exports 1000000 items (2.05 GB) of the log to S3 ($0.2048)",
        "live-games: no backfill",
        "```mermaid\nflowchart LR\n",
        "t0[(views table views)]",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    // Listed once per log: examples/lambda's shop-orders has a shared views table of its own.
    let (game, shop) = text
        .split_once("EventLog default/shop-orders")
        .expect("examples/lambda's log planned too");
    assert_eq!(game.matches("shared views table \"views\"").count(), 1, "{text}");
    assert_eq!(shop.matches("shared views table \"views\"").count(), 1, "{text}");
}

#[test]
fn plan_without_manifests_fails_with_the_fix() {
    let out = kappa(&["plan", "-f", "crds/"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no EventLog") && err.contains("-f"), "{err}");
}

#[test]
fn plan_refuses_a_log_item_size_that_is_not_a_number() {
    for kb in ["NaN", "inf"] {
        let out = kappa(&[
            "plan",
            "-f",
            "examples/",
            "--log-items",
            "10",
            "--log-item-kb",
            kb,
        ]);
        assert_eq!(out.status.code(), Some(2), "{kb}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("--log-item-kb"), "{err}");
    }
}

/// Found by a breaker (#19): names the API server refuses were planned and costed (exit 0); now refused
/// naming the field, as `kubectl apply` would refuse them.
#[test]
fn plan_and_cost_refuse_names_the_api_server_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/game/game-events.yaml"
    ))
    .unwrap();
    for bad in ["spiel-ereignisse-\u{fc}\u{1f600}", "Game-Events", "game_events"] {
        let renamed = log.replace("name: game-events", &format!("name: {bad:?}"));
        assert_ne!(renamed, log, "the example's name changed");
        let file = dir.path().join("log.yaml");
        std::fs::write(&file, renamed).unwrap();
        for command in ["plan", "cost"] {
            let out = kappa(&[command, "-f", file.to_str().unwrap()]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command} {bad}: {stderr}");
            assert!(stderr.contains("metadata.name"), "{command} {bad}: {stderr}");
            assert!(
                stderr.starts_with(&format!("kappa-operator {command}: ")),
                "{stderr}"
            );
        }
    }
    // Run as the kubectl plugin, its messages say so.
    let plugin = dir.path().join("kubectl-kappa");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kappa-operator"), &plugin).unwrap();
    let out = Command::new(&plugin)
        .args(["plan", "-f", dir.path().join("log.yaml").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("kubectl kappa plan: "), "{stderr}");
}

/// `kubectl kappa` takes kubectl's own --kubeconfig and --context (kubectl hands a plugin its arguments
/// as they are); an unknown context or a missing file is named, with exit 2.
#[test]
fn the_cluster_commands_take_kubectls_kubeconfig_and_context_flags() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: here\nclusters:\n- name: c\n  cluster: {server: \
         'https://127.0.0.1:1'}\ncontexts:\n- name: here\n  context: {cluster: c, user: u, namespace: shop}\n\
         users:\n- name: u\n  user: {token: t}\n",
    )
    .unwrap();
    let path = kubeconfig.to_str().unwrap();
    let out = kappa(&["status", "v", "--kubeconfig", path, "--context", "nope"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--context \"nope\""), "{stderr}");
    let out = kappa(&["replay", "v", "--kubeconfig", "/nonexistent/config"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--kubeconfig /nonexistent/config"), "{stderr}");
    // The context is found: the command goes on to the cluster (unreachable here), not a flag error.
    let out = kappa(&["status", "v", "--kubeconfig", path, "--context", "here"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("unexpected argument"), "{stderr}");
    assert!(
        stderr.contains("shop/v"),
        "the context's namespace is used: {stderr}"
    );
}
