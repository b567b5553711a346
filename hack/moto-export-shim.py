"""Lays out the local stack's table exports the way AWS does, for the operator to read.

The local AWS emulator (moto) runs ExportTableToPointInTime, but it writes a single data file with no
manifests, under a folder unrelated to the export id. AWS writes (see docs/... and FORMATS.md):

    <prefix>/AWSDynamoDB/<ExportId>/_started
    <prefix>/AWSDynamoDB/<ExportId>/manifest-summary.json
    <prefix>/AWSDynamoDB/<ExportId>/manifest-files.json
    <prefix>/AWSDynamoDB/<ExportId>/data/<name>.json.gz     (several, gzip NDJSON of {"Item": {...}})

This shim plays the part of DynamoDB's export writer: it polls every table's exports and, for each one the
emulator completed whose manifest-summary.json does not exist yet, splits the emulator's snapshot into
several data files and writes them and both manifests in AWS's format. The operator reads only AWS's
layout, so it never depends on the emulator's own files. Run by `hack/stack.sh up`; not part of the product.
"""

import base64
import datetime
import gzip
import hashlib
import json
import os
import sys
import time
import uuid

import boto3
from botocore.config import Config

ITEMS_PER_FILE = int(os.environ.get("KAPPA_SHIM_ITEMS_PER_FILE", "2500"))
MAX_FILES = 8

endpoint = os.environ["AWS_ENDPOINT_URL"]
cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2})
dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, config=cfg)
s3 = boto3.client("s3", endpoint_url=endpoint, config=cfg)
done = set()


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def exists(bucket, key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except s3.exceptions.ClientError:
        return False


def emulator_snapshot(bucket, prefix, export_dir):
    """The newest .gz the emulator wrote under <prefix>/AWSDynamoDB/ outside any AWS-format export."""
    newest = None
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/AWSDynamoDB/"):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith(".gz") and not key.endswith(".json.gz") and not key.startswith(export_dir):
                if newest is None or obj["LastModified"] > newest["LastModified"]:
                    newest = obj
    return newest["Key"] if newest else None


def lay_out(description):
    arn = description["ExportArn"]
    bucket, prefix = description["S3Bucket"], description.get("S3Prefix", "").strip("/")
    export_id = arn.rsplit("/", 1)[-1]
    export_dir = f"{prefix}/AWSDynamoDB/{export_id}/"
    if exists(bucket, export_dir + "manifest-summary.json"):
        return True
    source = emulator_snapshot(bucket, prefix, export_dir)
    if source is None:
        return False
    raw = s3.get_object(Bucket=bucket, Key=source)["Body"].read()
    lines = [l for l in gzip.decompress(raw).decode("utf-8").splitlines() if l.strip()]
    files = max(1, min(MAX_FILES, (len(lines) + ITEMS_PER_FILE - 1) // ITEMS_PER_FILE))
    started = datetime.datetime.now(datetime.timezone.utc)
    s3.put_object(Bucket=bucket, Key=export_dir + "_started", Body=b"")
    entries = []
    for i in range(files):
        part = lines[i::files]
        body = gzip.compress("".join(l + "\n" for l in part).encode("utf-8")) if part else b""
        key = f"{export_dir}data/{uuid.uuid4().hex[:26]}.json.gz"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        md5 = hashlib.md5(body)
        entries.append({
            "itemCount": len(part),
            "md5Checksum": base64.b64encode(md5.digest()).decode(),
            "etag": md5.hexdigest(),
            "dataFileS3Key": key,
        })
    files_key = export_dir + "manifest-files.json"
    s3.put_object(Bucket=bucket, Key=files_key, Body="".join(json.dumps(e) + "\n" for e in entries).encode())
    ended = datetime.datetime.now(datetime.timezone.utc)
    summary = {
        "version": "2020-06-30",
        "exportArn": arn,
        "startTime": iso(started),
        "endTime": iso(ended),
        "tableArn": description.get("TableArn"),
        "tableId": str(uuid.uuid5(uuid.NAMESPACE_URL, description.get("TableArn", ""))),
        "exportTime": iso(started),
        "s3Bucket": bucket,
        "s3Prefix": prefix or None,
        "s3SseAlgorithm": "AES256",
        "s3SseKmsKeyId": None,
        "manifestFilesS3Key": files_key,
        "billedSizeBytes": len(raw),
        "itemCount": len(lines),
        "outputFormat": "DYNAMODB_JSON",
        "exportType": "FULL_EXPORT",
    }
    # The summary last: a reader that finds it finds everything it names.
    s3.put_object(Bucket=bucket, Key=export_dir + "manifest-summary.json", Body=json.dumps(summary).encode())
    print(f"export-shim: {arn}: {len(lines)} items in {files} files under s3://{bucket}/{export_dir}", flush=True)
    return True


def all_tables():
    """Every table name, page after page (ListTables returns at most 100 a page)."""
    for page in dynamodb.get_paginator("list_tables").paginate():
        yield from page.get("TableNames", [])


def sweep():
    for table in all_tables():
        try:
            arn = dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
            summaries = dynamodb.list_exports(TableArn=arn).get("ExportSummaries", [])
        except Exception:  # a table deleted meanwhile
            continue
        for summary in summaries:
            if summary["ExportArn"] in done or summary.get("ExportStatus") != "COMPLETED":
                continue
            description = dynamodb.describe_export(ExportArn=summary["ExportArn"])["ExportDescription"]
            if lay_out(description):
                done.add(summary["ExportArn"])


def main():
    print(f"export-shim: watching exports on {endpoint}", flush=True)
    while True:
        try:
            sweep()
        except Exception as e:  # the emulator restarting, a bucket deleted: try again
            print(f"export-shim: {e}", file=sys.stderr, flush=True)
        time.sleep(float(os.environ.get("KAPPA_SHIM_INTERVAL", "1")))


if __name__ == "__main__":
    main()
