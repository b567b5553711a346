//! The GitOps health checks: the Argo CD `health.lua` run by a real Lua 5.1 interpreter (Argo CD's
//! gopher-lua speaks 5.1) on sample statuses, and the Flux and Argo CD manifests that carry the checks.

use mlua::{Lua, LuaSerdeExt, Table};

use serde_json::{Value, json};

const HEALTH_LUA: &str = include_str!("../examples/gitops/argocd/health.lua");
const ARGOCD_CM: &str = include_str!("../examples/gitops/argocd/argocd-cm.yaml");
const FLUX: &str = include_str!("../examples/gitops/flux/kustomization.yaml");

/// Runs the script as Argo CD does, with the object as the global `obj`; returns (status, message).
fn health(obj: Value) -> (String, String) {
    let lua = Lua::new();
    // Argo CD hands the script the object as plain tables: JSON nulls are absent fields, so nil here.
    let options = mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    lua.globals()
        .set("obj", lua.to_value_with(&obj, options).unwrap())
        .unwrap();
    let hs: Table = lua.load(HEALTH_LUA).eval().unwrap();
    (
        hs.get::<String>("status").unwrap(),
        hs.get::<Option<String>>("message").unwrap().unwrap_or_default(),
    )
}

fn view(generation: i64, status: Value) -> Value {
    json!({"apiVersion": "kappa.dev/v1alpha1", "kind": "MaterializedView",
           "metadata": {"name": "players", "generation": generation}, "status": status})
}

fn cond(type_: &str, status: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": "R", "message": message})
}

#[test]
fn no_status_yet_is_progressing() {
    assert_eq!(health(view(1, Value::Null)).0, "Progressing");
}

#[test]
fn an_old_generation_is_progressing_whatever_it_says() {
    let s = json!({"observedGeneration": 1, "phase": "Live", "conditions": [cond("Ready", "True", "live")]});
    let (status, message) = health(view(2, s));
    assert_eq!(status, "Progressing");
    assert!(message.contains("generation 2"), "{message}");
}

#[test]
fn stalled_is_degraded_with_the_fix() {
    let s = json!({"observedGeneration": 3, "phase": "Pending", "conditions": [
        cond("Ready", "False", "x"), cond("Stalled", "True", "spec.eventLogRef.name: EventLog \"x\" does not exist")]});
    assert_eq!(
        health(view(3, s)),
        (
            "Degraded".into(),
            "spec.eventLogRef.name: EventLog \"x\" does not exist".into()
        )
    );
}

#[test]
fn failed_phase_is_degraded() {
    let s = json!({"observedGeneration": 1, "phase": "Failed", "conditions": [cond("Ready", "False", "AccessDenied")]});
    assert_eq!(health(view(1, s)).0, "Degraded");
}

#[test]
fn ready_is_healthy() {
    let s = json!({"observedGeneration": 5, "phase": "Live", "conditions": [
        cond("Ready", "True", "backfilled and live"), cond("Stalled", "False", "")]});
    assert_eq!(
        health(view(5, s)),
        ("Healthy".into(), "backfilled and live".into())
    );
}

#[test]
fn a_backfill_in_progress_shows_its_progress() {
    let s = json!({"observedGeneration": 1, "phase": "Backfilling", "backfill": {"progress": "42%"},
        "conditions": [cond("Ready", "False", "projecting the export")]});
    let (status, message) = health(view(1, s));
    assert_eq!(status, "Progressing");
    assert_eq!(message, "phase Backfilling: projecting the export (backfill 42%)");
}

#[test]
fn argocd_cm_carries_the_script_for_both_kinds() {
    let cm: Value = serde_yaml::from_str(ARGOCD_CM).unwrap();
    for key in [
        "resource.customizations.health.kappa.dev_EventLog",
        "resource.customizations.health.kappa.dev_MaterializedView",
    ] {
        assert_eq!(
            cm["data"][key].as_str(),
            Some(HEALTH_LUA),
            "{key} must equal examples/gitops/argocd/health.lua"
        );
    }
}

#[test]
fn flux_checks_both_kinds_on_ready_and_stalled() {
    let k: Value = serde_yaml::from_str(FLUX).unwrap();
    let exprs = k["spec"]["healthCheckExprs"].as_array().unwrap();
    let kinds: Vec<&str> = exprs.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["EventLog", "MaterializedView"]);
    for e in exprs {
        assert!(
            e["current"].as_str().unwrap().contains("'Ready'")
                && e["failed"].as_str().unwrap().contains("'Stalled'")
        );
    }
}
