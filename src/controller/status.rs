//! Status writing shared by both kinds: kstatus conditions, server-side apply, Events.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Context, Error, FIELD_MANAGER, Result};
use crate::crd::conditions::{Condition, ConditionStatus, upsert};
use crate::crd::{ConditionType, reasons};

pub fn now() -> Time {
    Time(Timestamp::now())
}

/// Where an object stands, in kstatus terms; each carries the reason and the message users read.
#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    /// The object does what it declares.
    Ready { reason: &'static str, message: String },
    /// Work toward the spec is under way; a reconcile will come back.
    Progressing { reason: &'static str, message: String },
    /// Progress needs a change from the user; the message says which.
    Stalled { reason: &'static str, message: String },
}

/// The condition reason of a permanent AWS failure: the operator's own refusals (another owner's
/// resource, an adoption not allowed) have reasons of their own, everything else is `AwsError`.
pub fn aws_reason(e: &crate::aws::AwsError) -> &'static str {
    match e.code.as_str() {
        crate::aws::error::OWNED_BY_ANOTHER => reasons::OWNED_BY_ANOTHER,
        crate::aws::error::ADOPTION_REFUSED => reasons::ADOPTION_REFUSED,
        crate::aws::error::RESERVED_NAME | crate::aws::error::INVALID_SPEC => reasons::INVALID_SPEC,
        crate::aws::error::OPERATOR_CONFIGURATION => reasons::OPERATOR_CONFIGURATION,
        crate::aws::error::RETAINED_STORAGE => reasons::STORAGE_RETAINED,
        crate::aws::error::TABLE_SETTING_REFUSED => reasons::TABLE_SETTING_REFUSED,
        _ => reasons::AWS_ERROR,
    }
}

impl Health {
    pub fn reason(&self) -> &'static str {
        match self {
            Health::Ready { reason, .. }
            | Health::Progressing { reason, .. }
            | Health::Stalled { reason, .. } => reason,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Health::Ready { message, .. }
            | Health::Progressing { message, .. }
            | Health::Stalled { message, .. } => message,
        }
    }
}

/// Writes the Ready, Reconciling and Stalled conditions for `health`, stamped with `generation`.
pub fn set_kstatus(conditions: &mut Vec<Condition>, health: &Health, generation: Option<i64>, now: &Time) {
    use crate::crd::ConditionStatus::{False, True};
    let (ready, reconciling, stalled) = match health {
        Health::Ready { .. } => (True, False, False),
        Health::Progressing { .. } => (False, True, False),
        Health::Stalled { .. } => (False, False, True),
    };
    let (reason, message) = (health.reason(), health.message().to_string());
    let quiet = |status| {
        if status == True {
            (reason, message.clone())
        } else {
            (reasons::AS_EXPECTED, String::new())
        }
    };
    // Ready always carries the reason and message: it is the condition users look at first.
    for (type_, status, (reason, message)) in [
        (ConditionType::Ready, ready, (reason, message.clone())),
        (ConditionType::Reconciling, reconciling, quiet(reconciling)),
        (ConditionType::Stalled, stalled, quiet(stalled)),
    ] {
        set(conditions, type_, status, reason, message, generation, now);
    }
}

/// Writes one condition, stamped with `generation`.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) {
    let mut c = Condition::new(type_, status, reason, message);
    c.observed_generation = generation;
    upsert(conditions, c, now);
}

/// Server-side applies `status` to the object's status subresource, with the operator's field manager.
pub async fn apply<K>(api: &Api<K>, obj: &K, status: &impl Serialize) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.name_any();
    // The answer is read through `Tolerant`: it may carry fields this version cannot read.
    let api: Api<crate::crd::Tolerant<K>> =
        Api::namespaced(api.clone().into_client(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(
        "patching the status of",
        format!("{} {name}", K::kind(&())),
    ))?;
    Ok(())
}

/// A Warning Event of the `Reconcile` action: `reason` and the note say what went wrong and the fix.
pub async fn warn_reconcile<K>(ctx: &Context, obj: &K, reason: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    publish(ctx, obj, EventType::Warning, reason, "Reconcile", note).await;
}

/// Publishes a Kubernetes Event on `obj`. Failing to publish is logged, never fatal.
pub async fn publish<K>(ctx: &Context, obj: &K, type_: EventType, reason: &str, action: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(note, 1000)),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.events.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish an Event");
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::conditions::find;

    #[test]
    fn stalled_sets_ready_false_and_stalled_true_with_the_message() {
        let mut c = Vec::new();
        let h = Health::Stalled { reason: "EventLogNotFound", message: "create it".into() };
        set_kstatus(&mut c, &h, Some(3), &now());
        let stalled = find(&c, ConditionType::Stalled).unwrap();
        assert!(stalled.is_true());
        assert_eq!(stalled.message, "create it");
        assert_eq!(stalled.observed_generation, Some(3));
        assert_eq!(
            find(&c, ConditionType::Ready).unwrap().status,
            ConditionStatus::False
        );
        assert_eq!(
            find(&c, ConditionType::Reconciling).unwrap().status,
            ConditionStatus::False
        );
    }

    #[test]
    fn same_health_twice_is_the_same_status() {
        let mut a = Vec::new();
        let h = Health::Progressing { reason: "Provisioning", message: "m".into() };
        set_kstatus(&mut a, &h, Some(1), &now());
        let mut b = a.clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        set_kstatus(&mut b, &h, Some(1), &now());
        assert_eq!(a, b, "re-applying the same health must not change timestamps");
    }
}
