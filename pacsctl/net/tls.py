"""SSL contexts for DICOM TLS (PS3.15 Annex B): one for listening, one for connecting."""

from __future__ import annotations

import ssl

from pacsctl.errors import UsageError
from pacsctl.net.types import TlsOptions


def server_context(tls: TlsOptions) -> ssl.SSLContext:
    """A server-side context: our certificate and key; with `tls.ca`, client certificates
    signed by that CA are required (mutual TLS), otherwise clients stay anonymous."""
    if not tls.cert or not tls.key:
        raise UsageError(
            "TLS needs both a certificate and a key",
            hint="give the certificate and its private key (PEM files)",
        )
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
    store) and presents `tls.cert`/`tls.key` when given. The server's certificate must be
    issued for the host name (or IP address) we connect to, unless `tls.check_hostname` is
    off (lab set-ups whose certificates name no host): without that check any certificate
    the trust store accepts, for any host, would do."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS CA bundle: {exc}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = tls.check_hostname
    try:
        if tls.cert:
            ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load TLS material: {exc}") from exc
    return ctx
