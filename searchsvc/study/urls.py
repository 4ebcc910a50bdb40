"""The checks of a tracking URI and a storage URL, wherever one comes from (the study file, an
option, the environment): a malformed one is an input error before anything starts."""

from __future__ import annotations

import re

from searchsvc.redaction import redact_url, remember

__all__ = ["check_storage_url", "check_tracking_uri"]

_TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file")
_STORAGE_DIALECTS = ("sqlite", "postgresql", "mysql", "mssql", "oracle")


def _scheme(url: str) -> str | None:
    match = re.match(r"^([A-Za-z][A-Za-z0-9]*)(\+[A-Za-z0-9_]+)?://", url)
    return match.group(1).lower() if match else None


def check_tracking_uri(url: str) -> str:
    """``url`` if MLflow can track to it (a server or a database), else a ValueError.

    Its password, if any, is remembered, to be masked wherever it would be shown or stored.
    """
    remember(url)
    if url != "databricks" and _scheme(url) not in (*_TRACKING_SCHEMES, "databricks"):
        raise ValueError(
            f"not an MLflow tracking URI: {redact_url(url)!r}; expected one of "
            + ", ".join(f"{s}://..." for s in _TRACKING_SCHEMES)
        )
    return url


def check_storage_url(url: str) -> str:
    """``url`` if it is a SQLAlchemy URL of a database Optuna supports, else a ValueError.

    Its password, if any, is remembered, to be masked wherever it would be shown or stored.
    """
    remember(url)
    if _scheme(url) not in _STORAGE_DIALECTS:
        raise ValueError(
            f"not a database URL for Optuna: {redact_url(url)!r}; expected e.g. "
            "sqlite:///optuna.db or postgresql+psycopg2://user:password@host/db"
        )
    return url
