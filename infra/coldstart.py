#!/usr/bin/env python3
"""Cold start of a built Lambda bootstrap against a local stand-in of the Lambda runtime API.

Each run starts a fresh stand-in (an HTTP server on a free loopback port) and a fresh bootstrap
process with the environment Lambda gives a provided.al2023 function, plus DynamoDB/SQS pointed
at an emulator (moto_server) whose table this script creates through CloudFormation from
infra/template.yaml (infra/moto_stack.py). The stand-in answers:

  GET  /2018-06-01/runtime/invocation/next          one API Gateway v2 event, with the
                                                    Lambda-Runtime-* headers Lambda sends; a
                                                    second GET waits until the run ends
  POST /2018-06-01/runtime/invocation/<id>/response the handler's answer (the run ends)
  POST /2018-06-01/runtime/invocation/<id>/error    and /runtime/init/error: a failed run

Times, from the spawn of the process (time.perf_counter, one clock):
  init   until the first GET /next: process start, logging, configuration, SDK clients
  first  until the response POST: init plus handling the first event (the cold request)
and the process's peak resident memory (wait4 rusage), which the function's MemorySize must
exceed.

Usage:
  coldstart.py --bootstrap target/lambda/x86_64/aitbc-pricing.zip --endpoint http://127.0.0.1:PORT
               [--runs 10] [--event samples/requests/apigw-v2-rate-card.json] [--path /v1/market?region=us-west]
Limits: each run waits at most RUN_TIMEOUT_S for the response; --runs at most RUNS_MAX.
"""

import argparse
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RUN_TIMEOUT_S = 30
RUNS_MAX = 100
ROOT = Path(__file__).resolve().parent.parent


class Run:
    """One cold start: the event to hand out and what the stand-in saw, with times."""

    def __init__(self, event: bytes):
        self.event = event
        self.request_id = str(uuid.uuid4())
        self.t_next = None
        self.t_response = None
        self.response = None
        self.error = None
        self.done = threading.Event()


def handler_for(run: Run, t0_holder):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet: the measurements are the output
            pass

        def do_GET(self):
            if self.path != "/2018-06-01/runtime/invocation/next":
                return self._send(404, b"{}")
            if run.t_next is not None:
                # The runtime asks for its next event after answering: hold it until the end of
                # the run, then drop the connection (the process is killed by then).
                run.done.wait(RUN_TIMEOUT_S)
                self.close_connection = True
                return
            run.t_next = time.perf_counter()
            deadline_ms = int(time.time() * 1000) + 15_000
            self._send(200, run.event, {
                "Lambda-Runtime-Aws-Request-Id": run.request_id,
                "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:coldstart",
                "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
            })

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.path == f"/2018-06-01/runtime/invocation/{run.request_id}/response":
                run.t_response = time.perf_counter()
                run.response = body
            else:
                run.error = f"{self.path}: {body[:500]!r}"
            self._send(202, b'{"status":"OK"}')
            run.done.set()

        def _send(self, status, body, headers=None):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:  # the process was killed while we answered: the run is over anyway
                self.close_connection = True

    return Handler


class QuietServer(ThreadingHTTPServer):
    """Ignores the connection resets of a runtime killed at the end of its run."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


def bootstrap_path(arg: str, workdir: str) -> str:
    """The executable: the path itself, or `bootstrap` unpacked from a zip."""
    if arg.endswith(".zip"):
        with zipfile.ZipFile(arg) as z:
            z.extract("bootstrap", workdir)
        path = os.path.join(workdir, "bootstrap")
        os.chmod(path, 0o755)
        return path
    return arg


def signing_key_json() -> str:
    """A throwaway marketplace key in the key file format (core/src/signing.rs)."""
    import nacl.signing

    seed = os.urandom(32)
    public = nacl.signing.SigningKey(seed).verify_key.encode()
    return json.dumps({
        "key_id": "aitbc-coldstart",
        "alg": "Ed25519",
        "secret_key": base64.b64encode(seed).decode(),
        "public_key": base64.b64encode(public).decode(),
    })


def one_run(exe: str, event: bytes, env: dict) -> dict:
    run = Run(event)
    server = QuietServer(("127.0.0.1", 0), handler_for(run, None))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}")
    t0 = time.perf_counter()
    proc = subprocess.Popen([exe], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    finished = run.done.wait(RUN_TIMEOUT_S)
    proc.send_signal(signal.SIGKILL)
    _, status, rusage = os.wait4(proc.pid, 0)
    logs = proc.stdout.read().decode(errors="replace")
    server.shutdown()
    if not finished or run.error or run.t_response is None:
        raise SystemExit(f"run failed: finished={finished} error={run.error}\n--- process output ---\n{logs}")
    answer = json.loads(run.response)
    return {
        "init_ms": (run.t_next - t0) * 1000,
        "first_ms": (run.t_response - t0) * 1000,
        "handler_ms": (run.t_response - run.t_next) * 1000,
        "max_rss_mib": rusage.ru_maxrss / 1024,
        "status": answer.get("statusCode"),
        "logs": logs,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True, help="a bootstrap binary or a zip holding one")
    parser.add_argument("--endpoint", required=True, help="moto_server URL for DynamoDB and SQS")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--event", default=str(ROOT / "samples/requests/apigw-v2-rate-card.json"))
    parser.add_argument("--path", help="replace the event's path (and query) with this one, e.g. /v1/market?region=us-west")
    parser.add_argument("--function-name", default="coldstart")
    args = parser.parse_args()
    if not 1 <= args.runs <= RUNS_MAX:
        raise SystemExit(f"--runs must be 1..={RUNS_MAX}")

    event = json.loads(Path(args.event).read_text())
    if args.path:
        path, _, query = args.path.partition("?")
        method = event["requestContext"]["http"]["method"]
        event.update(rawPath=path, rawQueryString=query, routeKey=f"{method} {path}")
        event["requestContext"].update(routeKey=f"{method} {path}")
        event["requestContext"]["http"]["path"] = path
        if query:
            event["queryStringParameters"] = dict(kv.split("=", 1) for kv in query.split("&"))
    event_bytes = json.dumps(event).encode()

    # The table and queues, through CloudFormation from the template, under a fresh prefix.
    prefix = "cold" + uuid.uuid4().hex[:8]
    stack = subprocess.run(
        [sys.executable, str(ROOT / "infra/moto_stack.py"), "--endpoint", args.endpoint,
         "--template", str(ROOT / "infra/template.yaml"), "--prefix", prefix, "--stack-name", prefix],
        check=True, capture_output=True, text=True)
    json.loads(stack.stdout)

    # What Lambda sets for a provided.al2023 function (and the template's variables).
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
        "AWS_LAMBDA_FUNCTION_NAME": args.function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{args.function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]coldstart",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_ENDPOINT_URL": args.endpoint,
        "AITBC_TABLE_PREFIX": prefix,
        "AITBC_FEE_BPS": "250",
        "AITBC_OPEN_SIGNUP": "false",
        "AITBC_FAUCET": "false",
        "AITBC_LOG": "info,aitbc_functions::telemetry=debug",
        "AITBC_PAYOUT_THRESHOLD": "10",
        "AITBC_SIGNING_KEY": signing_key_json(),
    }
    with tempfile.TemporaryDirectory() as workdir:
        exe = bootstrap_path(args.bootstrap, workdir)
        runs = [one_run(exe, event_bytes, env) for _ in range(args.runs)]

    def summary(key):
        values = sorted(r[key] for r in runs)
        return {"min": round(values[0], 2), "median": round(statistics.median(values), 2), "max": round(values[-1], 2)}

    statuses = sorted({r["status"] for r in runs})
    report = {
        "bootstrap": args.bootstrap,
        "event": f'{event["requestContext"]["http"]["method"]} {event["rawPath"]}',
        "runs": len(runs),
        "statuses": statuses,
        "init_ms": summary("init_ms"),
        "first_event_ms": summary("first_ms"),
        "handler_ms": summary("handler_ms"),
        "max_rss_mib": summary("max_rss_mib"),
        "sample_log": runs[-1]["logs"].strip().splitlines()[-3:],
    }
    print(json.dumps(report, indent=2))
    if statuses != [200]:
        raise SystemExit(f"expected every answer to be 200, got {statuses}")


if __name__ == "__main__":
    main()
