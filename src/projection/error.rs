//! [`ProjectionError`]: why a view cannot be projected, or why one record cannot.
//!
//! Every variant names the view; record errors also name the attribute and the record's log keys, and
//! every message ends with what to fix. [`ProjectionError::category`] is a bounded label for metrics and
//! Event reasons (never a payload).

/// A view whose spec cannot be turned into a projection, or a record that cannot be projected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    /// The view runs a custom projector Lambda (`spec.projector.code`), which has no declarative
    /// projection this engine could run.
    #[error(
        "view {view}: it uses a custom projector (spec.projector.code), so it has no declarative projection; \
         run its own Lambda, or replace spec.projector.code with spec.projection"
    )]
    CustomProjector { view: String },

    /// The view has neither `spec.projection` nor `spec.projector.code`.
    #[error("view {view}: spec.projection is missing; set spec.projection (or spec.projector.code)")]
    MissingProjection { view: String },

    /// A part of the spec the API server's validation should have caught, or one that needs the log
    /// (the ordering attribute, reserved attribute names).
    #[error("view {view}: {field}: {reason}")]
    InvalidSpec {
        view: String,
        field: &'static str,
        reason: String,
    },

    /// The record has no usable value for one of the log's key attributes.
    #[error(
        "view {view}: a log record has no string `{attribute}` ({found}); every record of the log must carry \
         the EventLog's key attribute `{attribute}` as a string: fix the producer"
    )]
    LogKey {
        view: String,
        attribute: String,
        found: String,
    },

    /// A key template's placeholder names an attribute the record lacks or holds as another type.
    #[error(
        "view {view}: record {record}: attribute `{attribute}` of spec.projection.key.{template} is {found}, \
         not a string or a number; the log is immutable, so leave such records out with spec.projection.filter \
         (`{attribute}` Exists), or change spec.projection.key.{template}"
    )]
    KeyAttribute {
        view: String,
        template: &'static str,
        attribute: String,
        found: String,
        record: String,
    },

    /// A rendered key is empty, which DynamoDB rejects.
    #[error(
        "view {view}: record {record}: the view item's {key} renders empty; DynamoDB rejects empty keys: \
         add literal text to spec.projection.key, or leave such records out with spec.projection.filter"
    )]
    EmptyKey {
        view: String,
        key: &'static str,
        record: String,
    },

    /// A rendered partition key holds `~applied#`, which the view's internal items (idempotency markers)
    /// use: such a view item could take the place of another record's marker.
    #[error(
        "view {view}: record {record}: the view item's pk renders to text holding `~applied#`, which the \
         view's idempotency markers use; leave such records out with spec.projection.filter, or change \
         spec.projection.key"
    )]
    ReservedKey { view: String, record: String },

    /// A rendered key is longer than DynamoDB allows.
    #[error(
        "view {view}: record {record}: the {key} is {bytes} bytes, DynamoDB allows at most {max}: \
         shorten spec.projection.key (or the key prefix)"
    )]
    KeyTooLong {
        view: String,
        key: &'static str,
        bytes: usize,
        max: usize,
        record: String,
    },

    /// The `Latest` ordering attribute is missing or not a number.
    #[error(
        "view {view}: record {record}: ordering attribute `{attribute}` is {found}, not a number; \
         mode Latest keeps the record with the greatest `{attribute}`: leave such records out with \
         spec.projection.filter (`{attribute}` Exists), or change spec.projection.orderBy (default: the \
         EventLog's spec.table.orderingAttribute)"
    )]
    OrderAttribute {
        view: String,
        attribute: String,
        found: String,
        record: String,
    },

    /// The `Sum`, `Min` or `Max` attribute (`field`: `sumOf`, `minOf`, `maxOf`) is missing or not a number.
    #[error(
        "view {view}: record {record}: attribute `{attribute}` (spec.projection.{field}) is {found}, not a \
         number; the log is immutable, so leave such records out with spec.projection.filter (`{attribute}` \
         Exists), or change spec.projection.{field}"
    )]
    NumberAttribute {
        view: String,
        field: &'static str,
        attribute: String,
        found: String,
        record: String,
    },

    /// Adding the record to its `Sum` would leave a total DynamoDB cannot store (more than 38 significant
    /// digits, or a magnitude of 1E+126 or more; see
    /// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.NamingRulesDataTypes.html>).
    #[error(
        "view {view}: record {record}: adding it to the total of pk={pk:?}, sk={sk:?} gives {reason}, which \
         DynamoDB cannot store (38 significant digits, magnitude below 1E+126); leave such records out with \
         spec.projection.filter, or change the projection (for example a Sum of a scaled attribute)"
    )]
    Unstorable {
        view: String,
        record: String,
        pk: String,
        sk: String,
        reason: String,
    },
}

impl ProjectionError {
    /// A short, bounded label: `custom-projector`, `invalid-spec`, `invalid-log-key`, `invalid-key`,
    /// `invalid-order`, `invalid-number`, `unstorable-number`.
    pub fn category(&self) -> &'static str {
        match self {
            ProjectionError::CustomProjector { .. } => "custom-projector",
            ProjectionError::MissingProjection { .. } | ProjectionError::InvalidSpec { .. } => "invalid-spec",
            ProjectionError::LogKey { .. } => "invalid-log-key",
            ProjectionError::KeyAttribute { .. }
            | ProjectionError::EmptyKey { .. }
            | ProjectionError::KeyTooLong { .. }
            | ProjectionError::ReservedKey { .. } => "invalid-key",
            ProjectionError::OrderAttribute { .. } => "invalid-order",
            ProjectionError::NumberAttribute { .. } => "invalid-number",
            ProjectionError::Unstorable { .. } => "unstorable-number",
        }
    }

    /// Whether the error is in the view's spec (fixed by changing the view) rather than in one record.
    pub fn is_spec_error(&self) -> bool {
        matches!(
            self,
            ProjectionError::CustomProjector { .. }
                | ProjectionError::MissingProjection { .. }
                | ProjectionError::InvalidSpec { .. }
        )
    }
}

/// How an attribute was found, for error messages: `missing` or `a BOOL`.
pub(super) fn describe(value: Option<&super::Value>) -> String {
    match value {
        None => "missing".to_string(),
        Some(v) => format!("a {}", v.type_name()),
    }
}

/// How many rejected records [`RecordErrors`] keeps (the newest).
pub const KEPT_RECORD_ERRORS: usize = 5;

/// The records a path left out under `onRecordError: Skip`: how many, and the newest few messages (each
/// names the record's log keys and the reason), for `status.recordErrors`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordErrors {
    /// Records left out.
    pub count: u64,
    /// The newest [`KEPT_RECORD_ERRORS`] messages, oldest first.
    pub last: std::collections::VecDeque<String>,
    /// The identities ([`super::RecordId::digest`]) of the records left out, when known, up to
    /// [`KEPT_RECORD_IDS`]: what makes a count that several processes report idempotent.
    pub ids: std::collections::BTreeSet<String>,
}

/// How many record identities [`RecordErrors`] keeps.
pub const KEPT_RECORD_IDS: usize = 5_000;

impl RecordErrors {
    /// Counts one more record left out, for `message`, with its identity if known.
    pub fn push_record(&mut self, id: Option<String>, message: String) {
        if let Some(id) = id
            && self.ids.len() < KEPT_RECORD_IDS
        {
            self.ids.insert(id);
        }
        self.push(message);
    }

    /// Counts one more record left out, for `message`.
    pub fn push(&mut self, message: String) {
        self.count += 1;
        if self.last.len() == KEPT_RECORD_ERRORS {
            self.last.pop_front();
        }
        self.last.push_back(message);
    }

    /// Adds `other`'s count and messages (newest kept).
    pub fn merge(&mut self, other: &RecordErrors) {
        let count = self.count + other.count;
        for m in &other.last {
            self.push(m.clone());
        }
        for id in &other.ids {
            if self.ids.len() < KEPT_RECORD_IDS {
                self.ids.insert(id.clone());
            }
        }
        self.count = count;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}
