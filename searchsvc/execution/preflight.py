"""Checks a run makes before it creates anything: the Ray cluster it is pointed at answers.

A wrong ``--address`` would otherwise be a Ray traceback after the study's stores and its MLflow
parent run exist. Only the address is checked here (a TCP connection to the cluster's GCS port,
a few seconds at most); Ray itself is started or joined later, by the search.
"""

from __future__ import annotations

import socket

__all__ = ["ray_address_problem"]

_CONNECT_TIMEOUT_S = 3.0


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
