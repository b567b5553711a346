//! Reading EventLogs and MaterializedViews from manifest files, to estimate them before they are applied.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

use super::CostError;
use crate::crd::{EventLog, MaterializedView};

/// The apiVersion of the kinds read here.
pub const API_VERSION: &str = "kappa.dev/v1alpha1";

/// Reads EventLogs and their MaterializedViews from manifest files and groups each view with its log.
///
/// Each path is a YAML file, possibly of several documents separated by `---`, or a directory, of which
/// every `*.yaml` and `*.yml` file is read in name order; subdirectories are not descended into. Of the
/// documents, only kinds `EventLog` and `MaterializedView` of apiVersion `kappa.dev/v1alpha1` are kept
/// (also as items of a `v1` `List`); every other document (a Kustomization, a Deployment, a comment-only
/// document) is ignored, and another version of a kappa.dev kind is ignored with a warning.
///
/// A view belongs to the EventLog named by its `spec.eventLogRef.name` in its namespace (a missing
/// namespace is `default`). The logs come back in the order they were read, each with its views in the
/// order they were read; a log without views has an empty list. Errors: a path that cannot be read, a
/// document that is not YAML or does not match its kind's schema, a kept object without
/// `metadata.name`, the same object twice, and a view whose EventLog is not among the files.
pub fn load_manifests(paths: &[PathBuf]) -> Result<Vec<(EventLog, Vec<MaterializedView>)>, CostError> {
    let mut objects = Objects::default();
    for file in yaml_files(paths)? {
        let text = fs::read_to_string(&file).map_err(|source| match source.kind() {
            std::io::ErrorKind::InvalidData => CostError::NotText { path: file.clone() },
            _ => CostError::Read { path: file.clone(), source },
        })?;
        for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let document_number = i + 1;
            let value = Value::deserialize(document).map_err(|source| CostError::Yaml {
                path: file.clone(),
                document: document_number,
                source,
            })?;
            objects.collect(&file, document_number, value)?;
        }
    }
    objects.group()
}

/// The files the paths name: files as given, directories expanded (recursively) to their YAML files in
/// path order.
fn yaml_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CostError> {
    let read_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CostError::Read { path, source }
    };
    let mut files = Vec::new();
    for path in paths {
        if !fs::metadata(path).map_err(read_error(path))?.is_dir() {
            files.push(path.clone());
            continue;
        }
        let mut found = Vec::new();
        let mut dirs = vec![path.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).map_err(read_error(&dir))? {
                let entry = entry.map_err(read_error(&dir))?.path();
                if entry.is_dir() {
                    dirs.push(entry);
                    continue;
                }
                let yaml = entry
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
                if yaml && entry.is_file() {
                    found.push(entry);
                }
            }
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// A kept object, with where it was read.
struct Read<T> {
    object: T,
    namespace: String,
    name: String,
    path: PathBuf,
}

#[derive(Default)]
struct Objects {
    logs: Vec<Read<EventLog>>,
    views: Vec<Read<MaterializedView>>,
}

impl Objects {
    fn collect(&mut self, path: &Path, document: usize, value: Value) -> Result<(), CostError> {
        let api_version = value.get("apiVersion").and_then(Value::as_str);
        let kind = value.get("kind").and_then(Value::as_str);
        match (api_version, kind) {
            (Some("v1"), Some("List")) => {
                let items = match value.get("items") {
                    Some(Value::Sequence(items)) => items.clone(),
                    _ => Vec::new(),
                };
                for item in items {
                    self.collect(path, document, item)?;
                }
            }
            (Some(API_VERSION), Some("EventLog")) => {
                let read = parse::<EventLog>(path, document, "EventLog", value)?;
                self.logs.push(read);
            }
            (Some(API_VERSION), Some("MaterializedView")) => {
                let read = parse::<MaterializedView>(path, document, "MaterializedView", value)?;
                self.views.push(read);
            }
            (Some(version), Some(kind @ ("EventLog" | "MaterializedView")))
                if version.starts_with("kappa.dev/") =>
            {
                tracing::warn!(
                    path = %path.display(),
                    document,
                    "ignoring {kind} of apiVersion {version}: only {API_VERSION} is read"
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn group(self) -> Result<Vec<(EventLog, Vec<MaterializedView>)>, CostError> {
        let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut groups: Vec<(EventLog, Vec<MaterializedView>)> = Vec::new();
        let mut log_paths: Vec<PathBuf> = Vec::new();
        for log in self.logs {
            let key = (log.namespace, log.name);
            if let Some(&i) = index.get(&key) {
                return Err(duplicate("EventLog", key, log_paths[i].clone(), log.path));
            }
            index.insert(key, groups.len());
            groups.push((log.object, Vec::new()));
            log_paths.push(log.path);
        }
        let mut seen_views: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
        for view in self.views {
            let key = (view.namespace.clone(), view.name.clone());
            if let Some(first) = seen_views.get(&key) {
                return Err(duplicate("MaterializedView", key, first.clone(), view.path));
            }
            let log = view.object.spec.event_log_ref.name.clone();
            let Some(&i) = index.get(&(view.namespace.clone(), log.clone())) else {
                return Err(CostError::MissingEventLog {
                    path: view.path,
                    namespace: view.namespace,
                    view: view.name,
                    log,
                });
            };
            seen_views.insert(key, view.path);
            groups[i].1.push(view.object);
        }
        Ok(groups)
    }
}

fn duplicate(
    kind: &'static str,
    (namespace, name): (String, String),
    first: PathBuf,
    second: PathBuf,
) -> CostError {
    CostError::Duplicate { kind, namespace, name, first, second }
}

/// What the API server refuses in an object's name and namespace: a name must be a DNS-1123 subdomain
/// (lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit, at most 253
/// characters), a namespace a DNS-1123 label (no `.`, at most 63). Source: Kubernetes, "Object Names and
/// IDs" (kubernetes.io/docs/concepts/overview/working-with-objects/names).
fn name_problems(name: &str, namespace: &str) -> Vec<String> {
    fn dns(s: &str, dots: bool, max: usize) -> bool {
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        s.len() <= max
            && s.starts_with(ok)
            && s.ends_with(ok)
            && s.chars().all(|c| ok(c) || c == '-' || (dots && c == '.'))
    }
    let mut problems = Vec::new();
    if !dns(name, true, 253) {
        problems.push(format!(
            "metadata.name: {name:?} is not a valid name: use lowercase letters, digits, '-' and '.', starting \
             and ending with a letter or digit, at most 253 characters"
        ));
    }
    if !dns(namespace, false, 63) {
        problems.push(format!(
            "metadata.namespace: {namespace:?} is not a valid namespace: use lowercase letters, digits and \
             '-', starting and ending with a letter or digit, at most 63 characters"
        ));
    }
    problems
}

fn parse<T: serde::de::DeserializeOwned + kube::CustomResourceExt>(
    path: &Path,
    document: usize,
    kind: &'static str,
    value: Value,
) -> Result<Read<T>, CostError> {
    let metadata = value.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
        .to_string();
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err(CostError::MissingName { path: path.to_path_buf(), document, kind });
    };
    // What the API server would refuse (schema limits, CEL rules, names) is refused here too: no estimate
    // of an object that `kubectl apply` would not create.
    let mut problems = name_problems(&name, &namespace);
    problems.extend(
        serde_json::to_value(&value)
            .map(|json| crate::crd::admission::problems::<T>(&json))
            .unwrap_or_default(),
    );
    if !problems.is_empty() {
        return Err(CostError::Refused {
            path: path.to_path_buf(),
            document,
            kind,
            kind_lower: kind.to_lowercase(),
            name: format!("{namespace}/{name}"),
            problems: problems.join("; "),
        });
    }
    let object = serde_yaml::from_value(value).map_err(|source| CostError::InvalidObject {
        path: path.to_path_buf(),
        document,
        kind,
        kind_lower: kind.to_lowercase(),
        name: format!("{namespace}/{name}"),
        source,
    })?;
    Ok(Read { object, namespace, name, path: path.to_path_buf() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_utf8_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("latin1.yaml");
        std::fs::write(&file, b"metadata: {name: caf\xe9}\n").unwrap();
        let err = load_manifests(&[file]).unwrap_err();
        assert!(matches!(err, CostError::NotText { .. }), "{err}");
        assert!(err.to_string().contains("is not UTF-8 text"), "{err}");
    }

    #[test]
    fn names_the_api_server_refuses_are_refused_naming_the_field() {
        assert!(name_problems("game-events", "shop").is_empty());
        assert!(name_problems("v1.orders", "default").is_empty());
        for bad in [
            "spiel-ereignisse-\u{fc}\u{1f600}",
            "Orders",
            "-orders",
            "orders-",
            "a_b",
            "",
        ] {
            let p = name_problems(bad, "shop");
            assert_eq!(p.len(), 1, "{bad:?}: {p:?}");
            assert!(p[0].starts_with("metadata.name: "), "{p:?}");
        }
        assert!(name_problems(&"a".repeat(254), "shop")[0].contains("253"));
        let p = name_problems("orders", "team.a");
        assert!(p[0].starts_with("metadata.namespace: "), "{p:?}");
        assert!(!name_problems("orders", &"n".repeat(64)).is_empty());
    }

    const LOG: &str = "\
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata:
  name: game-events
spec:
  recordTypes: [player, game]
  table: {partitionKey: pk, sortKey: sk}
  ingest: {queueType: Standard, batchSize: 10}
  fanOut: {mode: Sns}
";

    fn view_yaml(name: &str, log: &str, namespace: Option<&str>) -> String {
        let ns = namespace
            .map(|ns| format!("\n  namespace: {ns}"))
            .unwrap_or_default();
        format!(
            "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata:\n  name: {name}{ns}\nspec:\n  \
             eventLogRef: {{name: {log}}}\n  recordTypes: [player]\n  projection:\n    mode: Latest\n    \
             key: {{partitionKey: \"PLAYER#{{playerId}}\"}}\n"
        )
    }

    fn names(views: &[MaterializedView]) -> Vec<&str> {
        views
            .iter()
            .map(|v| v.metadata.name.as_deref().unwrap_or_default())
            .collect()
    }

    #[test]
    fn a_directory_is_read_in_name_order_and_other_kinds_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
        write("game-events.yaml", LOG);
        write("players.yaml", &view_yaml("players", "game-events", None));
        write("games.yml", &view_yaml("games", "game-events", Some("default")));
        write(
            "kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [game-events.yaml]\n",
        );
        write("README.md", "not a manifest: {");
        write(
            "future.yaml",
            "apiVersion: kappa.dev/v1beta1\nkind: EventLog\nmetadata: {name: later}\n",
        );
        std::fs::create_dir(dir.path().join("nested")).expect("mkdir");
        std::fs::write(
            dir.path().join("nested/scores.yaml"),
            view_yaml("scores", "game-events", None),
        )
        .expect("write");

        let groups = load_manifests(&[dir.path().to_path_buf()]).expect("the directory loads");
        assert_eq!(groups.len(), 1);
        let (log, views) = &groups[0];
        assert_eq!(log.metadata.name.as_deref(), Some("game-events"));
        assert_eq!(log.spec.record_types.len(), 2);
        // games.yml sorts before nested/scores.yaml and players.yaml; subdirectories are read too.
        assert_eq!(names(views), ["games", "scores", "players"]);
    }

    #[test]
    fn multi_document_files_group_by_namespace_and_unpack_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("all.yaml");
        let staging_log = LOG.replace("name: game-events", "name: game-events\n  namespace: staging");
        let list = format!(
            "apiVersion: v1\nkind: List\nitems:\n{}",
            view_yaml("listed", "game-events", Some("staging"))
                .lines()
                .enumerate()
                .map(|(i, l)| if i == 0 {
                    format!("- {l}\n")
                } else {
                    format!("  {l}\n")
                })
                .collect::<String>()
        );
        let text = [
            "# leading comment only".to_string(),
            LOG.to_string(),
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: unrelated}\n".to_string(),
            view_yaml("players", "game-events", None),
            staging_log,
            view_yaml("staged", "game-events", Some("staging")),
            list,
            String::new(),
        ]
        .join("---\n");
        std::fs::write(&file, text).expect("write");

        let groups = load_manifests(std::slice::from_ref(&file)).expect("the file loads");
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[0].0.metadata.namespace, None,
            "objects are returned as written"
        );
        assert_eq!(names(&groups[0].1), ["players"]);
        assert_eq!(groups[1].0.metadata.namespace.as_deref(), Some("staging"));
        assert_eq!(names(&groups[1].1), ["staged", "listed"]);
    }

    #[test]
    fn a_view_without_its_log_names_the_view_the_log_and_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("views.yaml");
        std::fs::write(
            &file,
            format!("{LOG}---\n{}", view_yaml("players", "game-events", Some("prod"))),
        )
        .expect("write");
        let err = load_manifests(&[file]).expect_err("the log is in another namespace");
        let msg = err.to_string();
        assert!(matches!(err, CostError::MissingEventLog { .. }), "{msg}");
        assert!(msg.contains("views.yaml"), "{msg}");
        assert!(msg.contains("MaterializedView prod/players"), "{msg}");
        assert!(msg.contains("EventLog prod/game-events"), "{msg}");
        assert!(msg.contains("spec.eventLogRef.name"), "{msg}");
    }

    #[test]
    fn broken_inputs_name_the_file_and_what_to_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name);

        std::fs::write(path("bad.yaml"), format!("{LOG}---\nkind: [unclosed\n")).expect("write");
        let err = load_manifests(&[path("bad.yaml")]).expect_err("not YAML");
        assert!(matches!(err, CostError::Yaml { document: 2, .. }), "{err}");
        assert!(err.to_string().contains("bad.yaml"), "{err}");

        std::fs::write(
            path("wrong.yaml"),
            LOG.replace("recordTypes: [player, game]", "recordTypes: 7"),
        )
        .expect("write");
        let err = load_manifests(&[path("wrong.yaml")]).expect_err("schema mismatch");
        let msg = err.to_string();
        assert!(matches!(err, CostError::InvalidObject { .. }), "{msg}");
        assert!(
            msg.contains("wrong.yaml") && msg.contains("EventLog default/game-events"),
            "{msg}"
        );

        std::fs::write(
            path("anonymous.yaml"),
            LOG.replace("  name: game-events\n", "  labels: {}\n"),
        )
        .expect("write");
        let err = load_manifests(&[path("anonymous.yaml")]).expect_err("no name");
        assert!(err.to_string().contains("has no metadata.name"), "{err}");

        std::fs::write(path("twice.yaml"), LOG).expect("write");
        let err = load_manifests(&[path("twice.yaml"), path("twice.yaml")]).expect_err("duplicate");
        assert!(
            matches!(err, CostError::Duplicate { kind: "EventLog", .. }),
            "{err}"
        );

        let err = load_manifests(&[path("missing.yaml")]).expect_err("no such file");
        assert!(
            matches!(err, CostError::Read { .. }) && err.to_string().contains("missing.yaml"),
            "{err}"
        );
        assert_eq!(err.category(), "io");
    }
}
