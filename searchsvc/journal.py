"""The on-disk journal of MLflow writes that could not be made yet (the server unreachable).

A write that is deferred is appended here, in order, and flushed to disk (``fsync``) before the
driver moves on; once MLflow has taken it, a ``done`` line follows. So a driver that dies during
an outage loses nothing: the next ``searchsvc run`` of the study, or ``searchsvc sync``, reads
the writes without a ``done`` line and makes them, in order. A write made twice (the driver died
between making it and noting it done) is harmless: each kind is idempotent in MLflow (metrics
are deduplicated by key, step, timestamp and value; tags and statuses are set, not added; a
run is created once, found again by its ``searchsvc.journal_ref`` tag).

Files (a trial's model, its diagnostics) are copied into ``files/`` beside the journal first,
since the originals are temporary. The layout is ``<workdir>/mlflow-journal/journal.jsonl`` and
``<workdir>/mlflow-journal/files/<n>/``; the folder is removed when nothing is left in it.
Pure standard library: no MLflow here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["JOURNAL_DIR", "Journal"]

logger = logging.getLogger(__name__)

JOURNAL_DIR = "mlflow-journal"
"""The journal's folder in a study's working folder."""


class Journal:
    """Append-only records with sequence numbers; ``done`` marks the ones MLflow has taken."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "journal.jsonl"
        entries = self._lines()  # continue after what an earlier driver left on disk
        self._open_seqs = {e["seq"] for e in self._pending_of(entries)}
        self._next_seq = max((e.get("seq", e.get("done", -1)) for e in entries), default=-1) + 1

    def _lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash mid-write: it never happened
                logger.warning("%s: skipping a line cut short by a crash", self.path)
        return entries

    @staticmethod
    def _pending_of(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        done = {e["done"] for e in entries if "done" in e}
        return [e for e in entries if "seq" in e and e["seq"] not in done]

    def pending(self) -> list[dict[str, Any]]:
        """The journaled writes MLflow has not taken, oldest first."""
        return self._pending_of(self._lines())

    def _append(self, entry: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the driver moves on

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Journals ``record`` (JSON-serialisable); returns it with its ``seq``."""
        entry = {**record, "seq": self._next_seq}
        self._next_seq += 1
        self._append(entry)
        self._open_seqs.add(entry["seq"])
        return entry

    def done(self, seq: int) -> None:
        """Notes that MLflow took write ``seq``; clears the journal once nothing is open."""
        self._open_seqs.discard(seq)
        if not self._open_seqs:
            self.clear()
            return
        self._append({"done": seq})

    def keep_files(self, source: Path) -> str:
        """A durable copy of folder ``source`` under ``files/``; its path as a string."""
        target = self.folder / "files" / str(self._next_seq)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
        return str(target)

    def clear(self) -> None:
        """Removes the journal and its files (nothing is left to write)."""
        self._open_seqs.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._open_seqs)
