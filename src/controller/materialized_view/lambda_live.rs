//! A Lambda version's live path as its projector reports it: lag, records applied, failing records.

use super::backfill::{BackfillCall, backfill};
use super::version::{
    InClusterOutcome, LiveFacts, OnVersion, provisioning, record_error_ledger, stalled, stalled_with, time_of,
};
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;

use crate::aws::views::ViewTableWriter;
use crate::controller::Context;
use crate::controller::status::Health;
use crate::crd::{BackfillSource, LiveStatus, MaterializedView, ViewPhase, reasons};
use crate::functions::progress;
use crate::projection::{ProjectionConfig, ProjectionError};

/// A Lambda version's live path as this pass found it: its views table and key prefix, its projection as
/// planned (or why the spec cannot be projected), and whether the function and its subscriptions or mapping
/// exist as planned.
#[derive(Clone, Copy)]
pub(super) struct LivePathState<'a> {
    pub table: &'a str,
    pub key_prefix: &'a str,
    pub projection: &'a Result<Arc<ProjectionConfig>, ProjectionError>,
    pub ready: bool,
}

/// A view on the Lambda runtime once its projector function exists: its live path is the subscription or
/// mapping (`live_path_ready`), created before the export, so the same backfill applies; the view is `Live`
/// when the backfill is complete (Lambda's own retries keep the live path caught up).
pub(super) async fn lambda_view(
    on: &OnVersion<'_>,
    path: &LivePathState<'_>,
    gap: Option<String>,
) -> InClusterOutcome {
    let OnVersion { view, log, ctx, .. } = *on;
    let LivePathState { table, key_prefix, projection, ready: live_path_ready } = *path;
    if !live_path_ready {
        return provisioning(
            "creating the projector function and its live path (subscriptions or stream mapping)".into(),
        );
    }
    let mut outcome = lambda_backfill(on, path, gap).await;
    if outcome.backfill_complete {
        outcome.phase = ViewPhase::Live;
        outcome.health = Health::Ready {
            reason: reasons::LIVE,
            message: "the projector function and its live path are in place and the backfill is complete"
                .into(),
        };
        outcome.requeue = ctx.config.resync;
    }
    // What the projector function left out, or the record it stops at (spec.projection.onRecordError).
    if view.spec.projector.code.is_none()
        && let Ok(projection) = projection
    {
        let fingerprint = crate::functions::projector::ProjectorConfig::for_view(
            &view.name_any(),
            &view.spec,
            &log.spec,
            table,
            key_prefix,
        )
        .map(|c| c.fingerprint())
        .unwrap_or_default();
        let (errors, failing) = record_error_ledger(ctx, table, projection).await;
        outcome.record_errors.merge(&errors);
        if live_path_ready {
            lambda_live(&mut outcome, view, ctx, table, projection).await;
        }
        if let Some(message) =
            failing.and_then(|(m, noted)| current_failure(&noted, &fingerprint).then_some(m))
            && !matches!(outcome.health, Health::Stalled { .. })
        {
            outcome.live.iter_mut().for_each(|l| l.caught_up = false);
            return stalled_with(
                outcome,
                reasons::RECORD_ERROR,
                format!(
                    "the projector function stops at a record it cannot apply (spec.projection.onRecordError is \
                     Fail; its event source mapping retries it until the record leaves the stream): {message}"
                ),
            );
        }
    }
    outcome
}

/// A Lambda view's backfill, once its live path is in place: the same steps as the in-cluster runtime's
/// for a declarative projection; nothing to backfill with `source: None`; a custom projector cannot be
/// backfilled by the operator (`NotSupported`, with the fix).
async fn lambda_backfill(
    on: &OnVersion<'_>,
    path: &LivePathState<'_>,
    gap: Option<String>,
) -> InClusterOutcome {
    let view = on.view;
    match view.spec.projection {
        Some(_) => match path.projection {
            Ok(projection) => {
                let facts = LiveFacts {
                    started: true,
                    cutoff: None,
                    passed: None,
                };
                let call = BackfillCall::new(on, path.table, projection, &facts);
                backfill(&call, gap).await
            }
            Err(e) => stalled(ViewPhase::Failed, reasons::INVALID_SPEC, e.to_string()),
        },
        None if view.spec.backfill.source == BackfillSource::None => {
            let ready = Health::Ready {
                reason: reasons::LIVE,
                message: String::new(),
            };
            InClusterOutcome {
                backfill_complete: true,
                ..InClusterOutcome::new(ViewPhase::Live, ready, Duration::from_secs(300))
            }
        }
        None => stalled(
            ViewPhase::Failed,
            reasons::NOT_SUPPORTED,
            "the operator backfills declarative projections (spec.projection) only: with a custom projector set \
             spec.backfill.source to None"
                .into(),
        ),
    }
}

/// A Lambda view's live path as its projector function reports it (`crate::functions::progress`):
/// `outcome.live` with the reported lag (caught up within `spec.promotion.maxLag`, which promotion waits
/// on), and a retryable failure the function reports as `LivePathFailed` (Progressing, as an in-cluster
/// reader's). The item unreadable: the live status is left unknown (not caught up) and a warning logged.
pub(super) async fn lambda_live(
    outcome: &mut InClusterOutcome,
    view: &MaterializedView,
    ctx: &Context,
    table: &str,
    projection: &ProjectionConfig,
) {
    let writer = ViewTableWriter::for_view(ctx.aws.dynamodb.clone(), table, projection, 1);
    let item = match writer.live_progress().await {
        Ok(item) => item,
        Err(e) => {
            tracing::warn!(view = projection.view_name(), error = %e, "could not read the projector's progress");
            outcome.live = Some(LiveStatus::default());
            return;
        }
    };
    let max_lag = crate::crd::parse_duration(&view.spec.promotion.max_lag)
        .unwrap_or(Duration::from_secs(30))
        .as_millis() as i64;
    let quiet = progress::quiet_after_ms(i64::from(view.spec.projector.timeout_seconds));
    let seen = progress::assess(item.as_ref(), progress::now_ms(), max_lag, quiet);
    let item = item.unwrap_or_default();
    outcome.live = Some(LiveStatus {
        caught_up: seen.caught_up,
        records_applied: item.records as i64,
        lag_seconds: seen.lag_ms.map(|ms| (ms + 999) / 1_000),
        last_reported: item.applied_at_ms.and_then(|ms| time_of(ms as f64 / 1_000.0)),
        ..Default::default()
    });
    // The function reports between reconciles: read it again as often as an in-cluster view's reader is.
    outcome.requeue = outcome.requeue.min(Duration::from_secs(30));
    if matches!(outcome.health, Health::Stalled { .. }) || seen.caught_up {
        return;
    }
    outcome.requeue = outcome.requeue.min(Duration::from_secs(5));
    if let Some(reason) = seen.failing {
        outcome.health = Health::Progressing {
            reason: reasons::LIVE_PATH_FAILED,
            message: format!(
                "the projector function fails to apply records and Lambda retries them (its event source \
                 mapping or SNS): {reason}"
            ),
        };
    } else if outcome.phase == ViewPhase::Live {
        outcome.phase = ViewPhase::CatchingUp;
        outcome.health = Health::Progressing {
            reason: reasons::CATCHING_UP,
            message: format!(
                "backfill complete; the projector function reports a lag of {}s, over spec.promotion.maxLag \
                 ({})",
                seen.lag_ms.map_or(0, |ms| (ms + 999) / 1_000),
                view.spec.promotion.max_lag
            ),
        };
    }
}

/// How long a record error noted by a failing projector function counts as current without being noted
/// again, in seconds: the event source mapping retries the failing batch (with backoff) for as long as
/// the record is in the stream, noting it at every attempt.
pub(super) const FAILING_FRESH_SECONDS: u64 = 900;

/// Whether `noted` (`<fingerprint>@<epoch seconds>`, see `DynamoViewStore::record_error`) is a failure of
/// the projector configured as `fingerprint`, noted within [`FAILING_FRESH_SECONDS`].
pub(super) fn current_failure(noted: &str, fingerprint: &str) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match noted.split_once('@') {
        Some((f, at)) => {
            f == fingerprint
                && at
                    .parse::<u64>()
                    .is_ok_and(|at| now.saturating_sub(at) <= FAILING_FRESH_SECONDS)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn a_failing_projector_counts_only_for_its_own_fingerprint_and_while_it_keeps_failing() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(current_failure(&format!("abc@{now}"), "abc"));
        assert!(
            !current_failure(&format!("abc@{now}"), "def"),
            "another projection is deployed"
        );
        assert!(
            !current_failure(&format!("abc@{}", now - FAILING_FRESH_SECONDS - 1), "abc"),
            "not noted again: the record passed (or left the stream)"
        );
        assert!(!current_failure("job@0", "abc"));
        assert!(!current_failure("garbage", "abc"));
    }
}
