"""SSL contexts for DICOM TLS (PS3.15 Annex B): one for listening, one for connecting."""

from __future__ import annotations

import ssl

from pacsctl.errors import UsageError
from pacsctl.net.types import TlsOptions


def server_context(tls: TlsOptions) -> ssl.SSLContext:
    """A server-side context: our certificate and key; with `tls.ca`, client certificates
    signed by that CA are required (mutual TLS), otherwise clients stay anonymous."""
    if not tls.cert or not tls.key:
        raise UsageError("TLS needs both a certificate and a key", hint="--tls-cert and --tls-key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert, tls.key)
        if tls.ca:
            ctx.load_verify_locations(cafile=tls.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load TLS material: {exc}") from exc
    return ctx


def client_context(tls: TlsOptions) -> ssl.SSLContext:
    """A client-side context that verifies the server against `tls.ca` (else the system
    store) and presents `tls.cert`/`tls.key` when given. Host names are not checked: DICOM
    nodes are addressed by IP as often as by name, and the CA is the archive's own."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    try:
        if tls.cert:
            ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load TLS material: {exc}") from exc
    return ctx
