"""The local stack's AWS API server: moto's server, plus the API Gateway v2 operations the operator calls
that moto 5.2 does not answer (it fails them with HTTP 500), answered from moto's own state as AWS does:

- GetRouteResponses   GET   /v2/apis/{apiId}/routes/{routeId}/routeresponses
- UpdateStage         PATCH /v2/apis/{apiId}/stages/{stageName}

And two DynamoDB departures from AWS that would otherwise decide the operator's design or hide its bugs:

- TransactWriteItems: moto deep-copies every table a transaction touches before applying it (to roll
  back), so a transaction costs time proportional to the table's size. Here only the items the
  transaction names are saved and restored (and stream records it emitted are dropped on rollback), which
  is what AWS's all-or-nothing semantics require.
- Numbers: moto adds with Python's default 28-digit decimal context (silently rounding sums that DynamoDB
  keeps exact up to 38 significant digits) and never refuses a number DynamoDB cannot store. Here
  arithmetic is exact and a result beyond 38 significant digits or outside 1E-130 .. 9.99E+125 is a
  ValidationException, as on AWS
  (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.NamingRulesDataTypes.html).

- Isolation: moto serves requests on concurrent threads and applies DynamoDB writes (and rolls back
  transactions) without any locking, so a write can be lost to another thread's read-modify-write or
  rollback. AWS applies each request atomically and transactions serializably; here DynamoDB requests are
  served one at a time.
- Streams: UpdateItem creating an item emits two INSERT records in moto (one for the bare key, one for
  the item); AWS emits one record per write. Here only the second is kept.
- TagResource: moto appends a second tag when the key exists; AWS overwrites its value.
- ExportTableToPointInTime: moto reads the table in a thread while writes go on (not a snapshot) and
  reports no ExportTime. Here the items are copied when the export is requested, and ExportTime is that
  moment, as AWS's point-in-time export guarantees. And moto reports the export COMPLETED before its files
  are in AWS's layout (the export shim writes them afterwards), while AWS writes the manifests before it
  reports COMPLETED: here DescribeExport reports IN_PROGRESS until the export's manifest-summary.json is in
  S3 (for every caller but the shim itself, which signs with the access key `export-shim`); after that,
  COMPLETED for good (files deleted later do not change an export's status on AWS either).

- PutFunctionEventInvokeConfig: moto appends a configuration instead of replacing it (see
  patch_failure_handling).
- SNS message size: see the block "SNS message size" near the end (bytes of body and attributes, and a
  PublishBatch's total, refused as AWS does).

And two for speed, both found by profiling the emulator under `make test`: GetRecords answered as plain
JSON instead of through moto's generic serializer, and a stream record's SizeBytes from DynamoDB's
item-size rules instead of a JSON dump of the record (see the "speed:" blocks).

And Lambda: functions run as local processes behind a Lambda Runtime API, event source mappings and SNS
subscriptions deliver as AWS does, and the API Gateway Management API answers on the harness port: see
hack/local_lambda.py (imported and installed below, in this process, because it works on moto's state).

Takes moto_server's arguments (`-H 127.0.0.1 -p PORT`). Run by `hack/stack.sh up` with the stack's venv
python; not part of the product.
"""

import copy
import decimal
import json
import threading
from datetime import datetime
from urllib.parse import unquote

from moto.apigatewayv2.responses import ApiGatewayV2Response
from moto.dynamodb.exceptions import MockValidationException
import moto.dynamodb.models as moto_dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.dynamodb.models.table_export import TableExport
from moto.dynamodb.responses import DynamoHandler
from moto.server import main


def get_route_responses(self):
    parts = self.path.split("/")
    api_id, route_id = parts[-4], parts[-2]
    route = self.apigatewayv2_backend.get_route(api_id=api_id, route_id=route_id)
    items = [r.to_json() for r in route.route_responses.values()]
    return 200, {}, json.dumps({"items": items})


# UpdateStage's body fields and the moto Stage attributes they set.
STAGE_FIELDS = {
    "accessLogSettings": "access_log_settings",
    "autoDeploy": "auto_deploy",
    "clientCertificateId": "client_certificate_id",
    "defaultRouteSettings": "default_route_settings",
    "description": "description",
    "routeSettings": "route_settings",
    "stageVariables": "stage_variables",
}


def update_stage(self):
    parts = self.path.split("/")
    api_id, stage_name = parts[-3], unquote(parts[-1])
    stage = self.apigatewayv2_backend.get_stage(api_id, stage_name)
    params = json.loads(self.body or "{}")
    for field, attribute in STAGE_FIELDS.items():
        if field in params:
            setattr(stage, attribute, params[field])
    stage.updated = datetime.now()
    return 200, {}, json.dumps(stage.to_json())


for name, handler in [("get_route_responses", get_route_responses), ("update_stage", update_stage)]:
    if not hasattr(ApiGatewayV2Response, name):
        setattr(ApiGatewayV2Response, name, handler)

# ---------------------------------------------------------------- DynamoDB numbers, exact and bounded
for context in (decimal.DefaultContext, decimal.getcontext()):
    context.prec, context.Emax, context.Emin = 400, 999999, -999999


def checked_number(value):
    """`value` (a Decimal) as DynamoDB stores it, or DynamoDB's ValidationException."""
    if value == 0:
        return "0"
    n = value.normalize()
    if len(n.as_tuple().digits) > 38:
        raise MockValidationException("Attempting to store more than 38 significant digits in a Number")
    if n.adjusted() > 125:
        raise MockValidationException(
            "Number overflow. Attempting to store a number with magnitude larger than supported range"
        )
    if n.adjusted() < -130:
        raise MockValidationException(
            "Number underflow. Attempting to store a number with magnitude smaller than supported range"
        )
    return format(n, "f")


original_add, original_sub = DynamoType.__add__, DynamoType.__sub__


def number_add(self, other):
    if self.type == other.type and self.is_number():
        return DynamoType({"N": checked_number(decimal.Decimal(self.value) + decimal.Decimal(other.value))})
    return original_add(self, other)


def number_sub(self, other):
    if self.type == other.type and self.is_number():
        return DynamoType({"N": checked_number(decimal.Decimal(self.value) - decimal.Decimal(other.value))})
    return original_sub(self, other)


DynamoType.__add__, DynamoType.__sub__ = number_add, number_sub


# ---------------------------------------------------------------- TransactWriteItems, item-level rollback
original_transact = DynamoDBBackend.transact_write_items


def transact_write_items(self, transact_items):
    """moto's own implementation, with the deep copy of whole tables replaced by one of the named items."""
    saved, streams = [], {}
    for action in transact_items[:100]:
        _, op = next(iter(action.items()))
        name = op.get("TableName")
        if not name or name not in self.tables:
            continue
        table = self.tables[name]
        attrs = op.get("Item") or op.get("Key") or {}
        if table.hash_key_attr not in attrs:
            continue
        hash_value = DynamoType(attrs[table.hash_key_attr])
        range_value = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr in attrs else None
        current = table.get_item(hash_value, range_value)
        saved.append((table, hash_value, range_value, copy.deepcopy(current)))
        if table.stream_shard is not None and name not in streams:
            streams[name] = (table.stream_shard, len(table.stream_shard.items))
    try:
        return original_transact(self, transact_items)
    except Exception:
        for table, hash_value, range_value, item in reversed(saved):
            if table.range_key_attr:
                bucket = table.items[hash_value]
                if item is None:
                    bucket.pop(range_value, None)
                else:
                    bucket[range_value] = item
            elif item is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = item
        for shard, length in streams.values():
            del shard.items[length:]
        raise


class TablesKept:
    """The `copy` module as moto's DynamoDB backend sees it: deep copies of whole tables (its transaction
    backup) are skipped, since `transact_write_items` above restores the named items instead; every other
    deep copy (an item's old image, for instance) is made as before."""

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(obj, memo=None):
        if isinstance(obj, Table):
            return obj
        return copy.deepcopy(obj, memo)


moto_dynamodb_models.copy = TablesKept()
DynamoDBBackend.transact_write_items = transact_write_items

# ---------------------------------------------------------------- isolation: one DynamoDB request at a time
dynamodb_lock = threading.RLock()
original_call_action = DynamoHandler.call_action


def serialized_call_action(self):
    with dynamodb_lock:
        return original_call_action(self)


DynamoHandler.call_action = serialized_call_action


# ---------------------------------------------------------------- exports, a snapshot at ExportTime
original_export_init, original_export_response = TableExport.__init__, TableExport.response


def export_init(self, *args, **kwargs):
    original_export_init(self, *args, **kwargs)
    with dynamodb_lock:
        self.export_time = datetime.now().timestamp()
        self.snapshot = [copy.deepcopy(item.to_json(root_attr_name="Item")) for item in self.table.all_items()]


class SnapshotTable:
    """The table as the export thread reads it: the items copied at ExportTime."""

    def __init__(self, items, table_arn):
        self.items = items
        self.table_arn = table_arn

    def all_items(self):
        return [SnapshotItem(i) for i in self.items]


class SnapshotItem:
    def __init__(self, json_item):
        self.json_item = json_item

    def to_json(self, root_attr_name=None):
        return self.json_item


def export_backup(self, s3_backend):
    table, self.table = self.table, SnapshotTable(self.snapshot, self.table.table_arn)
    try:
        original_backup(self, s3_backend)
    finally:
        self.table = table


def export_response(self):
    out = original_export_response(self)
    out["ExportTime"] = self.export_time
    return out


original_backup = TableExport._backup_to_s3_file
TableExport.__init__ = export_init
TableExport._backup_to_s3_file = export_backup
TableExport.response = export_response



def laid_out(export):
    """Whether the export's AWS-layout manifest-summary.json is in the emulator's S3."""
    from moto.s3.models import s3_backends

    export_id = export.arn.rsplit("/", 1)[-1]
    prefix = (export.s3_prefix or "").strip("/")
    key = f"{prefix}/AWSDynamoDB/{export_id}/manifest-summary.json".lstrip("/")
    try:
        backend = s3_backends[export.account_id][export.partition]
        return backend.get_bucket(export.s3_bucket).keys.get(key) is not None
    except Exception:  # the bucket is gone: the export can never be laid out
        return False


def describe_export(self):
    out = original_describe_export(self)
    if "Credential=export-shim/" in self.headers.get("Authorization", ""):
        return out
    export = self.dynamodb_backend.describe_export(self.body["ExportArn"])
    # Once laid out, the export is as AWS reports it, even if its files are deleted later.
    if export.status == "COMPLETED" and not getattr(export, "kappa_laid_out", False):
        export.kappa_laid_out = laid_out(export)
    if export.status == "COMPLETED" and not export.kappa_laid_out:
        description = export.response()
        description["ExportStatus"] = "IN_PROGRESS"
        description.pop("EndTime", None)
        from moto.core.responses import ActionResult

        return ActionResult({"ExportDescription": description})
    return out


original_describe_export = DynamoHandler.describe_export
DynamoHandler.describe_export = describe_export


def tag_resource(self, arn, tags):
    """AWS overwrites the value of a key the table already has ("Each DynamoDB table can only have up to
    one tag with the same key. If you try to add an existing tag (same key), the existing tag value will
    be updated to the new value": API_Tag); moto appends a second tag of the same key."""
    for table in self.tables.values():
        if table.table_arn == arn:
            kept = [t for t in table.tags if t["Key"] not in tags]
            table.tags = kept + [{"Key": k, "Value": v} for k, v in tags.items()]


DynamoDBBackend.tag_resource = tag_resource

original_update_item = DynamoDBBackend.update_item


def update_item(self, table_name, key, *args, **kwargs):
    """moto's UpdateItem, without the extra INSERT record it emits for the bare key of a new item."""
    table = self.get_table(table_name)
    shard = table.stream_shard
    before = len(shard.items) if shard is not None else 0
    out = original_update_item(self, table_name, key, *args, **kwargs)
    if shard is not None and table.stream_shard is shard:
        added = shard.items[before:]
        if len(added) == 2 and all(r.record["eventName"] == "INSERT" for r in added):
            del shard.items[before]
    return out


DynamoDBBackend.update_item = update_item

# ---------------------------------------------------------------- failure handling (#16 item 2)
# Kept in one block, apart from the local-execution patches, to ease merging.


def patch_failure_handling():
    """PutFunctionEventInvokeConfig: AWS replaces the function's asynchronous-invocation configuration
    ("If a configuration already exists for a function, version, or alias, this operation overwrites it",
    https://docs.aws.amazon.com/lambda/latest/api/API_PutFunctionEventInvokeConfig.html); moto appends a
    second one and keeps answering GetFunctionEventInvokeConfig with the first, so a changed configuration
    never shows."""
    from moto.awslambda.models import EventInvokeConfig, LambdaBackend

    def put_function_event_invoke_config(self, function_name, config):
        fn = self.get_function(function_name)
        event_config = EventInvokeConfig(fn.function_arn, fn.last_modified, config)
        fn.event_invoke_config = [event_config]
        return event_config.response()

    LambdaBackend.put_function_event_invoke_config = put_function_event_invoke_config


patch_failure_handling()
# ---------------------------------------------------------------- SNS message size, counted as AWS counts it
# (the router's large-record routing; kept apart from the blocks above)
#
# moto refuses a message only when len(Message) > 262,144 *characters*, ignores message attributes, and in
# PublishBatch fails the entry alone while never checking the batch's total. AWS counts UTF-8 bytes of the
# body plus every attribute's name, data type and value ("All parts of the message attribute, including
# name, type, and value, are included in the message size restriction", API_MessageAttributeValue), refuses
# an oversize Publish with InvalidParameter "Invalid parameter: Message too long", and refuses a PublishBatch
# whose entries together exceed the limit with BatchRequestTooLong ("The combined size of all messages in
# the batch, including each message's body and attributes, must not exceed the topic's MaximumMessageSize",
# API_PublishBatch). The limit is the default 256 KiB (262,144 bytes).

import base64 as sns_base64

from moto.sns.exceptions import InvalidParameterValue as SnsInvalidParameterValue
from moto.sns.exceptions import SNSException
from moto.sns.models import SNSBackend

SNS_MAXIMUM_MESSAGE_SIZE = 262144


class SnsBatchRequestTooLong(SNSException):
    code = "BatchRequestTooLong"

    def __init__(self):
        super().__init__("The length of all the batch messages put together is more than the limit.")


def sns_message_size(message, message_attributes):
    """Bytes SNS counts for a message: the body, and each attribute's name, type and value (moto has
    already turned attributes into {"Type", "Value"}; a Binary value is counted decoded)."""
    size = len((message or "").encode("utf-8"))
    for name, attribute in (message_attributes or {}).items():
        data_type = attribute.get("Type", "")
        value = attribute.get("Value", "")
        if isinstance(value, bytes):
            value_bytes = len(value)
        elif data_type.startswith("Binary"):
            value_bytes = len(sns_base64.b64decode(value))
        elif isinstance(value, str):
            value_bytes = len(value.encode("utf-8"))
        else:
            value_bytes = len(json.dumps(value).encode("utf-8"))
        size += len(name.encode("utf-8")) + len(data_type.encode("utf-8")) + value_bytes
    return size


original_sns_publish = SNSBackend.publish


def sns_publish(self, message, arn=None, phone_number=None, subject=None, message_attributes=None, **kwargs):
    if phone_number is None and sns_message_size(message, message_attributes) > SNS_MAXIMUM_MESSAGE_SIZE:
        raise SnsInvalidParameterValue("Invalid parameter: Message too long")
    return original_sns_publish(
        self,
        message,
        arn=arn,
        phone_number=phone_number,
        subject=subject,
        message_attributes=message_attributes,
        **kwargs,
    )


SNSBackend.publish = sns_publish

original_sns_publish_batch = SNSBackend.publish_batch


def sns_publish_batch(self, topic_arn, publish_batch_request_entries):
    total = sum(
        sns_message_size(entry.get("Message"), entry.get("MessageAttributes"))
        for entry in publish_batch_request_entries
    )
    if total > SNS_MAXIMUM_MESSAGE_SIZE:
        raise SnsBatchRequestTooLong()
    return original_sns_publish_batch(self, topic_arn, publish_batch_request_entries)


SNSBackend.publish_batch = sns_publish_batch


# ---------------------------------------------------------------- speed: GetRecords as plain JSON
# moto answers GetRecords through its generic, shape-driven response serializer, which visits every
# attribute value of every record: under `make test` that took most of the emulator's one core (profiled
# with py-spy: 57% of its samples in ResponseSerializer under GetRecords), the bottleneck of every test
# that reads a stream. The records are already in the wire shape (DynamoDB JSON, from Item.to_json);
# only ApproximateCreationDateTime, a datetime, becomes epoch seconds as the JSON protocol sends
# timestamps (milliseconds kept, as moto's serializer keeps them). Anything unusual (an unknown or expired
# iterator) goes to moto's own handler, so errors are moto's.
from datetime import timezone

from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

original_get_records = DynamoDBStreamsHandler.get_records


def wire_time(value):
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return round(value.timestamp(), 3)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def get_records(self):
    try:
        limit = self._get_param("Limit") or 1000
        result = self.backend.get_records(self._get_param("ShardIterator"), limit)
        body = json.dumps(result, default=wire_time)
    except Exception:
        return original_get_records(self)
    return 200, {"Content-Type": "application/x-amz-json-1.0"}, body


DynamoDBStreamsHandler.get_records = get_records


# ---------------------------------------------------------------- speed: a stream record's SizeBytes
# moto sets each stream record's SizeBytes to the length of the record's JSON, dumping every item written
# to a table with a stream once more: profiled under `make test`, 65% of the emulator's samples were in
# that dump while a test wrote items near 400 KB. Here SizeBytes is the record's keys and images sized by
# DynamoDB's item-size rules (attribute names and values in UTF-8 bytes, numbers about one byte per two
# digits, binaries decoded; https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html),
# nearer what AWS reports, at the cost of walking the attributes, not serializing them.
import moto.dynamodb.models.table as moto_dynamodb_table


def value_bytes(value):
    (kind, v), = value.items()
    if kind == "S":
        return len(v.encode("utf-8"))
    if kind == "N":
        return len(v.lstrip("-").replace(".", "")) // 2 + 1
    if kind == "B":
        return len(v) * 3 // 4
    if kind in ("SS", "NS", "BS"):
        return sum(value_bytes({kind[0]: e}) for e in v)
    if kind == "M":
        return 3 + sum(len(k.encode("utf-8")) + 1 + value_bytes(e) for k, e in v.items())
    if kind == "L":
        return 3 + sum(1 + value_bytes(e) for e in v)
    return 1  # BOOL, NULL


class RecordSize:
    """What moto's StreamRecord takes the len() of: the record's size, without the JSON."""

    def __init__(self, dynamodb):
        self.size = sum(
            len(name.encode("utf-8")) + value_bytes(value)
            for part in ("Keys", "NewImage", "OldImage")
            for name, value in dynamodb.get(part, {}).items()
        )

    def __len__(self):
        return self.size


moto_dynamodb_table.dynamo_json_dump = RecordSize


# ---------------------------------------------------------------- SQS dead-letter redrive (message move tasks)
# moto 5.2.5 has no StartMessageMoveTask / ListMessageMoveTasks / CancelMessageMoveTask, AWS's way to redrive
# a dead-letter queue (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_StartMessageMoveTask.html).
# Here a task moves every message visible in the source at once, inside the request, and is then COMPLETED;
# on AWS it runs in the background (RUNNING, then COMPLETED), so callers poll ListMessageMoveTasks either way.
# As on AWS: the source must be some queue's dead-letter queue (else InvalidParameterValue), and without a
# DestinationArn messages go back to the source queue. Departure: AWS returns each message to the queue it
# was dead-lettered from; here that is the DLQ's one source queue (a DLQ with several sources needs a
# DestinationArn).
import uuid as _uuid

from moto.core.responses import ActionResult as _ActionResult
from moto.sqs.exceptions import InvalidParameterValue as _SqsInvalidParameterValue
from moto.sqs.exceptions import QueueDoesNotExist as _SqsQueueDoesNotExist
from moto.sqs.responses import SQSResponse as _SQSResponse

_move_tasks = {}  # source ARN -> newest first list of task dicts


def _queue_by_arn(backend, arn):
    for queue in backend.queues.values():
        if queue.queue_arn == arn:
            return queue
    raise _SqsQueueDoesNotExist()


def start_message_move_task(self):
    backend = self.sqs_backend
    source_arn = self._get_param("SourceArn")
    source = _queue_by_arn(backend, source_arn)
    sources = [q for q in backend.queues.values() if q.dead_letter_queue is source]
    if not sources:
        raise _SqsInvalidParameterValue(f"Source queue must be configured as a Dead Letter Queue. {source_arn}")
    destination_arn = self._get_param("DestinationArn")
    if destination_arn:
        destination = _queue_by_arn(backend, destination_arn)
    elif len(sources) == 1:
        destination = sources[0]
    else:
        raise _SqsInvalidParameterValue("the local stack needs a DestinationArn for a DLQ with several sources")
    moved = 0
    while True:
        batch = backend.receive_message(source.name, 10, 0, visibility_timeout=30, message_attribute_names=["All"])
        if not batch:
            break
        for message in batch:
            backend.send_message(
                destination.name, message.body, message_attributes=message.message_attributes or None
            )
            backend.delete_message(source.name, message.receipt_handle)
            moved += 1
    handle = _uuid.uuid4().hex
    _move_tasks.setdefault(source_arn, []).insert(
        0,
        {
            "TaskHandle": handle,
            "Status": "COMPLETED",
            "SourceArn": source_arn,
            "DestinationArn": destination.queue_arn,
            "ApproximateNumberOfMessagesMoved": moved,
            "ApproximateNumberOfMessagesToMove": moved,
            "StartedTimestamp": int(datetime.now().timestamp() * 1000),
        },
    )
    return _ActionResult({"TaskHandle": handle})


def list_message_move_tasks(self):
    source_arn = self._get_param("SourceArn")
    _queue_by_arn(self.sqs_backend, source_arn)
    limit = int(self._get_param("MaxResults") or 1)
    return _ActionResult({"Results": _move_tasks.get(source_arn, [])[:limit]})


_SQSResponse.start_message_move_task = start_message_move_task
_SQSResponse.list_message_move_tasks = list_message_move_tasks


# A redrive policy names its dead-letter queue by ARN, and SQS resolves that ARN when it moves a message:
# a queue deleted and created again under the same name (same ARN) receives the dead letters; while no
# queue has the ARN, the message stays in its source queue. moto keeps the queue *object* it found when
# the policy was set, so a deleted queue went on receiving messages nobody could read. The property
# below resolves the ARN at each use instead.
from moto.sqs.models import Queue as _SqsQueue
from moto.sqs.models import sqs_backends as _sqs_backends


def _dead_letter_queue_get(self):
    policy = getattr(self, "redrive_policy", None)
    if not policy or not isinstance(policy, dict):
        return None
    arn = policy.get("deadLetterTargetArn")
    backend = _sqs_backends[self.account_id][self.region]
    for queue in backend.queues.values():
        if queue.queue_arn == arn:
            return queue
    return None


def _dead_letter_queue_set(self, queue):
    # Resolved by ARN on each read; setting it (moto does, when the policy is set) stores nothing.
    pass


_SqsQueue.dead_letter_queue = property(_dead_letter_queue_get, _dead_letter_queue_set)


# moto's SQS is quadratic when a queue fills: every SendMessage reads `queue.attributes`, which computes all
# of them, the approximate message counts too (a pass over every message, two clock reads per message),
# to look at ContentBasedDeduplication alone; and each pass reads the clock per message. A producer's
# burst of 5,000 messages took most of the server's time (py-spy: 63% in send_message_batch). Below: a
# SendMessage sees the one attribute it reads, and the counts read the clock once per pass. What SQS
# answers is unchanged (ContentBasedDeduplication is a FIFO queue's attribute, as in moto's full dict).
import threading as _threading

from moto.core.utils import unix_time_millis as _unix_time_millis
from moto.sqs.models import SQSBackend as _SQSBackend

_sending = _threading.local()
_queue_attributes = _SqsQueue.attributes.fget


def _attributes(self):
    if getattr(_sending, "on", False):
        return {"ContentBasedDeduplication": self.content_based_deduplication} if self.fifo_queue else {}
    return _queue_attributes(self)


_send_message = _SQSBackend.send_message


def _send_message_cheaply(self, *args, **kwargs):
    _sending.on = True
    try:
        return _send_message(self, *args, **kwargs)
    finally:
        _sending.on = False


def _messages(self):
    now = _unix_time_millis()
    return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]


def _not_visible(self):
    now = _unix_time_millis()
    return sum(1 for m in self._messages if not now > m.visible_at)


def _delayed(self):
    now = _unix_time_millis()
    return sum(1 for m in self._messages if now < m.delayed_until)


_SqsQueue.attributes = property(_attributes)
_SQSBackend.send_message = _send_message_cheaply
_SqsQueue.messages = property(_messages)
_SqsQueue.approximate_number_of_messages_not_visible = property(_not_visible)
_SqsQueue.approximate_number_of_messages_delayed = property(_delayed)


if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import local_lambda

    local_lambda.install(dynamodb_lock)
    main()
