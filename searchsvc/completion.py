"""Shell completion of the STUDY argument: the study files (``*.yaml``, ``*.yml``) a path
being typed can still become.

``searchsvc --install-completion`` installs the shell's script; the shell then asks the CLI
for completions and typer calls :func:`study_files` with the word typed so far.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["study_files"]

_SUFFIXES = (".yaml", ".yml")


def study_files(incomplete: str) -> list[str]:
    """The study files whose path starts with ``incomplete``, sorted.

    Files in the folder typed so far, and those one folder further down (so that at a
    repository's root the first TAB offers ``studies/mnist.yaml``); hidden files and folders
    only once a dot is typed. Paths are given as typed: relative stays relative.
    """
    folder_part, slash, name_part = incomplete.rpartition("/")
    prefix = folder_part + slash  # "", "studies/" or "/": kept as typed
    folder = Path(prefix or ".")
    if not folder.is_dir():
        return []
    found: list[str] = []
    for entry in _entries(folder, name_part):
        if entry.is_file() and entry.suffix in _SUFFIXES:
            found.append(prefix + entry.name)
        elif entry.is_dir():
            found += [
                f"{prefix}{entry.name}/{child.name}"
                for child in _entries(entry, "")
                if child.is_file() and child.suffix in _SUFFIXES
            ]
    return sorted(found)


def _entries(folder: Path, name_part: str) -> list[Path]:
    """The entries of ``folder`` starting with ``name_part`` (hidden ones only if it does);
    an unreadable folder has none."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    return [
        e for e in entries
        if e.name.startswith(name_part) and (name_part.startswith(".") or e.name[0] != ".")
    ]  # fmt: skip
