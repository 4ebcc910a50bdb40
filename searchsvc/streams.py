"""Keep stdout for a command's one JSON document while libraries write what they like.

Ray, Tune, MLflow and their child processes write to file descriptor 1 directly (not only
through ``sys.stdout``), so ``--json`` on ``searchsvc run`` sends both the descriptor and
``sys.stdout`` to stderr for the duration of the work; the document is printed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["stdout_to_stderr"]


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Everything written to stdout inside goes to stderr (Python writes, writes to
    descriptor 1, and processes started inside, which inherit it); put back on leaving."""
    original = sys.stdout
    original.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no descriptor 1 or 2 (an embedding host): redirect Python's writes only
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        # What was written to the original object (a handler holding it) is flushed while
        # descriptor 1 still points at stderr, so it cannot land after the document.
        original.flush()
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
