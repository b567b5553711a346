//! The Kubernetes Indexed Job that backfills a large export: the operator's own image in `backfill` mode,
//! one pod per index, each index projecting the data files whose position in the manifest is the index
//! modulo the number of workers (see `crate::backfill::worker`). Pure: the object only.

use k8s_openapi::api::batch::v1::Job;
use serde_json::json;

use super::names::short_hash;

/// What a backfill Job is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackfillJob {
    /// Where the Job runs: the operator's namespace, so its pods use the operator's ServiceAccount (and its
    /// IAM role through IRSA or EKS Pod Identity).
    pub namespace: String,
    pub image: String,
    pub service_account: String,
    pub view_namespace: String,
    pub view: String,
    /// The view version backfilled (1 for a view that was never rebuilt).
    pub version: i64,
    pub attempt: i64,
    /// Indexes (pods), from `spec.backfill.parallelism`.
    pub workers: i32,
    /// How the pods combine records before writing (the operator folds their partials at the end).
    pub pre_aggregation: crate::backfill::worker::PreAggregation,
    /// Environment passed on from the operator (AWS region, endpoint, S3 addressing).
    pub env: Vec<(String, String)>,
}

/// The Job's name: stable for a view's attempt, at most 63 characters.
pub fn job_name(view_namespace: &str, view: &str, attempt: i64) -> String {
    let hash = short_hash(&[view_namespace, view, &attempt.to_string()]);
    // An Indexed Job's pods take `<job>-<index>` as their hostname, a DNS label: no dots (a rebuilt
    // version's base is `<view>.v<n>`); the hash keeps the name unique.
    let readable: String = view
        .chars()
        .take(38)
        .map(|c| if c == '.' { '-' } else { c })
        .collect();
    format!("kappa-backfill-{}-{hash}", readable.trim_end_matches('-'))
}

/// The label holding the view (`<namespace>.<name>`) on a backfill Job.
pub const VIEW_LABEL: &str = "kappa.dev/view";

/// The Indexed Job.
pub fn backfill_job(spec: &BackfillJob) -> Job {
    let env: Vec<serde_json::Value> = spec
        .env
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let view_label = format!("{}.{}", spec.view_namespace, spec.view);
    let view_label: String = view_label.chars().take(63).collect();
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(&spec.view_namespace, &crate::plan::versions::checkpoint_base(&spec.view, spec.version), spec.attempt),
            "namespace": spec.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "kappa-operator",
                "app.kubernetes.io/component": "backfill",
                VIEW_LABEL: view_label.trim_end_matches(['-', '.']),
            },
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": spec.workers,
            "parallelism": spec.workers,
            "backoffLimitPerIndex": 3,
            "maxFailedIndexes": 0,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/managed-by": "kappa-operator", "app.kubernetes.io/component": "backfill"}},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": spec.service_account,
                    "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "backfill",
                        "image": spec.image,
                        "args": [
                            "backfill",
                            "--namespace", spec.view_namespace,
                            "--view", spec.view,
                            "--version", spec.version.to_string(),
                            "--attempt", spec.attempt.to_string(),
                            "--workers", spec.workers.to_string(),
                            "--pre-aggregation", spec.pre_aggregation.as_str(),
                        ],
                        "env": env,
                        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }],
                },
            },
        },
    }))
    .expect("the Job literal matches batch/v1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BackfillJob {
        BackfillJob {
            namespace: "kappa-system".into(),
            image: "ghcr.io/example/kappa-operator:1.0".into(),
            service_account: "kappa-operator".into(),
            view_namespace: "game".into(),
            view: "players".into(),
            version: 1,
            attempt: 2,
            workers: 4,
            pre_aggregation: crate::backfill::worker::PreAggregation::Banded,
            env: vec![("AWS_REGION".into(), "eu-west-1".into())],
        }
    }

    #[test]
    fn an_indexed_job_of_the_operators_image_one_index_per_worker() {
        let job = backfill_job(&spec());
        let s = job.spec.unwrap();
        assert_eq!(s.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!((s.completions, s.parallelism), (Some(4), Some(4)));
        let pod = s.template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("kappa-operator"));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("ghcr.io/example/kappa-operator:1.0"));
        assert_eq!(
            c.args.clone().unwrap(),
            [
                "backfill",
                "--namespace",
                "game",
                "--view",
                "players",
                "--version",
                "1",
                "--attempt",
                "2",
                "--workers",
                "4",
                "--pre-aggregation",
                "banded"
            ]
        );
        assert_eq!(c.env.as_ref().unwrap()[0].name, "AWS_REGION");
        assert_eq!(job.metadata.namespace.as_deref(), Some("kappa-system"));
        assert_eq!(job.metadata.labels.unwrap()[VIEW_LABEL], "game.players");
    }

    #[test]
    fn job_names_are_stable_distinct_and_short() {
        let versioned = job_name("game", "players.v2", 1);
        assert!(!versioned.contains('.'), "{versioned}");
        assert_ne!(versioned, job_name("game", "players-v2", 1));
        assert_eq!(job_name("game", "players", 1), job_name("game", "players", 1));
        assert_ne!(job_name("game", "players", 1), job_name("game", "players", 2));
        assert_ne!(job_name("a", "players", 1), job_name("b", "players", 1));
        assert!(job_name("ns", &"v".repeat(253), 1).len() <= 63);
    }
}
