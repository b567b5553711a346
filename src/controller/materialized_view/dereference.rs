//! Dereference: what a view's reconcile reads before it validates anything: its EventLog and the other
//! views of its namespace (the sharers of a shared views table).

use kube::Api;

use crate::controller::{Error, Result};
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

/// The namespace's views, to plan a shared table with its sharers: those this operator can read (an
/// unreadable one is named in a Warning Event of its own by its reconcile).
pub(super) async fn views_in(client: &kube::Client, ns: &str) -> Result<Vec<MaterializedView>> {
    let api: Api<Tolerant<MaterializedView>> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&Default::default())
        .await
        .map_err(Error::kube("listing the views of namespace", ns))?;
    Ok(crate::controller::readable(list.items))
}
