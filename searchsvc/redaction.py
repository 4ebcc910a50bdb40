"""No secret printed, logged or stored: the passwords in the URLs the product reads are masked.

Two rules, applied wherever text leaves the process (the terminal, the log, MLflow params,
tags and artifacts):

- any ``scheme://user:password@host`` shows as ``scheme://user:***@host``, whatever its origin;
- every password of a URL the product has checked (the study file's ``storage``/``tracking_uri``,
  the options, the environment: each passes :func:`searchsvc.study.urls.check_storage_url` or
  ``check_tracking_uri``, which :func:`remember` it) is masked wherever it appears, also outside
  a URL (a driver's error message may quote it on its own).

Hand-written because the masking must cover our own text, the libraries' log records and
exception messages alike; SQLAlchemy's ``URL.render_as_string(hide_password=True)`` covers
only the URLs we format ourselves.
"""

from __future__ import annotations

import io
import re
import sys
import threading
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

__all__ = ["MASK", "ScrubbingStream", "install", "redact_url", "remember", "scrub"]

MASK = "***"

_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]+:)(?P<pw>[^\s@/]+)@")
_SECRETS: set[str] = set()
_LOCK = threading.Lock()


def redact_url(url: str) -> str:
    """``url`` with the password of its user part masked (``postgresql://u:***@h/db``)."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", url)


def remember(url: str | None) -> None:
    """Keep ``url``'s password (as written and decoded) to mask it wherever it appears."""
    if not url:
        return
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    if password:
        with _LOCK:
            _SECRETS.update({password, unquote(password)})


def scrub(text: str) -> str:
    """``text`` with URL passwords and every remembered secret masked."""
    text = redact_url(text)
    with _LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if len(secret) >= 3:  # a one- or two-letter "secret" would mask half the text
            text = text.replace(secret, MASK)
    return text


class ScrubbingStream(io.TextIOBase):
    """A text stream that masks secrets in what is written, then writes it to ``target``."""

    def __init__(self, target: TextIO) -> None:
        self.target = target

    def write(self, text: str) -> int:
        self.target.write(scrub(text))
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def install() -> None:
    """Mask secrets in everything this process writes through ``sys.stdout``/``sys.stderr``
    (the CLI calls it first: its output, the log and Python's tracebacks go through them)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, ScrubbingStream):
            setattr(sys, name, ScrubbingStream(stream))
