//! Checkpoints in ConfigMaps the view owns (an owner reference: they go when the view goes).
//!
//! - The **backfill** checkpoint (`<view>-backfill-<attempt>`) holds one key per finished data file,
//!   `f-<hash of the file's key>` = the file's key. Each worker adds its own keys with a merge patch, so
//!   workers of one Indexed Job never overwrite each other.
//! - The **stream** checkpoint (`<view>-stream`) holds the reader's position per shard (`checkpoint`, JSON)
//!   and the stream it belongs to (`streamArn`): a checkpoint of another stream is ignored.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::backfill::worker::FileCheckpoints;
use crate::crd::MaterializedView;
use crate::runtime::stream::Checkpoint;

/// The name of a view's backfill checkpoint for `attempt`.
pub fn backfill_name(view: &str, attempt: i64) -> String {
    format!("{view}-backfill-{attempt}")
}

/// The name of a view's stream checkpoint.
pub fn stream_name(view: &str) -> String {
    format!("{view}-stream")
}

/// The owner reference that ties a checkpoint to its view.
pub fn owner_of(view: &MaterializedView) -> Option<OwnerReference> {
    view.controller_owner_ref(&())
}

/// A ConfigMap of the view's namespace, written by merge patch.
#[derive(Clone)]
pub struct ConfigMapCheckpoint {
    api: Api<ConfigMap>,
    name: String,
    owner: Option<OwnerReference>,
}

impl ConfigMapCheckpoint {
    pub fn new(client: kube::Client, namespace: &str, name: String, owner: Option<OwnerReference>) -> Self {
        ConfigMapCheckpoint {
            api: Api::namespaced(client, namespace),
            name,
            owner,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ConfigMap's data (empty when it does not exist).
    pub async fn read(&self) -> Result<BTreeMap<String, String>, String> {
        let found = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| format!("reading ConfigMap {}: {e}", self.name))?;
        Ok(found.and_then(|cm| cm.data).unwrap_or_default())
    }

    /// Adds or replaces `data`'s keys, creating the ConfigMap (owned by the view) when needed.
    pub async fn merge(&self, data: BTreeMap<String, String>) -> Result<(), String> {
        let mut metadata =
            json!({ "name": self.name, "labels": { "app.kubernetes.io/managed-by": "kappa-operator" } });
        if let Some(owner) = &self.owner {
            metadata["ownerReferences"] = json!([owner]);
        }
        let patch = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data });
        match self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let cm: ConfigMap = serde_json::from_value(patch.clone()).map_err(|e| e.to_string())?;
                self.api
                    .create(&kube::api::PostParams::default(), &cm)
                    .await
                    .map(|_| ())
                    .or_else(|e| match e {
                        // Another worker created it first: add our keys to theirs.
                        kube::Error::Api(a) if a.code == 409 => Ok(()),
                        e => Err(e),
                    })
                    .map_err(|e| format!("creating ConfigMap {}: {e}", self.name))?;
                // A create that lost the race wrote nothing: merge again.
                self.api
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("writing ConfigMap {}: {e}", self.name))
            }
            Err(e) => Err(format!("writing ConfigMap {}: {e}", self.name)),
        }
    }

    /// Deletes the ConfigMap (gone already is fine).
    pub async fn delete(&self) -> Result<(), String> {
        match self.api.delete(&self.name, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(format!("deleting ConfigMap {}: {e}", self.name)),
        }
    }
}

/// The data key of a finished file.
fn file_key(file: &str) -> String {
    let digest = Sha256::digest(file.as_bytes());
    format!("f-{}", hex::encode(&digest[..12]))
}

impl FileCheckpoints for ConfigMapCheckpoint {
    async fn done(&self) -> Result<BTreeSet<String>, String> {
        let data = self.read().await?;
        Ok(data
            .into_iter()
            .filter(|(k, v)| k.starts_with("f-") && *k == file_key(v))
            .map(|(_, v)| v)
            .collect())
    }

    async fn mark_done(&self, file: &str, _items: u64) -> Result<(), String> {
        self.merge(BTreeMap::from([(file_key(file), file.to_string())]))
            .await
    }
}

/// The stream checkpoint: read and write a [`Checkpoint`] of one stream.
impl ConfigMapCheckpoint {
    /// The checkpoint of `stream_arn`, or an empty one (start at the stream's trim horizon).
    pub async fn stream_position(&self, stream_arn: &str) -> Result<Checkpoint, String> {
        let data = self.read().await?;
        if data.get("streamArn").map(String::as_str) != Some(stream_arn) {
            return Ok(Checkpoint::default());
        }
        match data.get("checkpoint") {
            Some(json) => serde_json::from_str(json).map_err(|e| {
                format!(
                    "ConfigMap {}: key checkpoint is not a stream checkpoint: {e}",
                    self.name
                )
            }),
            None => Ok(Checkpoint::default()),
        }
    }

    /// Stores `checkpoint` as the position in `stream_arn`.
    pub async fn save_stream_position(
        &self,
        stream_arn: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), String> {
        let json = serde_json::to_string(checkpoint).map_err(|e| e.to_string())?;
        self.merge(BTreeMap::from([
            ("streamArn".to_string(), stream_arn.to_string()),
            ("checkpoint".to_string(), json),
        ]))
        .await
    }
}

impl ConfigMapCheckpoint {
    /// Stores `checkpoint` (the lost shard forgotten) and the pending `gap` in one write, so a restart
    /// finds the gap whenever it finds the position past it (see [`Self::stream_gap`]).
    pub async fn save_stream_gap(
        &self,
        stream_arn: &str,
        checkpoint: &Checkpoint,
        gap: &str,
    ) -> Result<(), String> {
        let json = serde_json::to_string(checkpoint).map_err(|e| e.to_string())?;
        self.merge(BTreeMap::from([
            ("streamArn".to_string(), stream_arn.to_string()),
            ("checkpoint".to_string(), json),
            ("gap".to_string(), gap.to_string()),
        ]))
        .await
    }

    /// The pending gap of `stream_arn`'s reader: records it lost that no backfill attempt has been
    /// recorded for yet.
    pub async fn stream_gap(&self, stream_arn: &str) -> Result<Option<String>, String> {
        let data = self.read().await?;
        if data.get("streamArn").map(String::as_str) != Some(stream_arn) {
            return Ok(None);
        }
        Ok(data.get("gap").filter(|g| !g.is_empty()).cloned())
    }

    /// Removes the pending gap once a backfill attempt for it is recorded, unless another gap replaced it
    /// meanwhile (a JSON patch that tests the value first).
    pub async fn clear_gap(&self, gap: &str) -> Result<(), String> {
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/data/gap", "value": gap},
            {"op": "remove", "path": "/data/gap"},
        ]))
        .map_err(|e| e.to_string())?;
        match self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => Ok(()),
            // Gone, or the gap changed or was removed already: nothing to clear.
            Err(kube::Error::Api(e)) if matches!(e.code, 404 | 422 | 409) => Ok(()),
            Err(e) => Err(format!("clearing the gap in ConfigMap {}: {e}", self.name)),
        }
    }
}

/// A view's namespace and name, the key of its runtime tasks.
pub fn view_key(view: &MaterializedView) -> String {
    format!("{}/{}", view.namespace().unwrap_or_default(), view.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_are_valid_configmap_keys_and_distinct() {
        let a = file_key("p/AWSDynamoDB/e/data/a.json.gz");
        let b = file_key("p/AWSDynamoDB/e/data/b.json.gz");
        assert_ne!(a, b);
        assert!(a.len() <= 253 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
