//! CRD version skew: the installed CRDs must be the ones this operator was built with.
//!
//! Helm installs a chart's `crds/` once and never upgrades them, so an upgraded operator can run on an
//! older schema, whose API server prunes the fields it does not know (a view's `promotion.mode: Manual`
//! vanished and its version 2 was promoted without approval). Each generated CRD carries the digest of its
//! spec (`kappa.dev/schema-digest`, see [`crate::crd::schema_digest`]) and the operator version that
//! generated it. [`CrdSkew`] holds what the installed CRDs carry, kept current by [`CrdSkew::watch`]; while
//! any differs from this operator's (or has no digest at all) the operator reconciles nothing, `/readyz`
//! fails naming the problem, and each object gets a Warning Event `CrdSkew` with the fix. Once the CRDs
//! are applied, every object is reconciled again ([`CrdSkew::cleared`]), without a restart.
//!
//! The digest is compared: a release that keeps the schema keeps the digest, so it runs on the CRDs of its
//! predecessor. The version is reported for humans. A CRD that carries this operator's digest but whose
//! schema was edited on the cluster (`kubectl edit` dropping a CEL rule) is skew too: the installed spec's
//! [`crate::crd::schema_fingerprint`] (what decides admission, without what the API server fills in) must
//! equal the generated one's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use futures::{Stream, StreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::crd::{OPERATOR_VERSION, OPERATOR_VERSION_ANNOTATION, SCHEMA_DIGEST_ANNOTATION};

/// What one CRD looks like on the cluster, as far as skew goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Installed {
    /// The CRD does not exist.
    Missing,
    /// The CRD exists, with the annotations it carries (either may be absent) and the fingerprint of its
    /// spec as installed (`None`: not known).
    Present {
        digest: Option<String>,
        version: Option<String>,
        fingerprint: Option<String>,
    },
}

impl Installed {
    /// What an installed CRD (or its absence) carries.
    pub fn of(crd: Option<&CustomResourceDefinition>) -> Installed {
        match crd {
            None => Installed::Missing,
            Some(crd) => {
                let annotation = |key: &str| crd.annotations().get(key).cloned();
                Installed::Present {
                    digest: annotation(SCHEMA_DIGEST_ANNOTATION),
                    version: annotation(OPERATOR_VERSION_ANNOTATION),
                    fingerprint: Some(crate::crd::schema_fingerprint(&crd.spec)),
                }
            }
        }
    }
}

/// One CRD whose installed schema is not this operator's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skew {
    /// The CRD's name, e.g. `materializedviews.kappa.dev`.
    pub crd: String,
    pub installed: Installed,
    /// This operator's digest of the CRD.
    pub expected_digest: String,
    /// The installed CRD carries this operator's digest, but its schema differs from the generated one.
    pub edited: bool,
}

/// What this operator expects of one of its CRDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// [`crate::crd::schema_digest`] of the generated spec (the annotation's value).
    pub digest: String,
    /// [`crate::crd::schema_fingerprint`] of the generated spec.
    pub fingerprint: String,
}

impl Expected {
    pub fn of(crd: &CustomResourceDefinition) -> Expected {
        Expected {
            digest: crate::crd::schema_digest(&crd.spec),
            fingerprint: crate::crd::schema_fingerprint(&crd.spec),
        }
    }
}

/// The pure comparison: the skew of CRD `crd` when it is `installed` and this operator expects `expected`;
/// `None` when they agree. A CRD without the digest annotation (installed by hand, or from a release before
/// the annotation) is skew, and so is a missing CRD, and one whose digest is ours but whose installed
/// schema's fingerprint is not (edited on the cluster).
pub fn compare(crd: &str, expected: &Expected, installed: &Installed) -> Option<Skew> {
    let skew = |edited| Skew {
        crd: crd.to_string(),
        installed: installed.clone(),
        expected_digest: expected.digest.clone(),
        edited,
    };
    match installed {
        Installed::Present { digest: Some(d), fingerprint, .. } if *d == expected.digest => {
            let edited = fingerprint.as_ref().is_some_and(|f| *f != expected.fingerprint);
            edited.then(|| skew(true))
        }
        _ => Some(skew(false)),
    }
}

/// The first 12 hex digits of a digest, enough to tell two apart in a message.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

impl std::fmt::Display for Skew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (crd, ours) = (&self.crd, short(&self.expected_digest));
        if self.edited {
            return write!(
                f,
                "CRD {crd} carries this operator's schema digest {ours}, but its schema on the cluster differs \
                 from the one generated with it (edited by hand?): admission may accept what this operator \
                 refuses"
            );
        }
        match &self.installed {
            Installed::Missing => write!(f, "CRD {crd} is not installed"),
            Installed::Present { digest: None, version, .. } => write!(
                f,
                "CRD {crd} has no {SCHEMA_DIGEST_ANNOTATION} annotation (installed by hand or from an older \
                 release{}), this operator {OPERATOR_VERSION} needs schema digest {ours}",
                version
                    .as_ref()
                    .map(|v| format!(", operator version {v}"))
                    .unwrap_or_default()
            ),
            Installed::Present { digest: Some(theirs), version, .. } => write!(
                f,
                "CRD {crd} has schema digest {} (operator version {}), this operator {OPERATOR_VERSION} \
                 needs schema digest {ours}",
                short(theirs),
                version.as_deref().unwrap_or("unknown")
            ),
        }
    }
}

/// The command that installs this operator's CRDs (the release's CRDs, as the README installs them).
pub fn fix_command() -> String {
    format!(
        "kubectl apply --server-side --force-conflicts -f \
         https://github.com/kappa-dev/kappa-operator/releases/download/v{OPERATOR_VERSION}/kappa-operator-{OPERATOR_VERSION}-crds.yaml"
    )
}

/// The message of a non-empty list of skews: each CRD, what it is, what this operator needs, and the fix.
pub fn describe(skews: &[Skew]) -> String {
    let each: Vec<String> = skews.iter().map(ToString::to_string).collect();
    format!(
        "{}. The operator reconciles nothing until the CRDs match (Helm never upgrades a chart's crds/): run \
         `{}` (or `kappa-operator crds | kubectl apply --server-side --force-conflicts -f -`)",
        each.join("; "),
        fix_command()
    )
}

/// The shared CRD skew state: what each of this operator's CRDs looks like on the cluster. Cheap to clone;
/// read by the reconcilers and `/readyz`, written by [`CrdSkew::watch`].
#[derive(Clone)]
pub struct CrdSkew {
    /// CRD name → what this operator expects of it.
    expected: Arc<BTreeMap<String, Expected>>,
    state: Arc<watch::Sender<BTreeMap<String, Installed>>>,
    /// `kappa_crd_skew`: the number of CRDs that differ.
    gauge: Gauge<i64, AtomicI64>,
}

impl CrdSkew {
    /// The state of freshly read CRDs (those absent from `installed` count as missing).
    pub fn new(installed: &[CustomResourceDefinition], gauge: Gauge<i64, AtomicI64>) -> CrdSkew {
        let expected: BTreeMap<String, Expected> = crate::crd::all_crds()
            .iter()
            .map(|crd| (crd.name_any(), Expected::of(crd)))
            .collect();
        let state = expected
            .keys()
            .map(|name| {
                let crd = installed.iter().find(|c| &c.name_any() == name);
                (name.clone(), Installed::of(crd))
            })
            .collect();
        let skew = CrdSkew {
            expected: Arc::new(expected),
            state: Arc::new(watch::Sender::new(state)),
            gauge,
        };
        skew.report(&[]);
        skew
    }

    /// The CRDs that differ from this operator's, in name order.
    pub fn skews(&self) -> Vec<Skew> {
        skews_of(&self.expected, &self.state.borrow())
    }

    /// What is wrong, when any CRD differs.
    pub fn problem(&self) -> Option<String> {
        let skews = self.skews();
        (!skews.is_empty()).then(|| describe(&skews))
    }

    /// Records what CRD `name` looks like now, logging when the skew changes.
    pub fn set(&self, name: &str, installed: Installed) {
        if !self.expected.contains_key(name) {
            return;
        }
        let before = self.skews();
        let changed = self.state.send_if_modified(|state| {
            let slot = state.entry(name.to_string()).or_insert(Installed::Missing);
            let changed = *slot != installed;
            *slot = installed;
            changed
        });
        if changed {
            self.report(&before);
        }
    }

    /// Logs the current skew if it differs from `before`, and sets the gauge.
    fn report(&self, before: &[Skew]) {
        let now = self.skews();
        self.gauge.set(now.len() as i64);
        if now == before {
            return;
        }
        match now.is_empty() {
            true => tracing::info!("the installed CRDs match this operator's; reconciling"),
            false => tracing::error!(
                crds = ?now.iter().map(|s| s.crd.as_str()).collect::<Vec<_>>(),
                "CRD version skew: {}",
                describe(&now)
            ),
        }
    }

    /// A stream that yields each time the skew clears (every CRD matches again): a controller re-reconciles
    /// everything on it, so the objects left alone while skewed are reconciled without a restart.
    pub fn cleared(&self) -> impl Stream<Item = ()> + Send + 'static {
        let expected = self.expected.clone();
        let rx = self.state.subscribe();
        futures::stream::unfold((rx, expected), |(mut rx, expected)| async move {
            loop {
                rx.changed().await.ok()?;
                if skews_of(&expected, &rx.borrow_and_update()).is_empty() {
                    return Some(((), (rx, expected)));
                }
            }
        })
    }

    /// Watches this operator's CRDs, one watch each (by name), keeping the state current until the process
    /// ends. Watch errors are logged and retried with backoff; the last known state stays meanwhile.
    pub async fn watch(self, client: Client) {
        let api: Api<CustomResourceDefinition> = Api::all(client);
        let streams = self.expected.keys().map(|name| {
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let name = name.clone();
            watcher(api.clone(), config)
                .default_backoff()
                .map(move |event| (name.clone(), event))
                .boxed()
        });
        let mut events = futures::stream::select_all(streams);
        // Per CRD: whether a relist in progress has seen it (a relist that does not is a deletion).
        let mut seen: BTreeMap<String, bool> = BTreeMap::new();
        while let Some((name, event)) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => {
                    seen.insert(name, false);
                }
                Ok(watcher::Event::InitApply(crd)) => {
                    seen.insert(name.clone(), true);
                    self.set(&name, Installed::of(Some(&crd)));
                }
                Ok(watcher::Event::InitDone) => {
                    if seen.get(&name) == Some(&false) {
                        self.set(&name, Installed::Missing);
                    }
                }
                Ok(watcher::Event::Apply(crd)) => self.set(&name, Installed::of(Some(&crd))),
                Ok(watcher::Event::Delete(_)) => self.set(&name, Installed::Missing),
                Err(e) => tracing::warn!(crd = %name, error = %e, "watching the CRD failed; retrying"),
            }
        }
    }
}

fn skews_of(expected: &BTreeMap<String, Expected>, state: &BTreeMap<String, Installed>) -> Vec<Skew> {
    expected
        .iter()
        .filter_map(|(name, e)| compare(name, e, state.get(name).unwrap_or(&Installed::Missing)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(digest: Option<&str>, version: Option<&str>) -> Installed {
        Installed::Present {
            digest: digest.map(String::from),
            version: version.map(String::from),
            fingerprint: None,
        }
    }

    const OURS: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn ours() -> Expected {
        Expected {
            digest: OURS.to_string(),
            fingerprint: "generated".to_string(),
        }
    }
    const THEIRS: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    #[test]
    fn the_same_digest_is_no_skew_whatever_the_version() {
        assert_eq!(
            compare("v.kappa.dev", &ours(), &present(Some(OURS), Some("0.0.1"))),
            None
        );
        assert_eq!(compare("v.kappa.dev", &ours(), &present(Some(OURS), None)), None);
    }

    #[test]
    fn another_digest_a_missing_digest_or_a_missing_crd_is_skew() {
        for installed in [
            present(Some(THEIRS), Some(OPERATOR_VERSION)),
            present(None, None),
            present(None, Some("0.0.1")),
            present(Some(""), None),
            Installed::Missing,
        ] {
            let skew = compare("v.kappa.dev", &ours(), &installed).expect("skew");
            assert_eq!(skew.installed, installed);
            assert_eq!(skew.expected_digest, OURS);
        }
    }

    #[test]
    fn the_message_names_the_crd_both_digests_both_versions_and_the_fix() {
        let skew = compare(
            "materializedviews.kappa.dev",
            &ours(),
            &present(Some(THEIRS), Some("0.0.9")),
        )
        .unwrap();
        let message = describe(std::slice::from_ref(&skew));
        for part in [
            "CRD materializedviews.kappa.dev",
            "schema digest fedcba987654 (operator version 0.0.9)",
            &format!("this operator {OPERATOR_VERSION} needs schema digest 0123456789ab"),
            "kubectl apply --server-side --force-conflicts -f https://github.com/kappa-dev/kappa-operator/releases/download/v",
            &format!("/kappa-operator-{OPERATOR_VERSION}-crds.yaml"),
        ] {
            assert!(message.contains(part), "{part:?} not in {message:?}");
        }
        let unannotated = compare("eventlogs.kappa.dev", &ours(), &present(None, None)).unwrap();
        assert!(
            unannotated
                .to_string()
                .contains("has no kappa.dev/schema-digest annotation")
        );
        assert!(
            compare("eventlogs.kappa.dev", &ours(), &Installed::Missing)
                .unwrap()
                .to_string()
                .contains("is not installed")
        );
    }

    fn generated() -> Vec<CustomResourceDefinition> {
        crate::crd::all_crds()
    }

    #[test]
    fn the_generated_crds_are_no_skew_and_an_edit_is_seen() {
        let skew = CrdSkew::new(&generated(), Gauge::default());
        assert_eq!(skew.skews(), vec![]);
        assert_eq!(skew.problem(), None);
        let mut old = generated().remove(1);
        old.metadata.annotations = None;
        skew.set(&old.name_any(), Installed::of(Some(&old)));
        assert_eq!(skew.gauge.get(), 1);
        let problem = skew.problem().expect("skew");
        assert!(problem.starts_with("CRD materializedviews.kappa.dev has no kappa.dev/schema-digest"));
        skew.set(&old.name_any(), Installed::of(Some(&generated()[1])));
        assert_eq!(skew.problem(), None);
        assert_eq!(skew.gauge.get(), 0);
        // CRDs of other operators are not ours to judge.
        skew.set("widgets.example.com", Installed::Missing);
        assert_eq!(skew.problem(), None);
    }

    #[test]
    fn a_crd_with_our_digest_but_an_edited_schema_is_skew_and_api_server_defaults_are_not() {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceConversion;
        let skew = CrdSkew::new(&generated(), Gauge::default());
        // What the API server fills in when it stores a CRD changes nothing.
        let mut stored = generated().remove(0);
        stored.spec.conversion = Some(CustomResourceConversion { strategy: "None".into(), webhook: None });
        stored.spec.names.list_kind = Some(format!("{}List", stored.spec.names.kind));
        skew.set(&stored.name_any(), Installed::of(Some(&stored)));
        assert_eq!(skew.problem(), None);
        // `kubectl edit` dropping a CEL rule, the annotations kept.
        let mut edited = stored.clone();
        let schema = edited.spec.versions[0].schema.as_mut().unwrap();
        let spec = schema
            .open_api_v3_schema
            .as_mut()
            .unwrap()
            .properties
            .as_mut()
            .unwrap();
        let table = spec
            .get_mut("spec")
            .unwrap()
            .properties
            .as_mut()
            .unwrap()
            .get_mut("table")
            .unwrap();
        assert!(
            table.x_kubernetes_validations.take().is_some(),
            "the generated table has CEL rules"
        );
        skew.set(&edited.name_any(), Installed::of(Some(&edited)));
        let problem = skew.problem().expect("an edited schema is skew");
        assert!(
            problem.starts_with("CRD eventlogs.kappa.dev carries this operator's schema digest")
                && problem.contains("edited by hand")
                && problem.contains("kubectl apply --server-side"),
            "{problem}"
        );
    }

    #[test]
    fn crds_not_read_at_start_are_missing() {
        let skew = CrdSkew::new(&generated()[..1], Gauge::default());
        let skews = skew.skews();
        assert_eq!(skews.len(), 1);
        assert_eq!(skews[0].crd, "materializedviews.kappa.dev");
        assert_eq!(skews[0].installed, Installed::Missing);
    }

    #[tokio::test]
    async fn cleared_yields_when_the_skew_clears_only() {
        let mut old = generated().remove(0);
        old.metadata.annotations = None;
        let name = old.name_any();
        let skew = CrdSkew::new(&[old.clone(), generated().remove(1)], Gauge::default());
        let mut cleared = Box::pin(skew.cleared());
        // Another skew is not a clearing.
        skew.set(&name, Installed::Missing);
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(50), cleared.next()).await;
        assert!(nothing.is_err(), "no clearing yet");
        skew.set(&name, Installed::of(Some(&generated()[0])));
        let yielded = tokio::time::timeout(std::time::Duration::from_secs(1), cleared.next()).await;
        assert_eq!(yielded, Ok(Some(())));
    }
}
