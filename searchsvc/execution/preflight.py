"""Checks a run makes before it creates anything: the Ray cluster it is pointed at answers,
and so does the MLflow tracking server it writes to.

A wrong ``--address`` would otherwise be a Ray traceback after the study's stores and its MLflow
parent run exist, and a tracking server that is down would be reported only after the data was
loaded and the trials a dead driver left were turned into FAIL. Only reachability is checked
here (a TCP connection to the cluster's GCS port; a GET of the server's ``/health``), a few
seconds at most; Ray itself is started or joined later, by the search.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from searchsvc.redaction import redact_url

__all__ = ["ray_address_problem", "tracking_server_problem"]

_CONNECT_TIMEOUT_S = 3.0
_HEALTH_TIMEOUT_S = 5.0
_HEALTH_TRIES = 2
_HEALTH_PAUSE_S = 1.0


def ray_address_problem(address: str | None, origin: str) -> str | None:
    """Why the Ray cluster at ``address`` cannot be joined, as ``"<origin>: ..."``, or None.

    ``address``: ``None``/``local`` (a local Ray started for the run: nothing to check),
    ``auto`` (the cluster ``ray start`` left on this machine), ``host:port`` or
    ``ray://host:port``. ``origin`` names where it came from (``--address``, ``RAY_ADDRESS``).
    """
    if address in (None, "", "local"):
        return None
    target = address.removeprefix("ray://")
    if target == "auto":
        from ray._private.services import canonicalize_bootstrap_address_or_die

        try:
            target = canonicalize_bootstrap_address_or_die("auto")
        except ConnectionError:
            return (
                f"{origin}: auto: no running Ray cluster found on this machine "
                "(start one with `ray start --head`, or leave --address out for a local Ray)"
            )
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return f"{origin}: {address!r} is not a Ray address (host:port, ray://host:port or auto)"
    try:
        with socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return f"{origin}: no Ray cluster answers at {target} ({reason})"


def tracking_server_problem(uri: str) -> str | None:
    """Why the MLflow tracking server at ``uri`` cannot be used, in one line, or None.

    Only an ``http://``/``https://`` URI is checked (a local store is created when needed): a
    GET of ``<uri>/health`` (which MLflow answers without credentials, also behind its basic
    auth; none is sent), tried twice, each within a few seconds. Any HTTP answer below 500
    counts as answering: a 5xx is a proxy whose server behind it is down. The message shows
    the URI with its password masked.
    """
    if not uri.startswith(("http://", "https://")):
        return None
    cause = ""
    for attempt in range(_HEALTH_TRIES):
        if attempt:
            time.sleep(_HEALTH_PAUSE_S)
        cause = _health_problem(uri)
        if not cause:
            return None
    shown = redact_url(uri).rstrip("/")
    return (
        f"MLflow tracking server {shown} does not answer ({cause}); start it or change "
        "tracking_uri"
    )


def _health_problem(uri: str) -> str:
    """What a GET of ``<uri>/health`` ran into ("" when the server answered)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    # Without the user part: urllib would refuse it, and /health needs no credentials.
    url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(url, timeout=_HEALTH_TIMEOUT_S):
            return ""
    except urllib.error.HTTPError as exc:
        return "" if exc.code < 500 else f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        return _reason(exc.reason)
    except (OSError, ValueError) as exc:
        return _reason(exc)


def _reason(reason: object) -> str:
    """A socket error as the OS words it (``Connection refused``, ``timed out``)."""
    if isinstance(reason, OSError):
        return reason.strerror or str(reason) or type(reason).__name__
    return str(reason)
