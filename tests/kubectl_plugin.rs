//! `kubectl kappa`: the binary run by the stack's kubectl as the plugin `kubectl-kappa` found on the PATH,
//! against the stack's kube-apiserver and an operator: `status`, and `replay --follow` rebuilding a view
//! that lost items from the log until it is Live and exact again.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use aws_sdk_dynamodb::types::AttributeValue;
use common::Operator;
use common::points::{converged, view_yaml};
use common::scores::{event, export_bucket, log_yaml, scores_table, write_events};
use kappa_operator::crd::MaterializedView;
use kube::Api;

/// A directory holding `kubectl-kappa`, a link to the binary under test (as `make install-plugin` makes).
fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_kappa-operator"),
        dir.path().join("kubectl-kappa"),
    )
    .unwrap();
    dir
}

/// `kubectl <args>` with the plugin's directory first on the PATH; fails the test saying how to install
/// kubectl when it is missing.
fn kubectl(plugins: &tempfile::TempDir, args: &[&str]) -> Output {
    common::stack_var("KUBECONFIG");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = vec![plugins.path().to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    Command::new("kubectl")
        .args(args)
        .env("PATH", std::env::join_paths(dirs).unwrap())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubectl: {e}; install it with `hack/stack.sh tools` (or `make tools`) and `source .stack/env`"
            )
        })
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn kubectl_kappa_replay_follows_the_rebuild_of_a_view_that_lost_items_until_live() {
    let plugins = plugin_dir();
    // kubectl finds the plugin.
    let out = kubectl(&plugins, &["plugin", "list"]);
    assert!(text(&out).0.contains("kubectl-kappa"), "{:?}", text(&out));
    let out = kubectl(&plugins, &["kappa", "--help"]);
    let (help, _) = text(&out);
    assert!(
        out.status.success() && help.contains("Usage: kubectl kappa"),
        "{help}"
    );
    for command in ["cost", "plan", "watch", "replay", "redrive", "status"] {
        assert!(
            help.contains(&format!("  {command} ")),
            "{command} missing from:\n{help}"
        );
    }
    assert!(
        !help.contains("  run "),
        "the operator's own commands are hidden:\n{help}"
    );

    let (client, ns) = common::setup("kubectl-plugin").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (_s3, bucket) = export_bucket(&aws, &ns).await;
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(&ns, "solo", 5);
    common::create_yaml(&client, &ns, &log_yaml(&bucket))
        .await
        .unwrap();
    let log_table = scores_table(&client, &ns).await;
    let events: Vec<_> = (0..1_500).map(event).collect();
    write_events(&ddb, &log_table, events.clone()).await;

    // Before the view exists, and for a view that does not exist: refused with exit 2.
    let out = kubectl(&plugins, &["kappa", "replay", "points", "-n", &ns]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(text(&out).1.contains("not found"), "{:?}", text(&out));

    common::create_yaml(&client, &ns, &view_yaml("PLAYER#{playerId}"))
        .await
        .unwrap();
    // Followed from the CLI until Live.
    let out = kubectl(
        &plugins,
        &[
            "kappa",
            "status",
            "points",
            "-n",
            &ns,
            "--watch",
            "--timeout",
            "240",
        ],
    );
    assert!(out.status.success(), "{:?}\n{}", text(&out), op.log());
    assert!(
        text(&out).0.contains("points: Live, backfill attempt 1"),
        "{:?}",
        text(&out)
    );
    let status = converged(&mvs, &ddb, &events, "PLAYER#", "Live and exact").await;
    let table = status.table_name.clone().unwrap();

    // The view loses an item (deleted by hand).
    let keys: Vec<String> = ddb
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap()
        .key_schema()
        .iter()
        .map(|k| k.attribute_name().to_string())
        .collect();
    let lost = common::scan_all(&ddb, &table)
        .await
        .into_iter()
        .find(|i| i.get("pk") == Some(&AttributeValue::S("PLAYER#p03".into())))
        .expect("the item of player p03");
    ddb.delete_item()
        .table_name(&table)
        .set_key(Some(keys.iter().map(|k| (k.clone(), lost[k].clone())).collect()))
        .send()
        .await
        .unwrap();
    let held = common::points::actual(&ddb, &table, "PLAYER#").await;
    assert!(
        !held.contains_key("p03") && held.len() + 1 == common::points::expected(&events).len(),
        "{held:?}"
    );
    let out = kubectl(&plugins, &["kappa", "status", "points", "-n", &ns]);
    assert!(
        text(&out).0.starts_with("points: Live, backfill attempt 1"),
        "{:?}",
        text(&out)
    );

    // Replayed and followed: a new attempt, progress lines (stderr is not a terminal), Live at the end.
    let out = kubectl(
        &plugins,
        &[
            "kappa",
            "replay",
            "points",
            "-n",
            &ns,
            "--follow",
            "--timeout",
            "240",
        ],
    );
    let (stdout, stderr) = text(&out);
    eprintln!("kubectl kappa replay --follow:\n{stdout}{stderr}");
    assert!(out.status.success(), "{stdout}\n{stderr}\n{}", op.log());
    assert!(
        stdout.contains("points: replaying the log as backfill attempt 2"),
        "{stdout}"
    );
    assert!(
        stderr.contains("points: Backfilling, backfill attempt 2"),
        "{stderr}"
    );
    assert!(
        stdout.trim_end().ends_with("finished") && stdout.contains("points: Live, backfill attempt 2"),
        "{stdout}"
    );
    let status = converged(&mvs, &ddb, &events, "PLAYER#", "Live and exact after the replay").await;
    let b = status.backfill.unwrap();
    assert_eq!(b.attempt, 2);
    assert!(b.reason.unwrap().starts_with("replay requested"));

    drop(op);
    common::delete_namespace(&client, &ns).await;
}
