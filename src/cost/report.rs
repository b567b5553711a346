//! `kappa-operator cost -f <files or directories>`: the estimate of every EventLog found, as tables.

use std::path::{Path, PathBuf};

use super::{Assumptions, CostError, Prices, estimate, load_manifests};

/// Reads optional YAML overrides of prices or assumptions; every field is optional.
pub(super) fn overrides<T: serde::de::DeserializeOwned + Default>(
    path: Option<&Path>,
    what: &str,
) -> Result<T, String> {
    let Some(path) = path else { return Ok(T::default()) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {what} file {}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| {
        format!(
            "{what} file {}: {e}; see `kappa-operator cost --help` for the field names",
            path.display()
        )
    })
}

/// Builds the report for `paths`, with optional price and assumption overrides.
pub fn report(
    paths: &[PathBuf],
    prices: Option<&Path>,
    assumptions: Option<&Path>,
) -> Result<String, String> {
    let prices: Prices = overrides(prices, "prices")?;
    let assumptions: Assumptions = overrides(assumptions, "assumptions")?;
    prices.validate().map_err(|e: CostError| e.to_string())?;
    assumptions.validate().map_err(|e: CostError| e.to_string())?;
    let logs = load_manifests(paths).map_err(|e| e.to_string())?;
    if logs.is_empty() {
        return Err(format!(
            "no EventLog (kappa.dev/v1alpha1) found in {}: point -f at the manifests of a log and its views",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut out = String::new();
    for (log, views) in &logs {
        let estimate = estimate(log, views, &prices, &assumptions);
        let ns = log.metadata.namespace.as_deref().unwrap_or("default");
        let name = log.metadata.name.as_deref().unwrap_or_default();
        out.push_str(&format!(
            "EventLog {ns}/{name} with {} view(s): {}\n\n",
            views.len(),
            estimate.summary()
        ));
        out.push_str(&estimate.render_table());
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_examples_are_priced() {
        let examples = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"));
        let out = report(&[examples], None, None).unwrap();
        assert!(
            out.starts_with("EventLog default/game-events with 6 view(s): $"),
            "{out}"
        );
        assert!(out.contains("per million writes"), "{out}");
        // The reactive example runs in the cluster: its stream is read by the operator, not a notifier.
        assert!(out.contains("views table live-games (dedicated) stream"), "{out}");
        assert!(!out.contains("notifier of views table live-games"), "{out}");
    }

    #[test]
    fn a_directory_without_logs_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = report(&[dir.path().to_path_buf()], None, None).unwrap_err();
        assert!(err.contains("no EventLog") && err.contains("-f"), "{err}");
    }

    #[test]
    fn bad_overrides_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let prices = dir.path().join("prices.yaml");
        std::fs::write(&prices, "lambdaRequestsPerMillion: [1]\n").unwrap();
        let examples = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/game"));
        let err = report(&[examples], Some(&prices), None).unwrap_err();
        assert!(err.contains("prices.yaml"), "{err}");
    }
}
