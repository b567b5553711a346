//! The release and chart tools (crane, promtool, actionlint, helm) for tests that need no cluster.
//!
//! A missing tool is built by `hack/tools.sh` (or, for helm, named with the command that builds it):
//! these tests never skip.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/kappa-operator");

/// `helm template` checks the chart's `kubeVersion` against the Kubernetes version it assumes when no
/// cluster is asked: render for the stack's version (hack/stack.sh KUBE_VERSION).
pub const KUBE_VERSION: &str = "1.35.4";

fn cache() -> PathBuf {
    match std::env::var_os("KAPPA_CACHE") {
        Some(dir) => dir.into(),
        None => {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(&std::env::var("HOME").expect("HOME")).join(".cache"));
            base.join("kappa-operator")
        }
    }
}

/// The path of one of hack/tools.sh's tools, building it if this machine has not yet.
pub fn tool(name: &str) -> PathBuf {
    let out = Command::new(format!("{REPO}/hack/tools.sh"))
        .args(["path", name])
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("hack/tools.sh path {name}: {e}"));
    assert!(
        out.status.success(),
        "`hack/tools.sh path {name}` could not build {name}; run `hack/tools.sh install` and read its error"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// helm, as `hack/stack.sh tools` builds it.
pub fn helm() -> PathBuf {
    let path = cache().join("path/helm");
    assert!(
        path.exists(),
        "{} is missing: run `hack/stack.sh tools` (builds helm from its Go module)",
        path.display()
    );
    path
}

/// Runs `program` with `args` (and `stdin`), returning its output whatever the exit status.
pub fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
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
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Like [`run`], failing the test on a non-zero exit; returns stdout.
pub fn run_ok(program: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = run(program, args, stdin);
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The rendered manifests as objects.
pub fn objects(manifests: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(manifests)
        .map(|doc| serde_json::Value::deserialize(doc).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of the chart into `ns` with `--set` values (clusterId is set).
pub fn render(sets: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "template",
        "kappa",
        CHART,
        "--namespace",
        "kappa-system",
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "clusterId=test",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    objects(&run_ok(&helm(), &args, None))
}
