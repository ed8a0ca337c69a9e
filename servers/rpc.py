"""What both server kinds share: a gRPC server with PFS's limits, the secret check, TLS, one
process per port, requests that do not parse refused quietly, and a clean stop on Ctrl-C or
SIGTERM.

The metaserver runs on asyncio (thousands of sessions, each a stream and waiting token requests,
cost memory, not threads); fileservers run on threads (few connections, heavy data, and a disk
call in a thread without a hop back to an event loop).
"""
from __future__ import annotations

import asyncio
import errno
import hmac
import inspect
import ipaddress
import logging
import signal
import socket
import time
from concurrent import futures

import grpc

from pfs.protocol.transport import (
    SECRET_HEADER,
    SERVER_OPTIONS,
    SESSION_HEADER,
    Credentials,
    parse_session,
)

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


class _Undecodable:
    """A request whose bytes are not the message its method takes."""

    def __init__(self, deserializer) -> None:
        kind = getattr(getattr(deserializer, "__self__", None), "__name__", "request")
        self.problem = f"the request is not a valid {kind} message"


def _lenient(deserializer):
    """`deserializer`, returning an _Undecodable for bytes that do not parse, where gRPC would
    log a traceback for every such call."""
    def parse(data: bytes):
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError, or whatever garbage raises
            return _Undecodable(deserializer)
    return parse


def _refusal_of(method: str, bad: _Undecodable) -> str:
    log.debug("refused %s: %s", method, bad.problem)
    return bad.problem


def _check_sync(method: str, kind: str, behaviour):
    """`behaviour` refusing an _Undecodable request, on the threaded server (whose methods each
    take one request)."""
    if kind.startswith("stream_"):
        return None

    def checked(request, context):
        if isinstance(request, _Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, _refusal_of(method, request))
        return behaviour(request, context)
    return checked


def _check_aio(method: str, kind: str, behaviour):
    """The same on the asyncio server. A stream of requests ends at one that does not parse, as
    if the client had closed it, and the call then ends with INVALID_ARGUMENT."""
    if kind == "unary_unary":
        async def checked(request, context):
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _refusal_of(method, request))
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result
        return checked
    if kind == "stream_stream" and inspect.isasyncgenfunction(behaviour):
        async def checked_stream(requests, context):
            bad: list[_Undecodable] = []

            async def parsed():
                async for request in requests:
                    if isinstance(request, _Undecodable):
                        bad.append(request)
                        return
                    yield request
            async for reply in behaviour(parsed(), context):
                yield reply
            if bad:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _refusal_of(method, bad[0]))
        return checked_stream
    return None  # PFS has no such methods


class _Checked:
    """Each method's handler with its requests parsed leniently and its behaviour wrapped by
    `check(method, kind, behaviour)`, which refuses _Undecodable requests; made once per method.
    A handler of raw bytes (no deserializer), or one `check` has no wrapper for, stays as it
    is."""

    def __init__(self, check) -> None:
        self._check = check
        self._made: dict[str, tuple[object, object]] = {}

    def __call__(self, method: str, handler):
        if handler is None or handler.request_deserializer is None:
            return handler
        made = self._made.get(method)
        if made is None or made[0] is not handler:
            kind = next(k for k in ("unary_unary", "unary_stream", "stream_unary",
                                    "stream_stream") if getattr(handler, k) is not None)
            checked = self._check(method, kind, getattr(handler, kind))
            made = self._made[method] = (handler, handler if checked is None else handler._replace(
                request_deserializer=_lenient(handler.request_deserializer), **{kind: checked}))
        return made[1]


class _RejectUndecodable(grpc.ServerInterceptor):
    """INVALID_ARGUMENT, and no traceback in the log, for a request that does not parse."""

    def __init__(self) -> None:
        self._checked = _Checked(_check_sync)

    def intercept_service(self, continuation, handler_call_details):
        return self._checked(handler_call_details.method, continuation(handler_call_details))


class _RejectUndecodableAio(grpc.aio.ServerInterceptor):
    """The same for an asyncio server."""

    def __init__(self) -> None:
        self._checked = _Checked(_check_aio)

    async def intercept_service(self, continuation, handler_call_details):
        return self._checked(handler_call_details.method,
                             await continuation(handler_call_details))


def _check_port_free(host: str, port: int) -> None:
    """Binds `host:port` as gRPC would and lets it go, so that a port in use is reported in one
    line here rather than after a line of gRPC's own log. (gRPC's bind still decides.)"""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise SystemExit(f"cannot listen on {host}:{port}: {e.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            try:
                probe.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise AlreadyRunning(_in_use(host, port)) from None
                raise SystemExit(f"cannot listen on {host}:{port}: {e.strerror}") from None


def _in_use(host: str, port: int) -> str:
    return (f"cannot listen on {host}:{port}: the port is in use by {port_holder(port)}; stop "
            "it or choose another --port")


def _bind(server, host: str, port: int, credentials: Credentials) -> int:
    _check_port_free(host, port)
    address = f"{host}:{port}"
    try:
        if credentials.tls_cert and credentials.tls_key:
            client_ca = None
            if credentials.tls_client_ca:
                with open(credentials.tls_client_ca, "rb") as f:
                    client_ca = f.read()
            with open(credentials.tls_key, "rb") as k, open(credentials.tls_cert, "rb") as c:
                creds = grpc.ssl_server_credentials([(k.read(), c.read())],
                                                    root_certificates=client_ca,
                                                    require_client_auth=client_ca is not None)
            bound = server.add_secure_port(address, creds)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:  # taken between the check and gRPC's bind
        raise AlreadyRunning(_in_use(host, port))
    return bound


def start_server(register, host: str, port: int, credentials: Credentials,
                 threads: int) -> tuple[grpc.Server, int]:
    """Starts a threaded server with `register(server)` adding the servicers; it and its port."""
    interceptors = [_RequireSecret(credentials.secret)] if credentials.secret else []
    interceptors.append(_RejectUndecodable())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads),
                         options=SERVER_OPTIONS, interceptors=interceptors)
    register(server)
    bound = _bind(server, host, port, credentials)
    server.start()
    return server, bound


async def start_aio_server(register, host: str, port: int, credentials: Credentials,
                           more_interceptors=()) -> tuple[grpc.aio.Server, int]:
    """The same, as an asyncio server; `more_interceptors` see calls after those checks."""
    interceptors = [_RequireSecretAio(credentials.secret)] if credentials.secret else []
    interceptors.append(_RejectUndecodableAio())
    interceptors += more_interceptors
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
    register(server)
    bound = _bind(server, host, port, credentials)
    await server.start()
    return server, bound


def check_exposure(host: str, credentials: Credentials, allow_insecure: bool) -> None:
    """Without a secret a server listens on loopback only, unless told otherwise (README, "One of each")."""
    if credentials.secret or credentials.tls_client_ca or allow_insecure or _loopback(host):
        return
    raise SystemExit(f"refusing to listen on {host} without a shared secret: set PFS_SECRET "
                     "(or --secret-file), or pass --insecure to accept unauthenticated clients")


def _loopback(host: str) -> bool:
    """Whether only this machine reaches `host`: localhost, 127.0.0.0/8 or ::1."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


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
