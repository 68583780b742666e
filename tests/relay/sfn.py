"""Runs tally's MD5 relay state machine (deploy/relay/statemachine.asl.json) once, locally, and
prints one JSON line: status, output, error, cause, lambda_invocations, states, max_state_bytes.

Run with the moto venv's python (`tally-relay-python`, installed by scripts/tools):

    AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:PORT tally-relay-python tests/relay/sfn.py \
        --asl deploy/relay/statemachine.asl.json --event deploy/relay/event.json \
        --hash-function tally-md5-relay-hash --tag-function tally-md5-relay-tag \
        [--bucket B --key K --etag E --size N [--version-id V]] [--timeout 600]

The parts, and what each one is:
- The state machine is executed by moto 5.2.5's Step Functions interpreter (a port of LocalStack's),
  in decorator mode with `execute_state_machine` on. Its Lambda Task states call boto3's
  `lambda.invoke`, which in decorator mode passes any non-AWS URL through to the network, so with
  AWS_ENDPOINT_URL_LAMBDA set they reach cargo-lambda's emulator. The ARNs in the ASL are replaced by
  the function names (Lambda's Invoke takes a name, an ARN or a partial ARN alike), as SAM's
  DefinitionSubstitutions replace them with the real ARNs on AWS. The relay has no S3 SDK
  integration state (the tag step is a function), so AWS_ENDPOINT_URL_S3 only matters to the
  functions themselves.
- The emulator is `cargo lambda watch --only-lambda-apis` (cargo-lambda 1.9.2). How it routes two
  function names to two processes (read in its source, crates/cargo-lambda-watch, at the 1.9.2 tag):
  an Invoke of /2015-03-31/functions/NAME/invocations is queued under NAME, and NAME must be a binary
  of the manifest the emulator was started with (else it answers that the function is missing; see
  tests/relay/emulator/Cargo.toml); a runtime process started with
  AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:PORT/.rt/NAME long-polls (the scheme is needed: the
  lambda_runtime crate parses the variable as a URI, and host:port/path without one is not)
  /.rt/NAME/2018-06-01/runtime/invocation/next and so takes only NAME's invocations. Each
  invocation's `lambda-runtime-deadline-ms` is always 600000 (1970): the handler must fall back to
  TALLY_RELAY_BUDGET.
- How a function error becomes the error name a Retry/Catch sees. On AWS, Invoke answers 200 with
  `X-Amz-Function-Error: Unhandled` and the payload {"errorType", "errorMessage"}; Step Functions
  names the error after errorType and puts the payload in the cause. moto does the same (its
  StateTaskServiceLambda._from_error: FunctionError set -> error = payload["errorType"], cause = the
  payload as JSON). But cargo-lambda's emulator answers a function error with HTTP 500 and no
  X-Amz-Function-Error header; boto3 then raises a ClientError with the code "500", which moto
  would name `Lambda.500` (its _error_cause_from_client_error), and which in fact ends the
  execution with `States.Runtime` and the cause KeyError('RequestId'), as the emulator sends no
  request id (seen here with this shaping turned off). Either way a Catch or Retry on
  `ObjectChanged` or `S3Transient` could never match. So this driver puts a small proxy between moto and the emulator
  (`_AwsInvokeShape`) that answers a function error the way AWS's Invoke does (200 +
  X-Amz-Function-Error: Unhandled, body unchanged), and passes everything else through unchanged.
- Not real here: IAM (nothing checks the template's policies), the EventBridge rule (the saved event
  is fed in as the execution's input), the Lambda deadline (see above), and the payload limit, which
  is reported as max_state_bytes for the caller to compare with 262,144 bytes.
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _fail(msg: str, code: int = 2) -> "None":
    print(f"sfn.py: {msg}", file=sys.stderr)
    sys.exit(code)


class _AwsInvokeShape(BaseHTTPRequestHandler):
    """Forwards Lambda API calls to the emulator; a function error (HTTP 4xx/5xx whose body is a
    Lambda error payload) is answered as AWS answers it: 200 with X-Amz-Function-Error."""

    upstream: "tuple[str, int]" = ("127.0.0.1", 9000)
    bound_s: float = 600.0

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        conn = http.client.HTTPConnection(*self.upstream, timeout=self.bound_s)
        try:
            headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
            conn.request("POST", self.path, body=body, headers=headers)
            resp = conn.getresponse()
            status, data = resp.status, resp.read()
        except OSError as e:
            status = 502
            data = json.dumps({"Type": "Service", "message": f"emulator unreachable: {e}"}).encode()
        finally:
            conn.close()
        function_error = False
        if status >= 400:
            try:
                function_error = "errorType" in json.loads(data)
            except ValueError:
                pass
        self.send_response(200 if function_error else status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if function_error:
            self.send_header("X-Amz-Function-Error", "Unhandled")
        self.end_headers()
        self.wfile.write(data)


def _start_shim(emulator: str, bound_s: float) -> ThreadingHTTPServer:
    u = urllib.parse.urlsplit(emulator)
    if not u.hostname or not u.port:
        _fail(f"AWS_ENDPOINT_URL_LAMBDA={emulator}: expected http://HOST:PORT of the emulator")
    handler = type("Shim", (_AwsInvokeShape,), {"upstream": (u.hostname, u.port), "bound_s": bound_s})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _event(args: argparse.Namespace) -> dict:
    with open(args.event) as f:
        ev = json.load(f)
    d = ev["detail"]
    if args.bucket is not None:
        d["bucket"]["name"] = args.bucket
        ev["resources"] = [f"arn:aws:s3:::{args.bucket}"]
    if args.key is not None:
        d["object"]["key"] = args.key
    if args.etag is not None:
        d["object"]["etag"] = args.etag
    if args.size is not None:
        d["object"]["size"] = args.size
    if args.version_id is not None:
        if args.version_id == "":
            d["object"].pop("version-id", None)
        else:
            d["object"]["version-id"] = args.version_id
    return ev


def _history(sfn, arn: str) -> list:
    events, token = [], None
    for _ in range(10_000):
        kw = {"executionArn": arn, "maxResults": 1000}
        if token:
            kw["nextToken"] = token
        page = sfn.get_execution_history(**kw)
        events.extend(page["events"])
        token = page.get("nextToken")
        if not token:
            return events
    _fail("the execution history never ended")


def _summary(history: list) -> "tuple[int, list, int]":
    invocations = 0
    states = []
    biggest = 0
    for e in history:
        t = e["type"]
        if t == "TaskScheduled" and e.get("taskScheduledEventDetails", {}).get("resourceType") == "lambda":
            invocations += 1
        elif t == "LambdaFunctionScheduled":
            invocations += 1
        for k, v in e.items():
            if k.endswith("EventDetails") and isinstance(v, dict):
                if t.endswith("StateEntered"):
                    states.append(v.get("name"))
                for field in ("input", "output", "parameters"):
                    if isinstance(v.get(field), str):
                        biggest = max(biggest, len(v[field].encode()))
    return invocations, states, biggest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--asl", required=True)
    p.add_argument("--event", required=True)
    p.add_argument("--hash-function", required=True)
    p.add_argument("--tag-function", required=True)
    p.add_argument("--bucket")
    p.add_argument("--key")
    p.add_argument("--etag")
    p.add_argument("--size", type=int)
    p.add_argument("--version-id", help="'' removes it (an unversioned bucket's event)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the execution")
    p.add_argument("--region", default="us-east-1")
    args = p.parse_args()

    emulator = os.environ.get("AWS_ENDPOINT_URL_LAMBDA")
    if not emulator:
        _fail("set AWS_ENDPOINT_URL_LAMBDA to the Lambda emulator (cargo lambda watch --only-lambda-apis)")
    # moto answers only what goes to AWS's own hosts: an endpoint set for every service (or for
    # Step Functions) would send the state machine's own API calls elsewhere.
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SFN"):
        os.environ.pop(var, None)
    shim = _start_shim(emulator, args.timeout)
    os.environ["AWS_ENDPOINT_URL_LAMBDA"] = f"http://127.0.0.1:{shim.server_address[1]}"

    with open(args.asl) as f:
        definition = f.read()
    for placeholder, name in (("${HashFunctionArn}", args.hash_function), ("${TagFunctionArn}", args.tag_function)):
        if placeholder not in definition:
            _fail(f"{args.asl} has no {placeholder} to substitute")
        definition = definition.replace(placeholder, name)
    event = _event(args)

    import boto3  # after the endpoint is set
    from moto import mock_aws

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn = boto3.client("stepfunctions", region_name=args.region)
        machine = sfn.create_state_machine(
            name="tally-md5-relay",
            definition=definition,
            roleArn="arn:aws:iam::123456789012:role/tally-md5-relay",
        )["stateMachineArn"]
        arn = sfn.start_execution(stateMachineArn=machine, input=json.dumps(event))["executionArn"]
        until = time.monotonic() + args.timeout
        while True:
            d = sfn.describe_execution(executionArn=arn)
            if d["status"] != "RUNNING":
                break
            if time.monotonic() > until:
                _fail(f"the execution was still RUNNING after {args.timeout:.0f} s (is every function process up?)", 3)
            time.sleep(0.05)
        invocations, states, biggest = _summary(_history(sfn, arn))
    shim.shutdown()

    output = d.get("output")
    print(
        json.dumps(
            {
                "status": d["status"],
                "output": json.loads(output) if output else None,
                "error": d.get("error"),
                "cause": d.get("cause"),
                "lambda_invocations": invocations,
                "states": states,
                "max_state_bytes": biggest,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
