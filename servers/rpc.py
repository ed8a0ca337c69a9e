"""What both server kinds share: an asyncio gRPC server with PFS's limits, the secret check, TLS,
one process per port, and a clean stop on Ctrl-C or SIGTERM."""
from __future__ import annotations

import asyncio
import hmac
import logging
import signal

import grpc

from pfs.transport import SECRET_HEADER, SERVER_OPTIONS, SESSION_HEADER, Credentials, parse_session

from .instance import AlreadyRunning, port_holder

log = logging.getLogger("pfs.rpc")


class _RequireSecret(grpc.aio.ServerInterceptor):
    """Refuses every call that does not carry the cluster's shared secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        sent = dict(handler_call_details.invocation_metadata or ()).get(SECRET_HEADER, "")
        if handler is None or hmac.compare_digest(sent.encode(), self._secret):
            return handler
        log.warning("refused %s: missing or wrong secret", handler_call_details.method)

        async def refuse(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or wrong PFS secret: set PFS_SECRET to the cluster's secret")
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)


def session_of(context) -> tuple[int, bytes] | None:
    """The (client id, key) a call names in its metadata, or None."""
    for key, value in context.invocation_metadata() or ():
        if key == SESSION_HEADER:
            return parse_session(value)
    return None


async def start_server(register, host: str, port: int,
                       credentials: Credentials) -> tuple[grpc.aio.Server, int]:
    """Starts a server with `register(server)` adding the servicers; returns it and its port."""
    interceptors = [_RequireSecret(credentials.secret)] if credentials.secret else []
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
    register(server)
    address = f"{host}:{port}"
    try:
        if credentials.tls_cert and credentials.tls_key:
            with open(credentials.tls_key, "rb") as k, open(credentials.tls_cert, "rb") as c:
                creds = grpc.ssl_server_credentials([(k.read(), c.read())])
            bound = server.add_secure_port(address, creds)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise AlreadyRunning(f"cannot listen on {address}: the port is in use by "
                             f"{port_holder(port)}; stop it or choose another --port")
    await server.start()
    return server, bound


def check_exposure(host: str, credentials: Credentials, allow_insecure: bool) -> None:
    """Without a secret a server listens on loopback only, unless told otherwise (SPEC §6)."""
    if credentials.secret or allow_insecure or host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        return
    raise SystemExit(f"refusing to listen on {host} without a shared secret: set PFS_SECRET "
                     "(or --secret-file), or pass --insecure to accept unauthenticated clients")


def stop_on_signals() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM (asyncio runs the handler safely on the loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
