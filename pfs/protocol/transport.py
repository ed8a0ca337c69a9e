"""How every PFS process reaches another: gRPC channel options, the shared secret, TLS. Both
ends import these limits, so a message the client may send is one the server accepts.
"""
from __future__ import annotations

import os
import pathlib
import threading
from typing import Callable

import grpc

#: The largest payload of one fileserver Read/Write; larger transfers are split by the client.
MAX_CHUNK = 8 << 20
#: gRPC's own 4 MiB default is too small for a full chunk plus framing.
MAX_MESSAGE = MAX_CHUNK + (1 << 20)

#: While a call is under way, a peer that stops answering (frozen, cut off by a partition) is
#: noticed within KEEPALIVE_SECONDS + KEEPALIVE_TIMEOUT_SECONDS: the connection is closed and
#: the call fails (UNAVAILABLE), rather than waiting out its deadline.
KEEPALIVE_SECONDS = 2.0
KEEPALIVE_TIMEOUT_SECONDS = 3.0
_LIMITS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]
#: A server that went away (restarting, say) is tried again at least this often, so that a
#: retry soon after it is back finds it (gRPC's own backoff grows to two minutes).
RECONNECT_SECONDS = 1.0
CHANNEL_OPTIONS = _LIMITS + [
    ("grpc.keepalive_time_ms", int(KEEPALIVE_SECONDS * 1000)),
    ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_SECONDS * 1000)),
    ("grpc.http2.ping_timeout_ms", int(KEEPALIVE_TIMEOUT_SECONDS * 1000)),  # (gRPC >= 1.6x)
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", int(RECONNECT_SECONDS * 1000)),
]
#: Servers never share a port with another process (gRPC would allow it by default), and take
#: the clients' keepalive pings as often as they come.
SERVER_OPTIONS = _LIMITS + [
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", int(KEEPALIVE_SECONDS * 500)),
    ("grpc.http2.max_ping_strikes", 0),
]
#: Where clients and fileservers find the metaserver unless told (PFS_METASERVER).
DEFAULT_METASERVER = "127.0.0.1:50050"


def default_metaserver() -> str:
    """Where the metaserver is unless a caller says: PFS_METASERVER, else the default. Several
    metaservers (one active, the others standing by) are HOST:PORT,HOST:PORT,..."""
    return os.environ.get("PFS_METASERVER") or DEFAULT_METASERVER


#: The trailing metadata entry by which a standby metaserver names the active one.
ACTIVE_HEADER = "pfs-active"


SECRET_HEADER = "pfs-secret"
#: The metadata entry naming the caller's session: "<client id>:<session key in hex>".
SESSION_HEADER = "pfs-session"
#: Bytes of a session key (256 bits, from `secrets`).
SESSION_KEY_BYTES = 32


def session_metadata(client_id: int, key: bytes) -> tuple[tuple[str, str], ...]:
    return ((SESSION_HEADER, f"{client_id}:{key.hex()}"),)


def parse_session(value: str | None) -> tuple[int, bytes] | None:
    """(client id, key) from a SESSION_HEADER value, or None when it is malformed."""
    client_id, sep, key = (value or "").partition(":")
    if not sep or not client_id.isdigit() or len(client_id) > 20 \
            or len(key) != 2 * SESSION_KEY_BYTES:
        return None
    try:
        return int(client_id), bytes.fromhex(key)
    except ValueError:
        return None


def read_secret_file(path: str) -> str:
    """The secret a file holds (surrounding white space dropped); ValueError if it holds none,
    as an empty secret would turn authentication off."""
    secret = pathlib.Path(path).read_text().strip()
    if not secret:
        raise ValueError(f"the secret file {path} is empty: put the cluster's secret in it (an "
                         "empty secret would turn authentication off)")
    return secret


class Credentials:
    """The shared secret and TLS material of a cluster, from flags or the environment (the
    secret from PFS_SECRET_FILE's file, else PFS_SECRET)."""

    def __init__(self, secret: str | None = None, tls_ca: str | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None,
                 tls_client_ca: str | None = None) -> None:
        """tls_cert/tls_key: a server's own certificate, which it serves with and shows when
        it connects to another server; tls_client_ca: a server accepts only connections that
        show a certificate signed by it (mutual TLS). A client shows PFS_TLS_CERT/PFS_TLS_KEY."""
        if secret is None and os.environ.get("PFS_SECRET_FILE"):
            secret = read_secret_file(os.environ["PFS_SECRET_FILE"])
        self.secret = secret if secret is not None else os.environ.get("PFS_SECRET")
        if self.secret == "":  # set, but to nothing: a mistake, never "no secret"
            raise ValueError("the PFS secret is empty: set PFS_SECRET (or the secret file) to "
                             "the cluster's secret, or unset it for a cluster without one")
        self.tls_ca = tls_ca if tls_ca is not None else os.environ.get("PFS_TLS_CA") or None
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.tls_client_ca = tls_client_ca
        self.shown_cert = tls_cert or os.environ.get("PFS_TLS_CERT") or None
        self.shown_key = tls_key or os.environ.get("PFS_TLS_KEY") or None
        if bool(self.shown_cert) != bool(self.shown_key):
            raise ValueError("a TLS certificate needs its key, and a key its certificate: set "
                             "both PFS_TLS_CERT and PFS_TLS_KEY (or --tls-cert and --tls-key)")

    def identity(self) -> tuple[str | None, str | None, str | None]:
        """What tells these credentials from others: Clients with equal ones share channels."""
        return (self.secret, self.tls_ca, self.shown_cert)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((SECRET_HEADER, self.secret),) if self.secret else ()

    def channel(self, address: str) -> grpc.Channel:
        """A channel to a PFS server that sends the secret with every call; to the active one
        of several metaservers if `address` lists them (HOST:PORT,HOST:PORT,...)."""
        if "," in address:
            return FollowingChannel(address.split(","), self.channel)
        if self.tls_ca:
            shown = {}
            if self.shown_cert:  # for servers that want mutual TLS
                with open(self.shown_cert, "rb") as c, open(self.shown_key, "rb") as k:
                    shown = dict(certificate_chain=c.read(), private_key=k.read())
            with open(self.tls_ca, "rb") as f:
                trusted = grpc.ssl_channel_credentials(root_certificates=f.read(), **shown)
            channel = grpc.secure_channel(address, trusted, options=CHANNEL_OPTIONS)
        else:
            channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        if self.secret:
            channel = grpc.intercept_channel(channel, _SecretAdder(self.metadata()))
        return channel


class _SecretAdder(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _with_secret(self, details):
        return details._replace(metadata=tuple(details.metadata or ()) + self._metadata)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._with_secret(client_call_details), request)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_secret(client_call_details), request_iterator)


class FollowingChannel(grpc.Channel):
    """A channel to whichever of several metaservers is active: calls go to the one last found
    active. A standby's refusal names the active one (ACTIVE_HEADER), and the call goes there
    at once; a metaserver that cannot be reached is left for the next one in the list (and a
    call that was never sent is tried there). Anything else is the caller's, as on one
    channel: a call that broke midway is not repeated here."""

    def __init__(self, addresses: list[str], make: Callable[[str], grpc.Channel]) -> None:
        self.addresses = [a.strip() for a in addresses if a.strip()]
        self._make = make
        self._lock = threading.Lock()
        self._current = self.addresses[0]
        self._channels: dict[str, grpc.Channel] = {}

    def current(self) -> tuple[str, grpc.Channel]:
        with self._lock:
            address = self._current
            if address not in self._channels:
                self._channels[address] = self._make(address)
            return address, self._channels[address]

    def failed(self, address: str, error: grpc.RpcError) -> bool:
        """Moves on from `address` if `error` says so; whether the call may be sent again
        (it reached no active metaserver)."""
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            return False
        try:
            active = dict(error.trailing_metadata() or ()).get(ACTIVE_HEADER)
        except Exception:  # (an error raised before any call had metadata)
            active = None
        with self._lock:
            if self._current == address:
                if active and active != address:
                    self._current = active
                else:
                    self._current = self.addresses[(self.addresses.index(address) + 1)
                                                   % len(self.addresses)] \
                        if address in self.addresses else self.addresses[0]
        return bool(active) or _never_sent(error)

    def _callable(self, kind: str, method: str, *args, **kwargs):
        return _FollowingCall(self, kind, method, args, kwargs)

    def unary_unary(self, method, *args, **kwargs):
        return self._callable("unary_unary", method, *args, **kwargs)

    def unary_stream(self, method, *args, **kwargs):
        return self._callable("unary_stream", method, *args, **kwargs)

    def stream_unary(self, method, *args, **kwargs):
        return self._callable("stream_unary", method, *args, **kwargs)

    def stream_stream(self, method, *args, **kwargs):
        return self._callable("stream_stream", method, *args, **kwargs)

    def subscribe(self, callback, try_to_connect=False):
        self.current()[1].subscribe(callback, try_to_connect)

    def unsubscribe(self, callback):
        self.current()[1].unsubscribe(callback)

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def _never_sent(error: grpc.RpcError) -> bool:
    details = (error.details() or "").lower()
    return "failed to connect" in details or "connection refused" in details


class _FollowingCall:
    """A method of a FollowingChannel: each call on the channel of the active metaserver."""

    def __init__(self, following: FollowingChannel, kind: str, method: str, args, kwargs):
        self._following, self._kind, self._method = following, kind, method
        self._args, self._kwargs = args, kwargs

    def __call__(self, request, *args, **kwargs):
        streamed_request = self._kind.startswith("stream")
        for _ in range(2 * len(self._following.addresses)):
            address, channel = self._following.current()
            call = getattr(channel, self._kind)(self._method, *self._args, **self._kwargs)
            try:
                result = call(request, *args, **kwargs)
            except grpc.RpcError as e:
                if self._following.failed(address, e) and not streamed_request:
                    continue
                raise
            if self._kind.endswith("stream"):
                again = None if streamed_request else lambda: self._open(request, args, kwargs)
                return _FollowedStream(result, self._following, address, again,
                                       2 * len(self._following.addresses))
            return result
        return call(request, *args, **kwargs)  # (every one refused: its error is the answer)

    def _open(self, request, args, kwargs):
        """A unary-stream call made again, on the active metaserver as now known; (its
        address, its stream)."""
        address, channel = self._following.current()
        call = getattr(channel, self._kind)(self._method, *self._args, **self._kwargs)
        return address, call(request, *args, **kwargs)


class _FollowedStream:
    """A response stream that tells its FollowingChannel when it fails. Given `again` (the call
    made again: a unary-stream one, whose refusal comes with its first read), a refusal before
    the first message sends it to the active metaserver, as a unary call is (`tries` times)."""

    def __init__(self, stream, following: FollowingChannel, address: str,
                 again: Callable[[], tuple[str, object]] | None, tries: int) -> None:
        self._stream, self._following, self._address = stream, following, address
        self._again, self._tries = again, tries

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            try:
                message = next(self._stream)
            except grpc.RpcError as e:
                if not (self._following.failed(self._address, e) and self._again
                        and self._tries > 0):
                    raise
                self._tries -= 1
                self._address, self._stream = self._again()
                continue
            self._again = None  # begun: what follows is the caller's
            return message

    def __getattr__(self, name):
        return getattr(self._stream, name)
