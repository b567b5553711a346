//! Prometheus metrics: reconciles, failures and durations per kind, and whether this replica leads.
//!
//! Labels are bounded: the kind, and for failures the error's `category()`; never object names or
//! payloads.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsCallLabels {
    pub service: String,
    pub operation: String,
    pub mutating: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeCallLabels {
    /// get, list, watch, create, update, patch, delete (deletecollection is a delete).
    pub verb: &'static str,
    /// The plural, with its subresource (`materializedviews/status`), or `other` (discovery, version).
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewLabels {
    pub namespace: String,
    pub view: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogLabels {
    pub namespace: String,
    pub event_log: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamViewLabels {
    pub stream: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub kind: &'static str,
    pub category: &'static str,
}

/// The operator's metrics and the registry they are exported from.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<KindLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub duration: Family<KindLabels, Histogram>,
    pub leader: Gauge<i64, AtomicI64>,
    pub aws_calls: Family<AwsCallLabels, Counter>,
    /// `kappa_kubernetes_calls_total`: requests to the Kubernetes API server, per verb and resource (a
    /// watch counts once, when it is opened).
    pub kubernetes_calls: Family<KubeCallLabels, Counter>,
    /// `kappa_view_record_errors_total`: records a view left out (`onRecordError: Skip`).
    pub record_errors: Family<ViewLabels, Counter>,
    /// `kappa_view_gaps_total`: times a view's live path lost stream records (a gap), per view.
    pub gaps: Family<ViewLabels, Counter>,
    /// `kappa_reconciles_deferred_total`: reconciles put off by the per-object floor on reconcile
    /// frequency (an object that keeps waiting or failing), per kind.
    pub deferred: Family<KindLabels, Counter>,
    /// `kappa_crd_skew`: the number of this operator's CRDs installed with another schema (or missing);
    /// nothing is reconciled while it is not 0.
    pub crd_skew: Gauge<i64, AtomicI64>,
    /// `kappa_ingest_dead_letters`: messages in a log's ingest dead-letter queue, as last read.
    pub dead_letters: Family<LogLabels, Gauge<i64, AtomicI64>>,
    /// `kappa_router_dead_letters`: messages in a log's router failure queue, as last read.
    pub router_dead_letters: Family<LogLabels, Gauge<i64, AtomicI64>>,
    /// `kappa_view_dead_letters`: messages in a Lambda view's projector failure queues, as last read.
    pub view_dead_letters: Family<ViewLabels, Gauge<i64, AtomicI64>>,
    /// `kappa_stream_readers`: the operator's readers of a log's stream (the shared reader and at most
    /// one catch-up reader; see [`crate::runtime::shared_stream`]), per stream ARN.
    pub stream_readers: Family<StreamLabels, Gauge<i64, AtomicI64>>,
    /// `kappa_stream_views`: in-cluster live readers of a log's stream by state, `joined` (reading the
    /// shared reader's window) or `catching_up` (reading on their own, or waiting to), per stream ARN.
    pub stream_views: Family<StreamViewLabels, Gauge<i64, AtomicI64>>,
    /// `kappa_stream_lag_seconds`: how far behind the stream's tip the shared reader is: seconds since
    /// the time up to which it read everything ([`crate::runtime::stream::Batch::at_end_since`]), as of its
    /// last poll, per stream ARN.
    pub stream_lag: Family<StreamLabels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kappa");
        let reconciles = Family::<KindLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        let leader = Gauge::<i64, AtomicI64>::default();
        let aws_calls = Family::<AwsCallLabels, Counter>::default();
        let kubernetes_calls = Family::<KubeCallLabels, Counter>::default();
        let record_errors = Family::<ViewLabels, Counter>::default();
        registry.register(
            "view_record_errors",
            "Log records a view left out because they cannot be projected (spec.projection.onRecordError Skip), per view",
            record_errors.clone(),
        );
        let gaps = Family::<ViewLabels, Counter>::default();
        registry.register(
            "view_gaps",
            "Times a view's live path lost stream records (its checkpoint older than the stream holds), per view",
            gaps.clone(),
        );
        let deferred = Family::<KindLabels, Counter>::default();
        registry.register(
            "reconciles_deferred",
            "Reconciles put off by the per-object floor on reconcile frequency (an object that keeps waiting or failing), per kind",
            deferred.clone(),
        );
        let crd_skew = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "crd_skew",
            "This operator's CRDs installed with another schema than its own (or missing); nothing is reconciled while not 0",
            crd_skew.clone(),
        );
        let dead_letters = Family::<LogLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "ingest_dead_letters",
            "Messages in an EventLog's ingest dead-letter queue (the writer failed them maxReceiveCount times), as last read",
            dead_letters.clone(),
        );
        let router_dead_letters = Family::<LogLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "router_dead_letters",
            "Messages in an EventLog's router failure queue (stream batches the router failed after its retries), as last read",
            router_dead_letters.clone(),
        );
        let view_dead_letters = Family::<ViewLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "view_dead_letters",
            "Messages in a Lambda view's projector failure queues (records the projector failed after its retries), as last read",
            view_dead_letters.clone(),
        );
        let stream_readers = Family::<StreamLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "stream_readers",
            "The operator's readers of a log's stream: the shared reader and at most one catch-up reader, per stream ARN",
            stream_readers.clone(),
        );
        let stream_views = Family::<StreamViewLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "stream_views",
            "In-cluster live readers of a log's stream, joined to the shared reader or catching up, per stream ARN",
            stream_views.clone(),
        );
        let stream_lag = Family::<StreamLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "stream_lag_seconds",
            "Seconds since the time up to which the shared reader of a log's stream read every record, as of its last poll, per stream ARN",
            stream_lag.clone(),
        );
        registry.register("reconciles", "Reconciles run, per kind", reconciles.clone());
        registry.register(
            "aws_retries",
            "Transient AWS errors (throttling, 5xx, timeouts) retried in place, per operation",
            crate::aws::retry::RETRIES.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, per kind and error category",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, per kind",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "aws_calls",
            "AWS API calls, per service and operation",
            aws_calls.clone(),
        );
        registry.register(
            "kubernetes_calls",
            "Kubernetes API requests, per verb and resource",
            kubernetes_calls.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            leader,
            aws_calls,
            kubernetes_calls,
            record_errors,
            gaps,
            deferred,
            crd_skew,
            dead_letters,
            router_dead_letters,
            view_dead_letters,
            stream_readers,
            stream_views,
            stream_lag,
        }
    }
}

impl Metrics {
    /// Starts timing a reconcile of `kind` and counts it; the duration is observed when the guard drops.
    pub fn reconcile_started(&self, kind: &'static str) -> ReconcileTimer<'_> {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
        ReconcileTimer { metrics: self, kind, start: std::time::Instant::now() }
    }

    pub fn reconcile_failed(&self, kind: &'static str, category: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { kind, category })
            .inc();
    }

    /// Counts one AWS call; operation names are a bounded set per service.
    pub fn aws_call(&self, service: &str, operation: &str, mutating: bool) {
        let labels = AwsCallLabels {
            service: service.to_string(),
            operation: operation.to_string(),
            mutating: if mutating { "true" } else { "false" },
        };
        self.aws_calls.get_or_create(&labels).inc();
    }

    /// Counts one request to the Kubernetes API server, by its method and path (see [`KubeCallLabels`]).
    pub fn kubernetes_call(&self, method: &str, path: &str, query: Option<&str>) {
        let (verb, resource) = kube_call_labels(method, path, query);
        self.kubernetes_calls
            .get_or_create(&KubeCallLabels { verb, resource })
            .inc();
    }

    /// The text exposition format served on /metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The verb and resource of a request to the API server: `/api/v1/namespaces/ns/events`,
/// `/apis/kappa.dev/v1alpha1/namespaces/ns/materializedviews/name/status`, … A GET without a name lists (or
/// watches, with `watch=true`).
fn kube_call_labels(method: &str, path: &str, query: Option<&str>) -> (&'static str, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[][..],
    };
    // A namespaced resource's path names its namespace first; `namespaces` alone is the resource.
    let rest = match rest {
        ["namespaces", _ns, more @ ..] if !more.is_empty() => more,
        _ => rest,
    };
    let (resource, named) = match rest {
        [] => ("other".to_string(), false),
        [plural] => (plural.to_string(), false),
        [plural, _name] => (plural.to_string(), true),
        [plural, _name, sub, ..] => (format!("{plural}/{sub}"), true),
    };
    let watching = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match (method, named) {
        ("GET", _) if watching => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => "other",
    };
    (verb, resource)
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    start: std::time::Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let secs = self.start.elapsed().as_secs_f64();
        self.metrics
            .duration
            .get_or_create(&KindLabels { kind: self.kind })
            .observe(secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_per_kind() {
        let m = Metrics::default();
        drop(m.reconcile_started("MaterializedView"));
        m.reconcile_failed("MaterializedView", "aws");
        let text = m.render();
        assert!(
            text.contains(r#"kappa_reconciles_total{kind="MaterializedView"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"kappa_reconcile_failures_total{kind="MaterializedView",category="aws"} 1"#));
        assert!(text.contains("kappa_reconcile_duration_seconds_count"));
        assert!(text.contains("kappa_leader 0"));
    }

    #[test]
    fn kubernetes_calls_by_verb_and_resource() {
        let cases = [
            (
                "GET",
                "/apis/kappa.dev/v1alpha1/namespaces/a/materializedviews",
                None,
                "list",
                "materializedviews",
            ),
            (
                "GET",
                "/apis/kappa.dev/v1alpha1/namespaces/a/materializedviews",
                Some("watch=true&resourceVersion=1"),
                "watch",
                "materializedviews",
            ),
            (
                "PATCH",
                "/apis/kappa.dev/v1alpha1/namespaces/a/materializedviews/v/status",
                None,
                "patch",
                "materializedviews/status",
            ),
            ("GET", "/api/v1/namespaces/a", None, "get", "namespaces"),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/a/events",
                None,
                "create",
                "events",
            ),
            ("GET", "/version", None, "list", "other"),
        ];
        for (method, path, query, verb, resource) in cases {
            assert_eq!(
                kube_call_labels(method, path, query),
                (verb, resource.to_string()),
                "{method} {path}"
            );
        }
    }
}
