//! The operator's image (`make image`, hack/image.sh): an OCI image assembled without a container daemon,
//! whose own files run the binary as the non-root user; and the release binary in it, which is also the
//! built-in Lambda functions' `bootstrap`, loads on Lambda's `provided.al2023` (glibc 2.34) and zips
//! under Lambda's 50 MB direct-upload limit.
//!
//! The first test assembles an image around the debug binary (seconds; `make test`). The release tests
//! need `make image` (a release build: minutes warm, 15-40 cold on 2 cores) and are run by
//! `make image-test` and the release workflow; `cargo test` lists them as ignored, never as passed.

mod tooling;

use std::path::{Path, PathBuf};

use tooling::{REPO, run_ok};

/// glibc of Lambda's `provided.al2023` runtime.
const LAMBDA_GLIBC: (u32, u32) = (2, 34);
/// Lambda's limit on a zip uploaded directly (not through S3).
const LAMBDA_DIRECT_UPLOAD_BYTES: usize = 50 * 1024 * 1024;

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algo, hex) = digest.split_once(':').expect("algo:hex digest");
    layout.join("blobs").join(algo).join(hex)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An unpacked image: its config and its root file system.
struct Unpacked {
    config: serde_json::Value,
    root: PathBuf,
}

/// Reads an OCI image layout as any runtime would (index → manifest → config and layers, in order) and
/// unpacks the layers into `dir`.
fn unpack(layout: &Path, dir: &Path) -> Unpacked {
    assert_eq!(json(&layout.join("oci-layout"))["imageLayoutVersion"], "1.0.0");
    let index = json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("index.json lists manifests");
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(
        manifests[0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let manifest = json(&blob(layout, manifests[0]["digest"].as_str().unwrap()));
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config = json(&blob(layout, manifest["config"]["digest"].as_str().unwrap()));
    let root = dir.join("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
        let path = blob(layout, layer["digest"].as_str().unwrap());
        run_ok(
            Path::new("tar"),
            &[
                "-xzf",
                path.to_str().unwrap(),
                "-C",
                root.to_str().unwrap(),
                "--numeric-owner",
            ],
            None,
        );
    }
    Unpacked { config, root }
}

/// Runs the image's entrypoint with `args` as the image's user, seeing only the image's files (chroot:
/// no container runtime on these machines; the tests run as root, as CI does).
fn run_in(image: &Unpacked, args: &[&str]) -> String {
    let cfg = &image.config["config"];
    let user = cfg["User"].as_str().expect("the image names its user");
    let entrypoint: Vec<&str> = cfg["Entrypoint"]
        .as_array()
        .expect("the image has an entrypoint")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let userspec = format!("--userspec={user}");
    let mut argv = vec![userspec.as_str(), image.root.to_str().unwrap()];
    argv.extend(entrypoint);
    argv.extend(args);
    let out = tooling::run(Path::new("chroot"), &argv, None);
    assert!(
        out.status.success(),
        "chroot {argv:?} failed (the tests run as root, as CI does): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// This machine's architecture as OCI names it (hack/image.sh builds for the machine it runs on).
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no image for {other}"),
    }
}

/// What every image of the operator is, whichever binary it carries.
fn assert_operator_image(image: &Unpacked) {
    let config = &image.config;
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], oci_arch());
    let cfg = &config["config"];
    assert_eq!(
        cfg["Entrypoint"],
        serde_json::json!(["/usr/local/bin/kappa-operator"])
    );
    // Non-root by number, as the chart's runAsNonRoot needs to verify it.
    assert_eq!(cfg["User"], "65532:65532");
    assert_eq!(
        cfg["Labels"]["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    let passwd = std::fs::read_to_string(image.root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    // Distroless: no shell, no package manager; TLS roots for the AWS and Kubernetes clients.
    for absent in [
        "bin/sh",
        "usr/bin/sh",
        "bin/bash",
        "usr/bin/apt-get",
        "usr/bin/dpkg",
    ] {
        assert!(!image.root.join(absent).exists(), "the image has /{absent}");
    }
    let certs = std::fs::metadata(image.root.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(certs.len() > 10_000);

    let version = run_in(image, &["--version"]);
    assert_eq!(
        version.trim(),
        format!("kappa-operator {}", env!("CARGO_PKG_VERSION"))
    );
}

/// `hack/image.sh` around the debug binary under test, into `out`.
fn assemble(out: &Path) {
    run_ok(
        Path::new(&format!("{REPO}/hack/image.sh")),
        &[
            "--binary",
            env!("CARGO_BIN_EXE_kappa-operator"),
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    );
}

#[test]
fn the_image_runs_the_operator_as_non_root_from_its_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("image");
    assemble(&out);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        out.join(format!("kappa-operator-{version}-{}.tar", oci_arch()))
            .is_file()
    );
    let image = unpack(&out.join("oci"), dir.path());
    assert_operator_image(&image);
    // The binary the image carries is the one built, byte for byte.
    let built = std::fs::read(env!("CARGO_BIN_EXE_kappa-operator")).unwrap();
    let carried = std::fs::read(image.root.join("usr/local/bin/kappa-operator")).unwrap();
    assert!(built == carried, "the image's binary differs from the build");
    // The user owns its home; everything else is root's.
    let home = std::fs::metadata(image.root.join("home/nonroot")).unwrap();
    let bin = std::fs::metadata(image.root.join("usr/local/bin/kappa-operator")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((home.uid(), home.gid()), (65532, 65532));
    assert_eq!((bin.uid(), bin.gid()), (0, 0));

    // The tarball `docker load`s under the name the chart pulls, not the build's own registry.
    let tarball = out.join(format!("kappa-operator-{version}-{}.tar", oci_arch()));
    let manifest = run_ok(
        Path::new("tar"),
        &["-xOf", tarball.to_str().unwrap(), "manifest.json"],
        None,
    );
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!([format!("ghcr.io/kappa-dev/kappa-operator:{version}")])
    );

    // Reproducible, and --out keeps what else the directory holds: the same binary assembled again, into
    // the same directory beside a file of the user's, gives the same image and tarball, byte for byte.
    let digest = std::fs::read_to_string(out.join("digest")).unwrap();
    let tar_bytes = std::fs::read(&tarball).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    assemble(&out);
    assert_eq!(std::fs::read_to_string(out.join("digest")).unwrap(), digest);
    assert!(
        std::fs::read(&tarball).unwrap() == tar_bytes,
        "the tarball differs between two builds"
    );
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
}

#[test]
fn the_image_script_refuses_bad_arguments_with_its_usage() {
    for args in [
        &["--out"][..],
        &["--binary"],
        &["--arch", "riscv64"],
        &["--frobnicate"],
        &["--binary", "/nonexistent/kappa-operator"],
    ] {
        let out = tooling::run(Path::new(&format!("{REPO}/hack/image.sh")), args, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains("usage: hack/image.sh") || stderr.contains("[image] error:"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("unbound variable"), "{args:?}: {stderr}");
    }
}

/// The `GLIBC_x.y` symbol versions an ELF binary needs, by objdump.
fn glibc_versions(binary: &Path) -> Vec<(u32, u32)> {
    let table = run_ok(Path::new("objdump"), &["-T", binary.to_str().unwrap()], None);
    let mut versions: Vec<(u32, u32)> = table
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>());
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

/// The shared libraries an ELF binary names (DT_NEEDED), by readelf.
fn needed_libraries(binary: &Path) -> Vec<String> {
    let dynamic = run_ok(Path::new("readelf"), &["-d", binary.to_str().unwrap()], None);
    dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_string()))
        .collect()
}

/// The image `make image` wrote (dist/image, or $KAPPA_IMAGE_DIR), unpacked.
fn release_image(dir: &Path) -> Unpacked {
    let out = std::env::var("KAPPA_IMAGE_DIR").unwrap_or_else(|_| format!("{REPO}/dist/image"));
    let layout = Path::new(&out).join("oci");
    assert!(
        layout.join("index.json").is_file(),
        "{} has no image: run `make image` (or `make image-test`)",
        layout.display()
    );
    unpack(&layout, dir)
}

#[test]
#[ignore = "needs the release image: run `make image-test` (runs `make image` first)"]
fn the_release_image_runs_the_operator_as_non_root() {
    let dir = tempfile::tempdir().unwrap();
    assert_operator_image(&release_image(dir.path()));
}

#[test]
#[ignore = "needs the release image: run `make image-test` (runs `make image` first)"]
fn the_release_binary_loads_on_lambda_provided_al2023_and_zips_under_50_mb() {
    let dir = tempfile::tempdir().unwrap();
    let image = release_image(dir.path());
    let binary = image.root.join("usr/local/bin/kappa-operator");

    let versions = glibc_versions(&binary);
    let newest = *versions.last().expect("the binary links glibc");
    assert!(
        newest <= LAMBDA_GLIBC,
        "the binary needs GLIBC_{}.{} but provided.al2023 has {}.{}: {versions:?}",
        newest.0,
        newest.1,
        LAMBDA_GLIBC.0,
        LAMBDA_GLIBC.1
    );
    // Only what the provided.al2023 base image has: glibc's own libraries and libgcc_s.
    let allowed = [
        "libc.so.6",
        "libm.so.6",
        "libdl.so.2",
        "libpthread.so.0",
        "librt.so.1",
        "libgcc_s.so.1",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
    ];
    let needed = needed_libraries(&binary);
    assert!(needed.contains(&"libc.so.6".to_string()), "{needed:?}");
    for lib in &needed {
        assert!(
            allowed.contains(&lib.as_str()),
            "{lib} is not on provided.al2023: {needed:?}"
        );
    }

    // Reproducible: no directory of the machine that built it is compiled in (hack/image.sh remaps the
    // repository and CARGO_HOME), so the same commit builds the same binary elsewhere.
    let bytes = std::fs::read(&binary).unwrap();
    let cargo_home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    for path in [REPO, cargo_home.as_str()] {
        assert!(
            !bytes.windows(path.len()).any(|w| w == path.as_bytes()),
            "the release binary names the build machine's {path}"
        );
    }
    // The dependencies' paths are there, remapped (the project's own are relative: src/...).
    assert!(
        bytes.windows(21).any(|w| w == b"/cargo/registry/src/i"),
        "the release binary's dependency paths are not remapped to /cargo/registry/"
    );

    // The zip the operator uploads (its own executable as `bootstrap`), as the operator makes it.
    let zip = kappa_operator::aws::lambda::bootstrap_zip(&std::fs::read(&binary).unwrap());
    assert!(
        zip.len() < LAMBDA_DIRECT_UPLOAD_BYTES,
        "the bootstrap zip is {} bytes; Lambda takes at most {LAMBDA_DIRECT_UPLOAD_BYTES} directly",
        zip.len()
    );
    eprintln!(
        "release binary: GLIBC_{}.{} at most, needs {needed:?}, bootstrap zip {:.1} MB",
        newest.0,
        newest.1,
        zip.len() as f64 / 1e6
    );
}
