#!/usr/bin/env python3
"""A tiny custom runtime (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-custom.html) for the
harness's tests: it appends every event it receives to $RECORD_FILE (one JSON line: request id, deadline,
function ARN, event) and then behaves as $_HANDLER says:

- echo: returns {"echo": event}
- error: reports a function error (errorType "TestError")
- partial: returns batchItemFailures for every record whose text contains "fail" (SQS messageId, stream
  SequenceNumber)
- poison: a function error when any record contains "poison", else success
- sleep: sleeps past the function's timeout
- exit: exits with status 3 mid-invocation
"""
import json
import os
import sys
import time
import urllib.request

api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
handler = os.environ.get("_HANDLER", "echo")


def post(path, body, headers=None):
    req = urllib.request.Request(api + path, data=json.dumps(body).encode(), method="POST", headers=headers or {})
    urllib.request.urlopen(req).read()


while True:
    with urllib.request.urlopen(api + "/invocation/next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        deadline = r.headers["Lambda-Runtime-Deadline-Ms"]
        arn = r.headers["Lambda-Runtime-Invoked-Function-Arn"]
        event = json.loads(r.read())
    with open(os.environ["RECORD_FILE"], "a") as f:
        f.write(json.dumps({"requestId": request_id, "deadline": deadline, "arn": arn, "event": event,
                            "env": {k: os.environ.get(k) for k in ("AWS_LAMBDA_FUNCTION_NAME", "AWS_REGION",
                                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION", "AWS_ENDPOINT_URL")}}) + "\n")
    records = event.get("Records", []) if isinstance(event, dict) else []
    if handler == "echo":
        post(f"/invocation/{request_id}/response", {"echo": event})
    elif handler == "error":
        post(f"/invocation/{request_id}/error", {"errorMessage": "asked to fail", "errorType": "TestError"},
             {"Lambda-Runtime-Function-Error-Type": "TestError"})
    elif handler == "partial":
        failures = []
        for rec in records:
            if "fail" in json.dumps(rec.get("body", rec.get("dynamodb", {}).get("NewImage", ""))):
                ident = rec.get("messageId") or rec["dynamodb"]["SequenceNumber"]
                failures.append({"itemIdentifier": ident})
        post(f"/invocation/{request_id}/response", {"batchItemFailures": failures})
    elif handler == "poison":
        if "poison" in json.dumps(records):
            post(f"/invocation/{request_id}/error", {"errorMessage": "poison", "errorType": "TestError"})
        else:
            post(f"/invocation/{request_id}/response", {})
    elif handler == "sleep":
        time.sleep(60)
    elif handler == "exit":
        sys.exit(3)
