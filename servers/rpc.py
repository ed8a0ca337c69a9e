"""What both server kinds share: a gRPC server with PFS's limits, the secret check, TLS, one
process per port, and a clean stop on Ctrl-C or SIGTERM.

The metaserver runs on asyncio (thousands of sessions, each a stream and waiting token requests,
cost memory, not threads); fileservers run on threads (few connections, heavy data, and a disk
call in a thread without a hop back to an event loop).
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import time
from concurrent import futures

import grpc

from pfs.transport import SECRET_HEADER, SERVER_OPTIONS, SESSION_HEADER, Credentials, parse_session

from .instance import AlreadyRunning, port_holder

log = logging.getLogger("pfs.rpc")

REFUSAL = "missing or wrong PFS secret: set PFS_SECRET to the cluster's secret"


def _has_secret(secret: bytes, handler_call_details) -> bool:
    sent = dict(handler_call_details.invocation_metadata or ()).get(SECRET_HEADER, "")
    if hmac.compare_digest(sent.encode(), secret):
        return True
    log.warning("refused %s: missing or wrong secret", handler_call_details.method)
    return False


def _refusal(handler, refuse):
    """A handler of the same kind as `handler` that runs `refuse`."""
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


class _RequireSecret(grpc.ServerInterceptor):
    """Refuses every call that does not carry the cluster's shared secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or _has_secret(self._secret, handler_call_details):
            return handler
        return _refusal(handler, lambda request, context: context.abort(
            grpc.StatusCode.UNAUTHENTICATED, REFUSAL))


class _RequireSecretAio(grpc.aio.ServerInterceptor):
    """The same for an asyncio server."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or _has_secret(self._secret, handler_call_details):
            return handler

        async def refuse(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)
        return _refusal(handler, refuse)


def session_of(context) -> tuple[int, bytes] | None:
    """The (client id, key) a call names in its metadata, or None."""
    for key, value in context.invocation_metadata() or ():
        if key == SESSION_HEADER:
            return parse_session(value)
    return None


def _bind(server, host: str, port: int, credentials: Credentials) -> int:
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
    return bound


def start_server(register, host: str, port: int, credentials: Credentials,
                 threads: int) -> tuple[grpc.Server, int]:
    """Starts a threaded server with `register(server)` adding the servicers; it and its port."""
    interceptors = [_RequireSecret(credentials.secret)] if credentials.secret else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads),
                         options=SERVER_OPTIONS, interceptors=interceptors)
    register(server)
    bound = _bind(server, host, port, credentials)
    server.start()
    return server, bound


async def start_aio_server(register, host: str, port: int,
                           credentials: Credentials) -> tuple[grpc.aio.Server, int]:
    """The same, as an asyncio server."""
    interceptors = [_RequireSecretAio(credentials.secret)] if credentials.secret else []
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
    register(server)
    bound = _bind(server, host, port, credentials)
    await server.start()
    return server, bound


def check_exposure(host: str, credentials: Credentials, allow_insecure: bool) -> None:
    """Without a secret a server listens on loopback only, unless told otherwise (README, "One of each")."""
    if credentials.secret or allow_insecure or host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        return
    raise SystemExit(f"refusing to listen on {host} without a shared secret: set PFS_SECRET "
                     "(or --secret-file), or pass --insecure to accept unauthenticated clients")


def stop_on_signals_aio() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM (asyncio runs the handler safely on the loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


class StopOnSignals:
    """Set by Ctrl-C or SIGTERM, for a process without an event loop; used where a
    threading.Event would be (set, is_set, wait). A signal handler may interrupt the main
    thread while it holds a lock (an Event's own, inside its wait), so the handler only raises
    a flag, and waiting polls it (a signal that lands on one of gRPC's threads is run by Python
    only when the main thread wakes)."""

    def __init__(self) -> None:
        self._set = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.set())

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._set and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return self._set
