//! `kubectl kappa`: the binary as a kubectl plugin, and what its cluster commands do.
//!
//! kubectl runs any executable named `kubectl-<name>` on the PATH as `kubectl <name>`; the binary behaves
//! as the plugin when it is started under that name (`make install-plugin` links `kubectl-kappa` to
//! `kappa-operator`). [`replay`] rebuilds a view from the log in place: it records a new backfill attempt
//! in the view's status, as the operator itself does when the live path lost records (a gap) or the
//! views table was re-created, and the operator exports the log again and projects it into the view's
//! storage (idempotent writes: what the view holds already is rewritten unchanged, what it lost comes
//! back). [`follow`] shows a view's backfill until it is `Live`, with a progress bar on a terminal and a
//! line per change otherwise. [`redrive`] sends a log's dead-lettered ingest messages back to its
//! ingest queue.

pub mod redrive;

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::crd::{
    BackfillSource, BackfillStatus, MaterializedView, MaterializedViewStatus, VersionState, ViewPhase,
};

/// The plugin's executable name (kubectl's rule: `kubectl-` and the command, dashes for spaces).
pub const PLUGIN_NAME: &str = "kubectl-kappa";

/// True when `argv0` (the path the binary was started as) names the plugin: kubectl starts a plugin by
/// its path on the PATH, so its file name is `kubectl-kappa` (`.exe` on Windows).
pub fn invoked_as_plugin(argv0: &str) -> bool {
    let name = std::path::Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name == PLUGIN_NAME || name == format!("{PLUGIN_NAME}.exe")
}

/// A command that could not do what was asked: the message (with the fix) and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    /// 1: the view failed or did not get there in time; 2: the request cannot be done as given.
    pub code: u8,
}

impl Failure {
    fn refused(message: String) -> Self {
        Failure { message, code: 2 }
    }
    fn failed(message: String) -> Self {
        Failure { message, code: 1 }
    }
}

/// Where a view's backfill is recorded: the active version's entry in `status.versions` (the operator's
/// record), or `status.backfill` of a view whose status predates versions.
fn active_backfill(status: &MaterializedViewStatus) -> (Option<usize>, Option<&BackfillStatus>) {
    match status
        .versions
        .iter()
        .position(|v| v.state == VersionState::Active)
    {
        Some(i) => (Some(i), status.versions[i].backfill.as_ref()),
        None => (None, status.backfill.as_ref()),
    }
}

/// The reason recorded with a replay's backfill attempt.
pub fn replay_reason(by: &str) -> String {
    format!("replay requested ({by})")
}

/// Records a new backfill attempt for `view`'s active version, so the operator rebuilds the view from the
/// log; returns the attempt's number once the operator has taken it up (requested the attempt's export,
/// or started its scan). Refused (exit 2) when the view has no backfill to repeat, or one is under way.
pub async fn replay(client: &Client, ns: &str, view: &str, by: &str) -> Result<i64, Failure> {
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), ns);
    // A reconcile that read the view before the attempt was recorded may write its older status over it
    // once; the attempt is recorded again until the operator shows it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut recorded: Option<i64> = None;
    loop {
        let mv = get(&mvs, ns, view).await?;
        let status = mv.status.clone().unwrap_or_default();
        let (index, b) = active_backfill(&status);
        if let Some(attempt) = recorded {
            let current = b.filter(|b| b.attempt >= attempt);
            // Taken up: the operator requested the export (or started the scan) of the recorded attempt.
            if current
                .is_some_and(|b| b.export_arn.is_some() || b.started_at.is_some() || b.finished_at.is_some())
            {
                return Ok(attempt);
            }
            if current.is_some() {
                // Recorded, not taken up yet.
                if tokio::time::Instant::now() > deadline {
                    return Err(Failure::failed(format!(
                        "backfill attempt {attempt} of MaterializedView {ns}/{view} is recorded, but no operator \
                         took it up within 90 s: is the operator running and watching namespace {ns}?"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        } else {
            refuse_unless_replayable(&mv, &status, b, ns, view)?;
        }
        let b = b.cloned().unwrap_or_default();
        let attempt = recorded.unwrap_or(b.attempt + 1);
        let next = BackfillStatus {
            attempt,
            reason: Some(replay_reason(by)),
            ..BackfillStatus::default()
        };
        // A JSON patch that applies only to the status it was computed from (the test operations).
        let mut ops = vec![
            serde_json::json!({"op": "test", "path": "/metadata/resourceVersion",
            "value": mv.metadata.resource_version}),
        ];
        if let Some(i) = index {
            ops.push(serde_json::json!({"op": "add", "path": format!("/status/versions/{i}/backfill"), "value": next}));
        }
        ops.push(serde_json::json!({"op": "add", "path": "/status/backfill", "value": next}));
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
            .map_err(|e| Failure::failed(format!("building the status patch: {e}")))?;
        match mvs
            .patch_status(view, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => recorded = Some(attempt),
            // The view changed in between (the operator wrote its status): read it again.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {}
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(Failure::refused(format!(
                    "not allowed to update the status of MaterializedView {ns}/{view}: {}; a replay needs `patch` \
                     on `materializedviews/status` in namespace {ns}",
                    s.message
                )));
            }
            Err(e) => {
                return Err(Failure::failed(format!(
                    "cannot record a new backfill attempt for MaterializedView {ns}/{view}: {e}"
                )));
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Failure::failed(format!(
                "could not record a new backfill attempt for MaterializedView {ns}/{view} within 90 s: its status \
                 keeps changing; try again"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Why `view` cannot be replayed now, with what to do instead.
fn refuse_unless_replayable(
    mv: &MaterializedView,
    status: &MaterializedViewStatus,
    b: Option<&BackfillStatus>,
    ns: &str,
    view: &str,
) -> Result<(), Failure> {
    if mv.metadata.deletion_timestamp.is_some() {
        return Err(Failure::refused(format!(
            "MaterializedView {ns}/{view} is being deleted"
        )));
    }
    if mv.spec.backfill.source == BackfillSource::None {
        return Err(Failure::refused(format!(
            "MaterializedView {ns}/{view} has spec.backfill.source None: it has no backfill to replay the log \
             with; set spec.backfill.source to Export (or Scan) first"
        )));
    }
    if mv.spec.projector.code.is_some() {
        return Err(Failure::refused(format!(
            "MaterializedView {ns}/{view} has a custom projector (spec.projector.code): the operator replays \
             declarative projections only"
        )));
    }
    if let Some(v) = status.versions.iter().find(|v| v.state == VersionState::Building) {
        return Err(Failure::refused(format!(
            "MaterializedView {ns}/{view} is rebuilding as version {}; follow it with `kubectl kappa status {view} \
             -n {ns} --watch` and replay once it is promoted",
            v.version
        )));
    }
    match b {
        Some(b) if b.attempt > 0 && b.finished_at.is_some() => Ok(()),
        Some(b) if b.attempt > 0 => Err(Failure::refused(format!(
            "backfill attempt {} of MaterializedView {ns}/{view} is still running; follow it with `kubectl kappa \
             status {view} -n {ns} --watch`",
            b.attempt
        ))),
        _ => Err(Failure::refused(format!(
            "MaterializedView {ns}/{view} has not been backfilled yet (phase {}); its first backfill replays the \
             log: follow it with `kubectl kappa status {view} -n {ns} --watch`",
            status.phase.map_or("unknown".into(), |p| p.to_string())
        ))),
    }
}

async fn get(mvs: &Api<MaterializedView>, ns: &str, view: &str) -> Result<MaterializedView, Failure> {
    match mvs.get_opt(view).await {
        Ok(Some(mv)) => Ok(mv),
        Ok(None) => Err(Failure::refused(format!(
            "MaterializedView {ns}/{view} not found"
        ))),
        Err(e) => Err(Failure::failed(format!(
            "cannot read MaterializedView {ns}/{view}: {e}; check KUBECONFIG and the current context"
        ))),
    }
}

/// One line about a view's state: phase, backfill attempt and progress, rate and ETA.
pub fn summary(view: &str, status: &MaterializedViewStatus) -> String {
    let phase = status.phase.map_or("Unknown".to_string(), |p| p.to_string());
    let mut line = format!("{view}: {phase}");
    if let Some(b) = active_backfill(status).1 {
        line.push_str(&format!(", backfill attempt {}", b.attempt));
        if let Some(p) = &b.progress {
            line.push_str(&format!(" {p}"));
        }
        if b.items_total > 0 {
            line.push_str(&format!(" ({}/{} records", b.items_done, b.items_total));
            if let Some(rate) = b.items_per_second {
                line.push_str(&format!(", {rate}/s"));
            }
            if let Some(eta) = b.eta.as_deref().filter(|_| b.finished_at.is_none()) {
                line.push_str(&format!(", ETA {eta}"));
            }
            line.push(')');
        }
        if b.finished_at.is_some() {
            line.push_str(", finished");
        } else if b.export_arn.is_none() && b.started_at.is_none() {
            line.push_str(", exporting the log");
        }
    }
    if let Some(r) = &status.rebuild {
        line.push_str(&format!("; rebuild {r}"));
    }
    line
}

/// The message of a condition that is True and says the view cannot go on (`Stalled`).
fn stalled(status: &MaterializedViewStatus) -> Option<String> {
    status
        .conditions
        .iter()
        .find(|c| c.is(crate::crd::ConditionType::Stalled) && c.status == crate::crd::ConditionStatus::True)
        .map(|c| format!("{}: {}", c.reason, c.message))
}

/// Shows `view`'s backfill until the view is `Live` with backfill attempt `min_attempt` (or later)
/// finished, or fails when the view is `Failed`/`Stalled` or `timeout` passes. A progress bar on stderr
/// when it is a terminal; otherwise a line on stderr whenever the state changes. The final state is
/// printed to `out`.
pub async fn follow(
    client: &Client,
    ns: &str,
    view: &str,
    min_attempt: i64,
    timeout: Option<Duration>,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), ns);
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:40}] {human_pos}/{human_len} records ({per_sec}, ETA {eta}) {msg}",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    let spinner = ProgressStyle::with_template("{prefix} {spinner} {msg}").expect("a valid template");
    bar.set_style(spinner.clone());
    bar.set_prefix(view.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    let lines = bar.is_hidden();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut last = String::new();
    let result = loop {
        let mv = match get(&mvs, ns, view).await {
            Ok(mv) => mv,
            Err(e) => break Err(e),
        };
        let status = mv.status.clone().unwrap_or_default();
        let line = summary(view, &status);
        if lines && line != last {
            eprintln!("{line}");
        }
        last = line.clone();
        let b = active_backfill(&status).1;
        match b.filter(|b| b.items_total > 0 && b.finished_at.is_none()) {
            Some(b) => {
                bar.set_style(style.clone());
                bar.set_length(b.items_total as u64);
                bar.set_position(b.items_done.max(0) as u64);
                bar.set_message(format!("attempt {}", b.attempt));
            }
            None => {
                bar.set_style(spinner.clone());
                bar.set_message(line.trim_start_matches(&format!("{view}: ")).to_string());
            }
        }
        let attempt_done = b.is_some_and(|b| b.attempt >= min_attempt && b.finished_at.is_some())
            || (min_attempt <= 0 && b.is_none());
        if status.phase == Some(ViewPhase::Live) && attempt_done {
            break Ok(line);
        }
        if status.phase == Some(ViewPhase::Failed) {
            break Err(Failure::failed(format!(
                "{line}: {}",
                stalled(&status).unwrap_or_else(|| "see `kubectl describe mv`".into())
            )));
        }
        if let Some(why) = stalled(&status).filter(|_| status.phase != Some(ViewPhase::Live)) {
            break Err(Failure::failed(format!("{line}: stalled: {why}")));
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() > d) {
            break Err(Failure::failed(format!(
                "{line}: not Live within {} s",
                timeout.unwrap_or_default().as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    bar.finish_and_clear();
    let line = result?;
    let _ = writeln!(out, "{line}");
    Ok(())
}

/// The user the kubeconfig's current context names, for the replay's recorded reason.
pub fn requester() -> String {
    let user = kube::config::Kubeconfig::read().ok().and_then(|k| {
        let context = k.current_context.clone()?;
        let named = k.contexts.iter().find(|c| c.name == context)?;
        named.context.as_ref().map(|c| c.user.clone().unwrap_or_default())
    });
    match user.filter(|u| !u.is_empty()) {
        Some(u) => format!("kubectl kappa replay by {u}"),
        None => "kubectl kappa replay".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_is_recognised_by_its_file_name() {
        assert!(invoked_as_plugin("kubectl-kappa"));
        assert!(invoked_as_plugin("/home/me/.local/bin/kubectl-kappa"));
        assert!(invoked_as_plugin("C:/bin/kubectl-kappa.exe"));
        assert!(!invoked_as_plugin("kappa-operator"));
        assert!(!invoked_as_plugin("/usr/bin/kubectl-kappa-old"));
    }

    #[test]
    fn the_summary_shows_phase_attempt_and_progress() {
        let status = MaterializedViewStatus {
            phase: Some(ViewPhase::Backfilling),
            backfill: Some(BackfillStatus {
                attempt: 2,
                progress: Some("42%".into()),
                items_done: 420,
                items_total: 1000,
                items_per_second: Some(100),
                eta: Some("6s".into()),
                export_arn: Some("arn".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            summary("points", &status),
            "points: Backfilling, backfill attempt 2 42% (420/1000 records, 100/s, ETA 6s)"
        );
    }
}
