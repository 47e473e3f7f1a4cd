"""A proxyless gRPC app for Rudder's end-to-end tests, on real grpcio (C-core).

    server --address IP:PORT --name NAME [--fail-every N] [--csds-out FILE] [--tls-dir D]
        An xDS-enabled server (gRFC A36): it serves only once Rudder sends its server
        Listener, with security from that Listener (xds server credentials). Answers
        rudder.test.Echo/Call with its name; with --fail-every N every Nth call fails
        with UNAVAILABLE. Writes its CSDS (what it holds, ACKED or NACKED) to FILE every
        second.
    client --target xds:///NAME --calls N [--plain] [--duration S] [--wait S]
        Waits (up to --wait seconds) for a first successful call, then makes N calls
        (or calls for S seconds) and prints one JSON line: successes, failures by
        status code, answers by server name and its CSDS.
    direct --address IP:PORT
        One call in plain text straight to a server (no xDS): prints the outcome.

Credentials and the xDS server come from GRPC_XDS_BOOTSTRAP (`xds-server bootstrap
--grpc`). Output is JSON lines on stdout; diagnostics go to stderr.
"""

import argparse
import collections
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
import grpc.experimental
from grpc_csds import ClientStatusDiscoveryServiceServicer
from google.protobuf import json_format

METHOD = "/rudder.test.Echo/Call"
STATUS = {
    0: "UNKNOWN",
    1: "REQUESTED",
    2: "DOES_NOT_EXIST",
    3: "ACKED",
    4: "NACKED",
    5: "RECEIVED_ERROR",
    6: "TIMEOUT",
}


def csds():
    """Every xDS resource this process holds: type, name, status, error."""
    resp = ClientStatusDiscoveryServiceServicer.FetchClientStatus(None, None)
    out = []
    for config in resp.config:
        for x in config.generic_xds_configs:
            entry = {
                "type": x.type_url.rsplit(".", 1)[-1],
                "name": x.name,
                "status": STATUS.get(x.client_status, str(x.client_status)),
            }
            if x.HasField("error_state"):
                entry["error"] = x.error_state.details
            out.append(entry)
    return out


def serve(args):
    calls = [0]
    lock = threading.Lock()

    def call(request, context):
        with lock:
            calls[0] += 1
            n = calls[0]
        if args.fail_every and n % args.fail_every == 0:
            context.abort(grpc.StatusCode.UNAVAILABLE, "failing on purpose")
        return args.name.encode()

    handler = grpc.method_handlers_generic_handler(
        "rudder.test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)}
    )
    if args.tls_dir:
        # A plain mTLS server with the mesh certificate: grpcio 1.85.3's xDS-enabled
        # server aborts the process (pipe.h "Check failed: has_value()") when a handler
        # ends a call with an error status, so the failing server is not xDS-enabled.
        read = lambda f: open(os.path.join(args.tls_dir, f), "rb").read()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        creds = grpc.ssl_server_credentials(
            [(read("xds-client.key"), read("xds-client.crt"))],
            root_certificates=read("xds-ca.crt"),
            require_client_auth=True,
        )
    else:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), xds=True)
        creds = grpc.xds_server_credentials(grpc.insecure_server_credentials())
    server.add_generic_rpc_handlers((handler,))
    server.add_secure_port(args.address, creds)
    server.start()
    print(json.dumps({"started": args.address}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(1.0):
        if args.csds_out:
            tmp = args.csds_out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(csds(), f)
            os.replace(tmp, args.csds_out)
    server.stop(1)


def client(args):
    if args.plain:
        channel = grpc.insecure_channel(args.target)
    else:
        creds = grpc.xds_channel_credentials(
            grpc.experimental.insecure_channel_credentials()
        )
        channel = grpc.secure_channel(args.target, creds)
    stub = channel.unary_unary(METHOD)
    metadata = [tuple(kv.split("=", 1)) for kv in args.metadata]
    result = {"ok": 0, "failed": collections.Counter(), "answers": collections.Counter()}
    deadline = time.monotonic() + args.wait
    first_error = None
    while True:
        try:
            # Fail fast (not wait_for_ready) so the last error says why.
            stub(b"", timeout=5, metadata=metadata)
            break
        except grpc.RpcError as e:
            first_error = f"{e.code().name}: {e.details()}"
            if time.monotonic() > deadline:
                result["unreachable"] = first_error
                result["csds"] = csds()
                print(json.dumps(result), flush=True)
                return
            time.sleep(0.2)
    end = time.monotonic() + args.duration if args.duration else None
    n = 0
    while (end is None and n < args.calls) or (end is not None and time.monotonic() < end):
        n += 1
        try:
            answer = stub(b"", timeout=10, metadata=metadata)
            result["ok"] += 1
            result["answers"][answer.decode()] += 1
        except grpc.RpcError as e:
            result["failed"][e.code().name] += 1
            print(f"call failed: {e.code().name}: {e.details()}", file=sys.stderr)
    result["csds"] = csds()
    print(json.dumps(result), flush=True)


def direct(args):
    channel = grpc.insecure_channel(args.address)
    try:
        channel.unary_unary(METHOD)(b"", timeout=5)
        print(json.dumps({"ok": True}), flush=True)
    except grpc.RpcError as e:
        print(json.dumps({"ok": False, "code": e.code().name, "details": e.details()}), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--address", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--fail-every", type=int, default=0)
    s.add_argument("--csds-out")
    s.add_argument("--tls-dir", help="serve mTLS with these files instead of xDS")
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("--calls", type=int, default=100)
    c.add_argument("--duration", type=float, default=0)
    c.add_argument("--wait", type=float, default=30)
    c.add_argument("--plain", action="store_true")
    c.add_argument("--metadata", action="append", default=[], help="KEY=VALUE sent with every RPC")
    d = sub.add_parser("direct")
    d.add_argument("--address", required=True)
    args = p.parse_args()
    {"server": serve, "client": client, "direct": direct}[args.mode](args)


if __name__ == "__main__":
    main()
