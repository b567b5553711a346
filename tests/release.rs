//! What a release is made of agrees: one version for the binary, the chart and the CHANGELOG (the CRDs
//! are attached under it and the chart's copy is the generated one, tests/chart.rs); the release workflow
//! lints clean with actionlint (its scripts with shellcheck); the Containerfile describes the image
//! hack/image.sh builds.

mod tooling;

use std::path::Path;

use tooling::{REPO, run, tool};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{REPO}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_binary_the_chart_and_the_changelog_share_one_version() {
    let chart: serde_yaml::Value = serde_yaml::from_str(&read("charts/kappa-operator/Chart.yaml")).unwrap();
    assert_eq!(chart["version"].as_str(), Some(VERSION), "Chart.yaml version");
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(VERSION),
        "Chart.yaml appVersion"
    );

    let out = run(
        Path::new(env!("CARGO_BIN_EXE_kappa-operator")),
        &["--version"],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("kappa-operator {VERSION}")
    );

    // The newest released section of the CHANGELOG is this version.
    let changelog = read("CHANGELOG.md");
    let released = changelog
        .lines()
        .filter_map(|l| l.strip_prefix("## ["))
        .filter_map(|l| l.split_once(']').map(|(v, _)| v))
        .find(|v| *v != "Unreleased");
    assert_eq!(released, Some(VERSION), "CHANGELOG.md's newest release");
}

#[test]
fn the_release_workflow_lints_clean() {
    let actionlint = tool("actionlint");
    // actionlint checks the `run:` scripts with shellcheck when it is on PATH: make sure it is.
    tool("shellcheck");
    let workflows = format!("{REPO}/.github/workflows");
    let files: Vec<String> = std::fs::read_dir(&workflows)
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_string())
        .filter(|p| p.ends_with(".yml") || p.ends_with(".yaml"))
        .collect();
    assert!(files.iter().any(|f| f.ends_with("release.yml")), "{files:?}");
    let mut args = vec!["-no-color"];
    args.extend(files.iter().map(String::as_str));
    let out = run(&actionlint, &args, None);
    assert!(
        out.status.success(),
        "actionlint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let workflow = read(".github/workflows/release.yml");
    for step in [
        "hack/image.sh --arch",
        "--include-ignored",
        "index append",
        "helm\" package",
        "crds.yaml",
        "ubuntu-24.04-arm",
        "kappa-operator-cli-linux-",
        "ln -sf kappa-operator dist/cli/kubectl-kappa",
    ] {
        assert!(workflow.contains(step), "the release workflow lost `{step}`");
    }
    // A chart is pushed only once the image it runs is published, and every push is under lower-cased
    // names (ghcr refuses the upper-case owners GitHub allows).
    let parsed: serde_json::Value = serde_yaml::from_str(&workflow).unwrap();
    let needs = &parsed["jobs"]["chart"]["needs"];
    assert!(
        needs
            .as_array()
            .is_some_and(|n| n.iter().any(|j| j == "manifest")),
        "the chart job must wait for the image: needs {needs}"
    );
    for push in [
        "KAPPA_IMAGE_NAME=${IMAGE,,}",
        "\"${IMAGE,,}:$VERSION-$ARCH\"",
        "image=${IMAGE,,}",
        "\"${CHARTS,,}\"",
    ] {
        assert!(workflow.contains(push), "the release workflow lost `{push}`");
    }
}

#[test]
fn the_containerfile_describes_the_image_hack_image_sh_builds() {
    let containerfile = read("Containerfile");
    let script = read("hack/image.sh");
    // The same binary build...
    assert!(containerfile.contains("unknown-linux-gnu.2.34"));
    assert!(script.contains("GLIBC=2.34") && script.contains("unknown-linux-gnu.$GLIBC"));
    // ... built reproducibly (no build directory compiled in) ...
    assert!(containerfile.contains("--remap-path-prefix=/src=/kappa-operator"));
    assert!(script.contains("--remap-path-prefix=$REPO=/kappa-operator"));
    // ... the same user and entrypoint.
    assert!(containerfile.contains("USER 65532:65532"));
    assert!(script.contains("--user 65532:65532"));
    assert!(containerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/kappa-operator"]"#));
    assert!(script.contains("--entrypoint /usr/local/bin/kappa-operator"));
    // ... the same pinned zig toolchain.
    let tools = read("hack/tools.sh");
    for pin in ["ZIG_VERSION=", "ZIGBUILD_VERSION="] {
        let line = tools.lines().find(|l| l.starts_with(pin)).unwrap();
        let version = line[pin.len()..].split_whitespace().next().unwrap();
        let package = if pin.starts_with("ZIG_") {
            "ziglang"
        } else {
            "cargo-zigbuild"
        };
        assert!(
            containerfile.contains(&format!("{package}=={version}")),
            "the Containerfile's {package} differs from hack/tools.sh's {version}"
        );
    }
}
