"""MNIST-style IDX files: where they live, checksum verification, download and parsing.

The files are looked up one by one in the candidate folders (the ``data_dir`` argument, then
``$SEARCHSVC_DATA_DIR``, then the cache folder); a file found nowhere is downloaded into the
cache folder when downloads are allowed. Every file's MD5 is checked before it is parsed, so
a truncated or corrupt file is reported, never used.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import sys
import tempfile
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from searchsvc.errors import DataError
from searchsvc.settings import Settings

__all__ = [
    "availability_problem",
    "DATA_DIR_ENV",
    "IdxDataset",
    "IDX_DATASETS",
    "default_cache_dir",
    "candidate_dirs",
    "locate_files",
    "md5_of",
    "read_idx",
]

log = logging.getLogger(__name__)

DATA_DIR_ENV = "SEARCHSVC_DATA_DIR"
_DOWNLOAD_TIMEOUT_S = 60
_PROBE_TIMEOUT_S = 5  # one HEAD request per mirror when a run checks it can fetch the data
_CHUNK = 1 << 20


@dataclass(frozen=True)
class IdxFile:
    """One published file: its name, MD5 and the shape of the array it holds."""

    name: str
    md5: str
    n_dims: int  # 3 for images (n, 28, 28), 1 for labels (n,)
    n_items: int


@dataclass(frozen=True)
class IdxDataset:
    """A published IDX data set: its folder name under the data dir, files and mirrors."""

    folder: str
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    mirrors: tuple[str, ...]

    @property
    def files(self) -> tuple[IdxFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


def _idx_set(folder: str, md5s: tuple[str, str, str, str], mirrors: tuple[str, ...]) -> IdxDataset:
    """An MNIST-layout set: the four standard file names and sizes, with their MD5s."""
    train_images, train_labels, test_images, test_labels = md5s
    return IdxDataset(
        folder=folder,
        train_images=IdxFile("train-images-idx3-ubyte.gz", train_images, 3, 60000),
        train_labels=IdxFile("train-labels-idx1-ubyte.gz", train_labels, 1, 60000),
        test_images=IdxFile("t10k-images-idx3-ubyte.gz", test_images, 3, 10000),
        test_labels=IdxFile("t10k-labels-idx1-ubyte.gz", test_labels, 1, 10000),
        mirrors=mirrors,
    )


# MD5s as published by torchvision (MNIST, FashionMNIST) and zalandoresearch/fashion-mnist.
IDX_DATASETS: dict[str, IdxDataset] = {
    "mnist": _idx_set(
        "mnist",
        ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
         "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/",
         "http://yann.lecun.com/exdb/mnist/"),
    ),
    "fashion_mnist": _idx_set(
        "fashion-mnist",
        ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
         "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
}  # fmt: skip


def default_cache_dir(settings: Settings | None = None) -> Path:
    """Where downloaded data sets are kept: ``$XDG_CACHE_HOME/searchsvc/data``.

    Falls back to ``~/.cache/searchsvc/data`` when ``XDG_CACHE_HOME`` is unset or empty.
    """
    return (settings if settings is not None else Settings.from_env()).cache_dir


def candidate_dirs(data_dir: str | Path | None, settings: Settings | None = None) -> list[Path]:
    """The data folders searched, in order: ``data_dir``, ``$SEARCHSVC_DATA_DIR``, the cache.

    ``settings``: the environment as the command read it (default: read now).
    """
    settings = settings if settings is not None else Settings.from_env()
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    if settings.data_dir:
        dirs.append(Path(settings.data_dir).expanduser())
    dirs.append(settings.cache_dir)
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def md5_of(path: Path) -> str:
    """The hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, expected_md5: str) -> None:
    try:
        actual = md5_of(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc})") from exc
    if actual != expected_md5:
        raise DataError(
            f"{path}: checksum mismatch (expected MD5 {expected_md5}, got {actual}); the file "
            "is corrupt or truncated: delete it and download it again"
        )


def locate_files(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    settings: Settings | None = None,
) -> dict[str, Path]:
    """Find (or download) and verify every file of IDX data set ``name``.

    Returns file name -> verified path. Raises :class:`DataError` when a file is corrupt
    (checksum), or absent everywhere and cannot be downloaded.
    """
    spec = IDX_DATASETS[name]
    settings = settings if settings is not None else Settings.from_env()
    dirs = candidate_dirs(data_dir, settings)
    found: dict[str, Path] = {}
    missing: list[IdxFile] = []
    for f in spec.files:
        paths = [d / spec.folder / f.name for d in dirs]
        path = next((candidate for candidate in paths if candidate.is_file()), None)
        if path is None:
            missing.append(f)
        else:
            # Verified before anything else: a corrupt file is the more specific problem.
            _verify(path, f.md5)
            found[f.name] = path
    if missing and not download:
        raise DataError(_where_to_put(name, spec, missing, dirs, settings.cache_dir))
    if missing:
        target = settings.cache_dir / spec.folder
        for f in missing:
            try:
                found[f.name] = _download(f, target, mirrors or spec.mirrors)
            except _DownloadFailed as exc:
                raise DataError(
                    f"{name}: could not download {f.name} ({exc}). "
                    + _where_to_put(name, spec, missing, dirs, settings.cache_dir)
                ) from None
    return found


def availability_problem(
    name: str,
    *,
    data_dir: str | Path | None = None,
    mirrors: Sequence[str] | None = None,
    settings: Settings | None = None,
) -> str | None:
    """Why IDX data set ``name`` cannot be had, or None: its files are on disk, or a mirror
    answers for the first missing one (checked before a run creates anything; the files are
    verified when they are read)."""
    spec = IDX_DATASETS[name]
    settings = settings if settings is not None else Settings.from_env()
    dirs = candidate_dirs(data_dir, settings)
    missing = [
        f for f in spec.files if not any((d / spec.folder / f.name).is_file() for d in dirs)
    ]
    if not missing:
        return None
    errors = []
    for mirror in mirrors or spec.mirrors:
        url = mirror.rstrip("/") + "/" + missing[0].name
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=_PROBE_TIMEOUT_S):
                return None  # it can be downloaded
        except (OSError, ValueError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
    return (
        _where_to_put(name, spec, missing, dirs, settings.cache_dir)
        + f" (no download mirror answers: {errors[0]})"
    )


def _where_to_put(
    name: str, spec: IdxDataset, missing: Sequence[IdxFile], dirs: Sequence[Path], cache: Path
) -> str:
    searched = ", ".join(str(d / spec.folder) for d in dirs)
    files = ", ".join(f.name for f in missing)
    return (
        f"{name}: missing {files} (searched {searched}); put the files in "
        f"<data dir>/{spec.folder}/ and pass that data dir or set {DATA_DIR_ENV}=<data dir>, "
        f"or allow downloads into {cache / spec.folder}"
    )


class _DownloadFailed(Exception):
    """Every mirror failed; the message lists each mirror's error."""


def _download(f: IdxFile, target_dir: Path, mirrors: Sequence[str]) -> Path:
    """Download one file into ``target_dir``, trying each mirror; verified before it appears.

    The bytes go to a uniquely named ``.part`` file beside the target that is renamed into
    place only once its MD5 matches, so concurrent workers and interrupted downloads never
    leave a half-written file under the real name.
    """
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _DownloadFailed(f"cannot create {target_dir}: {exc}") from exc
    target = target_dir / f.name
    errors: list[str] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + f.name
        try:
            fd, part_name = tempfile.mkstemp(prefix=f.name + ".", suffix=".part", dir=target_dir)
        except OSError as exc:
            raise _DownloadFailed(f"cannot write in {target_dir}: {exc}") from exc
        part = Path(part_name)
        try:
            with os.fdopen(fd, "wb") as out:
                _fetch(url, out, f.name)
            actual = md5_of(part)
            if actual != f.md5:
                errors.append(f"{url}: MD5 {actual}, expected {f.md5}")
                continue
            part.chmod(0o644)  # mkstemp creates 0600; the data is not secret
            os.replace(part, target)
            log.info("downloaded %s to %s", url, target)
            return target
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            errors.append(f"{url}: {exc}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
    raise _DownloadFailed("; ".join(errors))


def _fetch(url: str, out: BinaryIO, label: str) -> None:
    """Stream ``url`` into ``out`` with a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
        total = resp.headers.get("Content-Length")
        console = Console(stderr=True)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=True,
            disable=not sys.stderr.isatty(),
        ) as progress:
            task = progress.add_task(label, total=int(total) if total else None)
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                out.write(chunk)
                progress.advance(task, len(chunk))


def read_idx(path: Path, n_dims: int, n_items: int | None = None) -> np.ndarray:
    """Parse a gzipped IDX file of unsigned bytes into a read-only uint8 array.

    Checks the magic number (two zero bytes, type 0x08 = uint8, the number of dimensions)
    and that the payload size matches the header.
    """
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot decompress ({exc})") from exc
    header = 4 + 4 * n_dims
    if len(raw) < header:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != n_dims:
        raise DataError(
            f"{path}: bad IDX magic {raw[:4].hex()} (expected 000008{n_dims:02x}: "
            f"uint8 data with {n_dims} dimensions)"
        )
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", n_dims, 4))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: header says shape {shape} ({expected} bytes) but holds "
            f"{len(raw) - header} bytes"
        )
    if n_items is not None and shape[0] != n_items:
        raise DataError(f"{path}: holds {shape[0]} items, expected {n_items}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)
