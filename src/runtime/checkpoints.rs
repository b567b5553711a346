//! Checkpoints in ConfigMaps the view owns (an owner reference: they go when the view goes).
//!
//! - The **backfill** checkpoint (`<view>-backfill-<attempt>`) records the finished data files by their
//!   position in the export's manifest: one key per worker share, `files-<index>-of-<count>`, holding a
//!   bitmap over the manifest's files (bit `i` set: file `i` is done), zlib-compressed and base64-encoded
//!   after a `z1:` tag. Only the share's own worker writes its key (a merge patch), so the workers of one
//!   Indexed Job never overwrite each other, and the checkpoint stays a few KB for 20,000+ files (a
//!   ConfigMap holds at most 1 MiB). Keys `f-<hash of the file's key>` = the file's key, written by earlier
//!   versions (and by a worker that was not told the layout), are still read.
//! - The **stream** checkpoint (`<view>-stream`) holds the reader's position per shard (`checkpoint`, JSON)
//!   and the stream it belongs to (`streamArn`): a checkpoint of another stream is ignored.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::backfill::worker::{CheckpointError, FileCheckpoints};
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
    /// The backfill's files and this process's share, once [`FileCheckpoints::layout`] was called.
    layout: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<Layout>>>>,
    /// This share's bitmap as last written (or read): writes are serialized, each carries the whole map.
    bits: std::sync::Arc<tokio::sync::Mutex<Option<Vec<u8>>>>,
    /// This share's files begun but not done: position to records applied.
    lines: std::sync::Arc<tokio::sync::Mutex<BTreeMap<usize, u64>>>,
}

/// The files of a backfill in manifest order, and the share this process records.
struct Layout {
    files: Vec<String>,
    position: std::collections::HashMap<String, usize>,
    share: (usize, usize),
    /// Names this list of files: positions mean nothing for another export's files, so a bitmap of
    /// another list (an earlier export left under the same ConfigMap name) is never read as this one's.
    digest: String,
}

impl Layout {
    fn key(&self) -> String {
        format!("files-{}-{}-of-{}", self.digest, self.share.0, self.share.1)
    }

    fn lines_key(&self) -> String {
        format!("lines-{}-{}-of-{}", self.digest, self.share.0, self.share.1)
    }

    /// Whether `key` is a bitmap of this list of files (any share).
    fn is_files_key(&self, key: &str) -> bool {
        key.strip_prefix("files-")
            .and_then(|rest| rest.strip_prefix(self.digest.as_str()))
            .is_some_and(|rest| rest.starts_with('-'))
    }
}

/// 12 hex digits naming a list of files (SHA-256 of the keys, one per line).
fn files_digest(files: &[String]) -> String {
    hex::encode(&Sha256::digest(files.join("\n").as_bytes())[..6])
}

/// The ConfigMap key of the bitmap of `share` (index, count) over `files`.
pub fn files_key(files: &[String], share: (usize, usize)) -> String {
    format!("files-{}-{}-of-{}", files_digest(files), share.0, share.1)
}

/// How many times a bitmap write is tried again when another process changed the ConfigMap meanwhile.
const CONFLICT_RETRIES: usize = 20;

/// Encodes a bitmap of done files: `z1:` + base64(zlib(bits)).
pub fn encode_bits(bits: &[u8]) -> String {
    use base64::Engine as _;
    use std::io::Write as _;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = z.write_all(bits);
    let packed = z.finish().unwrap_or_default();
    format!("z1:{}", base64::engine::general_purpose::STANDARD.encode(packed))
}

/// Decodes [`encode_bits`]; `None` for anything else.
pub fn decode_bits(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use std::io::Read as _;
    let packed = base64::engine::general_purpose::STANDARD
        .decode(text.strip_prefix("z1:")?)
        .ok()?;
    let mut bits = Vec::new();
    flate2::read::ZlibDecoder::new(&packed[..])
        .take(64 << 20)
        .read_to_end(&mut bits)
        .ok()?;
    Some(bits)
}

fn set_bit(bits: &mut Vec<u8>, i: usize) {
    if bits.len() <= i / 8 {
        bits.resize(i / 8 + 1, 0);
    }
    bits[i / 8] |= 1 << (i % 8);
}

fn bit_positions(bits: &[u8]) -> impl Iterator<Item = usize> + '_ {
    (0..bits.len() * 8).filter(|i| bits[i / 8] & (1 << (i % 8)) != 0)
}

impl ConfigMapCheckpoint {
    pub fn new(client: kube::Client, namespace: &str, name: String, owner: Option<OwnerReference>) -> Self {
        ConfigMapCheckpoint {
            api: Api::namespaced(client, namespace),
            name,
            owner,
            layout: Default::default(),
            bits: Default::default(),
            lines: Default::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ConfigMap as the API server has it, `None` when it does not exist.
    async fn get(&self) -> Result<Option<ConfigMap>, CheckpointError> {
        self.api
            .get_opt(&self.name)
            .await
            .map_err(|source| CheckpointError::Kube {
                action: "reading ConfigMap",
                name: self.name.clone(),
                source,
            })
    }

    /// The ConfigMap's data (empty when it does not exist).
    ///
    /// A ConfigMap of this name owned by another object (an earlier view of the same name, deleted; the
    /// garbage collector removes such ConfigMaps, but in its own time) holds none of this view's progress:
    /// it is deleted here and reads as empty, so a view created again never resumes where its predecessor
    /// stopped.
    pub async fn read(&self) -> Result<BTreeMap<String, String>, CheckpointError> {
        let Some(cm) = self.get().await? else {
            return Ok(BTreeMap::new());
        };
        if let Some(owner) = &self.owner
            && let Some(theirs) = cm.metadata.owner_references.as_ref().and_then(|r| r.first())
            && theirs.uid != owner.uid
        {
            tracing::info!(configmap = %self.name, earlier = %theirs.uid, "deleting an earlier view's checkpoint");
            self.delete().await?;
            return Ok(BTreeMap::new());
        }
        Ok(cm.data.unwrap_or_default())
    }

    /// Adds or replaces `data`'s keys, creating the ConfigMap (owned by the view) when needed.
    pub async fn merge(&self, data: BTreeMap<String, String>) -> Result<(), CheckpointError> {
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
                let cm: ConfigMap = serde_json::from_value(patch.clone())?;
                self.api
                    .create(&kube::api::PostParams::default(), &cm)
                    .await
                    .map(|_| ())
                    .or_else(|e| match e {
                        // Another worker created it first: add our keys to theirs.
                        kube::Error::Api(a) if a.code == 409 => Ok(()),
                        e => Err(e),
                    })
                    .map_err(|source| CheckpointError::Kube {
                        action: "creating ConfigMap",
                        name: self.name.clone(),
                        source,
                    })?;
                // A create that lost the race wrote nothing: merge again.
                self.api
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
                    .map_err(|source| CheckpointError::Kube {
                        action: "writing ConfigMap",
                        name: self.name.clone(),
                        source,
                    })
            }
            Err(source) => {
                Err(CheckpointError::Kube { action: "writing ConfigMap", name: self.name.clone(), source })
            }
        }
    }

    /// Deletes the ConfigMap (gone already is fine).
    pub async fn delete(&self) -> Result<(), CheckpointError> {
        match self.api.delete(&self.name, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(source) => Err(CheckpointError::Kube {
                action: "deleting ConfigMap",
                name: self.name.clone(),
                source,
            }),
        }
    }
}

/// The data key of a finished file.
fn file_key(file: &str) -> String {
    let digest = Sha256::digest(file.as_bytes());
    format!("f-{}", hex::encode(&digest[..12]))
}

impl ConfigMapCheckpoint {
    fn current_layout(&self) -> Option<std::sync::Arc<Layout>> {
        self.layout.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl FileCheckpoints for ConfigMapCheckpoint {
    fn layout(&self, files: &[String], share: (usize, usize)) {
        let layout = Layout {
            files: files.to_vec(),
            position: files.iter().enumerate().map(|(i, f)| (f.clone(), i)).collect(),
            share,
            digest: files_digest(files),
        };
        *self.layout.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::sync::Arc::new(layout));
    }

    async fn done(&self) -> Result<BTreeSet<String>, CheckpointError> {
        let data = self.read().await?;
        let layout = self.current_layout();
        let mut done = BTreeSet::new();
        for (k, v) in &data {
            if k.starts_with("f-") && *k == file_key(v) {
                done.insert(v.clone());
            } else if let Some(layout) = layout.as_ref().filter(|l| l.is_files_key(k)) {
                let Some(bits) = decode_bits(v) else {
                    // Edited by hand, or damaged: its files are projected again (the writes are
                    // idempotent), never skipped.
                    tracing::warn!(configmap = %self.name, key = %k, "a backfill checkpoint key cannot be read; the files it recorded are projected again");
                    continue;
                };
                done.extend(bit_positions(&bits).filter_map(|i| layout.files.get(i).cloned()));
                if *k == layout.key() {
                    let mut own = self.bits.lock().await;
                    let merged = own.get_or_insert_with(Vec::new);
                    for i in bit_positions(&bits) {
                        set_bit(merged, i);
                    }
                }
            }
        }
        Ok(done)
    }

    async fn mark_done(&self, file: &str, _items: u64) -> Result<(), CheckpointError> {
        let layout = self.current_layout();
        let Some((layout, i)) = layout.and_then(|l| l.position.get(file).copied().map(|i| (l, i))) else {
            return self
                .merge(BTreeMap::from([(file_key(file), file.to_string())]))
                .await;
        };
        let loaded = self.bits.lock().await.is_some();
        if !loaded {
            // What a run before this one recorded for the share.
            self.done().await?;
        }
        // Held across the write: each write carries every bit set before it.
        let mut own = self.bits.lock().await;
        let bits = own.get_or_insert_with(Vec::new);
        set_bit(bits, i);
        self.write_bits(&layout.key(), bits).await
    }

    async fn lines_done(&self) -> Result<std::collections::HashMap<String, u64>, CheckpointError> {
        let Some(layout) = self.current_layout() else {
            return Ok(Default::default());
        };
        let data = self.read().await?;
        let Some(text) = data.get(&layout.lines_key()) else {
            return Ok(Default::default());
        };
        let begun: BTreeMap<usize, u64> = match serde_json::from_str(text) {
            Ok(begun) => begun,
            Err(e) => {
                // Only a hint: without it the files are read from their start.
                tracing::warn!(configmap = %self.name, key = %layout.lines_key(), error = %e, "a backfill checkpoint key cannot be read; files begun are read from their start");
                BTreeMap::new()
            }
        };
        let done: std::collections::HashSet<usize> =
            match data.get(&layout.key()).and_then(|b| decode_bits(b)) {
                Some(bits) => bit_positions(&bits).collect(),
                None => Default::default(),
            };
        let mut own = self.lines.lock().await;
        own.extend(begun.iter().filter(|(i, _)| !done.contains(i)));
        Ok(own
            .iter()
            .filter_map(|(i, lines)| Some((layout.files.get(*i)?.clone(), *lines)))
            .collect())
    }

    async fn save_lines_done(&self, file: &str, lines: u64) -> Result<(), CheckpointError> {
        let Some(layout) = self.current_layout() else {
            return Ok(());
        };
        let Some(&i) = layout.position.get(file) else {
            return Ok(());
        };
        let done: std::collections::HashSet<usize> = match &*self.bits.lock().await {
            Some(bits) => bit_positions(bits).collect(),
            None => Default::default(),
        };
        let mut own = self.lines.lock().await;
        own.insert(i, lines);
        own.retain(|i, _| !done.contains(i));
        let text = serde_json::to_string(&*own)?;
        self.merge(BTreeMap::from([(layout.lines_key(), text)])).await
    }
}

impl ConfigMapCheckpoint {
    /// Writes `bits` OR what `key` holds (another process of the same share, such as a Job pod restarted
    /// while the old one still runs, may have set others), as a JSON patch that first tests the key's
    /// value: bits are only ever added, and writers of other keys (other shares) never conflict. `bits`
    /// becomes the union.
    async fn write_bits(&self, key: &str, bits: &mut Vec<u8>) -> Result<(), CheckpointError> {
        for attempt in 0..CONFLICT_RETRIES {
            if attempt > 0 {
                // Another writer of this key won the race: a short jittered pause before reading again.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0);
                let ms = (10u64 << attempt.min(5)) + u64::from(nanos % 50);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            let found = self.get().await?;
            let stored_text = found
                .as_ref()
                .and_then(|cm| cm.data.as_ref())
                .and_then(|d| d.get(key))
                .cloned();
            let Some(old) = stored_text else {
                // The key's first write; the next round merges with whatever raced it.
                self.merge(BTreeMap::from([(key.to_string(), encode_bits(bits))]))
                    .await?;
                let again = self.read().await?;
                match again.get(key).and_then(|v| decode_bits(v)) {
                    Some(stored)
                        if bit_positions(bits)
                            .all(|i| stored.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)) =>
                    {
                        return Ok(());
                    }
                    _ => continue,
                }
            };
            for i in decode_bits(&old).iter().flat_map(|b| bit_positions(b)) {
                set_bit(bits, i);
            }
            let text = encode_bits(bits);
            if text == old {
                return Ok(());
            }
            // Conditioned on this key alone (other shares write other keys of the same ConfigMap).
            let pointer = format!("/data/{}", key.replace('~', "~0").replace('/', "~1"));
            let patch: json_patch::Patch = serde_json::from_value(json!([
                {"op": "test", "path": pointer, "value": old},
                {"op": "replace", "path": pointer, "value": text},
            ]))?;
            match self
                .api
                .patch(&self.name, &PatchParams::default(), &Patch::<()>::Json(patch))
                .await
            {
                Ok(_) => return Ok(()),
                // The test failed (422) or the object changed under the write (409): read again.
                Err(kube::Error::Api(e)) if matches!(e.code, 409 | 422) => continue,
                Err(source) => {
                    return Err(CheckpointError::Kube {
                        action: "writing ConfigMap",
                        name: self.name.clone(),
                        source,
                    });
                }
            }
        }
        Err(CheckpointError::Contended {
            name: self.name.clone(),
            key: key.to_string(),
            attempts: CONFLICT_RETRIES,
        })
    }
}

/// The stream checkpoint: read and write a [`Checkpoint`] of one stream.
impl ConfigMapCheckpoint {
    /// The checkpoint of `stream_arn`, or an empty one (start at the stream's trim horizon).
    pub async fn stream_position(&self, stream_arn: &str) -> Result<Checkpoint, CheckpointError> {
        let data = self.read().await?;
        if data.get("streamArn").map(String::as_str) != Some(stream_arn) {
            return Ok(Checkpoint::default());
        }
        match data.get("checkpoint") {
            Some(json) => serde_json::from_str(json).map_err(|e| CheckpointError::Corrupt {
                name: self.name.clone(),
                key: "checkpoint".into(),
                what: "stream checkpoint",
                message: e.to_string(),
            }),
            None => Ok(Checkpoint::default()),
        }
    }

    /// Stores `checkpoint` as the position in `stream_arn`.
    pub async fn save_stream_position(
        &self,
        stream_arn: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), CheckpointError> {
        let json = serde_json::to_string(checkpoint)?;
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
    ) -> Result<(), CheckpointError> {
        let json = serde_json::to_string(checkpoint)?;
        self.merge(BTreeMap::from([
            ("streamArn".to_string(), stream_arn.to_string()),
            ("checkpoint".to_string(), json),
            ("gap".to_string(), gap.to_string()),
        ]))
        .await
    }

    /// The pending gap of `stream_arn`'s reader: records it lost that no backfill attempt has been
    /// recorded for yet.
    pub async fn stream_gap(&self, stream_arn: &str) -> Result<Option<String>, CheckpointError> {
        let data = self.read().await?;
        if data.get("streamArn").map(String::as_str) != Some(stream_arn) {
            return Ok(None);
        }
        Ok(data.get("gap").filter(|g| !g.is_empty()).cloned())
    }

    /// Removes the pending gap once a backfill attempt for it is recorded, unless another gap replaced it
    /// meanwhile (a JSON patch that tests the value first).
    pub async fn clear_gap(&self, gap: &str) -> Result<(), CheckpointError> {
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/data/gap", "value": gap},
            {"op": "remove", "path": "/data/gap"},
        ]))?;
        match self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => Ok(()),
            // Gone, or the gap changed or was removed already: nothing to clear.
            Err(kube::Error::Api(e)) if matches!(e.code, 404 | 422 | 409) => Ok(()),
            Err(source) => Err(CheckpointError::Kube {
                action: "clearing the gap in ConfigMap",
                name: self.name.clone(),
                source,
            }),
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
    fn checkpoint_errors_keep_their_messages_and_say_their_category() {
        let corrupt = CheckpointError::Corrupt {
            name: "v-stream".into(),
            key: "checkpoint".into(),
            what: "stream checkpoint",
            message: "expected value at line 1 column 1".into(),
        };
        assert_eq!(
            corrupt.to_string(),
            "ConfigMap v-stream: key checkpoint is not a stream checkpoint: expected value at line 1 column 1"
        );
        assert_eq!(corrupt.category(), "corrupt");
        let contended = CheckpointError::Contended {
            name: "v-backfill-1".into(),
            key: "files-ab-0-of-2".into(),
            attempts: CONFLICT_RETRIES,
        };
        assert_eq!(
            contended.to_string(),
            "writing ConfigMap v-backfill-1: key files-ab-0-of-2 kept changing under 20 attempts"
        );
        assert_eq!(contended.category(), "conflict");
        // A backfill stopped by any of them resumes from what was recorded.
        let stopped = crate::backfill::worker::BackfillError::from(contended);
        assert!(stopped.retryable());
        assert!(
            stopped
                .to_string()
                .starts_with("the backfill checkpoint cannot be read or written: writing ConfigMap")
        );
    }

    #[test]
    fn the_file_bitmap_round_trips_and_stays_small_for_20000_files() {
        let mut all = Vec::new();
        let mut every_third = Vec::new();
        for i in 0..20_000 {
            set_bit(&mut all, i);
            if i % 3 == 0 {
                set_bit(&mut every_third, i);
            }
        }
        // A pseudo-random half: the worst case for compression.
        let mut random = Vec::new();
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x & 1 == 1 {
                set_bit(&mut random, i);
            }
        }
        for bits in [&all, &every_third, &random] {
            let text = encode_bits(bits);
            assert_eq!(decode_bits(&text).as_ref(), Some(bits));
            assert!(text.len() < 4_000, "{} bytes", text.len());
        }
        assert_eq!(bit_positions(&all).count(), 20_000);
        assert_eq!(decode_bits("f-abc"), None);
    }

    #[test]
    fn file_keys_are_valid_configmap_keys_and_distinct() {
        let a = file_key("p/AWSDynamoDB/e/data/a.json.gz");
        let b = file_key("p/AWSDynamoDB/e/data/b.json.gz");
        assert_ne!(a, b);
        assert!(a.len() <= 253 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
