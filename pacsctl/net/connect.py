"""Opening an association as an SCU, and saying exactly why one did not come up.

pynetdicom catches the socket's exception and logs it; all its caller sees is an association
that is not established. `ProbedAE` keeps that exception and the PDUs the peer sent, so a
failure is named from what happened on the wire (`NetworkFailure`), never from log text:
a name that does not resolve, a closed port, a peer that never answers, a failed TLS
handshake, a rejection (with its reason and source), an abort.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ
from pynetdicom.transport import AddressInformation, AssociationSocket

from pacsctl.errors import NetworkError, NetworkFailure
from pacsctl.net.types import NodeLike


@dataclass
class ConnectProbe:
    """What happened while one association was being opened."""

    connect_error: OSError | None = None  # raised by connect() (TCP, or TCP + TLS handshake)
    tcp_connected: bool = False  # the TCP connection stood (a TLS error came after it)
    pdus: list[Any] = field(default_factory=list)  # PDUs received from the peer

    def on_pdu(self, event: evt.Event) -> None:
        """EVT_PDU_RECV handler."""
        self.pdus.append(event.pdu)


class _RecordingSocket(socket.socket):
    """A TCP socket that keeps the error of its connect() in the probe."""

    probe: ConnectProbe

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:
            self.probe.connect_error = exc
            raise
        self.probe.tcp_connected = True


def _recording_ssl_class(probe: ConnectProbe) -> type[ssl.SSLSocket]:
    class RecordingSSLSocket(ssl.SSLSocket):
        """A TLS socket (connect = TCP connect + handshake) that keeps its error."""

        def do_handshake(self, *args: Any, **kwargs: Any) -> None:
            probe.tcp_connected = True  # called by connect() once TCP stands
            super().do_handshake(*args, **kwargs)

        def connect(self, address: Any) -> None:
            try:
                super().connect(address)
            except OSError as exc:
                probe.connect_error = exc
                raise

    return RecordingSSLSocket


class ProbedAE(AE):
    """A requesting AE whose association sockets report into a `ConnectProbe`."""

    def __init__(self, *args: Any, probe: ConnectProbe, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probe = probe

    def _create_socket(
        self, assoc: Association, address: AddressInformation, tls_args: tuple[ssl.SSLContext, str] | None
    ) -> AssociationSocket:
        if tls_args is not None:
            tls_args[0].sslsocket_class = _recording_ssl_class(self.probe)
        sock = super()._create_socket(assoc, address, tls_args)
        raw = sock.socket
        if raw is not None:
            recording = _RecordingSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
            recording.probe = self.probe
            sock.socket = recording
        return sock


def resolve(node: NodeLike) -> str:
    """The address to connect to for `node.host` (resolved once, here, so that a name that
    does not resolve is its own error)."""
    try:
        infos = socket.getaddrinfo(node.host, int(node.port), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        why = getattr(exc, "strerror", None) or "invalid name"
        raise NetworkError(
            f"cannot resolve the host name {node.host!r} of {where(node)} ({why})",
            hint="check the spelling of the node's host, or give its IP address",
            failure=NetworkFailure.DNS,
        ) from None
    return str(infos[0][4][0])


def where(node: NodeLike) -> str:
    """`AET@host:port` for messages."""
    return f"{node.aet}@{node.host}:{node.port}"


def failure_of(
    assoc: Association, probe: ConnectProbe, node: NodeLike, timeout: float, tls: bool, waited: float
) -> NetworkError:
    """The error for an association that did not come up after `waited` seconds."""
    at = where(node)
    exc = probe.connect_error
    if tls and exc is not None and probe.tcp_connected:  # TCP stood, the handshake failed
        if isinstance(exc, TimeoutError):
            detail = f"no answer within {timeout:g} s"
        else:
            detail = str(getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc)
        return NetworkError(
            f"TLS handshake with {at} failed ({detail})",
            hint="check that the port speaks TLS, the CA that signs its certificate, the host "
            "name it was issued for, and our client certificate",
            failure=NetworkFailure.TLS,
        )
    if isinstance(exc, ConnectionRefusedError):
        return NetworkError(
            f"{at} refused the connection (nothing listens on port {node.port})",
            hint="check the host and port, and that the DICOM service is running there",
            failure=NetworkFailure.REFUSED,
        )
    if isinstance(exc, TimeoutError):
        return NetworkError(
            f"{at} did not accept a connection within {timeout:g} s",
            hint="the host may be down or a firewall drops the packets; check host and port",
            failure=NetworkFailure.TIMEOUT,
        )
    if exc is not None:  # no route to the host, network down, ...
        return NetworkError(
            f"cannot connect to {at} ({exc.strerror or type(exc).__name__})",
            hint="check the host and port, and the network between us",
            failure=NetworkFailure.UNREACHABLE,
        )
    rejection = next((p for p in probe.pdus if isinstance(p, A_ASSOCIATE_RJ)), None)
    if rejection is not None or assoc.is_rejected:
        return _rejected(assoc, at)
    if assoc.acceptor.primitive is not None and getattr(assoc.acceptor.primitive, "result", None) == 0:
        return NetworkError(
            f"{at} accepted none of the proposed presentation contexts",
            hint="the node does not support this SOP class or transfer syntax",
            failure=NetworkFailure.REJECTED,
        )
    abort = next((p for p in probe.pdus if isinstance(p, A_ABORT_RQ)), None)
    if abort is not None:
        source = {0: "service user", 2: "service provider"}.get(abort.source or 0, str(abort.source))
        return NetworkError(
            f"{at} aborted the association request (source: {source}, reason: {abort.reason_diagnostic})",
            hint="a protocol or TLS mismatch? the node's log says why",
            failure=NetworkFailure.ABORTED,
        )
    if probe.pdus or not probe.tcp_connected:
        return NetworkError(
            f"{at} did not set up the association",
            hint="the node's log says why",
            failure=NetworkFailure.ABORTED,
        )
    if waited < timeout * 0.9:
        # Connected, no PDU back: pynetdicom reports a peer that closed the connection at once
        # and one that never answered (our ACSE time-out) alike; the time waited tells them apart.
        return NetworkError(
            f"{at} closed the connection without answering the association request",
            hint="plain TCP to a TLS port, or TLS to a plain one? else the node's log says why",
            failure=NetworkFailure.ABORTED,
        )
    return NetworkError(
        f"{at} accepted the connection but did not answer the association request within {timeout:g} s",
        hint="is this port a DICOM service? a slow node needs a longer timeout",
        failure=NetworkFailure.TIMEOUT,
    )


def _rejected(assoc: Association, at: str) -> NetworkError:
    rsp = assoc.acceptor.primitive
    reason = getattr(rsp, "reason_str", None) or "no reason given"
    source = getattr(rsp, "source_str", None) or "unknown source"
    result = getattr(rsp, "result_str", None) or ""
    diagnostic = getattr(rsp, "diagnostic", None)
    hint = "check the called and calling AE titles and the node's allow-list"
    if diagnostic == 0x03:  # calling AE title not recognised
        hint = f"add our AE title {assoc.requestor.ae_title} to the node's known or allowed modalities"
    elif diagnostic == 0x07:  # called AE title not recognised
        hint = "check the node's AE title"
    elif getattr(rsp, "result", None) == 0x02:  # transient
        hint = "the node is busy or limits associations: try again later"
    return NetworkError(
        f"{at} rejected the association: {reason} (source: {source}; {result or 'rejected'})",
        hint=hint,
        failure=NetworkFailure.REJECTED,
    )
