//! Dereference: what a view's reconcile reads before it validates anything: its EventLog and the other
//! views of its namespace (the sharers of a shared views table).

use std::sync::Arc;

use futures::FutureExt;
use kube::Api;
use kube::runtime::reflector::Store;

use crate::controller::{Context, Error, Result};
use crate::crd::{EventLog, MaterializedView, Tolerant, Unreadable};

/// The view's EventLog (`spec.eventLogRef.name`, in the view's namespace) as this operator found it.
pub(super) enum LogRef {
    Found(Box<EventLog>),
    /// It exists but this operator version cannot read it (its spec, or its status, fails to decode).
    Unreadable(Unreadable),
    Missing,
}

/// Reads the view's EventLog tolerantly: a log this operator version cannot read stalls its views with
/// the field named instead of failing their reconcile. Errors: the API server's, retried by the caller.
pub(super) async fn event_log(client: &kube::Client, ns: &str, name: &str) -> Result<LogRef> {
    let logs: Api<Tolerant<EventLog>> = Api::namespaced(client.clone(), ns);
    let found = logs
        .get_opt(name)
        .await
        .map_err(Error::kube("reading", format!("EventLog {ns}/{name}")))?;
    Ok(match found.map(|t| (t.object, t.status_dropped)) {
        None => LogRef::Missing,
        Some((Ok(log), None)) => LogRef::Found(Box::new(log)),
        Some((Ok(_), Some(why)) | (Err(why), _)) => LogRef::Unreadable(why),
    })
}

/// The controllers' caches of the views (their reflector stores), one per watched scope: a namespace, or
/// every namespace (`None`). Registered by `run`; empty in tests, where every read lists.
#[derive(Default)]
pub(in crate::controller) struct ViewStores(std::sync::RwLock<Vec<(Option<String>, ViewStore)>>);

type ViewStore = Store<Tolerant<MaterializedView>>;

impl ViewStores {
    pub(super) fn register(&self, namespace: Option<String>, store: ViewStore) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((namespace, store));
    }

    /// The store that holds the views of `ns`, once it has been filled by its first list (not before: an
    /// empty store would hide every sharer).
    fn ready_for(&self, ns: &str) -> Option<ViewStore> {
        let stores = self.0.read().unwrap_or_else(|e| e.into_inner());
        let store = stores
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == ns))
            .map(|(_, store)| store.clone())?;
        matches!(store.wait_until_ready().now_or_never(), Some(Ok(()))).then_some(store)
    }
}

/// The namespace's views, to plan a shared table with its sharers: those this operator can read (an
/// unreadable one is named in a Warning Event of its own by its reconcile).
///
/// Read from the controller's cache (its reflector store) once that has been filled, else listed: with N
/// views a list per reconcile decodes N objects, N² per pass. The cache is the one the reconcile's own
/// object comes from, so it holds every view whose creation or change was watched before this view's;
/// it may miss one created a moment ago, as the list could miss one created just after it. Two views
/// claiming overlapping prefixes at once stay as safe as with the list: each validates again at its next
/// reconcile (its status write wakes it), when the other's is seen, and the later one is stalled
/// (`validate::prefix_overlap`). A deletion lists (`cleanup::delete_owned`): it is rare, and what it
/// removes depends on the sharers it sees.
///
/// The cached views are shared with the cache, not copied: every reconcile holds its namespace's views
/// while it runs, so copies would cost N views × N reconciles running at once (with 100 in-cluster views
/// starting together, 50 of the operator's 81 MB peak heap in a heaptrack of the debug build).
pub(super) async fn views_in(ctx: &Context, ns: &str) -> Result<Views> {
    let views: Vec<_> = match ctx.view_stores.ready_for(ns) {
        Some(store) => store
            .state()
            .into_iter()
            .filter(|t| kube::Resource::meta(t.as_ref()).namespace.as_deref() == Some(ns))
            .collect(),
        None => listed(&ctx.client, ns).await?.into_iter().map(Arc::new).collect(),
    };
    Ok(Views(
        views.into_iter().filter(|t| readable(t).is_some()).collect(),
    ))
}

/// The views [`views_in`] found, each readable.
pub(super) struct Views(Vec<Arc<Tolerant<MaterializedView>>>);

impl Views {
    /// No views: what a reconcile that stopped before reading them passes on.
    pub fn none() -> Views {
        Views(Vec::new())
    }

    /// Every view, borrowed.
    pub fn all(&self) -> Vec<&MaterializedView> {
        self.0.iter().filter_map(|t| t.readable()).collect()
    }
}

/// [`views_in`] from the API server, always (a list of the namespace's views).
pub(super) async fn views_listed(client: &kube::Client, ns: &str) -> Result<Vec<MaterializedView>> {
    Ok(crate::controller::readable(listed(client, ns).await?))
}

async fn listed(client: &kube::Client, ns: &str) -> Result<Vec<Tolerant<MaterializedView>>> {
    let api: Api<Tolerant<MaterializedView>> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&Default::default())
        .await
        .map_err(Error::kube("listing the views of namespace", ns))?;
    Ok(list.items)
}

/// A cached view as [`crate::controller::readable`] keeps a listed one: `None` (and logged) when this
/// operator cannot read it.
fn readable(t: &Tolerant<MaterializedView>) -> Option<&MaterializedView> {
    use kube::ResourceExt;
    match &t.object {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(kind = "MaterializedView", name = %t.name_any(), error = %e, "left out of a list: this operator cannot read it");
            None
        }
    }
}
