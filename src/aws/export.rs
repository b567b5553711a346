//! Point-in-time exports of a log table to S3, and the S3 reads and deletes a backfill needs.
//!
//! - [`start_export`] is idempotent: DynamoDB keeps the `ClientToken` for 8 hours, so a restarted operator
//!   that asks again with the same token gets the same export, never a second one.
//! - [`summary_key`] finds `manifest-summary.json` the way AWS lays an export out
//!   (`<prefix>/AWSDynamoDB/<ExportId>/manifest-summary.json`), preferring `ExportManifest` when the
//!   service names it (either manifest is accepted there: which one AWS puts is not documented).
//! - [`open_object`] streams an object's body into a blocking [`std::io::Read`] for the export reader,
//!   a few chunks at a time: a data file is never whole in memory.

use std::io::{self, Read};

use aws_sdk_dynamodb::types::{ExportFormat, ExportStatus, ExportType};
use aws_sdk_s3::error::ProvideErrorMetadata;
use bytes::Bytes;

use super::AwsError;
use super::error::from_sdk;
use super::retry::{TransientLog, transient};

/// What DynamoDB says about an export.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportInfo {
    pub arn: String,
    pub state: ExportState,
    /// `ExportManifest`, when given.
    pub manifest: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    /// The snapshot's point in time, epoch seconds, when given.
    pub export_time: Option<i64>,
    pub item_count: Option<i64>,
}

/// Where an export is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportState {
    InProgress,
    Completed,
    Failed { code: String, message: String },
}

fn info(d: &aws_sdk_dynamodb::types::ExportDescription) -> ExportInfo {
    let state = match d.export_status() {
        Some(ExportStatus::Completed) => ExportState::Completed,
        Some(ExportStatus::Failed) => ExportState::Failed {
            code: d.failure_code().unwrap_or("Unknown").to_string(),
            message: d.failure_message().unwrap_or_default().to_string(),
        },
        _ => ExportState::InProgress,
    };
    ExportInfo {
        arn: d.export_arn().unwrap_or_default().to_string(),
        state,
        manifest: d.export_manifest().map(str::to_string),
        bucket: d.s3_bucket().map(str::to_string),
        prefix: d.s3_prefix().map(str::to_string),
        export_time: d.export_time().map(|t| t.secs()),
        item_count: d.item_count(),
    }
}

/// Starts a full `DYNAMODB_JSON` export of `table_arn` at the current time into `bucket`/`prefix`, or finds
/// the one `client_token` already started.
pub async fn start_export(
    client: &aws_sdk_dynamodb::Client,
    table_arn: &str,
    bucket: &str,
    prefix: &str,
    client_token: &str,
) -> Result<ExportInfo, AwsError> {
    let out = client
        .export_table_to_point_in_time()
        .table_arn(table_arn)
        .s3_bucket(bucket)
        .s3_prefix(prefix)
        .client_token(client_token)
        .export_format(ExportFormat::DynamodbJson)
        .export_type(ExportType::FullExport)
        .send()
        .await
        .map_err(from_sdk("ExportTableToPointInTime", table_arn))?;
    let description = out.export_description.ok_or_else(|| {
        AwsError::permanent(
            "ExportTableToPointInTime",
            table_arn,
            "the response has no ExportDescription",
        )
    })?;
    Ok(info(&description))
}

/// The export's current state.
pub async fn describe_export(client: &aws_sdk_dynamodb::Client, arn: &str) -> Result<ExportInfo, AwsError> {
    let out = client
        .describe_export()
        .export_arn(arn)
        .send()
        .await
        .map_err(from_sdk("DescribeExport", arn))?;
    let description = out
        .export_description
        .ok_or_else(|| AwsError::permanent("DescribeExport", arn, "the response has no ExportDescription"))?;
    Ok(info(&description))
}

/// The key of the export's `manifest-summary.json`.
pub fn summary_key(export: &ExportInfo, requested_prefix: &str) -> String {
    if let Some(manifest) = &export.manifest {
        if let Some(dir) = manifest.strip_suffix("manifest-files.json") {
            return format!("{dir}manifest-summary.json");
        }
        return manifest.clone();
    }
    let export_id = export.arn.rsplit('/').next().unwrap_or_default();
    let prefix = export
        .prefix
        .as_deref()
        .unwrap_or(requested_prefix)
        .trim_end_matches('/');
    match prefix.is_empty() {
        true => format!("AWSDynamoDB/{export_id}/manifest-summary.json"),
        false => format!("{prefix}/AWSDynamoDB/{export_id}/manifest-summary.json"),
    }
}

/// A small object's bytes (a manifest), or `None` when there is no such key. Transient errors are retried
/// in place ([`super::retry`]).
pub async fn get_small_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, AwsError> {
    let resource = format!("s3://{bucket}/{key}");
    transient(None, || async {
        let Some(out) = get_object(s3, bucket, key, None, None).await? else {
            return Ok(None);
        };
        let body = out.body.collect().await.map_err(|e| {
            let mut err = AwsError::new("GetObject", &resource, "", &e.to_string());
            err.retryable = true;
            err
        })?;
        Ok(Some(body.into_bytes().to_vec()))
    })
    .await
}

/// One `GetObject` (from byte `from` on, and only while the object's ETag is `if_match`, when given);
/// `None` when there is no such key.
async fn get_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    from: Option<u64>,
    if_match: Option<String>,
) -> Result<Option<aws_sdk_s3::operation::get_object::GetObjectOutput>, AwsError> {
    match s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_range(from.map(|f| format!("bytes={f}-")))
        .set_if_match(if_match)
        .send()
        .await
    {
        Ok(out) => Ok(Some(out)),
        Err(e) if e.code() == Some("NoSuchKey") || e.code() == Some("NotFound") => Ok(None),
        Err(e) => Err(from_sdk("GetObject", &format!("s3://{bucket}/{key}"))(e)),
    }
}

/// How many times in a row an object's body may fail to deliver a byte before reading it fails.
const MAX_BODY_RESUMES: u32 = 10;

/// The first of `candidates` that exists in `bucket` (keys in the order to try), with its body streaming
/// into a blocking reader. Read it on a blocking thread (`spawn_blocking`): its `read` waits for chunks.
///
/// Retry in place: transient `GetObject` errors are retried ([`super::retry`]), and a body whose
/// connection breaks (a reset, a timeout) is resumed where it broke with a ranged `GetObject` (`Range:
/// bytes=<delivered>-`, `If-Match: <ETag>` so the bytes are the same object's); the reader sees one
/// unbroken body. Only `MAX_BODY_RESUMES` breaks in a row without a byte in between fail the read.
/// Source: Amazon S3 API Reference, GetObject (`Range`, `If-Match`).
///
/// Transient errors and resumes are noted in `log` when given.
pub async fn open_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    candidates: &[String],
    log: Option<&TransientLog>,
) -> Result<Option<(String, ObjectReader)>, AwsError> {
    for key in candidates {
        let resource = format!("s3://{bucket}/{key}");
        let Some(out) = transient(log, || get_object(s3, bucket, key, None, None)).await? else {
            continue;
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
        let etag = out.e_tag().map(str::to_string);
        let length = out.content_length().and_then(|l| u64::try_from(l).ok());
        let mut body = out.body;
        let (s3, bucket, key_owned, log) = (s3.clone(), bucket.to_string(), key.clone(), log.cloned());
        tokio::spawn(async move {
            let mut delivered = 0u64;
            let mut breaks = 0u32;
            loop {
                let chunk = match body.try_next().await {
                    Ok(Some(chunk)) => {
                        delivered += chunk.len() as u64;
                        if !chunk.is_empty() {
                            breaks = 0;
                        }
                        Ok(chunk)
                    }
                    Ok(None) => break,
                    Err(_) if length.is_some_and(|l| delivered >= l) => break,
                    Err(e) if breaks < MAX_BODY_RESUMES => {
                        breaks += 1;
                        tracing::warn!(object = %resource, delivered, error = %e, "an object's body broke off; resuming it where it broke");
                        crate::aws::retry::RETRIES
                            .get_or_create(&crate::aws::retry::RetryLabels { operation: "GetObject".into() })
                            .inc();
                        if let Some(log) = &log {
                            log.note(&AwsError::new(
                                "GetObject",
                                &resource,
                                "BodyBrokeOff",
                                &e.to_string(),
                            ));
                        }
                        let resumed = transient(log.as_ref(), || {
                            get_object(&s3, &bucket, &key_owned, Some(delivered), etag.clone())
                        })
                        .await;
                        match resumed {
                            Ok(Some(out)) => {
                                body = out.body;
                                continue;
                            }
                            Ok(None) => Err(io::Error::other(format!(
                                "reading {resource}: the object is gone"
                            ))),
                            Err(e) => Err(io::Error::other(format!("resuming {resource}: {e}"))),
                        }
                    }
                    Err(e) => Err(io::Error::other(format!("reading {resource}: {e}"))),
                };
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        return Ok(Some((
            key.clone(),
            ObjectReader { chunks: rx, current: Bytes::new() },
        )));
    }
    Ok(None)
}

/// An object body as a blocking [`Read`]; see [`open_object`].
pub struct ObjectReader {
    chunks: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Writes a small object (a backfill's partial sums) at `key`, replacing any.
pub async fn put_small_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<(), AwsError> {
    transient(None, || async {
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(body.clone().into())
            .send()
            .await
            .map_err(from_sdk("PutObject", &format!("s3://{bucket}/{key}")))
    })
    .await?;
    Ok(())
}

/// The keys of every object under `prefix`.
pub async fn list_keys(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<Vec<String>, AwsError> {
    let resource = format!("s3://{bucket}/{prefix}");
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = transient(None, || async {
            s3.list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(from_sdk("ListObjectsV2", &resource))
        })
        .await?;
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            return Ok(keys);
        }
    }
}

/// Deletes every object under `prefix` (the export a view owns), returning how many.
pub async fn delete_prefix(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<usize, AwsError> {
    let keys = list_keys(s3, bucket, prefix).await?;
    for key in &keys {
        s3.delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(from_sdk("DeleteObject", &format!("s3://{bucket}/{key}")))?;
    }
    Ok(keys.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(arn: &str, manifest: Option<&str>, prefix: Option<&str>) -> ExportInfo {
        ExportInfo {
            arn: arn.into(),
            state: ExportState::Completed,
            manifest: manifest.map(str::to_string),
            bucket: Some("b".into()),
            prefix: prefix.map(str::to_string),
            export_time: None,
            item_count: None,
        }
    }

    #[test]
    fn the_summary_is_found_from_the_manifest_or_the_export_id() {
        let arn = "arn:aws:dynamodb:us-east-1:123456789012:table/GameLog/export/01700000000000-abcd1234";
        assert_eq!(
            summary_key(&export(arn, None, Some("views/ns/players/1")), "ignored"),
            "views/ns/players/1/AWSDynamoDB/01700000000000-abcd1234/manifest-summary.json"
        );
        assert_eq!(
            summary_key(&export(arn, None, None), "p/"),
            "p/AWSDynamoDB/01700000000000-abcd1234/manifest-summary.json"
        );
        assert_eq!(
            summary_key(&export(arn, None, None), ""),
            "AWSDynamoDB/01700000000000-abcd1234/manifest-summary.json"
        );
        for manifest in [
            "x/AWSDynamoDB/e/manifest-summary.json",
            "x/AWSDynamoDB/e/manifest-files.json",
        ] {
            assert_eq!(
                summary_key(&export(arn, Some(manifest), None), "p"),
                "x/AWSDynamoDB/e/manifest-summary.json"
            );
        }
    }
}
