//! The operator's own configuration, from flags or environment, checked before anything starts.

use std::time::Duration;

use clap::Args;

/// How the operator runs; every field is a flag with an environment variable, as the chart sets them.
#[derive(Args, Clone, Debug)]
pub struct Settings {
    /// Identifies this cluster in AWS resource names and ownership tags, so two clusters sharing an AWS
    /// account never touch each other's resources: lowercase letters, digits and dashes, 1 to 16.
    #[arg(long, env = "KAPPA_CLUSTER_ID")]
    pub cluster_id: Option<String>,

    /// Namespaces to watch, comma separated; empty watches all namespaces.
    #[arg(long, env = "KAPPA_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,

    /// How often every object is reconciled even without a change, to repair drift on AWS.
    #[arg(long, env = "KAPPA_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "KAPPA_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: std::net::SocketAddr,

    /// Address of the push endpoint: the WebSocket watch of reactive views (views tables with Streams) on the
    /// in-cluster runtime, `GET /v1/namespaces/{namespace}/watch`.
    #[arg(long, env = "KAPPA_PUSH_ADDR", default_value = "0.0.0.0:8081")]
    pub push_addr: std::net::SocketAddr,

    /// The push endpoint's URL as clients reach it (the chart's Service), shown in `status.push.url` of
    /// in-cluster reactive views. Defaults to `ws://127.0.0.1:<port of --push-addr>`.
    #[arg(long, env = "KAPPA_PUSH_URL")]
    pub push_url: Option<String>,

    /// A file holding the bearer token push clients must present (`Authorization: Bearer <token>`). Unset:
    /// the push endpoint is open to whoever reaches it.
    #[arg(long, env = "KAPPA_PUSH_TOKEN_FILE")]
    pub push_token_file: Option<std::path::PathBuf>,

    /// Leader election: the Lease's namespace. Defaults to the pod's namespace (POD_NAMESPACE).
    #[arg(long, env = "KAPPA_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Leader election: the Lease's name.
    #[arg(long, env = "KAPPA_LEASE_NAME", default_value = "kappa-operator-leader")]
    pub lease_name: String,

    /// Leader election: how long a leader's Lease is valid without renewal.
    #[arg(long, env = "KAPPA_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,

    /// This replica's identity in the Lease. Defaults to the pod name (POD_NAME) or the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// The code of the built-in Lambda functions (writer, router, projector): `s3://bucket/key` of a zip
    /// holding `bootstrap`, or an executable file uploaded as `bootstrap` (Lambda takes at most 50 MB
    /// zipped). Defaults to this operator's own executable: the image's release build is that binary.
    #[arg(long, env = "KAPPA_LAMBDA_CODE")]
    pub lambda_code: Option<String>,

    /// The instruction set of the built-in functions' code: `x86_64` or `arm64`. Defaults to the
    /// operator's own.
    #[arg(long, env = "KAPPA_LAMBDA_ARCHITECTURE")]
    pub lambda_architecture: Option<String>,

    /// Exports holding more items than this are backfilled by an Indexed Job (one pod per
    /// `spec.backfill.parallelism`) instead of inside the operator. Needs --image.
    #[arg(long, env = "KAPPA_BACKFILL_JOB_ITEMS", default_value_t = 5_000_000)]
    pub backfill_job_items: u64,

    /// The image of backfill Jobs: the operator's own (the chart sets it). Unset: every backfill runs inside
    /// the operator.
    #[arg(long, env = "KAPPA_IMAGE")]
    pub image: Option<String>,

    /// The ServiceAccount of backfill Job pods, in the operator's namespace (the chart sets the operator's,
    /// so the pods have its IAM role).
    #[arg(long, env = "KAPPA_SERVICE_ACCOUNT", default_value = "default")]
    pub service_account: String,
}

/// When and how large backfills run as Indexed Jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackfillJobs {
    pub image: String,
    pub service_account: String,
    /// Exports with more items than this run as a Job.
    pub min_items: u64,
}

/// Where the built-in Lambda functions' code comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LambdaCodeSource {
    /// A zip in S3.
    S3 { bucket: String, key: String },
    /// An executable, zipped as `bootstrap` when a function needs it.
    File(std::path::PathBuf),
}

/// Configuration that cannot work, found before the operator starts.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    #[error(
        "no cluster id: set --cluster-id or KAPPA_CLUSTER_ID (the chart's clusterId value) to a short name \
         unique among the clusters sharing this AWS account, for example `prod-eu1`"
    )]
    MissingClusterId,
    #[error(
        "cluster id {0:?} is not valid: use 1 to 16 lowercase letters, digits and dashes, starting with a \
         letter (it becomes part of AWS resource names)"
    )]
    InvalidClusterId(String),
    #[error(
        "resync period {0}s is too short: use at least 10 seconds (--resync-seconds, KAPPA_RESYNC_SECONDS)"
    )]
    ResyncTooShort(u64),
    #[error(
        "lease duration {0}s is out of range: use 5 to 120 seconds (--lease-seconds, KAPPA_LEASE_SECONDS)"
    )]
    LeaseOutOfRange(u64),
    #[error(
        "no namespace for the leader-election Lease: set --lease-namespace or KAPPA_LEASE_NAMESPACE (in a pod, \
         the chart sets POD_NAMESPACE)"
    )]
    MissingLeaseNamespace,
    #[error(
        "the built-in Lambda code {0:?} is neither s3://bucket/key nor a readable file: fix --lambda-code \
         (KAPPA_LAMBDA_CODE)"
    )]
    InvalidLambdaCode(String),
    #[error(
        "Lambda architecture {0:?} is not x86_64 or arm64: fix --lambda-architecture (KAPPA_LAMBDA_ARCHITECTURE)"
    )]
    InvalidLambdaArchitecture(String),
}

/// Settings after validation: what the controllers read.
#[derive(Clone, Debug)]
pub struct Config {
    pub cluster_id: String,
    pub watch_namespaces: Vec<String>,
    pub resync: Duration,
    pub http_addr: std::net::SocketAddr,
    pub push_addr: std::net::SocketAddr,
    /// The push endpoint's base URL for clients (`ws://host:port`).
    pub push_url: String,
    /// The file holding the push endpoint's bearer token, if it requires one.
    pub push_token_file: Option<std::path::PathBuf>,
    pub lease_namespace: String,
    pub lease_name: String,
    pub lease_duration: Duration,
    pub identity: String,
    pub lambda_code: LambdaCodeSource,
    pub lambda_architecture: crate::plan::function::Architecture,
    /// `None`: every backfill runs inside the operator.
    pub backfill_jobs: Option<BackfillJobs>,
}

impl Settings {
    /// Checks every setting and fills in what comes from the pod's environment.
    pub fn validate(&self) -> Result<Config, SettingsError> {
        let cluster_id = self.cluster_id.clone().ok_or(SettingsError::MissingClusterId)?;
        if !valid_cluster_id(&cluster_id) {
            return Err(SettingsError::InvalidClusterId(cluster_id));
        }
        if self.resync_seconds < 10 {
            return Err(SettingsError::ResyncTooShort(self.resync_seconds));
        }
        if !(5..=120).contains(&self.lease_seconds) {
            return Err(SettingsError::LeaseOutOfRange(self.lease_seconds));
        }
        let lease_namespace = self
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .filter(|ns| !ns.is_empty())
            .ok_or(SettingsError::MissingLeaseNamespace)?;
        let identity = self
            .identity
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(default_identity);
        let lambda_code = match self.lambda_code.as_deref().filter(|c| !c.is_empty()) {
            Some(code) => match code.strip_prefix("s3://").and_then(|rest| rest.split_once('/')) {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => LambdaCodeSource::S3 {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                },
                _ if !code.starts_with("s3://") && std::path::Path::new(code).is_file() => {
                    LambdaCodeSource::File(code.into())
                }
                _ => return Err(SettingsError::InvalidLambdaCode(code.to_string())),
            },
            None => LambdaCodeSource::File(
                std::env::current_exe().map_err(|e| SettingsError::InvalidLambdaCode(e.to_string()))?,
            ),
        };
        use crate::plan::function::Architecture;
        let lambda_architecture = match self.lambda_architecture.as_deref().unwrap_or_default() {
            "" if cfg!(target_arch = "aarch64") => Architecture::Arm64,
            "" | "x86_64" => Architecture::X86_64,
            "arm64" => Architecture::Arm64,
            other => return Err(SettingsError::InvalidLambdaArchitecture(other.to_string())),
        };
        let backfill_jobs = self
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .map(|image| BackfillJobs {
                image,
                service_account: self.service_account.clone(),
                min_items: self.backfill_job_items,
            });
        Ok(Config {
            backfill_jobs,
            lambda_code,
            lambda_architecture,
            cluster_id,
            watch_namespaces: self
                .watch_namespaces
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            resync: Duration::from_secs(self.resync_seconds),
            http_addr: self.http_addr,
            push_addr: self.push_addr,
            push_url: self
                .push_url
                .clone()
                .filter(|u| !u.is_empty())
                .map(|u| u.trim_end_matches('/').to_string())
                .unwrap_or_else(|| format!("ws://127.0.0.1:{}", self.push_addr.port())),
            push_token_file: self.push_token_file.clone(),
            lease_namespace,
            lease_name: self.lease_name.clone(),
            lease_duration: Duration::from_secs(self.lease_seconds),
            identity,
        })
    }
}

fn valid_cluster_id(id: &str) -> bool {
    (1..=16).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "kappa-operator".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    fn parse(args: &[&str]) -> Settings {
        Cli::parse_from(std::iter::once("kappa").chain(args.iter().copied())).settings
    }

    #[test]
    fn cluster_id_is_required_and_checked() {
        // SAFETY of the test: the variables are not set by the test harness.
        let s = parse(&["--lease-namespace", "x"]);
        if std::env::var("KAPPA_CLUSTER_ID").is_err() {
            assert_eq!(s.validate().unwrap_err(), SettingsError::MissingClusterId);
        }
        let s = parse(&["--cluster-id", "Prod_1", "--lease-namespace", "x"]);
        assert_eq!(
            s.validate().unwrap_err(),
            SettingsError::InvalidClusterId("Prod_1".into())
        );
        let s = parse(&["--cluster-id", "prod-eu1", "--lease-namespace", "x"]);
        assert_eq!(s.validate().unwrap().cluster_id, "prod-eu1");
    }

    #[test]
    fn ranges_are_checked() {
        let s = parse(&[
            "--cluster-id",
            "c",
            "--lease-namespace",
            "x",
            "--resync-seconds",
            "1",
        ]);
        assert_eq!(s.validate().unwrap_err(), SettingsError::ResyncTooShort(1));
        let s = parse(&[
            "--cluster-id",
            "c",
            "--lease-namespace",
            "x",
            "--lease-seconds",
            "500",
        ]);
        assert_eq!(s.validate().unwrap_err(), SettingsError::LeaseOutOfRange(500));
    }

    #[test]
    fn the_push_endpoint_listens_on_8081_unless_set() {
        if std::env::var("KAPPA_PUSH_ADDR").is_err() {
            let s = parse(&["--cluster-id", "c", "--lease-namespace", "x"]);
            assert_eq!(s.validate().unwrap().push_addr.to_string(), "0.0.0.0:8081");
        }
        let s = parse(&[
            "--cluster-id",
            "c",
            "--lease-namespace",
            "x",
            "--push-addr",
            "127.0.0.1:9",
        ]);
        assert_eq!(s.validate().unwrap().push_addr.to_string(), "127.0.0.1:9");
    }

    #[test]
    fn messages_say_what_to_do() {
        let msg = SettingsError::MissingClusterId.to_string();
        assert!(msg.contains("KAPPA_CLUSTER_ID") && msg.contains("--cluster-id"));
    }
}
