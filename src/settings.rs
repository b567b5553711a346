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

    /// A file holding the one bearer token push clients must present (`Authorization: Bearer <token>`),
    /// with `--push-auth token`.
    #[arg(long, env = "KAPPA_PUSH_TOKEN_FILE")]
    pub push_token_file: Option<std::path::PathBuf>,

    /// How push clients are authorized: `kubernetes` (the default: the client's Kubernetes bearer token,
    /// checked by TokenReview, must belong to a subject that may watch materializedviews in the namespace,
    /// by SubjectAccessReview), `token` (one shared token from --push-token-file, which also selects it
    /// when this is unset) or `none`. The last two let every client watch every namespace: single-tenant
    /// clusters only.
    #[arg(long, env = "KAPPA_PUSH_AUTH")]
    pub push_auth: Option<String>,

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

    /// Which existing DynamoDB tables EventLogs may adopt (`spec.table.adoptExisting`), per namespace:
    /// `NAMESPACE=REGEX`, repeated (or `;`-separated in the variable). The regular expression must match
    /// the whole table name; `*` as the namespace means every namespace. Empty (the default): no
    /// adoption at all. Only tables without kappa ownership tags are ever adopted, whatever this says.
    #[arg(long, env = "KAPPA_ADOPTABLE_TABLES", value_delimiter = ';')]
    pub adoptable_tables: Vec<String>,

    /// The IAM managed policy every role the operator creates gets as its permissions boundary: an ARN,
    /// or a policy name in the operator's account (`arn:<partition>:iam::<account>:policy/<name>`). The
    /// operator's own IAM policy only lets it create roles with this boundary (chart:
    /// iam.permissionsBoundary; docs/iam-policy.md).
    #[arg(
        long,
        env = "KAPPA_PERMISSIONS_BOUNDARY",
        default_value = "kappa-functions-boundary"
    )]
    pub permissions_boundary: String,
}

/// The administrator's decision which existing tables the EventLogs of a namespace may adopt
/// (`--adoptable-tables`).
#[derive(Clone, Debug, Default)]
pub struct AdoptionRules {
    /// (namespace or `*`, whole-name pattern, the rule as written).
    rules: Vec<(String, regex::Regex, String)>,
}

impl AdoptionRules {
    /// Parses `NAMESPACE=REGEX` rules; the error names the rule and what is wrong.
    pub fn parse(rules: &[String]) -> Result<AdoptionRules, SettingsError> {
        let mut parsed = Vec::new();
        for rule in rules.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
            let invalid = |why: String| SettingsError::InvalidAdoptionRule(rule.to_string(), why);
            let (ns, pattern) = rule
                .split_once('=')
                .filter(|(ns, p)| !ns.is_empty() && !p.is_empty())
                .ok_or_else(|| invalid("it is not NAMESPACE=REGEX".into()))?;
            let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| invalid(e.to_string()))?;
            parsed.push((ns.to_string(), re, rule.to_string()));
        }
        Ok(AdoptionRules { rules: parsed })
    }

    /// Whether an EventLog in `namespace` may adopt the table `table`; the refusal names the setting.
    pub fn allows(&self, namespace: &str, table: &str) -> Result<(), AdoptionRefused> {
        let matching = self
            .rules
            .iter()
            .any(|(ns, re, _)| (ns == namespace || ns == "*") && re.is_match(table));
        if matching {
            return Ok(());
        }
        Err(AdoptionRefused::NoRule { namespace: namespace.to_string(), table: table.to_string() })
    }
}

/// Why an owner may not adopt an existing table; the message names the setting that decides and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdoptionRefused {
    /// No rule of `--adoptable-tables` lets `namespace` adopt `table`.
    #[error(
        "the operator's --adoptable-tables setting (chart value adoption.tables) has no rule letting \
         namespace {namespace} adopt table {table}; ask the cluster administrator to add one (for example \
         {namespace}={}), or leave spec.table.name out for a table of the log's own",
        regex::escape(table)
    )]
    NoRule { namespace: String, table: String },
    /// Not decided by the configuration: views and connections tables are never adopted, and a plan
    /// alone allows no adoption until the controller asks the rules.
    #[error(
        "the operator adopts no existing table unless its --adoptable-tables setting (chart value \
         adoption.tables) allows it for the namespace"
    )]
    NotConfigured,
}

/// When and how large backfills run as Indexed Jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackfillJobs {
    pub image: String,
    pub service_account: String,
    /// Exports with more items than this run as a Job.
    pub min_items: u64,
}

/// How the push endpoint authorizes clients (see `crate::push::auth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushAuthMode {
    /// TokenReview + SubjectAccessReview (watch materializedviews in the namespace).
    Kubernetes,
    /// One shared token, read from this file: single-tenant.
    Token(std::path::PathBuf),
    /// No check: single-tenant.
    None,
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
    #[error(
        "adoption rule {0:?} is not valid: {1}; write NAMESPACE=REGEX, e.g. team-a=legacy-.* (--adoptable-tables, \
         KAPPA_ADOPTABLE_TABLES, the chart's adoption.tables)"
    )]
    InvalidAdoptionRule(String, String),
    #[error(
        "permissions boundary {0:?} is neither an IAM policy ARN (arn:aws:iam::<account>:policy/<name>) nor a \
         policy name: fix --permissions-boundary (KAPPA_PERMISSIONS_BOUNDARY, the chart's iam.permissionsBoundary)"
    )]
    InvalidPermissionsBoundary(String),
    #[error(
        "push auth {0:?} with token file {1:?} does not fit: use --push-auth kubernetes (the default, without \
         a token file), token (with --push-token-file) or none (without one) (KAPPA_PUSH_AUTH, the chart's \
         push.auth)"
    )]
    InvalidPushAuth(String, Option<String>),
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
    /// How the push endpoint authorizes clients.
    pub push_auth: PushAuthMode,
    pub lease_namespace: String,
    pub lease_name: String,
    pub lease_duration: Duration,
    pub identity: String,
    pub lambda_code: LambdaCodeSource,
    pub lambda_architecture: crate::plan::function::Architecture,
    /// `None`: every backfill runs inside the operator.
    pub backfill_jobs: Option<BackfillJobs>,
    /// Which existing tables each namespace's EventLogs may adopt.
    pub adoption: AdoptionRules,
    /// The permissions boundary of every role the operator creates: a policy ARN, or a policy name in the
    /// operator's account.
    pub permissions_boundary: String,
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
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
                    LambdaCodeSource::S3 { bucket: bucket.to_string(), key: key.to_string() }
                }
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
        let boundary = self.permissions_boundary.trim().to_string();
        let boundary_ok = match boundary.strip_prefix("arn:") {
            Some(rest) => rest.split(':').nth(1) == Some("iam") && rest.contains(":policy/"),
            None => {
                !boundary.is_empty()
                    && boundary
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c))
            }
        };
        if !boundary_ok {
            return Err(SettingsError::InvalidPermissionsBoundary(boundary));
        }
        Ok(Config {
            adoption: AdoptionRules::parse(&self.adoptable_tables)?,
            permissions_boundary: boundary,
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
            push_auth: match (
                self.push_auth.as_deref().unwrap_or_default(),
                &self.push_token_file,
            ) {
                ("" | "token", Some(file)) => PushAuthMode::Token(file.clone()),
                ("" | "kubernetes", None) => PushAuthMode::Kubernetes,
                ("none", None) => PushAuthMode::None,
                (mode, file) => {
                    return Err(SettingsError::InvalidPushAuth(
                        mode.to_string(),
                        file.as_ref().map(|f| f.display().to_string()),
                    ));
                }
            },
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
    fn adoption_is_refused_unless_a_rule_names_the_namespace_and_matches_the_whole_table_name() {
        let rules = AdoptionRules::parse(&["tenant-a=legacy-.*".into(), "*=shared-log".into()]).unwrap();
        assert!(rules.allows("tenant-a", "legacy-payroll").is_ok());
        assert!(rules.allows("tenant-b", "shared-log").is_ok());
        let refused = rules
            .allows("tenant-b", "legacy-payroll")
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("--adoptable-tables") && refused.contains("adoption.tables"),
            "{refused}"
        );
        assert!(
            rules.allows("tenant-a", "x-legacy-payroll").is_err(),
            "the pattern matches the whole name"
        );
        assert!(
            AdoptionRules::default()
                .allows("tenant-a", "legacy-payroll")
                .is_err()
        );
        let bad = AdoptionRules::parse(&["tenant-a".into()]).unwrap_err();
        assert!(bad.to_string().contains("NAMESPACE=REGEX"), "{bad}");
        assert!(AdoptionRules::parse(&["a=(".into()]).is_err());
    }

    #[test]
    fn the_permissions_boundary_is_a_policy_arn_or_name() {
        let ok = |b: &str| {
            parse(&[
                "--cluster-id",
                "c",
                "--lease-namespace",
                "x",
                "--permissions-boundary",
                b,
            ])
            .validate()
            .map(|c| c.permissions_boundary)
        };
        assert_eq!(
            ok("kappa-functions-boundary").unwrap(),
            "kappa-functions-boundary"
        );
        assert!(ok("arn:aws:iam::123456789012:policy/kappa-functions-boundary").is_ok());
        assert!(ok("arn:aws:s3:::bucket").is_err());
        assert!(ok("").is_err());
    }

    #[test]
    fn push_clients_are_authorized_by_kubernetes_unless_a_single_tenant_mode_is_chosen() {
        let auth = |extra: &[&str]| {
            let mut args = vec!["--cluster-id", "c", "--lease-namespace", "x"];
            args.extend_from_slice(extra);
            parse(&args).validate().map(|c| c.push_auth)
        };
        if std::env::var("KAPPA_PUSH_AUTH").is_err() && std::env::var("KAPPA_PUSH_TOKEN_FILE").is_err() {
            assert_eq!(auth(&[]).unwrap(), PushAuthMode::Kubernetes);
            assert_eq!(
                auth(&["--push-token-file", "/t"]).unwrap(),
                PushAuthMode::Token("/t".into())
            );
            assert_eq!(auth(&["--push-auth", "none"]).unwrap(), PushAuthMode::None);
            assert!(auth(&["--push-auth", "token"]).is_err(), "token needs its file");
            assert!(auth(&["--push-auth", "open"]).is_err());
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let msg = SettingsError::MissingClusterId.to_string();
        assert!(msg.contains("KAPPA_CLUSTER_ID") && msg.contains("--cluster-id"));
    }
}
