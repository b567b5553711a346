#!/usr/bin/env python3
"""A fault-injection proxy for the local stack's AWS API server (moto): it sits on loopback in front of it
and fails a configurable share of requests, per AWS service, with that service's real error responses (the
shapes AWS documents; each shape below names its source). Python 3 standard library only.

    hack/fault-proxy.py --upstream "$AWS_ENDPOINT_URL" [--listen 127.0.0.1:0] [--seed 1]
                        [--rate dynamodb=0.2 --rate '*=0.05'] [--kinds throttle,5xx] [--timeout-seconds 30]

The first line on stdout is `listening on http://127.0.0.1:PORT` (with --listen ...:0, the port picked);
point the SDK at it (AWS_ENDPOINT_URL=http://127.0.0.1:PORT).

Faults are injected BEFORE forwarding (all but `truncate`, which cuts the answer of a read, GetObject): a
failed request never reaches moto, so an injected failure never applies the call (a throttled PutItem
wrote nothing, a reset CreateQueue created nothing). That is what a throttling error means on AWS; a 5xx, a
reset or a timeout on AWS may also come after the call was applied (its answer lost), a case this proxy
does not produce: a client's retry here never meets its own earlier attempt's effect.

Fault kinds, each picked at random among the configured ones for a request chosen (with the service's rate):

- throttle  the service's throttling error (its code, HTTP status and body shape)
- 5xx       the service's transient server error (InternalServerError, InternalError, ServiceUnavailable...)
- reset     the connection is closed with a TCP RST, nothing answered
- timeout   the request is held without an answer for timeoutSeconds, then the connection is reset
- empty     DynamoDB Streams GetRecords only: HTTP 200 {"Records": [], "NextShardIterator": <the request's
            ShardIterator>}, not forwarded. Models what the GetRecords API reference warns of: an open shard
            that still holds records may answer with none, "it might take multiple calls to get to a
            portion of the shard that contains stream records"; a reader must call again with the
            NextShardIterator and must not take one empty page for the end of the shard. Besides the rate,
            "emptyPages": N (control API) answers every GetRecords whose ShardIterator the proxy has not
            seen since emptyPages was last set empty N times in a row before forwarding it (each new
            iterator, i.e. after every forwarded page, starts a new run of N), deterministically.
- truncate  S3 GetObject only (a GET of an object key; answers 200 or 206): forwarded, the real status and
            headers relayed (Content-Length as the upstream gave it), then only the first half of the body
            (at least 1 byte when the body has more than 1), then the connection is reset. Models a
            connection that breaks while a large object streams (a reset or an idle timeout mid-body,
            which S3 clients meet on long downloads); a client resumes with a ranged GET (Range:
            bytes=N-, If-Match: <ETag>), which the proxy forwards as any other (and may truncate again).
            Counted when a body is cut; another answer (404, 412, an empty body) is relayed whole.

A kind that cannot apply to a request (empty and truncate only apply to the calls above) is never picked
for it: the request's kind is picked among the configured kinds that apply, and it is forwarded when none
does. GetRecords and GetObject are reads, so no fault here ever applies a call that was not asked for.

The service of a request is found as AWS finds it: the X-Amz-Target prefix (DynamoDB_20120810. ->
dynamodb, DynamoDBStreams_20120810. -> streams, AmazonSQS. -> sqs), else the service of the SigV4 credential
scope (`Credential=KEY/DATE/REGION/SERVICE/aws4_request` in Authorization, or X-Amz-Credential in a presigned
URL: s3, sns, sqs, lambda, iam, sts, apigateway, execute-api, ...), else the form body's Action= (query
protocol, unsigned). Names: dynamodb, streams, s3, sns, sqs, lambda, iam, sts, apigateway, execute-api,
or the scope's own name; "unknown" when nothing says.

Control API, on the same port, under /__faults (no AWS call uses it: S3 bucket names cannot contain "_",
and requests carrying an AWS signature are never taken for control requests):

    GET    /__faults         the configuration, and counts per service: requests, forwarded, and injected
                             faults per kind and per error code; the last 50 injections
    POST   /__faults         JSON, every key optional, merged into the configuration; answers like GET:
                               {"rate": {"dynamodb": 0.2, "s3": 0.2, "*": 0.0},   (replaces the whole map)
                                "kinds": ["throttle", "5xx", "reset", "timeout"],
                                "timeoutSeconds": 30,
                                "codes": ["SlowDown"],          (only shapes with these codes, for a
                                                                 service that has any; [] = all)
                                "seed": 7,                      (re-seeds the random choices)
                                "emptyPages": 2,                (GetRecords: N empty answers per new
                                                                 iterator, see kind `empty`; 0 = off;
                                                                 setting it forgets the iterators seen)
                                "refuse": {"DynamoDB_20120810.UpdateTable":   (every request of this
                                           {"code": "LimitExceededException",  X-Amz-Target is answered
                                            "message": "...", "status": 400}}  with this JSON-protocol
                                                                 error, not forwarded, until the key is
                                                                 removed; replaces the whole map)
                                "resetCounts": true}
    DELETE /__faults         counts and the injection log back to zero (the configuration stays)
    GET    /__faults/shapes  every error shape, by service and kind: code, HTTP status, protocol

`refuse` stands in for a refusal AWS gives and the emulator does not: an account or table limit it does not
enforce (DynamoDB's "up to four switches to on-demand in a 24-hour rolling window", "decreases per UTC
day"), answered as DynamoDB answers any error of its JSON protocol (`__type` namespace#code, `message`,
x-amzn-RequestId), with the code and message the test chooses; counted as kind `refuse`.

Every injected answer carries `x-kappa-fault: KIND CODE` (SDKs ignore it), so a client or test can tell an
injected error from one moto gave.

Forwarding keeps the request as the client sent it (method, path and query, every header including Host
and Authorization, so SigV4 signatures stay valid upstream; only hop-by-hop headers are the proxy's own),
streams request and response bodies in 64 KiB pieces (an S3 GetObject of hundreds of MB never sits in
memory), keeps client connections alive, and keeps one upstream connection per client connection.
Not part of the product.
"""

import argparse
import base64
import collections
import fcntl
import http.client
import ipaddress
import json
import random
import select
import socket
import struct
import sys
import termios
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 64 * 1024
CONTROL = "/__faults"
KINDS = ("throttle", "5xx", "reset", "timeout", "empty", "truncate")
GET_RECORDS = "DynamoDBStreams_20120810.GetRecords"
# How many GetRecords iterators the proxy remembers for emptyPages (the oldest are forgotten first).
MAX_ITERATORS = 100_000
# Query parameters a GetObject may carry (x-id=GetObject is the SDKs' own; X-Amz-* a presigned URL's);
# any other (acl, tagging, uploadId, attributes, ...) names another operation on the key.
GET_OBJECT_QUERY = ("x-id", "versionId", "partNumber")
# Headers that belong to one hop (RFC 9110 7.6.1): the proxy's own on each side, never forwarded.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
TARGET_PREFIXES = (
    ("DynamoDBStreams_20120810.", "streams"),
    ("DynamoDB_20120810.", "dynamodb"),
    ("AmazonSQS.", "sqs"),
)
# Aliases accepted in the control API's rate map.
ALIASES = {"dynamodbstreams": "streams", "apigatewayv2": "apigateway"}


# ---------------------------------------------------------------- error shapes
#
# One entry per (service, kind): a list of shapes, each a dict with the code, the HTTP status, the
# protocol (which decides the body and headers, see render()) and the message. Sources:
#
# DynamoDB, "Error handling with DynamoDB", Error messages and codes
#   (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html) and the
#   API reference's Common Errors (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/CommonErrors.html):
#   JSON 1.0, HTTP 400 ProvisionedThroughputExceededException / ThrottlingException / RequestLimitExceeded,
#   HTTP 500 InternalServerError, HTTP 503 ServiceUnavailable; body
#   {"__type":"com.amazonaws.dynamodb.v20120810#<Code>","message":"..."}, Content-Type
#   application/x-amz-json-1.0, header x-amzn-RequestId (the page's own example response).
# DynamoDB Streams, API reference GetRecords/GetShardIterator "Errors" and Common Errors
#   (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_streams_GetRecords.html): JSON 1.0,
#   HTTP 400 LimitExceededException ("Your request rate is too high..."), 400 ThrottlingException,
#   500 InternalServerError; the service answers in DynamoDB's namespace.
# S3, "Error responses" / List of error codes
#   (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html): REST-XML, an <Error> root with
#   Code, Message, RequestId, HostId; 503 SlowDown "Please reduce your request rate.", 500 InternalError
#   "We encountered an internal error. Please try again.", 503 ServiceUnavailable; headers
#   x-amz-request-id, x-amz-id-2; a HEAD request's error has no body (the status alone tells).
# Query protocol services (SNS, IAM, STS, SQS when called with a form post), "Query API error responses"
#   and each API reference's Common Errors (e.g. https://docs.aws.amazon.com/sns/latest/api/CommonErrors.html,
#   https://docs.aws.amazon.com/IAM/latest/APIReference/CommonErrors.html):
#   <ErrorResponse xmlns=...><Error><Type>Sender|Receiver</Type><Code/><Message/></Error><RequestId/></ErrorResponse>,
#   text/xml; 400 Throttling "Rate exceeded", 500 InternalFailure, 503 ServiceUnavailable; service-modeled
#   ones: SNS ThrottledException (query code Throttled, HTTP 429) and InternalErrorException (query code
#   InternalError, 500) (https://docs.aws.amazon.com/sns/latest/api/API_Publish.html "Errors"), IAM
#   ServiceFailureException (query code ServiceFailure, 500) (IAM API reference, every action's "Errors").
# SQS, the AWS JSON 1.0 protocol with awsQueryCompatible (X-Amz-Target AmazonSQS.*), "Amazon SQS
#   APIs" / Common Errors (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/CommonErrors.html)
#   and the SendMessage "Errors" (RequestThrottled): body {"__type": "...#<Code>", "message": "..."} plus
#   header x-amzn-query-error: <query code>;<Sender|Receiver>, which aws-sdk-sqs reads first
#   (aws_query_compatible_errors.rs: the code the SDK reports is the header's). The SQS model gives
#   RequestThrottled the query code RequestThrottled; common errors (ThrottlingException, InternalFailure,
#   ServiceUnavailable) come in the front end's namespace (com.amazon.coral.*), which SDKs strip.
# Lambda, REST-JSON, API reference Invoke/ListFunctions "Errors" and the TooManyRequestsException shape
#   (https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html): 429 TooManyRequestsException, header
#   x-amzn-ErrorType and Retry-After, body {"Type":"User","message":"Rate Exceeded.","Reason":"..."}
#   (Reason CallerRateLimitExceeded for control-plane calls, ConcurrentInvocationLimitExceeded for
#   Invoke); 500 ServiceException {"Type":"Service","Message":"..."}.
# API Gateway v2, REST-JSON (https://docs.aws.amazon.com/apigatewayv2/latest/api-reference/apis.html
#   "Errors"): 429 TooManyRequestsException {"message":...,"limitType":...}; the x-amzn-ErrorType header
#   carries the front end's ":http://internal.amazon.com/coral/..." suffix that SDKs cut; 503
#   ServiceUnavailableException, 500 InternalFailure (common errors).
# API Gateway Management (execute-api), REST-JSON
#   (https://docs.aws.amazon.com/apigateway/latest/api/API_PostToConnection.html "Errors"): 429
#   LimitExceededException; 500 InternalFailure.


def shape(code, status, protocol, message, **extra):
    return dict(code=code, status=status, protocol=protocol, message=message, **extra)


DDB_NS = "com.amazonaws.dynamodb.v20120810#"
CORAL_THROTTLE = "com.amazon.coral.availability#"
CORAL_SERVICE = "com.amazon.coral.service#"

SHAPES = {
    "dynamodb": {
        "throttle": [
            shape("ProvisionedThroughputExceededException", 400, "json", "The level of configured provisioned "
                  "throughput for the table was exceeded. Consider increasing your provisioning level with "
                  "the UpdateTable API.", ns=DDB_NS),
            shape("ThrottlingException", 400, "json", "Rate of requests exceeds the allowed throughput.",
                  ns=DDB_NS),
            shape("RequestLimitExceeded", 400, "json", "Throughput exceeds the current throughput limit for "
                  "your account. Please contact AWS Support at https://aws.amazon.com/support request a "
                  "limit increase", ns=DDB_NS),
        ],
        "5xx": [
            shape("InternalServerError", 500, "json", "Internal server error", ns=DDB_NS),
            shape("ServiceUnavailable", 503, "json", "The service is currently unavailable or busy.", ns=DDB_NS),
        ],
    },
    "streams": {
        "throttle": [
            shape("LimitExceededException", 400, "json", "Your request rate is too high. The AWS SDKs for "
                  "DynamoDB automatically retry requests that receive this exception.", ns=DDB_NS),
            shape("ThrottlingException", 400, "json", "Rate of requests exceeds the allowed throughput.",
                  ns=DDB_NS),
        ],
        "5xx": [
            shape("InternalServerError", 500, "json", "Internal server error", ns=DDB_NS),
        ],
    },
    "s3": {
        "throttle": [
            shape("SlowDown", 503, "s3", "Please reduce your request rate."),
        ],
        "5xx": [
            shape("InternalError", 500, "s3", "We encountered an internal error. Please try again."),
            shape("ServiceUnavailable", 503, "s3", "Please reduce your request rate."),
        ],
    },
    "sns": {
        "throttle": [
            shape("Throttling", 400, "query", "Rate exceeded", type="Sender"),
            shape("Throttled", 429, "query", "Rate exceeded", type="Sender"),
        ],
        "5xx": [
            shape("InternalError", 500, "query", "Internal Error", type="Receiver"),
            shape("InternalFailure", 500, "query", "An internal error occurred.", type="Receiver"),
            shape("ServiceUnavailable", 503, "query", "Service is unavailable.", type="Receiver"),
        ],
    },
    "iam": {
        "throttle": [
            shape("Throttling", 400, "query", "Rate exceeded", type="Sender"),
        ],
        "5xx": [
            shape("ServiceFailure", 500, "query", "The request processing has failed because of an unknown "
                  "error, exception or failure.", type="Receiver"),
            shape("ServiceUnavailable", 503, "query", "Service is unavailable.", type="Receiver"),
        ],
    },
    "sts": {
        "throttle": [
            shape("Throttling", 400, "query", "Rate exceeded", type="Sender"),
        ],
        "5xx": [
            shape("InternalFailure", 500, "query", "An internal error occurred.", type="Receiver"),
            shape("ServiceUnavailable", 503, "query", "Service is unavailable.", type="Receiver"),
        ],
    },
    "sqs": {
        # protocol "sqs": JSON 1.0 with x-amzn-query-error, or the query XML for a form post (render()).
        "throttle": [
            shape("RequestThrottled", 400, "sqs", "Request is throttled.", ns="com.amazonaws.sqs#",
                  type="Sender", query_status=403),
            shape("ThrottlingException", 400, "sqs", "Rate exceeded", ns=CORAL_THROTTLE, type="Sender"),
        ],
        "5xx": [
            shape("InternalFailure", 500, "sqs", "The request processing has failed because of an unknown "
                  "error, exception or failure.", ns=CORAL_SERVICE, type="Receiver"),
            shape("ServiceUnavailable", 503, "sqs", "The request has failed due to a temporary failure of "
                  "the server.", ns=CORAL_SERVICE, type="Receiver"),
        ],
    },
    "lambda": {
        "throttle": [
            shape("TooManyRequestsException", 429, "lambda", "Rate Exceeded."),
        ],
        "5xx": [
            shape("ServiceException", 500, "lambda", "The AWS Lambda service encountered an internal error."),
        ],
    },
    "apigateway": {
        "throttle": [
            shape("TooManyRequestsException", 429, "restjson", "Too Many Requests",
                  suffix=":http://internal.amazon.com/coral/com.amazon.coral.availability/",
                  fields={"limitType": "Rate limit"}),
        ],
        "5xx": [
            shape("ServiceUnavailableException", 503, "restjson", "Service Unavailable"),
            shape("InternalFailure", 500, "restjson", "Internal server error"),
        ],
    },
    "execute-api": {
        "throttle": [
            shape("LimitExceededException", 429, "restjson", "Limit Exceeded"),
        ],
        "5xx": [
            shape("InternalFailure", 500, "restjson", "Internal server error"),
        ],
    },
}

# Services not in SHAPES: the common errors, in the protocol the request uses.
GENERIC = {
    "json": {
        "throttle": [shape("ThrottlingException", 400, "json", "Rate exceeded", ns=CORAL_THROTTLE)],
        "5xx": [shape("InternalFailure", 500, "json", "An internal error occurred.", ns=CORAL_SERVICE)],
    },
    "query": {
        "throttle": [shape("Throttling", 400, "query", "Rate exceeded", type="Sender")],
        "5xx": [shape("InternalFailure", 500, "query", "An internal error occurred.", type="Receiver")],
    },
    "restjson": {
        "throttle": [shape("ThrottlingException", 429, "restjson", "Rate exceeded")],
        "5xx": [shape("InternalFailure", 500, "restjson", "An internal error occurred.")],
    },
}

QUERY_XMLNS = {
    "sns": "http://sns.amazonaws.com/doc/2010-03-31/",
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    "sqs": "http://queue.amazonaws.com/doc/2012-11-05/",
}


def xml_escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def request_id_for(service, rng):
    if service in ("dynamodb", "streams"):
        # DynamoDB's request ids: 52 characters of [A-Z0-9].
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        return "".join(rng.choice(alphabet) for _ in range(52))
    if service == "s3":
        return "%016X" % rng.getrandbits(64)
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def render(shp, service, req, rng):
    """The status, headers and body of one injected error: (status, [(name, value)], bytes)."""
    rid = request_id_for(service, rng)
    code, status, message = shp["code"], shp["status"], shp["message"]
    protocol = shp["protocol"]
    if protocol == "sqs":
        # A form post (the old query protocol) is answered in the query shape, with the query status.
        if req.form_action is not None or not req.target:
            protocol = "query"
            status = shp.get("query_status", status)
        else:
            protocol = "json"
    headers = []
    if protocol == "json":
        body = json.dumps({"__type": shp.get("ns", "") + code, "message": message}).encode()
        headers += [("x-amzn-RequestId", rid), ("Content-Type", "application/x-amz-json-1.0")]
        if service == "sqs":
            # awsQueryCompatible: the query code and fault type, which the SDK reports as the code.
            headers.append(("x-amzn-query-error", f"{code};{shp.get('type', 'Sender')}"))
    elif protocol == "query":
        xmlns = QUERY_XMLNS.get(service)
        ns_attr = f' xmlns="{xmlns}"' if xmlns else ""
        body = (
            f"<ErrorResponse{ns_attr}>\n  <Error>\n    <Type>{shp.get('type', 'Sender')}</Type>\n"
            f"    <Code>{code}</Code>\n    <Message>{xml_escape(message)}</Message>\n  </Error>\n"
            f"  <RequestId>{rid}</RequestId>\n</ErrorResponse>\n"
        ).encode()
        headers += [("x-amzn-RequestId", rid), ("Content-Type", "text/xml")]
    elif protocol == "s3":
        host_id = base64.b64encode(rng.getrandbits(384).to_bytes(48, "big")).decode()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{xml_escape(message)}</Message>"
            f"<RequestId>{rid}</RequestId><HostId>{host_id}</HostId></Error>"
        ).encode()
        headers += [("x-amz-request-id", rid), ("x-amz-id-2", host_id), ("Content-Type", "application/xml")]
    elif protocol == "lambda":
        if code == "TooManyRequestsException":
            invoke = req.path.split("?")[0].endswith("/invocations")
            reason = "ConcurrentInvocationLimitExceeded" if invoke else "CallerRateLimitExceeded"
            doc = {"Type": "User", "message": message, "Reason": reason}
            headers.append(("Retry-After", "1"))
        else:
            doc = {"Type": "Service", "Message": message}
        body = json.dumps(doc).encode()
        headers += [
            ("x-amzn-RequestId", rid),
            ("x-amzn-ErrorType", code),
            ("Content-Type", "application/json"),
        ]
    else:  # restjson
        doc = {"message": message}
        doc.update(shp.get("fields", {}))
        body = json.dumps(doc).encode()
        headers += [
            ("x-amzn-RequestId", rid),
            ("x-amzn-ErrorType", code + shp.get("suffix", "")),
            ("Content-Type", "application/json"),
        ]
    if req.command == "HEAD":
        body = b""  # a HEAD answer has no body; S3's SDK then has only the status
    return status, headers, body


def request_protocol(req):
    if req.target:
        return "json"
    if req.form_action is not None:
        return "query"
    return "restjson"


def shapes_for(service, kind, req, codes):
    table = SHAPES.get(service) or GENERIC[request_protocol(req)]
    candidates = table[kind]
    if codes:
        only = [s for s in candidates if s["code"] in codes]
        if only:
            return only
    return candidates


# ---------------------------------------------------------------- state


class State:
    def __init__(self, seed, rate, kinds, timeout_seconds):
        self.lock = threading.Lock()
        self.seed = seed
        self.rng = random.Random(seed)
        self.rate = rate
        self.kinds = kinds
        self.timeout_seconds = timeout_seconds
        self.codes = []
        self.refuse = {}
        self.empty_pages = 0
        # GetRecords iterator -> empty answers still to give it (emptyPages), oldest first.
        self.iterators = collections.OrderedDict()
        self.reset_counts()

    def reset_counts(self):
        self.counts = {}
        self.log = []

    def view(self):
        with self.lock:
            return {
                "rate": dict(self.rate),
                "kinds": list(self.kinds),
                "timeoutSeconds": self.timeout_seconds,
                "codes": list(self.codes),
                "refuse": json.loads(json.dumps(self.refuse)),
                "seed": self.seed,
                "emptyPages": self.empty_pages,
                "counts": json.loads(json.dumps(self.counts)),
                "injected": list(self.log),
            }

    def update(self, doc):
        """Merges a control request's keys into the configuration; nothing changes if one is invalid."""
        new = {}
        if "rate" in doc:
            new["rate"] = normalize_rates(doc["rate"])
        if "kinds" in doc:
            new["kinds"] = check_kinds(doc["kinds"])
        if "timeoutSeconds" in doc:
            new["timeout_seconds"] = float(doc["timeoutSeconds"])
        if "codes" in doc:
            new["codes"] = [str(c) for c in (doc["codes"] or [])]
        if "refuse" in doc:
            refuse = doc["refuse"] or {}
            if not isinstance(refuse, dict):
                raise ValueError(f"refuse must be an object of X-Amz-Target -> {{code, message}}, not {refuse!r}")
            for target, spec in refuse.items():
                if not isinstance(spec, dict) or not isinstance(spec.get("code"), str):
                    raise ValueError(f"refuse[{target!r}] must be an object with a string code, not {spec!r}")
            new["refuse"] = {
                t: {"code": v["code"], "message": str(v.get("message", "")), "status": int(v.get("status", 400))}
                for t, v in refuse.items()
            }
        if "emptyPages" in doc:
            pages = doc["emptyPages"]
            if isinstance(pages, bool) or not isinstance(pages, int) or pages < 0:
                raise ValueError(f"emptyPages must be a whole number >= 0, not {pages!r}")
            new["empty_pages"] = pages
        with self.lock:
            for name, value in new.items():
                setattr(self, name, value)
            if "emptyPages" in doc:
                self.iterators.clear()
            if "seed" in doc:
                self.seed = doc["seed"]
                self.rng = random.Random(self.seed)
            if doc.get("resetCounts"):
                self.reset_counts()

    def service_counts(self, service):
        c = self.counts.get(service)
        if c is None:
            c = self.counts[service] = {"requests": 0, "forwarded": 0, "faults": {}, "codes": {}}
        return c

    def decide(self, service, req):
        """Counts the request; returns None (forward it) or (kind, shape or None, rendered or None). For
        "truncate" the request is forwarded (counted so) and the fault counted by truncated() once a body
        is cut."""
        with self.lock:
            c = self.service_counts(service)
            c["requests"] += 1
            refusal = self.refuse.get(req.target) if req.target else None
            if refusal is not None:
                shp = shape(refusal["code"], refusal["status"], "json", refusal["message"], ns=DDB_NS)
                return self.inject(c, service, req, "refuse", shp)
            if req.shard_iterator is not None and self.empty_pages > 0:
                left = self.iterators.pop(req.shard_iterator, self.empty_pages)
                self.iterators[req.shard_iterator] = max(left - 1, 0)
                while len(self.iterators) > MAX_ITERATORS:
                    self.iterators.popitem(last=False)
                if left > 0:
                    return self.inject(c, service, req, "empty")
            p = self.rate.get(service, self.rate.get("*", 0.0))
            if not self.kinds or p <= 0 or self.rng.random() >= p:
                c["forwarded"] += 1
                return None
            kinds = [k for k in self.kinds if applies(k, service, req)]
            if not kinds:
                c["forwarded"] += 1
                return None
            kind = self.rng.choice(kinds)
            if kind == "truncate":
                c["forwarded"] += 1
                return kind, None, None
            return self.inject(c, service, req, kind)

    def inject(self, c, service, req, kind, shp=None):
        """Counts and logs one fault of `kind` (the lock held); returns decide()'s answer. `shp`: the
        shape of a `refuse`."""
        c["faults"][kind] = c["faults"].get(kind, 0) + 1
        rendered = None
        if shp is not None:
            rendered = render(shp, service, req, self.rng)
            c["codes"][shp["code"]] = c["codes"].get(shp["code"], 0) + 1
        elif kind in ("throttle", "5xx"):
            shp = self.rng.choice(shapes_for(service, kind, req, self.codes))
            rendered = render(shp, service, req, self.rng)
            c["codes"][shp["code"]] = c["codes"].get(shp["code"], 0) + 1
        elif kind == "empty":
            rendered = render_empty(req, self.rng)
        self.log.append(
            {
                "service": service,
                "kind": kind,
                "code": shp["code"] if shp else None,
                "status": rendered[0] if rendered else None,
                "method": req.command,
                "path": req.path.split("?")[0],
                "target": req.target,
            }
        )
        del self.log[:-50]
        return kind, shp, rendered

    def truncated(self, service, req, status):
        """Counts a body cut by "truncate" (answered `status`)."""
        with self.lock:
            c = self.service_counts(service)
            c["faults"]["truncate"] = c["faults"].get("truncate", 0) + 1
            self.log.append(
                {
                    "service": service,
                    "kind": "truncate",
                    "code": None,
                    "status": status,
                    "method": req.command,
                    "path": req.path.split("?")[0],
                    "target": req.target,
                }
            )
            del self.log[:-50]


def applies(kind, service, req):
    """Whether fault `kind` can be given to this request (see the module doc)."""
    if kind == "empty":
        return req.shard_iterator is not None
    if kind == "truncate":
        return service == "s3" and is_get_object(req)
    return True


def render_empty(req, rng):
    """An empty GetRecords page that keeps the reader at the same place: its own iterator as the next."""
    body = json.dumps({"Records": [], "NextShardIterator": req.shard_iterator}).encode()
    rid = request_id_for("streams", rng)
    return 200, [("x-amzn-RequestId", rid), ("Content-Type", "application/x-amz-json-1.0")], body


def is_ip(host):
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def is_get_object(req):
    """A GET of an S3 object: a key in the path (path-style: /BUCKET/KEY; virtual-hosted, the bucket in
    Host (BUCKET.s3.REGION.amazonaws.com, BUCKET.localhost): /KEY), and only GetObject's query parameters."""
    if req.command != "GET":
        return False
    split = urllib.parse.urlsplit(req.path)
    for name, values in urllib.parse.parse_qs(split.query, keep_blank_values=True).items():
        if name == "x-id" and values != ["GetObject"]:
            return False
        presigned = name.lower().startswith("x-amz-")
        if name not in GET_OBJECT_QUERY and not name.startswith("response-") and not presigned:
            return False
    host = (req.headers.get("Host") or "").lower()
    host = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    virtual = not is_ip(host) and (".s3." in host or ".s3-" in host or host.endswith(".localhost"))
    path = split.path.lstrip("/")
    if virtual:
        return bool(path)
    bucket, _, key = path.partition("/")
    return bool(bucket) and bool(key)


def check_kinds(kinds):
    kinds = list(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown fault kinds {bad}; known: {list(KINDS)}")
    return kinds


def normalize_rates(rates):
    out = {}
    for name, p in dict(rates).items():
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"rate for {name} must be within 0..1, not {p}")
        out[ALIASES.get(name, name)] = p
    return out


# ---------------------------------------------------------------- service identification


def credential_service(value):
    # Credential=AKID/20240101/us-east-1/dynamodb/aws4_request  (header) or the X-Amz-Credential value
    if not value:
        return None
    i = value.find("Credential=")
    scope = value[i + len("Credential="):] if i >= 0 else value
    scope = scope.split(",")[0].strip()
    parts = scope.split("/")
    if len(parts) >= 5 and parts[-1] == "aws4_request":
        return parts[-2]
    return None


def identify(req):
    target = req.target
    if target:
        for prefix, service in TARGET_PREFIXES:
            if target.startswith(prefix):
                return service
    service = credential_service(req.headers.get("Authorization"))
    if service is None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(req.path).query)
        service = credential_service((query.get("X-Amz-Credential") or [None])[0])
    if service is not None:
        return service
    if req.form_action is not None:
        action = req.form_action
        # Unsigned query-protocol calls: the Action names the service only by convention.
        if action in ("AssumeRoleWithWebIdentity", "AssumeRoleWithSAML", "GetCallerIdentity"):
            return "sts"
        return "unknown"
    return "unknown"


# ---------------------------------------------------------------- the proxy


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kappa-fault-proxy"
    # Idle keep-alive connections are dropped after this long (the SDK's pool reconnects).
    timeout = 120

    def setup(self):
        super().setup()
        self.upstream_conn = None
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        if self.upstream_conn is not None:
            self.upstream_conn.close()

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("fault-proxy: " + (fmt % args) + "\n")

    def parse_request(self):
        self.expect_continue = False
        return super().parse_request()

    def handle_expect_100(self):
        # Decided in handle_request(): a fault is answered at once, without asking for the body; a forwarded
        # request gets its 100 Continue then.
        self.expect_continue = True
        return True

    # Every method goes through one place.
    def do_GET(self):
        self.handle_request()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    # ------------------------------------------------------------ request body

    def body_length(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return "chunked"
        return int(self.headers.get("Content-Length") or 0)

    def body_pieces(self):
        """The request body, in pieces as they arrive (chunked transfer decoded)."""
        length = self.body_length()
        if length == "chunked":
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                left = size
                while left:
                    piece = self.rfile.read(min(CHUNK, left))
                    if not piece:
                        raise ConnectionError("client closed the connection inside a chunk")
                    left -= len(piece)
                    yield piece
                self.rfile.readline(3)
        else:
            left = length
            while left:
                piece = self.rfile.read(min(CHUNK, left))
                if not piece:
                    raise ConnectionError("client closed the connection inside the body")
                left -= len(piece)
                yield piece

    # ------------------------------------------------------------ dispatch

    def handle_request(self):
        self.target = self.headers.get("X-Amz-Target", "")
        self.form_action = None
        self.buffered = None
        self.shard_iterator = None
        try:
            if self.path.split("?")[0].rstrip("/") in (CONTROL, CONTROL + "/shapes") and not (
                self.headers.get("Authorization") or self.target
            ):
                return self.control()
            if (
                not self.target
                and not self.headers.get("Authorization")
                and self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded")
                and not self.expect_continue
                and self.body_length() != "chunked"
                and self.body_length() <= 1 << 20
            ):
                # Only an unsigned form post needs its body to be named (Action=).
                self.buffered = b"".join(self.body_pieces())
                form = urllib.parse.parse_qs(self.buffered.decode("utf-8", "replace"))
                self.form_action = (form.get("Action") or [""])[0]
            elif self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                self.form_action = ""  # a query-protocol call (the Action is in the body)
            elif (
                self.target == GET_RECORDS
                and self.body_length() != "chunked"
                and self.body_length() <= 1 << 20
            ):
                # GetRecords names its iterator in the body (kind `empty`): read it first.
                if self.expect_continue:
                    self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    self.wfile.flush()
                    self.expect_continue = False
                self.buffered = b"".join(self.body_pieces())
                try:
                    iterator = json.loads(self.buffered or b"{}").get("ShardIterator")
                except (ValueError, AttributeError):
                    iterator = None
                if isinstance(iterator, str) and iterator:
                    self.shard_iterator = iterator
            service = identify(self)
            decision = self.server.state.decide(service, self)
            if decision is None:
                return self.forward()
            kind, shp, rendered = decision
            if kind == "truncate":
                return self.forward(truncate=service)
            if kind == "reset":
                return self.reset()
            if kind == "timeout":
                return self.hold_then_reset()
            self.answer_fault(kind, shp["code"] if shp else "GetRecords", rendered)
        except OSError:  # ConnectionError, socket.timeout
            # The client went away (or stalled) mid-request: this connection, and an upstream answer
            # perhaps half read, are done.
            self.close_connection = True
            if self.upstream_conn is not None:
                self.upstream_conn.close()
                self.upstream_conn = None

    def drain_body(self):
        """Reads and drops an unread request body so the connection can carry the next request; False when
        the client was told to wait (Expect: 100-continue) and the connection must close instead."""
        if self.buffered is not None:
            return True
        if self.expect_continue:
            return False
        for _ in self.body_pieces():
            pass
        return True

    def answer_fault(self, kind, code, rendered):
        status, headers, body = rendered
        keep = self.drain_body()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-kappa-fault", f"{kind} {code}")
        if not keep:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reset(self):
        """Closes the client connection with a TCP RST, answering nothing."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def hold_then_reset(self):
        """Holds the request unanswered for timeoutSeconds (or until the client gives up), then resets."""
        deadline = time.monotonic() + self.server.state.timeout_seconds
        sock = self.connection
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            readable, _, _ = select.select([sock], [], [], min(left, 0.5))
            if readable:
                try:
                    peek = sock.recv(1, socket.MSG_PEEK)
                except OSError:
                    break
                if not peek:
                    break  # the client closed: nobody waits any more
                # Bytes of the unread body (or a pipelined request): nothing to do but wait.
                time.sleep(min(max(deadline - time.monotonic(), 0), 0.5))
        self.reset()

    # ------------------------------------------------------------ forwarding

    def upstream(self, fresh=False):
        conn = self.upstream_conn
        if conn is not None and not fresh and conn.sock is not None:
            # An idle upstream connection that is readable has been closed by the server: replace it.
            readable, _, _ = select.select([conn.sock], [], [], 0)
            if readable:
                fresh = True
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            host, port = self.server.upstream
            conn = http.client.HTTPConnection(host, port, timeout=self.server.upstream_timeout)
            self.upstream_conn = conn
        return conn

    def forward(self, truncate=None):
        """Sends the request upstream and relays the answer; `truncate` (the service name): cut the body
        (kind `truncate`)."""
        chunked = self.body_length() == "chunked"
        if self.expect_continue:
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        replayable = self.buffered is not None or self.body_length() == 0
        for attempt in (0, 1):
            conn = self.upstream(fresh=attempt == 1)
            try:
                self.send_upstream(conn, chunked)
                resp = conn.getresponse()
                break
            except (http.client.HTTPException, OSError) as e:
                # A kept-alive upstream connection the server closed meanwhile: sent again on a new one
                # when the body can be replayed; anything else is the harness's own failure, said on
                # stderr, and the client sees its connection reset.
                conn.close()
                self.upstream_conn = None
                if attempt == 1 or not replayable:
                    sys.stderr.write(f"fault-proxy: forwarding {self.command} {self.path} failed: {e!r}\n")
                    return self.reset()
        self.relay(resp, truncate)

    def send_upstream(self, conn, chunked):
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() in HOP_BY_HOP:
                continue
            conn.putheader(name, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        if self.buffered is not None:
            pieces = [self.buffered] if self.buffered else []
        else:
            pieces = self.body_pieces()
            # Replays send the buffered body; the first attempt of a streamed one reads it as it goes.
        for piece in pieces:
            if chunked:
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                conn.send(piece)
        if chunked:
            conn.send(b"0\r\n\r\n")

    def relay(self, resp, truncate=None):
        """Copies the upstream answer to the client, its body streamed: with the upstream's Content-Length
        when it gave one, else re-framed as chunked (the upstream may close after an unframed body; the
        client's connection stays open either way). With `truncate` (kind `truncate`), a 200 or 206 body
        is cut: see relay_truncated()."""
        length = resp.getheader("Content-Length")
        no_body = self.command == "HEAD" or resp.status in (204, 304)
        if truncate and not no_body and resp.status in (200, 206) and (length is None or int(length) > 0):
            return self.relay_truncated(resp, length, truncate)
        self.send_response_only(resp.status, resp.reason)
        chunked = not no_body and length is None
        for name, value in resp.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if no_body:
            resp.read()
        else:
            while True:
                piece = resp.read(CHUNK)
                if not piece:
                    break
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    self.wfile.write(piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        if resp.will_close and self.upstream_conn is not None:
            self.upstream_conn.close()
            self.upstream_conn = None

    def relay_truncated(self, resp, length, service):
        """Kind `truncate`: the upstream's status and headers, the first half of its body (at least 1 byte
        of a longer one; of a body without Content-Length, half of its first piece, re-framed as chunked),
        then a TCP reset once those bytes have left. The upstream connection, its answer half read, is
        dropped."""
        self.send_response_only(resp.status, resp.reason)
        for name, value in resp.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-kappa-fault", "truncate GetObject")
        self.end_headers()
        if length is None:
            piece = resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK)
            piece = piece[: len(piece) // 2]
            if piece:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        else:
            left = int(length) // 2
            while left:
                piece = resp.read(min(CHUNK, left))
                if not piece:
                    break
                left -= len(piece)
                self.wfile.write(piece)
        self.server.state.truncated(service, self, resp.status)
        if self.upstream_conn is not None:
            self.upstream_conn.close()
            self.upstream_conn = None
        self.wait_sent()
        self.reset()

    def wait_sent(self, limit=2.0):
        """Waits (up to `limit` seconds) until the kernel has sent what was written, so that a reset that
        follows does not discard it (Linux: the unsent bytes of the send queue, TIOCOUTQ)."""
        deadline = time.monotonic() + limit
        buf = bytearray(struct.calcsize("i"))
        while time.monotonic() < deadline:
            try:
                fcntl.ioctl(self.connection.fileno(), termios.TIOCOUTQ, buf)
            except OSError:
                return
            if struct.unpack("i", buf)[0] == 0:
                return
            time.sleep(0.005)

    # ------------------------------------------------------------ control API

    def control(self):
        state = self.server.state
        path = self.path.split("?")[0].rstrip("/")
        body = b"".join(self.body_pieces())
        try:
            if path == CONTROL + "/shapes" and self.command == "GET":
                return self.answer_json(200, shapes_table())
            if path != CONTROL:
                return self.answer_json(404, {"error": f"no control resource {path}"})
            if self.command == "GET":
                return self.answer_json(200, state.view())
            if self.command == "POST":
                doc = json.loads(body or b"{}")
                if not isinstance(doc, dict):
                    raise ValueError("the body must be a JSON object")
                state.update(doc)
                return self.answer_json(200, state.view())
            if self.command == "DELETE":
                with state.lock:
                    state.reset_counts()
                return self.answer_json(200, state.view())
            return self.answer_json(405, {"error": f"{self.command} {CONTROL}: use GET, POST or DELETE"})
        except (ValueError, TypeError) as e:
            return self.answer_json(400, {"error": str(e)})

    def answer_json(self, status, doc):
        body = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def shapes_table():
    out = {}
    for service, kinds in SHAPES.items():
        out[service] = {
            kind: [{"code": s["code"], "status": s["status"], "protocol": s["protocol"]} for s in shapes]
            for kind, shapes in kinds.items()
        }
    return out


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        if self.verbose:
            super().handle_error(request, client_address)


def host_port(text, what):
    text = text.split("://", 1)[-1].rstrip("/")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"fault-proxy: {what} must be HOST:PORT, not {text!r}")
    return host, int(port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on; port 0 picks one")
    ap.add_argument("--upstream", required=True, help="the AWS API server, http://HOST:PORT")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random choices (default 0)")
    ap.add_argument("--rate", action="append", default=[], metavar="SERVICE=P",
                    help="share of SERVICE's requests to fail, 0..1; '*' for every other service; repeatable")
    ap.add_argument("--kinds", default="throttle,5xx",
                    help="comma-separated: throttle,5xx,reset,timeout,empty,truncate")
    ap.add_argument("--empty-pages", type=int, default=0, metavar="N",
                    help="answer each new GetRecords iterator empty N times before forwarding it (kind empty)")
    ap.add_argument("--timeout-seconds", type=float, default=30.0, help="how long a 'timeout' holds a request")
    ap.add_argument("--upstream-timeout", type=float, default=600.0, help="seconds to wait on the upstream")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args()

    rates = {}
    for item in args.rate:
        name, _, p = item.partition("=")
        rates[name] = p
    try:
        rates = normalize_rates(rates)
        kinds = check_kinds(k for k in args.kinds.split(",") if k)
    except ValueError as e:
        raise SystemExit(f"fault-proxy: {e}")

    server = Server(host_port(args.listen, "--listen"), Handler)
    server.upstream = host_port(args.upstream, "--upstream")
    server.upstream_timeout = args.upstream_timeout
    server.verbose = args.verbose
    server.state = State(args.seed, rates, kinds, args.timeout_seconds)
    if args.empty_pages:
        server.state.update({"emptyPages": args.empty_pages})
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
