"""What both server kinds share: a gRPC server with PFS's limits, secret check and TLS."""
from __future__ import annotations

import hmac
import logging
import threading
from concurrent import futures

import grpc

from pfs.transport import CHANNEL_OPTIONS, SECRET_HEADER, Credentials

log = logging.getLogger("pfs.rpc")


class _RequireSecret(grpc.ServerInterceptor):
    """Refuses every call that does not carry the cluster's shared secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "missing or wrong PFS secret: set PFS_SECRET to the cluster's secret")
        self._refusal = grpc.unary_unary_rpc_method_handler(refuse)
        self._stream_refusal = grpc.stream_stream_rpc_method_handler(refuse)

    def intercept_service(self, continuation, handler_call_details):
        sent = dict(handler_call_details.invocation_metadata or ()).get(SECRET_HEADER, "")
        if hmac.compare_digest(sent.encode(), self._secret):
            return continuation(handler_call_details)
        log.warning("refused %s: missing or wrong secret", handler_call_details.method)
        if handler_call_details.method.endswith("/Session"):
            return self._stream_refusal
        return self._refusal


def start_server(register, host: str, port: int, credentials: Credentials,
                 max_workers: int) -> tuple[grpc.Server, int]:
    """Starts a server with `register(server)` adding the servicers; returns it and its port."""
    interceptors = [_RequireSecret(credentials.secret)] if credentials.secret else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         options=CHANNEL_OPTIONS, interceptors=interceptors)
    register(server)
    address = f"{host}:{port}"
    if credentials.tls_cert and credentials.tls_key:
        with open(credentials.tls_key, "rb") as k, open(credentials.tls_cert, "rb") as c:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot listen on {address}: is the port in use?")
    server.start()
    return server, bound


def check_exposure(host: str, credentials: Credentials, allow_insecure: bool) -> None:
    """Without a secret a server listens on loopback only, unless told otherwise (SPEC §6)."""
    if credentials.secret or allow_insecure or host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        return
    raise SystemExit(f"refusing to listen on {host} without a shared secret: set PFS_SECRET "
                     "(or --secret-file), or pass --insecure to accept unauthenticated clients")


def wait_for(stop: threading.Event) -> None:
    """Waits until `stop` is set, waking now and then: a signal can land on one of gRPC's
    threads, and Python runs its handler (which sets `stop`) only when the main thread wakes."""
    while not stop.wait(0.5):
        pass
