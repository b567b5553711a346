//! [`ProjectionConfig`]: a view's declarative projection, checked and compiled against its log.
//!
//! Guarantees: [`ProjectionConfig::from_spec`] is pure and fails on every spec problem it can see without
//! a record (a custom projector, a `Latest` view without an ordering attribute, malformed templates or
//! filters, attribute names that would clash with the view's own `pk`, `sk`, `logPk`, `logSk`), so that
//! [`ProjectionConfig::project`](super::ProjectionConfig::project) only fails on bad records.

use std::collections::BTreeSet;

use crate::crd::{EventLogSpec, MaterializedViewSpec, ProjectionMode, RecordErrorPolicy};

use super::ProjectionError;
use super::filter::Condition;

/// The view item's attributes the projector sets itself.
pub(super) const VIEW_PK: &str = "pk";
pub(super) const VIEW_SK: &str = "sk";
pub(super) const LOG_PK: &str = "logPk";
pub(super) const LOG_SK: &str = "logSk";

/// A view's projection, ready to [`project`](ProjectionConfig::project) log records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionConfig {
    pub(super) view: String,
    pub(super) record_types: BTreeSet<String>,
    pub(super) record_type_attribute: String,
    pub(super) log_keys: LogKeys,
    pub(super) mode: Mode,
    pub(super) partition_key: Template,
    pub(super) sort_key: Option<Template>,
    pub(super) filter: Vec<Condition>,
    /// `(from, to)`; empty keeps every attribute but the log's keys.
    pub(super) attributes: Vec<(String, String)>,
    pub(super) key_prefix: String,
    pub(super) on_record_error: RecordErrorPolicy,
}

/// The log table's key attribute names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogKeys {
    /// The partition key attribute (`spec.table.partitionKey`).
    pub partition_key: String,
    /// The sort key attribute (`spec.table.sortKey`), if the table has one.
    pub sort_key: Option<String>,
}

/// The mode with what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mode {
    /// `order_by` is read from the record; `stored_as` is its name in the view item.
    Latest {
        order_by: String,
        stored_as: String,
    },
    Append,
    Count,
    Sum {
        sum_of: String,
    },
    /// `Min` (`greatest` false) and `Max` (`greatest` true) of the number attribute `of`.
    Extreme {
        of: String,
        greatest: bool,
    },
}

/// A key template: literal text and `{attribute}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<TemplatePart>,
}

/// A piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Text copied as it is.
    Literal(String),
    /// Replaced by the record's attribute of this name (its `S` text or `N` text).
    Attribute(String),
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template `{template}`: {reason}")]
pub struct TemplateError {
    pub template: String,
    pub reason: &'static str,
}

impl Template {
    /// Parses `PLAYER#{playerId}`-style text. Braces only delimit placeholders; a placeholder names an
    /// attribute (`[A-Za-z_][A-Za-z0-9_-]*`).
    pub fn parse(template: &str) -> Result<Template, TemplateError> {
        let fail = |reason| TemplateError { template: template.to_string(), reason };
        if template.is_empty() {
            return Err(fail("it is empty"));
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            let literal_end = rest.find(['{', '}']).unwrap_or(rest.len());
            if literal_end > 0 {
                parts.push(TemplatePart::Literal(rest[..literal_end].to_string()));
            }
            rest = &rest[literal_end..];
            if rest.starts_with('}') {
                return Err(fail("a `}` closes no placeholder"));
            }
            if let Some(open) = rest.strip_prefix('{') {
                let close = open.find('}').ok_or_else(|| fail("a `{` is never closed"))?;
                let name = &open[..close];
                if !is_attribute_name(name) {
                    return Err(fail(
                        "a placeholder must name an attribute: `{name}`, letters, digits, _ or -",
                    ));
                }
                parts.push(TemplatePart::Attribute(name.to_string()));
                rest = &open[close + 1..];
            }
        }
        Ok(Template { parts })
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[TemplatePart] {
        &self.parts
    }

    /// The attributes the placeholders name, in order.
    pub fn attributes(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Attribute(a) => Some(a.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }
}

fn is_attribute_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl ProjectionConfig {
    /// Compiles the projection of view `view_name` over its log. `key_prefix` is the view's key prefix in
    /// a shared table (`""` for a dedicated table); it prefixes every `pk` the view writes, its
    /// idempotency markers included.
    pub fn from_spec(
        view_name: &str,
        view: &MaterializedViewSpec,
        log: &EventLogSpec,
        key_prefix: &str,
    ) -> Result<Self, ProjectionError> {
        let invalid = |field, reason: String| ProjectionError::InvalidSpec {
            view: view_name.to_string(),
            field,
            reason,
        };
        let Some(projection) = &view.projection else {
            return Err(match view.projector.code {
                Some(_) => ProjectionError::CustomProjector { view: view_name.to_string() },
                None => ProjectionError::MissingProjection { view: view_name.to_string() },
            });
        };
        let template = |field, text: &str| Template::parse(text).map_err(|e| invalid(field, e.to_string()));
        let partition_key = template("spec.projection.key.partitionKey", &projection.key.partition_key)?;
        let sort_key = match &projection.key.sort_key {
            Some(text) => Some(template("spec.projection.key.sortKey", text)?),
            None => None,
        };
        let filter = projection
            .filter
            .iter()
            .map(|c| Condition::compile(c).map_err(|reason| invalid("spec.projection.filter", reason)))
            .collect::<Result<Vec<_>, _>>()?;

        let keeps_attributes = matches!(projection.mode, ProjectionMode::Latest | ProjectionMode::Append);
        if !keeps_attributes && !projection.attributes.is_empty() {
            let reason = "only modes Latest and Append keep attributes; remove them".to_string();
            return Err(invalid("spec.projection.attributes", reason));
        }
        let reserved: &[&str] = if keeps_attributes {
            &[VIEW_PK, VIEW_SK, LOG_PK, LOG_SK, super::LOG_RECORD_ID]
        } else {
            &[]
        };
        let mut attributes = Vec::new();
        let mut targets = BTreeSet::new();
        for mapping in &projection.attributes {
            let to = mapping.to.clone().unwrap_or_else(|| mapping.from.clone());
            if reserved.contains(&to.as_str()) {
                let reason = format!("`{to}` is set by the projector (view keys and provenance); rename it");
                return Err(invalid("spec.projection.attributes", reason));
            }
            if !targets.insert(to.clone()) {
                return Err(invalid(
                    "spec.projection.attributes",
                    format!("two entries write `{to}`"),
                ));
            }
            attributes.push((mapping.from.clone(), to));
        }

        let mode = match projection.mode {
            ProjectionMode::Latest => {
                let order_by = projection
                    .order_by
                    .clone()
                    .or_else(|| log.table.ordering_attribute.clone());
                let Some(order_by) = order_by else {
                    let reason = "mode Latest needs a number attribute that orders the records of a key: set \
                                  spec.projection.orderBy, or the EventLog's spec.table.orderingAttribute";
                    return Err(invalid("spec.projection.orderBy", reason.to_string()));
                };
                let stored_as = order_attribute_in_view(&order_by, &attributes)
                    .map_err(|reason| invalid("spec.projection.orderBy", reason))?;
                Mode::Latest { order_by, stored_as }
            }
            ProjectionMode::Append => Mode::Append,
            ProjectionMode::Count => Mode::Count,
            ProjectionMode::Sum => match &projection.sum_of {
                Some(sum_of) => Mode::Sum { sum_of: sum_of.clone() },
                None => {
                    return Err(invalid(
                        "spec.projection.sumOf",
                        "mode Sum needs sumOf".to_string(),
                    ));
                }
            },
            ProjectionMode::Min | ProjectionMode::Max => {
                let greatest = projection.mode == ProjectionMode::Max;
                let (field, of) = match greatest {
                    true => ("spec.projection.maxOf", &projection.max_of),
                    false => ("spec.projection.minOf", &projection.min_of),
                };
                let Some(of) = of else {
                    return Err(invalid(
                        field,
                        format!("mode {:?} needs {}", projection.mode, &field[16..]),
                    ));
                };
                Mode::Extreme { of: of.clone(), greatest }
            }
        };

        Ok(ProjectionConfig {
            view: view_name.to_string(),
            record_types: view.record_types.iter().map(|t| t.0.clone()).collect(),
            record_type_attribute: log.table.record_type_attribute.clone(),
            log_keys: LogKeys {
                partition_key: log.table.partition_key.clone(),
                sort_key: log.table.sort_key.clone(),
            },
            mode,
            partition_key,
            sort_key,
            filter,
            attributes,
            key_prefix: key_prefix.to_string(),
            on_record_error: projection.on_record_error,
        })
    }

    /// `spec.projection.onRecordError`: whether a record that cannot be projected stops the view.
    pub fn on_record_error(&self) -> RecordErrorPolicy {
        self.on_record_error
    }
    /// Whether the view's items are aggregates that count each record once (`Count`, `Sum`): applying a
    /// record twice would change them, so every path dedupes by [`RecordId`](super::RecordId).
    pub fn is_additive(&self) -> bool {
        matches!(self.mode, Mode::Count | Mode::Sum { .. })
    }
    /// The view's name, as used in errors.
    pub fn view_name(&self) -> &str {
        &self.view
    }
    /// The record types projected.
    pub fn record_types(&self) -> &BTreeSet<String> {
        &self.record_types
    }
    /// The log attribute holding a record's type.
    pub fn record_type_attribute(&self) -> &str {
        &self.record_type_attribute
    }
    /// The log table's key attribute names.
    /// The identity of the log record `item` (its whole log key), if it holds a usable partition key.
    pub fn record_id(&self, item: &super::Item) -> Option<super::RecordId> {
        let pk = item.get(&self.log_keys.partition_key)?;
        let sk = self.log_keys.sort_key.as_ref().and_then(|s| item.get(s));
        super::RecordId::new(pk, sk)
    }

    pub fn log_keys(&self) -> &LogKeys {
        &self.log_keys
    }
    /// The projection mode.
    pub fn mode(&self) -> ProjectionMode {
        match self.mode {
            Mode::Latest { .. } => ProjectionMode::Latest,
            Mode::Append => ProjectionMode::Append,
            Mode::Count => ProjectionMode::Count,
            Mode::Sum { .. } => ProjectionMode::Sum,
            Mode::Extreme { greatest: false, .. } => ProjectionMode::Min,
            Mode::Extreme { greatest: true, .. } => ProjectionMode::Max,
        }
    }
    /// With `Latest`: the record attribute that orders records (`orderBy`, else the log's default).
    pub fn order_by(&self) -> Option<&str> {
        match &self.mode {
            Mode::Latest { order_by, .. } => Some(order_by),
            _ => None,
        }
    }
    /// With `Sum`: the record attribute added up.
    pub fn sum_of(&self) -> Option<&str> {
        match &self.mode {
            Mode::Sum { sum_of } => Some(sum_of),
            _ => None,
        }
    }
    /// With `Min` / `Max`: the record attribute compared.
    pub fn extreme_of(&self) -> Option<&str> {
        match &self.mode {
            Mode::Extreme { of, .. } => Some(of),
            _ => None,
        }
    }
    /// The prefix of every `pk` this view writes (`""` for a dedicated table).
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }
    /// The partition key template.
    pub fn partition_key(&self) -> &Template {
        &self.partition_key
    }
    /// The sort key template, if one is set (otherwise a default per mode).
    pub fn sort_key(&self) -> Option<&Template> {
        self.sort_key.as_ref()
    }
}

/// Under which name the ordering attribute is kept in a `Latest` item: the conditional write compares the
/// stored value, so the item must always carry it. It is the mapped name when `attributes` maps it, else
/// its own name, which then must not be written by another mapping nor be reserved.
fn order_attribute_in_view(order_by: &str, attributes: &[(String, String)]) -> Result<String, String> {
    if let Some((_, to)) = attributes.iter().find(|(from, _)| from == order_by) {
        return Ok(to.clone());
    }
    if [VIEW_PK, VIEW_SK, LOG_PK, LOG_SK, super::LOG_RECORD_ID].contains(&order_by) {
        return Err(format!(
            "the ordering attribute `{order_by}` clashes with an attribute the projector sets"
        ));
    }
    if attributes.iter().any(|(_, to)| to == order_by) {
        return Err(format!(
            "the view item keeps the ordering attribute as `{order_by}`, but spec.projection.attributes \
             writes another attribute there; map `{order_by}` explicitly or rename the other one"
        ));
    }
    Ok(order_by.to_string())
}
