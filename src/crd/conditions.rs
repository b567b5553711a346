//! Conditions in the kstatus convention, shared by both kinds.
//!
//! `Ready` says the object does what it declares; `Reconciling` says work toward the spec is under way;
//! `Stalled` says progress needs a change from the user (bad input, a permanent AWS error). Kind-specific
//! conditions (`Provisioned`, `BackfillComplete`) add detail. `lastTransitionTime` changes only when a
//! condition's status flips, so rewriting the same status is a no-op.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The condition types the operator writes; [`Condition::type_`] holds [`ConditionType::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// The object does what its spec declares (a view: backfilled and live).
    Ready,
    /// The operator is working toward the spec.
    Reconciling,
    /// Progress needs a change from the user; the message says which.
    Stalled,
    /// Every AWS resource of the plan exists as planned.
    Provisioned,
    /// The view's backfill finished.
    BackfillComplete,
    /// The view's content changed: True while a new version is built beside the active one (reason
    /// `Rebuilding`, or `WaitingForApproval`); False once it is promoted (`Promoted`) or when it failed
    /// (`RebuildFailed`: the active version keeps serving, the message says why).
    Rebuilding,
}

impl ConditionType {
    /// Every type, in the order `kubectl describe` is easiest to read in.
    pub const ALL: [ConditionType; 6] = [
        ConditionType::Ready,
        ConditionType::Reconciling,
        ConditionType::Stalled,
        ConditionType::Provisioned,
        ConditionType::BackfillComplete,
        ConditionType::Rebuilding,
    ];

    /// The type as the status writes it (`PascalCase`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Reconciling => "Reconciling",
            ConditionType::Stalled => "Stalled",
            ConditionType::Provisioned => "Provisioned",
            ConditionType::BackfillComplete => "BackfillComplete",
            ConditionType::Rebuilding => "Rebuilding",
        }
    }

    /// The type a status names; `None` for one this operator does not write (another controller's).
    pub fn parse(s: &str) -> Option<ConditionType> {
        ConditionType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for ConditionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reasons, in `PascalCase`; also used as Kubernetes Event reasons.
pub mod reasons {
    pub const EVENT_LOG_NOT_FOUND: &str = "EventLogNotFound";
    /// The view's EventLog exists but this operator version cannot read it.
    pub const EVENT_LOG_UNREADABLE: &str = "EventLogUnreadable";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const PROVISIONING: &str = "Provisioning";
    pub const PROVISIONED: &str = "Provisioned";
    pub const DELETING: &str = "Deleting";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const AWS_ERROR: &str = "AwsError";
    /// The operator's own settings cannot serve the object (the built-in functions' code, `--lambda-code`):
    /// the operator's installer fixes it; the message names the setting.
    pub const OPERATOR_CONFIGURATION: &str = "OperatorConfiguration";
    /// An AWS resource the object names (or would create) carries another owner's tags: left untouched.
    pub const OWNED_BY_ANOTHER: &str = "OwnedByAnother";
    /// An existing table the object would adopt, which the operator's configuration does not allow.
    pub const ADOPTION_REFUSED: &str = "AdoptionRefused";
    /// A declared table setting the operator does not change (a stream's view type) or AWS refused to
    /// apply (a capacity mode switch or decrease beyond AWS's limits): the message names the field, AWS's
    /// error code and the fix.
    pub const TABLE_SETTING_REFUSED: &str = "TableSettingRefused";
    pub const WAITING_FOR_LIVE_PATH: &str = "WaitingForLivePath";
    pub const EXPORTING: &str = "Exporting";
    pub const BACKFILLING: &str = "Backfilling";
    pub const BACKFILL_FAILED: &str = "BackfillFailed";
    pub const EXPORT_FAILED: &str = "ExportFailed";
    pub const BACKFILL_COMPLETE: &str = "BackfillComplete";
    pub const NO_BACKFILL: &str = "NoBackfill";
    pub const CATCHING_UP: &str = "CatchingUp";
    pub const LIVE: &str = "Live";
    pub const LIVE_PATH_FAILED: &str = "LivePathFailed";
    /// A record the view cannot apply stopped it (`spec.projection.onRecordError: Fail`), or records were
    /// left out (`Skip`, a Warning Event).
    pub const RECORD_ERROR: &str = "RecordError";
    /// The live path lost stream records and the view has no backfill to recover them.
    pub const RECORDS_LOST: &str = "RecordsLost";
    /// Warning Event: a user's projector function (`functionArn`) is mapped without the view's failure
    /// queue, because its execution role may not send to it; the note names the grant.
    pub const NO_FAILURE_DESTINATION: &str = "NoFailureDestination";
    /// A views table was deleted outside the operator and re-created: the view is rebuilt from the log.
    pub const TABLE_RECREATED: &str = "TableRecreated";
    /// The view's storage holds the items of an earlier view of the same name, retained when it was
    /// deleted: not used without `spec.store.adopt` (see `crate::aws::view_storage`).
    pub const STORAGE_RETAINED: &str = "StorageRetained";
    /// With `spec.store.adopt`: the earlier view's retained items were deleted; the view rebuilds.
    pub const STORAGE_ADOPTED: &str = "StorageAdopted";
    pub const NOT_SUPPORTED: &str = "NotSupported";
    pub const REBUILDING: &str = "Rebuilding";
    pub const REBUILD_FAILED: &str = "RebuildFailed";
    pub const WAITING_FOR_APPROVAL: &str = "WaitingForApproval";
    pub const PROMOTED: &str = "Promoted";
    pub const VERSION_REMOVED: &str = "VersionRemoved";
    /// An installed CRD's schema is not the one this operator was built with (Helm never upgrades `crds/`):
    /// the operator reconciles nothing until the CRDs are applied (a Warning Event on each object).
    pub const CRD_SKEW: &str = "CrdSkew";
}

/// The status of a condition.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One observation of the object's state, in the Kubernetes condition convention.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's type, for example `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A machine-readable reason in PascalCase.
    pub reason: String,
    /// What happened and, when something is wrong, what to do about it.
    #[serde(default)]
    pub message: String,
    /// The `.metadata.generation` this condition was computed from.
    pub observed_generation: Option<i64>,
    /// When `status` last changed.
    pub last_transition_time: Option<Time>,
}

impl Condition {
    pub fn new(
        type_: ConditionType,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            type_: type_.as_str().to_string(),
            status,
            reason: reason.to_string(),
            message: message.into(),
            observed_generation: None,
            last_transition_time: None,
        }
    }

    /// Whether this is the condition of type `type_`.
    pub fn is(&self, type_: ConditionType) -> bool {
        self.type_ == type_.as_str()
    }

    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

/// Replaces (or adds) the condition of `next.type_`, keeping `lastTransitionTime` unless the status
/// flips. `now` is the time stamped on a flip or a new condition.
pub fn upsert(conditions: &mut Vec<Condition>, mut next: Condition, now: &Time) {
    match conditions.iter_mut().find(|c| c.type_ == next.type_) {
        Some(existing) => {
            next.last_transition_time = if existing.status == next.status {
                existing
                    .last_transition_time
                    .clone()
                    .or_else(|| Some(now.clone()))
            } else {
                Some(now.clone())
            };
            *existing = next;
        }
        None => {
            next.last_transition_time = Some(now.clone());
            conditions.push(next);
        }
    }
}

/// Finds the condition of a type.
pub fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_changes_only_when_status_flips() {
        let mut conditions = Vec::new();
        upsert(
            &mut conditions,
            Condition::new(ConditionType::Ready, ConditionStatus::False, "A", "a"),
            &at(10),
        );
        upsert(
            &mut conditions,
            Condition::new(ConditionType::Ready, ConditionStatus::False, "B", "b"),
            &at(20),
        );
        assert_eq!(conditions[0].last_transition_time, Some(at(10)));
        assert_eq!(conditions[0].reason, "B");
        upsert(
            &mut conditions,
            Condition::new(ConditionType::Ready, ConditionStatus::True, "C", "c"),
            &at(30),
        );
        assert_eq!(conditions[0].last_transition_time, Some(at(30)));
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn every_condition_type_reads_back_as_itself_and_others_are_not_ours() {
        for t in ConditionType::ALL {
            assert_eq!(ConditionType::parse(t.as_str()), Some(t));
            assert_eq!(t.to_string(), t.as_str());
            assert!(Condition::new(t, ConditionStatus::True, "R", "").is(t));
        }
        assert_eq!(ConditionType::parse("Available"), None);
        assert_eq!(ConditionType::parse("ready"), None);
    }

    #[test]
    fn new_types_are_appended() {
        let mut conditions = Vec::new();
        upsert(
            &mut conditions,
            Condition::new(ConditionType::Ready, ConditionStatus::False, "A", ""),
            &at(1),
        );
        upsert(
            &mut conditions,
            Condition::new(ConditionType::Stalled, ConditionStatus::True, "B", ""),
            &at(2),
        );
        assert_eq!(conditions.len(), 2);
        assert!(find(&conditions, ConditionType::Stalled).unwrap().is_true());
    }
}
