"""Run the ``searchsvc`` command line with one function of the product made to block or fail.

Interrupt tests use it to put a signal inside one stage, deterministically: the function, when
called, touches a marker file (the test then sends the signal) and sleeps, or raises.

Usage: python tests/stage_hook.py block|raise MODULE:FUNCTION MARKER [searchsvc arguments]
"""

from __future__ import annotations

import functools
import importlib
import sys
import time
from pathlib import Path
from typing import Any


def _hooked(original: Any, mode: str, marker: Path) -> Any:
    @functools.wraps(original)
    def hooked(*args: Any, **kwargs: Any) -> Any:
        marker.touch()
        if mode == "raise":
            raise RuntimeError("injected failure")
        time.sleep(600)  # the test's signal ends this
        return original(*args, **kwargs)

    return hooked


def main() -> None:
    mode, target, marker, *arguments = sys.argv[1:]
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    setattr(module, attr, _hooked(getattr(module, attr), mode, Path(marker)))
    from searchsvc.cli import app

    app(arguments, prog_name="searchsvc")


if __name__ == "__main__":
    main()
