"""A plain-text grpcio server with the standard health service (grpc.health.v1.Health),
for the agent's gRPC probe tests. Written without generated code: the messages are
tiny protobufs encoded by hand, so only grpcio is needed.

    health_server.py --serving SERVICE [--serving SERVICE ...] [--not-serving SERVICE ...]

Binds 127.0.0.1:0 and prints the port on stdout. "" (the server as a whole) is a service
name like any other; unknown services get NOT_FOUND, as the real health service answers.
"""

import argparse
import sys
import threading
from concurrent import futures

import grpc

SERVING, NOT_SERVING = 1, 2


def read_service(request: bytes) -> str:
    # HealthCheckRequest { string service = 1; }
    if not request:
        return ""
    if request[0] != 0x0A:
        raise ValueError("unexpected field")
    n, shift, i = 0, 0, 1
    while True:
        b = request[i]
        n |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    return request[i : i + n].decode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serving", action="append", default=[])
    ap.add_argument("--not-serving", action="append", default=[])
    args = ap.parse_args()
    status = {s: SERVING for s in args.serving}
    status.update({s: NOT_SERVING for s in args.not_serving})

    def check(request, context):
        service = read_service(request)
        if service not in status:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return bytes([0x08, status[service]])

    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                check,
                request_deserializer=lambda b: b,
                response_serializer=lambda b: b,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    # Exit when the test closes stdin (or dies).
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop(0)), daemon=True).start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
