"""Lambda functions run as local processes on the local stack, and AWS's deliveries to them.

Imported by hack/moto-server.py, so it runs **inside the moto_server process**: the pollers read moto's
own queues and stream shards (receive counts, visibility and the queue's RedrivePolicy stay moto's) with
no second copy of state and no HTTP round trip per poll, and moto's Docker-only `_invoke_lambda` is
replaced in place. Nothing here is part of the product; it stands in for the Lambda service.

What it provides (AWS sources in each part's docstring):

- **Invoke** (`RequestResponse`, `Event`, `DryRun`): the function's zip (`fn.code_bytes`) is unpacked
  under `$KAPPA_STACK_DIR/lambda/`, its `bootstrap` runs as a local process against a Lambda Runtime API
  served on loopback, one per warm execution environment (one invocation at a time per environment,
  environments reused while the function's code and configuration are unchanged). Function errors come
  back with `X-Amz-Function-Error: Unhandled`; a timeout kills the process (`Sandbox.Timedout`); an exit
  is `Runtime.ExitError`. `Event` invocations are queued and retried twice (or the function's
  EventInvokeConfig.MaximumRetryAttempts), then go to the function's DeadLetterConfig queue or its
  EventInvokeConfig on-failure SQS destination.
- **Event source mappings**, polled as Lambda does (moto's synchronous per-write hooks are detached: they
  cleared a stream's shard on every write, so other GetRecords readers lost records): SQS pollers and
  DynamoDB Streams pollers with a cursor per shard (see `SqsPoller`, `StreamPoller`).
- **SNS → Lambda**: asynchronous delivery of AWS's event shape, filter policies (moto's matcher), async
  retries and DLQ, and the subscription's RedrivePolicy when delivery itself fails.
- **API Gateway Management API** (`@connections`) on the harness port (`KAPPA_LOCAL_EXECUTE_API` in
  `.stack/env`), see `ManagementApi`.

Configuration (environment of the moto process, set by hack/stack.sh):
- `KAPPA_STACK_DIR`: where code is unpacked (`lambda/`) and logs go (`logs/lambda-<function>.log`,
  `logs/local-lambda.log`).
- `KAPPA_LOCAL_HARNESS_PORT`: the management API / harness HTTP port on 127.0.0.1.
- `KAPPA_LOCAL_ASYNC_CONCURRENCY` (default 4): how many of a function's queued asynchronous events (SNS
  deliveries, `Event` invokes) run at once; the rest wait in its queue, as in Lambda's.
- The operator's binary, which the stand-in `bootstrap` (hack/lambda-bootstrap-standin.sh) execs: read at
  every cold start from the file `$KAPPA_STACK_DIR/lambda-binary` if it exists (tests write it), else
  `KAPPA_LOCAL_LAMBDA_BINARY` as given to `hack/stack.sh up`, else `$CARGO_TARGET_DIR/debug/kappa-operator`.
  It reaches the function as `KAPPA_LOCAL_LAMBDA_BINARY` (set by this harness only, never by the operator).
- `KAPPA_LOCAL_ASYNC_RETRY_SECONDS` (default 1): the delay before each asynchronous retry. AWS waits about
  1 then 2 minutes (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html);
  the local stack shortens it so tests finish.

Measured on this machine class (2 cores shared, `hack/local-lambda-tests`, idle machine / under a
concurrent cargo build): Invoke of a small Python bootstrap 190 ms cold / 8 ms warm; Invoke of the
operator's debug binary as the writer (empty SQS event) 230-245 ms cold / 12-17 ms warm; SendMessage →
the record in the log table through the real writer 0.43-0.61 s cold / 0.22-0.23 s warm (the 200 ms poll
interval included).
"""

import base64
import collections
import ctypes
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POLL_SECONDS = 0.2
STACK_DIR = os.environ.get("KAPPA_STACK_DIR", os.path.join(os.getcwd(), ".stack"))
log = logging.getLogger("local-lambda")
stopping = threading.Event()


def setup_logging():
    os.makedirs(os.path.join(STACK_DIR, "logs"), exist_ok=True)
    handler = logging.FileHandler(os.path.join(STACK_DIR, "logs", "local-lambda.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def iso_now(ms=True):
    now = datetime.now(timezone.utc)
    if ms:
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def moto_endpoint():
    from moto import settings

    return f"http://127.0.0.1:{settings.moto_server_port()}"


def local_binary():
    path = os.path.join(STACK_DIR, "lambda-binary")
    if os.path.exists(path):
        with open(path) as f:
            chosen = f.read().strip()
            if chosen:
                return chosen
    if os.environ.get("KAPPA_LOCAL_LAMBDA_BINARY"):
        return os.environ["KAPPA_LOCAL_LAMBDA_BINARY"]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/kappa-operator/target")
    return os.path.join(target, "debug", "kappa-operator")


def die_with_parent():
    """Child processes get SIGKILL when the moto process dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Spawner(threading.Thread):
    """Starts every function process. PR_SET_PDEATHSIG fires when the *thread* that forked the child
    ends, so processes are forked from this one thread, which lives as long as the moto process."""

    def __init__(self):
        super().__init__(daemon=True, name="spawner")
        self.requests = collections.deque()
        self.cond = threading.Condition()

    def run(self):
        while True:
            with self.cond:
                while not self.requests:
                    self.cond.wait(1)
                args, kwargs, done = self.requests.popleft()
            try:
                done["proc"] = subprocess.Popen(*args, preexec_fn=die_with_parent, **kwargs)
            except Exception as e:
                done["error"] = e
            done["event"].set()

    def popen(self, *args, **kwargs):
        done = {"event": threading.Event()}
        with self.cond:
            self.requests.append((args, kwargs, done))
            self.cond.notify_all()
        done["event"].wait()
        if "error" in done:
            raise done["error"]
        return done["proc"]


SPAWNER = Spawner()


# ================================================================ execution environments
class Invocation:
    def __init__(self, payload, deadline, function_arn):
        self.id = str(uuid.uuid4())
        self.payload = payload
        self.deadline = deadline
        self.function_arn = function_arn
        self.taken = False
        self.result = None  # (error_type or None, body bytes)


class JsonHandler(BaseHTTPRequestHandler):
    """What the harness's HTTP APIs share: HTTP/1.1, no request log, JSON replies, the request body."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"{}", headers=None):
        """Replies `body` (bytes as they are, anything else as JSON) with `headers`."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""


class RuntimeApi(JsonHandler):
    """The Lambda Runtime API of one execution environment
    (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html)."""

    def do_GET(self):
        env = self.server.env
        if not self.path.endswith("/runtime/invocation/next"):
            return self.reply(404, b'{"errorMessage":"unknown path"}')
        inv = env.next_invocation(self.server)
        if inv is None:
            return self.reply(500, b'{"errorMessage":"environment shutting down"}')
        self.reply(
            200,
            inv.payload,
            {
                "Lambda-Runtime-Aws-Request-Id": inv.id,
                "Lambda-Runtime-Deadline-Ms": str(int(inv.deadline * 1000)),
                "Lambda-Runtime-Invoked-Function-Arn": inv.function_arn,
                "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
            },
        )

    def do_POST(self):
        env = self.server.env
        body = self.body()
        m = re.search(r"/runtime/invocation/([^/]+)/(response|error)$", self.path)
        if m:
            error = None
            if m.group(2) == "error":
                error = self.headers.get("Lambda-Runtime-Function-Error-Type") or "Unhandled"
                try:
                    error = json.loads(body).get("errorType") or error
                except Exception:
                    pass
            if env.complete(m.group(1), error, body):
                return self.reply(202, b'{"status":"OK"}')
            return self.reply(400, b'{"errorMessage":"unknown or finished request id","errorType":"InvalidRequestID"}')
        if self.path.endswith("/runtime/init/error"):
            env.init_failed(body)
            return self.reply(202, b'{"status":"OK"}')
        return self.reply(404, b'{"errorMessage":"unknown path"}')


class Environment:
    """One warm execution environment: a Runtime API server and the `bootstrap` process."""

    def __init__(self, key, fn, code_dir):
        self.key, self.fn, self.code_dir = key, fn, code_dir
        self.name = fn.function_name
        self.cond = threading.Condition()
        self.current = None
        self.busy = False
        self.closed = False
        self.proc = None
        self.init_error = None
        self.server = None

    def start_server(self):
        """A Runtime API server per process: a GET /next still pending from a dead process must not
        take the next invocation."""
        if self.server is not None:
            self.server.stale = True
            self.server.shutdown()
            self.server.server_close()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
        self.server.daemon_threads = True
        self.server.env = self
        self.server.stale = False
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": POLL_SECONDS}, daemon=True,
            name=f"runtime-api-{self.name}",
        ).start()

    def process_env(self):
        fn = self.fn
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": self.code_dir,
            "LAMBDA_RUNTIME_DIR": self.code_dir,
            "_HANDLER": fn.handler or "",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.run_time}",
            "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": str(fn.version),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/{uuid.uuid4().hex}",
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.server.server_address[1]}",
            "AWS_REGION": fn.region,
            "AWS_DEFAULT_REGION": fn.region,
            "AWS_ENDPOINT_URL": moto_endpoint(),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "KAPPA_S3_PATH_STYLE": "true",
            "KAPPA_LOCAL_LAMBDA_BINARY": local_binary(),
        }
        for k in ("RUST_LOG", "RUST_BACKTRACE"):
            if k in os.environ:
                env[k] = os.environ[k]
        env.update({k: str(v) for k, v in (fn.environment_vars or {}).items()})
        # The notifier posts to https://{apiId}.execute-api.{region}.amazonaws.com/{stage}: the harness's
        # management API stands in for that host (as DNS would), see ManagementApi.
        endpoint = env.get("KAPPA_WS_MANAGEMENT_ENDPOINT", "")
        m = re.match(r"https://([^.]+)\.execute-api\.[^/]+/(.+)$", endpoint)
        if m and MANAGEMENT_PORT:
            env["KAPPA_WS_MANAGEMENT_ENDPOINT"] = f"http://127.0.0.1:{MANAGEMENT_PORT}/{m.group(1)}/{m.group(2)}"
        return env

    def ensure_started(self):
        if self.proc is not None and self.proc.poll() is None:
            return
        self.init_error = None
        bootstrap = os.path.join(self.code_dir, "bootstrap")
        logfile = open(os.path.join(STACK_DIR, "logs", f"lambda-{self.name}.log"), "ab")
        logfile.write(f"--- cold start {iso_now()} ({self.key[2][:12]})\n".encode())
        logfile.flush()
        if not os.path.exists(bootstrap):
            raise FileNotFoundError("the function's zip has no `bootstrap` file at its root")
        self.start_server()
        self.proc = SPAWNER.popen(
            [bootstrap], cwd=self.code_dir, env=self.process_env(), stdin=subprocess.DEVNULL,
            stdout=logfile, stderr=subprocess.STDOUT,
        )
        logfile.close()
        log.info("started %s pid %s", self.name, self.proc.pid)

    def next_invocation(self, server):
        with self.cond:
            while not self.closed and not server.stale:
                if self.current is not None and not self.current.taken:
                    self.current.taken = True
                    return self.current
                self.cond.wait(POLL_SECONDS)
        return None

    def complete(self, request_id, error, body):
        with self.cond:
            if self.current is None or self.current.id != request_id or self.current.result is not None:
                return False
            self.current.result = (error, body)
            self.cond.notify_all()
            return True

    def init_failed(self, body):
        with self.cond:
            self.init_error = body
            self.cond.notify_all()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def invoke(self, payload, timeout):
        """(error_type or None, body bytes) of one invocation."""
        try:
            self.ensure_started()
        except Exception as e:
            return "Runtime.InvalidEntrypoint", error_body(f"{e}", "Runtime.InvalidEntrypoint")
        deadline = time.time() + timeout
        inv = Invocation(payload, deadline, self.fn.function_arn)
        with self.cond:
            self.current = inv
            self.cond.notify_all()
            while True:
                if inv.result is not None:
                    self.current = None
                    return inv.result
                if self.init_error is not None:
                    self.current = None
                    body = self.init_error
                    self.kill()
                    try:
                        kind = json.loads(body).get("errorType") or "Runtime.InitError"
                    except Exception:
                        kind = "Runtime.InitError"
                    return kind, body
                code = self.proc.poll()
                if code is not None:
                    self.current = None
                    return "Runtime.ExitError", error_body(
                        f"RequestId: {inv.id} Error: Runtime exited with error: exit status {code}",
                        "Runtime.ExitError",
                    )
                if time.time() > deadline:
                    self.current = None
                    self.kill()
                    return "Sandbox.Timedout", error_body(
                        f"RequestId: {inv.id} Error: Task timed out after {timeout:.2f} seconds",
                        "Sandbox.Timedout",
                    )
                self.cond.wait(0.05)

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.kill()
        if self.server is not None:
            self.server.stale = True
            self.server.shutdown()
            self.server.server_close()


def error_body(message, kind):
    return json.dumps({"errorMessage": message, "errorType": kind}).encode()


IDLE_SECONDS = float(os.environ.get("KAPPA_LOCAL_LAMBDA_IDLE_SECONDS", "120"))


class Pool:
    """Warm environments per function configuration; a changed configuration or code retires the old
    ones (AWS starts new environments after UpdateFunctionCode/Configuration)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.envs = {}  # function arn -> list of Environment

    @staticmethod
    def key(fn):
        config = json.dumps(
            [fn.handler, fn.timeout, fn.memory_size, fn.environment_vars or {}], sort_keys=True, default=str
        )
        return (fn.function_arn, str(fn.version), fn.code_sha_256 or "", hashlib.sha256(config.encode()).hexdigest())

    def code_dir(self, fn, key):
        d = os.path.join(STACK_DIR, "lambda", f"{fn.function_name}-{key[2][:16]}")
        if not os.path.exists(os.path.join(d, ".unpacked")):
            tmp = d + f".tmp{uuid.uuid4().hex[:6]}"
            os.makedirs(tmp)
            with zipfile.ZipFile(io.BytesIO(fn.code_bytes)) as z:
                for info in z.infolist():
                    path = z.extract(info, tmp)
                    mode = (info.external_attr >> 16) & 0o777
                    if info.filename == "bootstrap" or mode & 0o111:
                        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            open(os.path.join(tmp, ".unpacked"), "w").close()
            try:
                os.rename(tmp, d)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        return d

    def acquire(self, fn):
        key = self.key(fn)
        retired = []
        with self.lock:
            envs = self.envs.setdefault(fn.function_arn, [])
            for env in list(envs):
                if env.key != key:
                    envs.remove(env)
                    if not env.busy:
                        retired.append(env)
                    else:
                        env.retire = True
            for env in envs:
                if not env.busy:
                    env.busy = True
                    break
            else:
                env = None
        for old in retired:
            old.close()
        if env is None:
            env = Environment(key, fn, self.code_dir(fn, key))
            env.busy = True
            with self.lock:
                self.envs.setdefault(fn.function_arn, []).append(env)
        return env

    def release(self, env):
        if getattr(env, "retire", False):
            env.close()
        with self.lock:
            env.busy = False
            env.last_used = time.time()

    def reap(self, live_arns, idle_seconds=IDLE_SECONDS):
        """Closes environments idle for `idle_seconds` or whose function is deleted (Lambda also
        reclaims idle environments), so a long test run does not accumulate processes."""
        now, closing = time.time(), []
        with self.lock:
            for arn, envs in list(self.envs.items()):
                for env in list(envs):
                    if not env.busy and (arn not in live_arns or now - getattr(env, "last_used", now) > idle_seconds):
                        envs.remove(env)
                        closing.append(env)
                if not envs:
                    del self.envs[arn]
        for env in closing:
            log.info("closing an idle environment of %s", env.name)
            env.close()

    def close_all(self):
        with self.lock:
            envs = [e for es in self.envs.values() for e in es]
            self.envs.clear()
        for env in envs:
            env.close()


POOL = Pool()


def run_function(fn, payload):
    """Runs one invocation of `fn` synchronously: (error_type or None, body bytes)."""
    if isinstance(payload, str):
        payload = payload.encode()
    if not payload:
        payload = b"{}"
    env = POOL.acquire(fn)
    try:
        started = time.time()
        error, body = env.invoke(payload, float(fn.timeout or 3))
        log.info("invoked %s in %.0f ms: %s", fn.function_name, (time.time() - started) * 1000, error or "ok")
        return error, body
    finally:
        POOL.release(env)


# ================================================================ asynchronous invocation
ASYNC_RETRY_SECONDS = float(os.environ.get("KAPPA_LOCAL_ASYNC_RETRY_SECONDS", "1"))


def send_to_sqs(arn, body, attributes=None):
    from moto.sqs.models import sqs_backends

    parts = arn.split(":")
    backend = sqs_backends[parts[4]][parts[3]]
    backend.send_message(parts[5], body, message_attributes=attributes or {})


ASYNC_CONCURRENCY = max(1, int(os.environ.get("KAPPA_LOCAL_ASYNC_CONCURRENCY", "4")))


def invoke_async(fn, payload):
    """Lambda's asynchronous invocation: the event waits in the function's queue
    (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async.html: "Lambda places the event in a
    queue ... A separate process reads events from the queue and sends them to your function"); retries
    (default 2), then the on-failure destination of the function's EventInvokeConfig and/or its
    DeadLetterConfig (invocation-async-retain-records.html). Lambda runs a function's queued events with as
    much concurrency as its reserved or the account's; this machine runs at most
    `KAPPA_LOCAL_ASYNC_CONCURRENCY` (default 4) per function, the rest wait in the queue: a burst of SNS
    deliveries once started hundreds of environments on 2 cores and thrashed."""
    ASYNC.put({"fn": fn, "payload": payload, "attempts": 0, "request_id": str(uuid.uuid4())})


class AsyncQueues:
    """The per-function queues of asynchronous events and their workers (invoke_async)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.queues = {}  # function arn -> {"events": deque, "workers": int}

    def put(self, event):
        arn = event["fn"].function_arn
        with self.lock:
            q = self.queues.setdefault(arn, {"events": collections.deque(), "workers": 0})
            q["events"].append(event)
            if q["workers"] >= ASYNC_CONCURRENCY:
                return
            q["workers"] += 1
        threading.Thread(target=self.work, args=(arn,), daemon=True, name=f"async-{arn.rsplit(':', 1)[-1]}").start()

    def work(self, arn):
        while True:
            with self.lock:
                q = self.queues[arn]
                if stopping.is_set() or not q["events"]:
                    q["workers"] -= 1
                    return
                event = q["events"].popleft()
            try:
                attempt_async(event)
            except Exception:
                log.exception("async invocation of %s", arn)


ASYNC = AsyncQueues()


def attempt_async(event):
    """One attempt of a queued asynchronous event; a failed one is queued again after a delay
    (KAPPA_LOCAL_ASYNC_RETRY_SECONDS times the attempts) until its retries are spent."""
    fn, payload, request_id = event["fn"], event["payload"], event["request_id"]
    config = fn.event_invoke_config[0].config if fn.event_invoke_config else {}
    retries = int(config.get("MaximumRetryAttempts", 2))
    event["attempts"] += 1
    attempts = event["attempts"]
    try:
        error, body = run_function(fn, payload)
    except Exception as e:  # the harness itself failed
        error, body = "ServiceException", error_body(str(e), "ServiceException")
    if error is None:
        success = (config.get("DestinationConfig") or {}).get("OnSuccess", {}).get("Destination")
        if success and ":sqs:" in success:
            send_to_sqs(success, json.dumps(invocation_record(fn, request_id, "Success", attempts, payload, None, body)))
        return
    if attempts <= retries:
        retry = threading.Timer(ASYNC_RETRY_SECONDS * attempts, ASYNC.put, (event,))
        retry.daemon = True
        retry.start()
        return
    log.info("async invocation of %s failed %d times: %s", fn.function_name, attempts, error)
    failure = (config.get("DestinationConfig") or {}).get("OnFailure", {}).get("Destination")
    if failure and ":sqs:" in failure:
        record = invocation_record(fn, request_id, "RetriesExhausted", attempts, payload, error, body)
        send_to_sqs(failure, json.dumps(record))
    dlq = (getattr(fn, "dead_letter_config", None) or {}).get("TargetArn")
    if dlq and ":sqs:" in dlq:
        try:
            message = json.loads(body).get("errorMessage", "")
        except Exception:
            message = ""
        send_to_sqs(
            dlq,
            payload.decode() if isinstance(payload, bytes) else payload,
            {
                "RequestID": {"DataType": "String", "StringValue": request_id},
                "ErrorCode": {"DataType": "Number", "StringValue": "200"},
                "ErrorMessage": {"DataType": "String", "StringValue": message or error},
            },
        )


def invocation_record(fn, request_id, condition, attempts, payload, error, body):
    """AWS's invocation record for asynchronous destinations
    (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html)."""
    try:
        request = json.loads(payload)
    except Exception:
        request = payload.decode() if isinstance(payload, bytes) else payload
    try:
        response = json.loads(body)
    except Exception:
        response = body.decode(errors="replace") if isinstance(body, bytes) else body
    record = {
        "version": "1.0",
        "timestamp": iso_now(),
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{fn.function_arn}:$LATEST",
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "requestPayload": request,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "responsePayload": response,
    }
    if error:
        record["responseContext"]["functionError"] = "Unhandled"
    return record


# ================================================================ moto's Lambda, patched
def patch_lambda():
    from moto.awslambda.models import LambdaBackend, LambdaFunction

    def _invoke_lambda(self, event=None):
        payload = event if isinstance(event, (str, bytes)) else json.dumps(event or {})
        error, body = run_function(self, payload)
        return body.decode(errors="replace"), error is not None, ""

    def invoke(self, body, request_headers, response_headers):
        headers = {k.lower(): v for k, v in dict(request_headers or {}).items()}
        kind = headers.get("x-amz-invocation-type", "RequestResponse")
        payload = body if body else "{}"
        if kind == "DryRun":
            return b""
        if kind == "Event":
            invoke_async(self, payload)
            return b""
        error, out = run_function(self, payload)
        if error is not None:
            response_headers["x-amz-function-error"] = "Unhandled"
        response_headers["x-amz-executed-version"] = "$LATEST"
        return out

    LambdaFunction._invoke_lambda = _invoke_lambda
    LambdaFunction.invoke = invoke

    # moto drops DeadLetterConfig; AWS keeps it and sends failed asynchronous events there.
    original_init, original_update = LambdaFunction.__init__, LambdaFunction.update_configuration
    original_configuration = LambdaFunction.get_configuration

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        spec = kwargs.get("spec", args[1] if len(args) > 1 else {})
        self.dead_letter_config = spec.get("DeadLetterConfig") or None

    def update_configuration(self, updates):
        if "DeadLetterConfig" in updates:
            self.dead_letter_config = updates["DeadLetterConfig"] or None
        return original_update(self, updates)

    def get_configuration(self, *args, **kwargs):
        out = original_configuration(self, *args, **kwargs)
        if getattr(self, "dead_letter_config", None) and self.dead_letter_config.get("TargetArn"):
            out["DeadLetterConfig"] = self.dead_letter_config
        return out

    LambdaFunction.__init__ = init
    LambdaFunction.update_configuration = update_configuration
    LambdaFunction.get_configuration = get_configuration

    original_create = LambdaBackend.create_event_source_mapping
    original_update_esm = LambdaBackend.update_event_source_mapping

    def create_event_source_mapping(self, spec):
        """moto's own creation, with the mapping detached from moto's per-write hooks (the pollers below
        deliver instead), after AWS's check of an on-failure destination (check_destination)."""
        check_destination(self, spec, spec.get("FunctionName"))
        esm = original_create(self, spec)
        detach_hooks(esm)
        return esm

    def update_event_source_mapping(self, uuid, spec):
        esm = self.get_event_source_mapping(uuid)
        if esm is not None:
            check_destination(self, spec, spec.get("FunctionName") or esm.function_arn)
        return original_update_esm(self, uuid, spec)

    LambdaBackend.create_event_source_mapping = create_event_source_mapping
    LambdaBackend.update_event_source_mapping = update_event_source_mapping


def check_destination(backend, spec, function):
    """Lambda refuses a mapping whose SQS on-failure destination the function's execution role may not send
    to: InvalidParameterValueException "The provided execution role does not have permissions to call
    SendMessage on SQS" (CreateEventSourceMapping / UpdateEventSourceMapping; "Adding a destination",
    AWS Lambda Developer Guide: the execution role needs sqs:SendMessage on the queue). moto does not check.
    Checked here on the role's inline and attached policies: an Allow statement whose Action matches
    sqs:SendMessage and whose Resource matches the queue ARN (wildcards as IAM's). Deny statements and
    permissions boundaries are not evaluated."""
    from moto.awslambda.exceptions import InvalidParameterValueException

    destination = ((spec.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
    if not destination or ":sqs:" not in destination or not function:
        return
    try:
        fn = backend.get_function(function)
    except Exception:
        return  # moto answers for an unknown function itself
    if not role_may_send(fn.account_id, fn.role, destination):
        raise InvalidParameterValueException(
            "The provided execution role does not have permissions to call SendMessage on SQS"
        )


def role_may_send(account_id, role_arn, queue_arn):
    import fnmatch

    from moto.iam.models import iam_backends

    iam = iam_backends[account_id]["aws"]
    try:
        role = iam.get_role_by_arn(role_arn)
    except Exception:
        return False
    documents = list(role.policies.values())
    documents += [v.document for p in role.managed_policies.values() for v in p.versions if v.is_default]

    def listed(value):
        return value if isinstance(value, list) else [value]

    for document in documents:
        doc = json.loads(document) if isinstance(document, str) else document
        for st in listed(doc.get("Statement", [])):
            if st.get("Effect") != "Allow":
                continue
            actions = [a.lower() for a in listed(st.get("Action", []))]
            if not any(fnmatch.fnmatchcase("sqs:sendmessage", a) for a in actions):
                continue
            if any(fnmatch.fnmatchcase(queue_arn, r) for r in listed(st.get("Resource", []))):
                return True
    return False


def detach_hooks(esm):
    from moto.dynamodb.models import dynamodb_backends
    from moto.sqs.models import sqs_backends

    for queue in sqs_backends[esm.account_id][esm.region].queues.values():
        for k, v in list(queue.lambda_event_source_mappings.items()):
            if v is esm:
                del queue.lambda_event_source_mappings[k]
    for table in dynamodb_backends[esm.account_id][esm.region].tables.values():
        for k, v in list(table.lambda_event_source_mappings.items()):
            if v is esm:
                del table.lambda_event_source_mappings[k]


def all_mappings():
    from moto.awslambda.models import lambda_backends

    out = []
    for account in list(lambda_backends.keys()):
        for region, backend in list(lambda_backends[account].items()):
            for esm in list(backend._event_source_mappings.values()):
                out.append((backend, esm))
    return out


def live_function_arns():
    from moto.awslambda.models import lambda_backends

    arns = set()
    for account in list(lambda_backends.keys()):
        for region, backend in list(lambda_backends[account].items()):
            for group in list(backend._lambdas._functions.values()):
                if group.get("latest") is not None:
                    arns.add(group["latest"].function_arn)
                arns |= {fn.function_arn for fn in group.get("versions", [])}
    return arns


def function_of(backend, arn):
    try:
        return backend.get_function_by_arn(arn) or backend._lambdas.get_function_by_name_or_arn_with_qualifier(arn)
    except Exception:
        return None


def compile_filters(esm):
    from moto.events.models import EventPattern

    filters = (esm.filter_criteria or {}).get("Filters") or []
    patterns = []
    for f in filters:
        try:
            patterns.append(EventPattern.load(f.get("Pattern")))
        except Exception as e:
            log.info("mapping %s: filter %r not understood: %s", esm.uuid, f, e)
    return patterns


def matches(patterns, record):
    return not patterns or any(p.matches_event(record) for p in patterns)


def reports_item_failures(esm):
    return "ReportBatchItemFailures" in (esm.function_response_types or [])


def item_failures(body):
    """The `batchItemFailures` identifiers of a response, or None when the response means whole-batch
    failure (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html): an empty or
    null response or list is success; an empty/null identifier or an unparsable list is failure."""
    try:
        response = json.loads(body) if body and body.strip() else None
    except Exception:
        return []
    if not isinstance(response, dict):
        return []
    failures = response.get("batchItemFailures")
    if failures is None:
        return []
    if not isinstance(failures, list):
        return None
    ids = []
    for f in failures:
        ident = f.get("itemIdentifier") if isinstance(f, dict) else None
        if not ident or not isinstance(ident, str):
            return None
        ids.append(ident)
    return ids


# ================================================================ SQS pollers
class SqsPoller(threading.Thread):
    """Lambda's SQS poller (https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html,
    services-sqs-errorhandling.html): ReceiveMessage on moto's queue (so ApproximateReceiveCount and the
    queue's RedrivePolicy to its DLQ are moto's) up to BatchSize, waiting up to
    MaximumBatchingWindowInSeconds; FilterCriteria (non-matching messages are deleted, as AWS does);
    on success the batch is deleted, on a function error it is left to reappear after the visibility
    timeout, with ReportBatchItemFailures only the reported messages are left."""

    def __init__(self, backend, esm):
        super().__init__(daemon=True, name=f"sqs-{esm.uuid[:8]}")
        self.backend, self.esm = backend, esm

    def alive(self):
        return not stopping.is_set() and self.backend._event_source_mappings.get(self.esm.uuid) is self.esm

    def queue(self):
        from moto.sqs.models import sqs_backends

        sqs = sqs_backends[self.esm.account_id][self.esm.region]
        for q in list(sqs.queues.values()):
            if q.queue_arn == self.esm.event_source_arn:
                return sqs, q
        return sqs, None

    def run(self):
        while self.alive():
            try:
                if not self.esm.enabled or not self.poll_once():
                    stopping.wait(POLL_SECONDS)
            except Exception:
                log.exception("sqs poller %s", self.esm.uuid)
                stopping.wait(1)

    def poll_once(self):
        sqs, queue = self.queue()
        fn = function_of(self.backend, self.esm.function_arn)
        if queue is None or fn is None:
            return False
        batch_size = int(self.esm.batch_size or 10)
        window = float(self.esm.max_batch_window or 0)
        visibility = int(queue.visibility_timeout or 30)
        messages = sqs.receive_message(queue.name, batch_size, 0, visibility, ["All"])
        if not messages:
            return False
        started = time.time()
        while len(messages) < batch_size and time.time() - started < window and self.alive():
            stopping.wait(POLL_SECONDS)
            messages += sqs.receive_message(queue.name, batch_size - len(messages), 0, visibility, ["All"])
        patterns = compile_filters(self.esm)
        records = []
        for m in messages:
            record = sqs_record(m, queue, self.esm.region)
            if matches(patterns, filterable_sqs(record)):
                records.append(record)
            else:
                sqs.delete_message(queue.name, m.receipt_handle)
        if not records:
            return True
        error, body = run_function(fn, json.dumps({"Records": records}))
        if error is not None:
            log.info("sqs %s: %d messages failed (%s), left for the visibility timeout", queue.name, len(records), error)
            return True
        failed = item_failures(body) if reports_item_failures(self.esm) else []
        if failed is None:
            return True
        for r in records:
            if r["messageId"] not in failed:
                try:
                    sqs.delete_message(queue.name, r["receiptHandle"])
                except Exception:
                    log.info("sqs %s: delete of %s failed", queue.name, r["messageId"])
        return True


def filterable_sqs(record):
    """The record as filters see it: a JSON body is matched as an object
    (https://docs.aws.amazon.com/lambda/latest/dg/with-sqs-filtering.html)."""
    out = dict(record)
    try:
        body = json.loads(record["body"])
        if isinstance(body, dict):
            out["body"] = body
    except Exception:
        pass
    return out


def sqs_record(m, queue, region):
    """One record of Lambda's SQS event (https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html)."""
    attributes = {
        "ApproximateReceiveCount": str(m.approximate_receive_count),
        "SentTimestamp": str(m.sent_timestamp),
        "SenderId": m.sender_id,
        "ApproximateFirstReceiveTimestamp": str(m.approximate_first_receive_timestamp),
    }
    if m.group_id:
        attributes["MessageGroupId"] = m.group_id
    if m.deduplication_id:
        attributes["MessageDeduplicationId"] = m.deduplication_id
    if m.sequence_number:
        attributes["SequenceNumber"] = m.sequence_number
    message_attributes = {}
    for name, value in (m.message_attributes or {}).items():
        out = {"stringListValues": [], "binaryListValues": [], "dataType": value.get("DataType")}
        if value.get("StringValue") is not None:
            out["stringValue"] = value["StringValue"]
        if value.get("BinaryValue") is not None:
            raw = value["BinaryValue"]
            out["binaryValue"] = raw if isinstance(raw, str) else base64.b64encode(raw).decode()
        message_attributes[name] = out
    record = {
        "messageId": m.id,
        "receiptHandle": m.receipt_handle,
        "body": m.body,
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": m.body_md5,
        "eventSource": "aws:sqs",
        "eventSourceARN": queue.queue_arn,
        "awsRegion": region,
    }
    if message_attributes:
        record["md5OfMessageAttributes"] = m.attribute_md5
    return record


# ================================================================ DynamoDB Streams pollers
class StreamPoller(threading.Thread):
    """Lambda's DynamoDB Streams poller (https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html,
    services-ddb-params.html, services-ddb-batchfailurereporting.html): a cursor on the table's shard
    (never clearing it), StartingPosition TRIM_HORIZON/LATEST, BatchSize, MaximumBatchingWindowInSeconds,
    FilterCriteria (non-matching records are dropped), in shard order; a failed batch blocks the shard
    and is retried: ReportBatchItemFailures checkpoints at the lowest reported SequenceNumber,
    BisectBatchOnFunctionError splits it in halves (splits do not count as retries), MaximumRetryAttempts
    and MaximumRecordAgeInSeconds bound it, and then an invocation record goes to
    DestinationConfig.OnFailure (SQS)."""

    def __init__(self, backend, esm):
        super().__init__(daemon=True, name=f"ddb-{esm.uuid[:8]}")
        self.backend, self.esm = backend, esm
        self.shard, self.cursor = None, 0

    def alive(self):
        return not stopping.is_set() and self.backend._event_source_mappings.get(self.esm.uuid) is self.esm

    def table(self):
        from moto.dynamodb.models import dynamodb_backends

        ddb = dynamodb_backends[self.esm.account_id][self.esm.region]
        for t in list(ddb.tables.values()):
            if t.stream_shard is not None and f"{t.table_arn}/stream/{t.latest_stream_label}" == self.esm.event_source_arn:
                return t
        return None

    def run(self):
        from moto.dynamodb.models import dynamodb_backends  # noqa: F401  (import before the loop)

        while self.alive():
            try:
                if not self.esm.enabled or not self.poll_once():
                    stopping.wait(POLL_SECONDS)
            except Exception:
                log.exception("stream poller %s", self.esm.uuid)
                stopping.wait(1)

    def read(self, n):
        with DYNAMODB_LOCK:
            table = self.table()
            if table is None:
                return None, []
            shard = table.stream_shard
            if shard is not self.shard:
                self.shard = shard
                self.cursor = len(shard.items) if self.esm.starting_position == "LATEST" else 0
            items = shard.items[self.cursor : self.cursor + n]
            return table, [(i.to_json(), i) for i in items]

    def poll_once(self):
        fn = function_of(self.backend, self.esm.function_arn)
        if fn is None:
            return False
        batch_size = int(self.esm.batch_size or 100)
        window = float(self.esm.max_batch_window or 0)
        table, items = self.read(batch_size)
        if not items:
            return False
        started = time.time()
        while len(items) < batch_size and time.time() - started < window and self.alive():
            stopping.wait(POLL_SECONDS)
            table, items = self.read(batch_size)
        read = len(items)
        patterns = compile_filters(self.esm)
        records = []
        for raw, _ in items:
            record = stream_record(raw, self.esm.event_source_arn, self.esm.region)
            if matches(patterns, record):
                records.append(record)
        if records:
            self.deliver(fn, records)
        self.cursor += read
        return True

    def deliver(self, fn, records):
        work = collections.deque([(records, 0)])
        max_retries = self.esm.max_retry_attempts
        max_retries = -1 if max_retries is None else int(max_retries)
        max_age = self.esm.max_record_age
        max_age = -1 if max_age is None else int(max_age)
        while work and self.alive():
            batch, attempts = work.popleft()
            if max_age >= 0 and time.time() - batch[0]["dynamodb"]["ApproximateCreationDateTime"] > max_age:
                self.discard(fn, batch, "RecordAgeExceeded", attempts, None)
                continue
            error, body = run_function(fn, json.dumps({"Records": batch}))
            if error is None:
                if not reports_item_failures(self.esm):
                    continue
                failed = item_failures(body)
                if failed is not None:
                    seqs = [r["dynamodb"]["SequenceNumber"] for r in batch]
                    known = [s for s in failed if s in seqs]
                    if len(known) != len(failed):
                        failed = None  # an identifier not in the batch: whole-batch failure
                    elif not known:
                        continue
                    else:
                        lowest = min(seqs.index(s) for s in known)
                        batch = batch[lowest:]
            attempts += 1
            if self.esm.bisect_on_error and len(batch) > 1:
                half = len(batch) // 2
                work.appendleft((batch[half:], attempts - 1))
                work.appendleft((batch[:half], attempts - 1))
                continue
            if max_retries >= 0 and attempts > max_retries:
                self.discard(fn, batch, "RetryAttemptsExhausted", attempts, error)
                continue
            work.appendleft((batch, attempts))
            stopping.wait(min(0.2 * 2 ** min(attempts, 5), 5))

    def discard(self, fn, batch, condition, attempts, error):
        log.info("stream %s: %d records discarded (%s)", self.esm.event_source_arn, len(batch), condition)
        target = ((self.esm.destination_config or {}).get("OnFailure") or {}).get("Destination")
        if not target or ":sqs:" not in target:
            return
        first, last = batch[0]["dynamodb"], batch[-1]["dynamodb"]

        def iso(seconds):
            return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

        record = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": fn.function_arn,
                "condition": condition,
                "approximateInvokeCount": attempts,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
            "version": "1.0",
            "timestamp": iso_now(),
            "DDBStreamBatchInfo": {
                "shardId": self.shard.id if self.shard else "",
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": iso(first["ApproximateCreationDateTime"]),
                "approximateArrivalOfLastRecord": iso(last["ApproximateCreationDateTime"]),
                "batchSize": len(batch),
                "streamArn": self.esm.event_source_arn,
            },
        }
        if error:
            record["responseContext"]["functionError"] = "Unhandled"
        send_to_sqs(target, json.dumps(record))


def stream_record(raw, source_arn, region):
    """One record of Lambda's DynamoDB Streams event (https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html):
    ApproximateCreationDateTime in whole epoch seconds."""
    dynamodb = dict(raw["dynamodb"])
    created = dynamodb.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        created = created.replace(tzinfo=created.tzinfo or timezone.utc).timestamp()
    dynamodb["ApproximateCreationDateTime"] = int(created or time.time())
    return {
        "eventID": raw["eventID"],
        "eventName": raw["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": dynamodb,
        "eventSourceARN": source_arn,
    }


class Supervisor(threading.Thread):
    """Starts a poller per event source mapping; a poller ends when its mapping is deleted."""

    def __init__(self):
        super().__init__(daemon=True, name="esm-supervisor")
        self.pollers = {}
        self.reaped = time.time()

    def run(self):
        while not stopping.is_set():
            try:
                for backend, esm in all_mappings():
                    poller = self.pollers.get(esm.uuid)
                    if poller is not None and poller.is_alive():
                        continue
                    service = esm.event_source_arn.split(":")[2]
                    if service == "sqs":
                        poller = SqsPoller(backend, esm)
                    elif service == "dynamodb":
                        poller = StreamPoller(backend, esm)
                    else:
                        continue
                    detach_hooks(esm)
                    self.pollers[esm.uuid] = poller
                    poller.start()
                    log.info("poller %s for %s → %s", esm.uuid, esm.event_source_arn, esm.function_arn)
                for key, poller in list(self.pollers.items()):
                    if not poller.is_alive():
                        del self.pollers[key]
                if time.time() - self.reaped > 5:
                    self.reaped = time.time()
                    POOL.reap(live_function_arns())
            except Exception:
                log.exception("supervisor")
            stopping.wait(POLL_SECONDS)


# ================================================================ SNS → Lambda
def patch_sns():
    from moto.sns.models import Subscription

    original_publish = Subscription.publish

    def publish(self, message, message_id, subject=None, message_attributes=None, group_id=None,
                deduplication_id=None, message_structure=None):
        if self.protocol != "lambda":
            return original_publish(self, message, message_id, subject, message_attributes, group_id,
                                    deduplication_id, message_structure)
        if self._filter_policy_matcher is not None and not self._filter_policy_matcher.matches(message_attributes, message):
            return
        if message_structure == "json":
            message = self._parse_message_structure(message, self.protocol)
        event = sns_event(self, message, message_id, subject, message_attributes)
        deliver_sns(self, event)

    Subscription.publish = publish


def sns_event(sub, message, message_id, subject, attributes):
    """Lambda's SNS event (https://docs.aws.amazon.com/lambda/latest/dg/with-sns.html): one record, the
    attributes as published, flattened to {Type, Value}."""
    region = sub.topic.arn.split(":")[3]
    flat = {}
    for name, value in (attributes or {}).items():
        v = value.get("Value")
        if isinstance(v, bytes):
            v = base64.b64encode(v).decode()
        flat[name] = {"Type": value.get("Type"), "Value": v if isinstance(v, str) else json.dumps(v)}
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": sub.arn,
                "Sns": {
                    "Type": "Notification",
                    "MessageId": message_id,
                    "TopicArn": sub.topic.arn,
                    "Subject": subject,
                    "Message": message,
                    "Timestamp": iso_now(),
                    "SignatureVersion": "1",
                    "Signature": base64.b64encode(b"local-stack-unsigned").decode(),
                    "SigningCertUrl": f"https://sns.{region}.amazonaws.com/SimpleNotificationService-local.pem",
                    "UnsubscribeUrl": f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={sub.arn}",
                    "MessageAttributes": flat,
                },
            }
        ]
    }


def deliver_sns(sub, event):
    """SNS hands the event to Lambda's asynchronous invocation; if the function cannot be invoked
    (deleted, for instance) the message goes to the subscription's RedrivePolicy dead-letter queue
    (https://docs.aws.amazon.com/sns/latest/dg/sns-dead-letter-queues.html)."""
    from moto.awslambda.utils import get_backend

    arn = sub.endpoint
    parts = arn.split(":")
    try:
        fn = get_backend(sub.account_id, parts[3]).get_function(parts[6], parts[7] if len(parts) > 7 else None)
    except Exception:
        fn = None
    if fn is None:
        redrive = sub.attributes.get("RedrivePolicy")
        target = json.loads(redrive).get("deadLetterTargetArn") if redrive else None
        log.info("sns delivery to missing function %s; dead-letter queue %s", arn, target)
        if target:
            sns = event["Records"][0]["Sns"]
            envelope = {k: sns[k] for k in ("Type", "MessageId", "TopicArn", "Message", "Timestamp", "SignatureVersion",
                                            "Signature", "SigningCertUrl", "UnsubscribeUrl")}
            if sns.get("Subject") is not None:
                envelope["Subject"] = sns["Subject"]
            if sns["MessageAttributes"]:
                envelope["MessageAttributes"] = sns["MessageAttributes"]
            send_to_sqs(target, json.dumps(envelope))
        return
    invoke_async(fn, json.dumps(event))


# ================================================================ API Gateway Management API
MANAGEMENT_PORT = int(os.environ.get("KAPPA_LOCAL_HARNESS_PORT") or 0)


class ManagementApi(JsonHandler):
    """The `@connections` API of WebSocket stages
    (https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-how-to-call-websocket-api-connections.html),
    at http://127.0.0.1:$KAPPA_LOCAL_HARNESS_PORT/{apiId}/{stage}/@connections/{connectionId}
    (`KAPPA_LOCAL_EXECUTE_API` in .stack/env; functions' KAPPA_WS_MANAGEMENT_ENDPOINT is pointed here):
    POST (PostToConnection), GET (GetConnection), DELETE (DeleteConnection). A connection exists from
    its connect until DeleteConnection, as a client's WebSocket does on AWS; posting to any other id is
    410 GoneException. The harness side, for tests (no WebSocket clients run locally):
      PUT  /_connections/{apiId}/{connectionId}         a client connects
      GET  /_connections/{apiId}/{connectionId}/posts   {"posts": [{"data": <utf-8 text>, "base64": ...}]}
    """

    connections = {}  # (api, id) -> {"connectedAt", "posts": [bytes]}
    lock = threading.Lock()

    def gone(self):
        self.reply(410, {"message": None}, {"x-amzn-ErrorType": "GoneException"})

    def route(self):
        body = self.body()
        path = self.path.split("?")[0]
        m = re.match(r"^/_connections/([^/]+)/([^/]+)(/posts)?$", path)
        if m:
            key = (m.group(1), m.group(2))
            with self.lock:
                if m.group(3):
                    conn = self.connections.get(key)
                    posts = [] if conn is None else list(conn["posts"])
                    return self.reply(200, {"connected": conn is not None and not conn.get("gone"), "posts": [
                        {"data": p.decode(errors="replace"), "base64": base64.b64encode(p).decode()} for p in posts]})
                if self.command == "PUT":
                    self.connections[key] = {"connectedAt": time.time(), "posts": []}
                    return self.reply(200, {})
                if self.command == "DELETE":
                    if key in self.connections:
                        self.connections[key]["gone"] = True
                    return self.reply(200, {})
        m = re.match(r"^/([^/]+)/([^/]+)/@connections/([^/]+)$", path)
        if not m:
            return self.reply(404, {"message": "Not Found"})
        from urllib.parse import unquote

        key = (m.group(1), unquote(m.group(3)))
        with self.lock:
            conn = self.connections.get(key)
            if conn is None or conn.get("gone"):
                return self.gone()
            if self.command == "POST":
                conn["posts"].append(body)
                return self.reply(200, b"")
            if self.command == "DELETE":
                conn["gone"] = True
                return self.reply(204, b"")
            at = datetime.fromtimestamp(conn["connectedAt"], timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            return self.reply(200, {"connectedAt": at, "lastActiveAt": at,
                                    "identity": {"sourceIp": "127.0.0.1", "userAgent": "kappa-local"}})

    do_GET = do_POST = do_PUT = do_DELETE = route


# ================================================================ start / stop
def shutdown(*_):
    stopping.set()
    POOL.close_all()
    sys.exit(0)


DYNAMODB_LOCK = threading.RLock()


def install(dynamodb_lock):
    """`dynamodb_lock`: the lock moto-server.py serves DynamoDB requests under; stream reads take it so
    they never see a transaction's records before it commits or after it rolls back."""
    global DYNAMODB_LOCK
    DYNAMODB_LOCK = dynamodb_lock
    setup_logging()
    SPAWNER.start()
    patch_lambda()
    patch_sns()
    Supervisor().start()
    if MANAGEMENT_PORT:
        server = ThreadingHTTPServer(("127.0.0.1", MANAGEMENT_PORT), ManagementApi)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": POLL_SECONDS}, daemon=True,
                         name="management-api").start()
    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    log.info("local Lambda harness installed; binary %s; management API port %s", local_binary(), MANAGEMENT_PORT)
