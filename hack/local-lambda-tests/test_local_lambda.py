"""Tests of the local stack's Lambda harness (hack/local_lambda.py) against AWS's documented behaviour and
event shapes, never against what the emulator happens to do. Run by hack/test.sh (`make test`) with the
stack's venv python after `source .stack/env`:

    source .stack/env && ~/.cache/kappa-operator/venv-moto-5.2.5/bin/python -m unittest discover \
        -s hack/local-lambda-tests -v

Functions run hack/local-lambda-tests/bootstrap.py (a tiny custom runtime that records each event to a
file); the smoke test runs the operator binary as the writer (`KAPPA_TEST_OPERATOR_BINARY`, default
$CARGO_TARGET_DIR/debug/kappa-operator; it is written to .stack/lambda-binary for the harness).

Delivery is asynchronous as on AWS: tests poll with deadlines and assert outcomes, never timings (the
latency test only prints its measurements).
"""

import base64
import hashlib
import io
import json
import os
import sys
import time
import unittest
import urllib.request
import uuid
import zipfile

import boto3
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
STACK = os.environ.get("KAPPA_STACK_DIR", os.path.join(REPO, ".stack"))
if "AWS_ENDPOINT_URL" not in os.environ or "KAPPA_LOCAL_EXECUTE_API" not in os.environ:
    sys.exit("the local stack is not up: run `hack/stack.sh up` then `source .stack/env`")

REGION = os.environ.get("AWS_REGION", "us-east-1")
lam = boto3.client("lambda", region_name=REGION)
sqs = boto3.client("sqs", region_name=REGION)
ddb = boto3.client("dynamodb", region_name=REGION)
streams = boto3.client("dynamodbstreams", region_name=REGION)
sns = boto3.client("sns", region_name=REGION)
iam = boto3.client("iam", region_name=REGION)
RUN = uuid.uuid4().hex[:6]


def unique(name):
    return f"ll-{RUN}-{name}"


def eventually(probe, what, seconds=30):
    """probe() until it returns a truthy value; fail naming `what` after `seconds`."""
    end = time.time() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.time() > end:
            raise AssertionError(f"not within {seconds}s: {what}")
        time.sleep(0.2)


def zip_of(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, (data, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, data)
    return buf.getvalue()


_role = None


def role():
    global _role
    if _role is None:
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
        _role = iam.create_role(RoleName=unique("role"), AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        # On-failure destinations need sqs:SendMessage on the queue (checked at mapping time).
        send = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": f"arn:aws:sqs:*:*:{unique('*')}"}]}
        iam.put_role_policy(RoleName=unique("role"), PolicyName="failures", PolicyDocument=json.dumps(send))
    return _role


def test_function(name, handler, timeout=10, **extra):
    """A function running bootstrap.py with `handler`; returns (name, arn, record file)."""
    record = os.path.join(STACK, f"{unique(name)}.events")
    with open(os.path.join(HERE, "bootstrap.py"), "rb") as f:
        code = zip_of({"bootstrap": (f.read(), 0o755)})
    fn = lam.create_function(
        FunctionName=unique(name), Runtime="provided.al2023", Role=role(), Handler=handler,
        Code={"ZipFile": code}, Timeout=timeout, MemorySize=128,
        Environment={"Variables": {"RECORD_FILE": record}}, **extra,
    )
    return fn["FunctionName"], fn["FunctionArn"], record


def events(record):
    if not os.path.exists(record):
        return []
    with open(record) as f:
        return [json.loads(line) for line in f if line.strip()]


def queue(name, **attributes):
    url = sqs.create_queue(QueueName=unique(name), Attributes={k: str(v) for k, v in attributes.items()})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def drain(url, seconds=20, want=1):
    got = []

    def probe():
        out = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"])
        got.extend(out.get("Messages", []))
        return len(got) >= want

    eventually(probe, f"{want} message(s) in {url}", seconds)
    return got


def stream_table(name, view="NEW_AND_OLD_IMAGES"):
    t = ddb.create_table(
        TableName=unique(name), BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
    )["TableDescription"]
    return t["TableName"], t["LatestStreamArn"]


def put(table, sk, kind="keep", note=""):
    ddb.put_item(TableName=table, Item={"pk": {"S": "P"}, "sk": {"S": sk}, "type": {"S": kind}, "note": {"S": note}})


def get_records(stream_arn):
    """Every record of the stream, read as an in-cluster reader does (GetShardIterator TRIM_HORIZON)."""
    out = []
    for shard in streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]:
        it = streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            page = streams.get_records(ShardIterator=it, Limit=1000)
            out += page["Records"]
            if not page["Records"]:
                break
            it = page.get("NextShardIterator")
    return out


class Invoke(unittest.TestCase):
    def test_request_response_returns_the_function_result_with_the_runtime_headers_and_environment(self):
        name, arn, record = test_function("echo", "echo")
        before = time.time()
        out = lam.invoke(FunctionName=name, Payload=json.dumps({"a": 1}))
        self.assertEqual(out["StatusCode"], 200)
        self.assertNotIn("FunctionError", out)
        self.assertEqual(json.loads(out["Payload"].read()), {"echo": {"a": 1}})
        (seen,) = events(record)
        self.assertEqual(seen["arn"], arn)
        self.assertGreater(int(seen["deadline"]), before * 1000)
        self.assertLessEqual(int(seen["deadline"]), (time.time() + 11) * 1000)
        self.assertEqual(seen["env"]["AWS_LAMBDA_FUNCTION_NAME"], name)
        self.assertEqual(seen["env"]["AWS_REGION"], REGION)
        self.assertEqual(seen["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "128")
        self.assertEqual(seen["env"]["AWS_ENDPOINT_URL"], os.environ["AWS_ENDPOINT_URL"])
        # Warm: the same process answers the next invocation.
        out = lam.invoke(FunctionName=name, Payload=json.dumps({"a": 2}))
        self.assertEqual(json.loads(out["Payload"].read()), {"echo": {"a": 2}})

    def test_function_errors_timeouts_and_exits_are_errors(self):
        name, _, _ = test_function("error", "error")
        out = lam.invoke(FunctionName=name, Payload=b"{}")
        self.assertEqual(out["StatusCode"], 200)
        self.assertEqual(out["FunctionError"], "Unhandled")
        self.assertEqual(json.loads(out["Payload"].read())["errorType"], "TestError")

        name, _, _ = test_function("sleep", "sleep", timeout=1)
        out = lam.invoke(FunctionName=name, Payload=b"{}")
        self.assertEqual(out["FunctionError"], "Unhandled")
        self.assertEqual(json.loads(out["Payload"].read())["errorType"], "Sandbox.Timedout")

        name, _, record = test_function("exit", "exit")
        out = lam.invoke(FunctionName=name, Payload=b"{}")
        self.assertEqual(out["FunctionError"], "Unhandled")
        self.assertEqual(json.loads(out["Payload"].read())["errorType"], "Runtime.ExitError")
        # A new environment serves the next invocation.
        lam.invoke(FunctionName=name, Payload=b"{}")
        self.assertEqual(len(events(record)), 2)

    def test_event_invocations_are_accepted_then_run(self):
        name, _, record = test_function("event", "echo")
        out = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"x": "y"}))
        self.assertEqual(out["StatusCode"], 202)
        eventually(lambda: events(record), "the Event invocation ran")
        self.assertEqual(events(record)[0]["event"], {"x": "y"})


class SqsMappings(unittest.TestCase):
    def test_partial_batch_failure_redelivers_then_the_queue_moves_it_to_its_dlq(self):
        dlq_url, dlq_arn = queue("dlq")
        # AWS requires the queue's visibility timeout to be at least the function's timeout.
        url, arn = queue("src", VisibilityTimeout=2, RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}))
        name, _, record = test_function("partial", "partial", timeout=2)
        lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, BatchSize=10,
                                        FunctionResponseTypes=["ReportBatchItemFailures"])
        sent = {}
        for body in ("ok-1", "ok-2", "fail-3"):
            sent[body] = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes={
                "origin": {"DataType": "String", "StringValue": "test"}})["MessageId"]
        (dead,) = drain(dlq_url)
        self.assertEqual(dead["Body"], "fail-3")
        delivered = [r for e in events(record) for r in e["event"]["Records"]]
        bodies = [r["body"] for r in delivered]
        self.assertEqual(bodies.count("ok-1"), 1)
        self.assertEqual(bodies.count("ok-2"), 1)
        self.assertEqual(bodies.count("fail-3"), 2)
        counts = [r["attributes"]["ApproximateReceiveCount"] for r in delivered if r["body"] == "fail-3"]
        self.assertEqual(counts, ["1", "2"])
        for r in delivered:
            self.assertEqual(r["messageId"], sent[r["body"]])
            self.assertEqual(r["md5OfBody"], hashlib.md5(r["body"].encode()).hexdigest())
            self.assertEqual(r["eventSource"], "aws:sqs")
            self.assertEqual(r["eventSourceARN"], arn)
            self.assertEqual(r["awsRegion"], REGION)
            self.assertTrue(r["receiptHandle"])
            self.assertEqual(r["messageAttributes"]["origin"]["stringValue"], "test")
            self.assertEqual(r["messageAttributes"]["origin"]["dataType"], "String")
            self.assertTrue(r["attributes"]["SentTimestamp"].isdigit())
        self.assertEqual(sqs.receive_message(QueueUrl=url).get("Messages", []), [])

    def test_filter_criteria_and_disabled_mappings(self):
        url, arn = queue("filtered")
        name, _, record = test_function("filtered", "echo")
        uuid_ = lam.create_event_source_mapping(
            EventSourceArn=arn, FunctionName=name, BatchSize=10,
            FilterCriteria={"Filters": [{"Pattern": json.dumps({"body": {"kind": ["wanted"]}})}]})["UUID"]
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"kind": "other"}))
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"kind": "wanted"}))
        eventually(lambda: events(record), "the wanted message delivered")
        time.sleep(1)
        bodies = [json.loads(r["body"]) for e in events(record) for r in e["event"]["Records"]]
        self.assertEqual(bodies, [{"kind": "wanted"}])
        lam.update_event_source_mapping(UUID=uuid_, Enabled=False)
        time.sleep(0.5)
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"kind": "wanted", "n": 2}))
        time.sleep(1.5)
        self.assertEqual(len(events(record)), 1)
        lam.update_event_source_mapping(UUID=uuid_, Enabled=True)
        eventually(lambda: len(events(record)) == 2, "delivery after re-enabling")


class StreamMappings(unittest.TestCase):
    def test_filtered_records_in_shard_order_and_get_records_readers_see_everything(self):
        table, stream = stream_table("ordered")
        name, _, record = test_function("ordered", "echo")
        lam.create_event_source_mapping(
            EventSourceArn=stream, FunctionName=name, StartingPosition="TRIM_HORIZON", BatchSize=3,
            FilterCriteria={"Filters": [{"Pattern": json.dumps({"dynamodb": {"NewImage": {"type": {"S": ["keep"]}}}})}]})
        for i in range(10):
            put(table, f"{i:02d}", "keep" if i % 3 else "drop")
        kept = [f"{i:02d}" for i in range(10) if i % 3]
        delivered = eventually(lambda: (lambda rs: rs if len(rs) >= len(kept) else None)(
            [r for e in events(record) for r in e["event"]["Records"]]), "every kept record delivered")
        self.assertEqual([r["dynamodb"]["Keys"]["sk"]["S"] for r in delivered], kept)
        seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in delivered]
        self.assertEqual(seqs, sorted(set(seqs)))
        for e in events(record):
            self.assertLessEqual(len(e["event"]["Records"]), 3)
        for r in delivered:
            self.assertEqual(r["eventName"], "INSERT")
            self.assertEqual(r["eventSource"], "aws:dynamodb")
            self.assertIn(r["eventVersion"], ("1.0", "1.1"))
            self.assertEqual(r["eventSourceARN"], stream)
            self.assertEqual(r["awsRegion"], REGION)
            created = r["dynamodb"]["ApproximateCreationDateTime"]
            self.assertEqual(created, int(created))
            self.assertLess(abs(created - time.time()), 120)
            self.assertEqual(r["dynamodb"]["StreamViewType"], "NEW_AND_OLD_IMAGES")
            self.assertGreaterEqual(r["dynamodb"]["SizeBytes"], 1)
            self.assertIn("NewImage", r["dynamodb"])
            self.assertNotIn("OldImage", r["dynamodb"])
        # Another reader of the same stream still sees all ten records.
        read = get_records(stream)
        self.assertEqual([r["dynamodb"]["Keys"]["sk"]["S"] for r in read], [f"{i:02d}" for i in range(10)])

    def test_update_item_creating_an_item_emits_one_insert(self):
        table, stream = stream_table("update")
        ddb.update_item(TableName=table, Key={"pk": {"S": "P"}, "sk": {"S": "1"}}, UpdateExpression="SET n = :n",
                        ExpressionAttributeValues={":n": {"N": "1"}})
        ddb.update_item(TableName=table, Key={"pk": {"S": "P"}, "sk": {"S": "1"}}, UpdateExpression="SET n = :n",
                        ExpressionAttributeValues={":n": {"N": "2"}})
        self.assertEqual([r["eventName"] for r in get_records(stream)], ["INSERT", "MODIFY"])

    def test_bisect_and_bounded_retries_send_only_the_poison_record_to_the_on_failure_destination(self):
        table, stream = stream_table("bisect")
        dest_url, dest_arn = queue("onfailure")
        name, fn_arn, record = test_function("bisect", "poison")
        lam.create_event_source_mapping(
            EventSourceArn=stream, FunctionName=name, StartingPosition="TRIM_HORIZON", BatchSize=10,
            MaximumBatchingWindowInSeconds=2, BisectBatchOnFunctionError=True, MaximumRetryAttempts=1,
            DestinationConfig={"OnFailure": {"Destination": dest_arn}})
        for i in range(6):
            put(table, f"{i:02d}", note="poison" if i == 4 else "")
        (message,) = drain(dest_url, seconds=40)
        info = json.loads(message["Body"])
        poison_seq = next(r["dynamodb"]["SequenceNumber"] for r in get_records(stream) if r["dynamodb"]["Keys"]["sk"]["S"] == "04")
        batch = info["DDBStreamBatchInfo"]
        self.assertEqual(batch["batchSize"], 1)
        self.assertEqual(batch["startSequenceNumber"], poison_seq)
        self.assertEqual(batch["endSequenceNumber"], poison_seq)
        self.assertEqual(batch["streamArn"], stream)
        self.assertTrue(batch["shardId"])
        self.assertRegex(batch["approximateArrivalOfFirstRecord"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(info["requestContext"]["condition"], "RetryAttemptsExhausted")
        self.assertEqual(info["requestContext"]["functionArn"], fn_arn)
        self.assertEqual(info["version"], "1.0")
        # Every other record was delivered in a batch that succeeded, after the poison one was split off.
        ok = set()
        for e in events(record):
            rs = e["event"]["Records"]
            if "poison" not in json.dumps(rs):
                ok |= {r["dynamodb"]["Keys"]["sk"]["S"] for r in rs}
        self.assertEqual(ok, {"00", "01", "02", "03", "05"})

    def test_checkpoint_at_the_lowest_reported_failure(self):
        table, stream = stream_table("checkpoint")
        dest_url, dest_arn = queue("cp-onfailure")
        name, _, record = test_function("checkpoint", "partial")
        lam.create_event_source_mapping(
            EventSourceArn=stream, FunctionName=name, StartingPosition="TRIM_HORIZON", BatchSize=10,
            MaximumBatchingWindowInSeconds=2, FunctionResponseTypes=["ReportBatchItemFailures"],
            MaximumRetryAttempts=1, DestinationConfig={"OnFailure": {"Destination": dest_arn}})
        for i in range(5):
            put(table, f"{i:02d}", note="fail" if i == 2 else "")
        (message,) = drain(dest_url, seconds=40)
        batch = json.loads(message["Body"])["DDBStreamBatchInfo"]
        # Retried from the failed record on: records 02..04.
        self.assertEqual(batch["batchSize"], 3)
        sks = [[r["dynamodb"]["Keys"]["sk"]["S"] for r in e["event"]["Records"]] for e in events(record)]
        self.assertEqual(sks[0], ["00", "01", "02", "03", "04"])
        self.assertEqual(sks[1], ["02", "03", "04"])


class DestinationPermission(unittest.TestCase):
    def test_a_destination_the_role_may_not_send_to_is_refused_until_granted(self):
        """CreateEventSourceMapping/UpdateEventSourceMapping refuse an SQS on-failure destination the
        function's role may not send to, with AWS's message; granting sqs:SendMessage lets it through."""
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
        name = unique("mute-role")
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        with open(os.path.join(HERE, "bootstrap.py"), "rb") as f:
            code = zip_of({"bootstrap": (f.read(), 0o755)})
        fn = lam.create_function(FunctionName=unique("mute"), Runtime="provided.al2023", Role=arn, Handler="ok",
                                 Code={"ZipFile": code}, Timeout=10, MemorySize=128)["FunctionName"]
        _, dest_arn = queue("mute-failures")
        table, stream_arn = stream_table("mute-table")
        with self.assertRaises(ClientError) as refused:
            lam.create_event_source_mapping(
                FunctionName=fn, EventSourceArn=stream_arn, StartingPosition="TRIM_HORIZON",
                DestinationConfig={"OnFailure": {"Destination": dest_arn}})
        self.assertEqual(refused.exception.response["Error"]["Code"], "InvalidParameterValueException")
        self.assertIn("permissions to call SendMessage on SQS", str(refused.exception))
        uuid = lam.create_event_source_mapping(
            FunctionName=fn, EventSourceArn=stream_arn, StartingPosition="TRIM_HORIZON")["UUID"]
        with self.assertRaises(ClientError):
            lam.update_event_source_mapping(UUID=uuid, DestinationConfig={"OnFailure": {"Destination": dest_arn}})
        send = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": dest_arn}]}
        iam.put_role_policy(RoleName=name, PolicyName="failures", PolicyDocument=json.dumps(send))
        lam.update_event_source_mapping(UUID=uuid, DestinationConfig={"OnFailure": {"Destination": dest_arn}})
        got = lam.get_event_source_mapping(UUID=uuid)
        self.assertEqual(got["DestinationConfig"]["OnFailure"]["Destination"], dest_arn)
        lam.delete_event_source_mapping(UUID=uuid)


class Sns(unittest.TestCase):
    def test_filter_policy_and_the_event_shape(self):
        topic = sns.create_topic(Name=unique("topic"))["TopicArn"]
        name, fn_arn, record = test_function("sns", "echo")
        sub = sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint=fn_arn,
                            Attributes={"FilterPolicy": json.dumps({"kind": ["a"]})})["SubscriptionArn"]
        sns.publish(TopicArn=topic, Message="not for us", MessageAttributes={"kind": {"DataType": "String", "StringValue": "b"}})
        mid = sns.publish(TopicArn=topic, Message="hello", Subject="greeting",
                          MessageAttributes={"kind": {"DataType": "String", "StringValue": "a"}})["MessageId"]
        (seen,) = eventually(lambda: events(record), "the matching message delivered")
        time.sleep(1)
        self.assertEqual(len(events(record)), 1)
        (rec,) = seen["event"]["Records"]
        self.assertEqual(rec["EventSource"], "aws:sns")
        self.assertEqual(rec["EventSubscriptionArn"], sub)
        s = rec["Sns"]
        self.assertEqual(s["Type"], "Notification")
        self.assertEqual(s["MessageId"], mid)
        self.assertEqual(s["TopicArn"], topic)
        self.assertEqual(s["Subject"], "greeting")
        self.assertEqual(s["Message"], "hello")
        self.assertEqual(s["MessageAttributes"], {"kind": {"Type": "String", "Value": "a"}})
        self.assertEqual(s["SignatureVersion"], "1")
        self.assertRegex(s["Timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_async_retries_then_the_functions_dead_letter_queue(self):
        topic = sns.create_topic(Name=unique("topic-dlq"))["TopicArn"]
        dlq_url, dlq_arn = queue("fn-dlq")
        name, fn_arn, record = test_function("sns-error", "error", DeadLetterConfig={"TargetArn": dlq_arn})
        sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint=fn_arn)
        mid = sns.publish(TopicArn=topic, Message="doomed")["MessageId"]
        (dead,) = drain(dlq_url, seconds=30)
        self.assertEqual(len(events(record)), 3)  # the first attempt and two retries
        self.assertEqual(json.loads(dead["Body"])["Records"][0]["Sns"]["MessageId"], mid)
        self.assertEqual(dead["MessageAttributes"]["ErrorMessage"]["StringValue"], "asked to fail")
        self.assertIn("RequestID", dead["MessageAttributes"])

    def test_undeliverable_messages_go_to_the_subscriptions_redrive_queue(self):
        topic = sns.create_topic(Name=unique("topic-gone"))["TopicArn"]
        dlq_url, dlq_arn = queue("sub-dlq")
        missing = f"arn:aws:lambda:{REGION}:123456789012:function:{unique('never-created')}"
        sub = sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint=missing)["SubscriptionArn"]
        sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="RedrivePolicy",
                                        AttributeValue=json.dumps({"deadLetterTargetArn": dlq_arn}))
        mid = sns.publish(TopicArn=topic, Message="nobody home")["MessageId"]
        (dead,) = drain(dlq_url)
        body = json.loads(dead["Body"])
        self.assertEqual((body["MessageId"], body["Message"], body["TopicArn"]), (mid, "nobody home", topic))


class DeadLetterRedrive(unittest.TestCase):
    """StartMessageMoveTask / ListMessageMoveTasks (hack/moto-server.py), on AWS's documented shapes
    (SQS API Reference: a source that is no queue's DLQ is refused; without DestinationArn the messages go
    back to the source queue; a task is listed with its handle, status and moved count)."""

    def test_a_dead_letter_queue_is_moved_back_to_its_source_and_listed(self):
        dlq, dlq_arn = queue("redrive-dlq")
        source, _ = queue("redrive-src", RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}))
        for i in range(13):
            sqs.send_message(QueueUrl=dlq, MessageBody=f"m{i}", MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})
        handle = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
        tasks = eventually(
            lambda: [t for t in sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=1)["Results"] if t["Status"] == "COMPLETED"],
            "the move task completed",
        )
        self.assertEqual(tasks[0]["TaskHandle"], handle)
        self.assertEqual(tasks[0]["ApproximateNumberOfMessagesMoved"], 13)
        bodies = set()
        while True:
            got = sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get("Messages", [])
            if not got:
                break
            for m in got:
                bodies.add(m["Body"])
                self.assertEqual(m["MessageAttributes"]["k"]["StringValue"], "v")
                sqs.delete_message(QueueUrl=source, ReceiptHandle=m["ReceiptHandle"])
        self.assertEqual(bodies, {f"m{i}" for i in range(13)})
        self.assertEqual(sqs.receive_message(QueueUrl=dlq).get("Messages", []), [])

    def test_the_redrive_policy_names_its_dead_letter_queue_by_arn(self):
        """A dead-letter queue deleted and created again under its name (same ARN) receives the dead letters;
        while none has the ARN, the message stays in its source queue (SQS resolves deadLetterTargetArn when
        it moves a message; moto kept the deleted queue's object)."""
        name = "arn-dlq"
        dlq, dlq_arn = queue(name)
        source, _ = queue("arn-src", VisibilityTimeout="0",
                          RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"}))
        sqs.delete_queue(QueueUrl=dlq)
        sqs.send_message(QueueUrl=source, MessageBody="poison")
        for _ in range(3):
            got = sqs.receive_message(QueueUrl=source).get("Messages", [])
            self.assertEqual([m["Body"] for m in got], ["poison"], "no queue has the ARN: the message stays")
        again, again_arn = queue(name)
        self.assertEqual(again_arn, dlq_arn)
        self.assertEqual(sqs.receive_message(QueueUrl=source).get("Messages", []), [], "moved on this receive")
        got = sqs.receive_message(QueueUrl=again).get("Messages", [])
        self.assertEqual([m["Body"] for m in got], ["poison"])

    def test_a_queue_that_is_no_dead_letter_queue_is_refused(self):
        _, arn = queue("redrive-plain")
        with self.assertRaises(sqs.exceptions.ClientError) as refused:
            sqs.start_message_move_task(SourceArn=arn)
        self.assertIn("InvalidParameterValue", str(refused.exception))


class Connections(unittest.TestCase):
    def test_posts_are_readable_and_unknown_or_deleted_connections_are_gone(self):
        base = os.environ["KAPPA_LOCAL_EXECUTE_API"]
        api = unique("api")
        urllib.request.urlopen(urllib.request.Request(f"{base}/_connections/{api}/c1", method="PUT")).read()
        client = boto3.client("apigatewaymanagementapi", region_name=REGION, endpoint_url=f"{base}/{api}/live")
        client.post_to_connection(ConnectionId="c1", Data=b'{"hello":1}')
        posts = json.loads(urllib.request.urlopen(f"{base}/_connections/{api}/c1/posts").read())["posts"]
        self.assertEqual([p["data"] for p in posts], ['{"hello":1}'])
        self.assertIn("ConnectedAt", client.get_connection(ConnectionId="c1"))
        with self.assertRaises(ClientError) as e:
            client.post_to_connection(ConnectionId="c2", Data=b"x")
        self.assertEqual(e.exception.response["Error"]["Code"], "GoneException")
        client.delete_connection(ConnectionId="c1")
        with self.assertRaises(ClientError) as e:
            client.post_to_connection(ConnectionId="c1", Data=b"x")
        self.assertEqual(e.exception.response["Error"]["Code"], "GoneException")


class OperatorWriter(unittest.TestCase):
    """The operator binary as the writer behind the stand-in bootstrap: SendMessage → a log item."""

    def test_send_message_reaches_the_log_table(self):
        binary = os.environ.get("KAPPA_TEST_OPERATOR_BINARY") or os.path.join(
            os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/kappa-operator/target")), "debug", "kappa-operator")
        self.assertTrue(os.access(binary, os.X_OK), f"no operator binary at {binary}: cargo build --bin kappa-operator")
        with open(os.path.join(STACK, "lambda-binary"), "w") as f:
            f.write(binary)
        table = unique("log")
        ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
        url, arn = queue("ingest", VisibilityTimeout=30)
        with open(os.path.join(REPO, "hack", "lambda-bootstrap-standin.sh"), "rb") as f:
            code = zip_of({"bootstrap": (f.read(), 0o755)})

        def writer(suffix):
            return lam.create_function(
                FunctionName=unique(f"writer{suffix}"), Runtime="provided.al2023", Role=role(), Handler="writer",
                Code={"ZipFile": code}, Timeout=30, MemorySize=256, Environment={"Variables": {
                    "LOG_TABLE": table, "PARTITION_KEY": "pk", "SORT_KEY": "sk", "RECORD_TYPE_ATTRIBUTE": "type",
                    "RECORD_TYPES": "player"}},
            )["FunctionName"]

        invoked = writer("-invoke")
        invokes = []
        for _ in range(3):
            started = time.time()
            out = lam.invoke(FunctionName=invoked, Payload=json.dumps({"Records": []}))
            invokes.append(time.time() - started)
            self.assertNotIn("FunctionError", out)
            self.assertEqual(json.loads(out["Payload"].read()), {"batchItemFailures": []})
        print(f"\n[measure] Invoke of the operator's writer: cold {invokes[0]*1000:.0f} ms, warm {invokes[1]*1000:.0f} / "
              f"{invokes[2]*1000:.0f} ms", file=sys.stderr)
        name = writer("")
        lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, BatchSize=10,
                                        FunctionResponseTypes=["ReportBatchItemFailures"])
        timings = []
        for i in range(3):
            started = time.time()
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"Item": {
                "pk": {"S": "PLAYER#ada"}, "sk": {"S": f"LOG#{i}"}, "type": {"S": "player"}, "level": {"N": str(i)}}}))
            eventually(lambda: ddb.get_item(TableName=table, Key={"pk": {"S": "PLAYER#ada"}, "sk": {"S": f"LOG#{i}"}}).get("Item"),
                       f"LOG#{i} written by the writer", 60)
            timings.append(time.time() - started)
        print(f"\n[measure] SendMessage → log item: cold {timings[0]*1000:.0f} ms, warm {timings[1]*1000:.0f} / {timings[2]*1000:.0f} ms",
              file=sys.stderr)
        self.assertEqual(sqs.receive_message(QueueUrl=url).get("Messages", []), [])

    def test_measure_invoke_latency(self):
        name, _, _ = test_function("latency", "echo")
        started = time.time()
        lam.invoke(FunctionName=name, Payload=b"{}")
        cold = time.time() - started
        warm = []
        for _ in range(5):
            started = time.time()
            lam.invoke(FunctionName=name, Payload=b"{}")
            warm.append(time.time() - started)
        print(f"\n[measure] Invoke (python bootstrap): cold {cold*1000:.0f} ms, warm median {sorted(warm)[2]*1000:.1f} ms",
              file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
