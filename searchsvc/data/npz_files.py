"""A user's ``.npz`` data set: reading and validation, one clear line per problem.

Keys: ``x_train``, ``y_train`` (required); ``x_val``/``y_val`` and ``x_test``/``y_test``
(optional, in pairs); ``class_names`` (optional, strings). Features of any shape are
flattened to ``(n, n_features)`` float32; uint8 features are taken as pixels and divided by
255. Labels must be integers 0..K-1 with every class present in ``y_train``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from searchsvc.errors import DataError

__all__ = ["RawData", "read_npz"]

_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RawData:
    """A data set as read (a ``.npz`` file's validated arrays, or a built-in set's), before the
    validation carve, the subset and the dtype casts; val/test are None when it has none."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    n_classes: int
    class_names: tuple[str, ...] | None = None
    image_shape: tuple[int, ...] | None = None


def read_npz(path: str | Path) -> RawData:
    """Read and validate ``path``; raises :class:`DataError` naming the file and the key."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: cannot read as a .npz file ({exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: is a single .npy array, not a .npz archive of named arrays")
    with archive:
        keys = set(archive.files)
        for required in ("x_train", "y_train"):
            if required not in keys:
                raise DataError(
                    f"{path}: missing key {required!r} "
                    f"(found: {', '.join(sorted(keys)) or 'none'})"
                )
        arrays: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        for split in _SPLITS:
            xk, yk = f"x_{split}", f"y_{split}"
            if (xk in keys) != (yk in keys):
                have, lack = (xk, yk) if xk in keys else (yk, xk)
                raise DataError(f"{path}: has {have!r} but missing key {lack!r}")
            if xk in keys:
                arrays[split] = (_load(archive, path, xk), _load(archive, path, yk))
            else:
                arrays[split] = None
        class_names = _class_names(archive, path) if "class_names" in keys else None

    train = arrays["train"]
    assert train is not None  # required keys checked above
    image_shape = tuple(int(s) for s in train[0].shape[1:]) if train[0].ndim >= 3 else None
    xs: dict[str, np.ndarray | None] = {}
    ys: dict[str, np.ndarray | None] = {}
    for split, pair in arrays.items():
        if pair is None:
            xs[split] = ys[split] = None
            continue
        x, y = pair
        xs[split] = _features(x, path, f"x_{split}")
        ys[split] = _labels(y, path, f"y_{split}")
        if len(xs[split]) != len(ys[split]):
            raise DataError(
                f"{path}: 'x_{split}' has {len(xs[split])} rows but 'y_{split}' has "
                f"{len(ys[split])}"
            )
    n_features = xs["train"].shape[1]
    for split in ("val", "test"):
        x = xs[split]
        if x is not None and x.shape[1] != n_features:
            raise DataError(
                f"{path}: 'x_{split}' has {x.shape[1]} features per sample but 'x_train' has "
                f"{n_features}"
            )
    n_classes = _check_classes(path, ys)
    if class_names is not None and len(class_names) != n_classes:
        raise DataError(
            f"{path}: 'class_names' has {len(class_names)} names but the labels have "
            f"{n_classes} classes"
        )
    return RawData(
        x_train=xs["train"],
        y_train=ys["train"],
        x_val=xs["val"],
        y_val=ys["val"],
        x_test=xs["test"],
        y_test=ys["test"],
        n_classes=n_classes,
        class_names=class_names,
        image_shape=image_shape,
    )


def _load(archive: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    try:
        arr = archive[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: cannot read key {key!r} ({exc})") from exc
    if arr.size == 0:
        raise DataError(f"{path}: {key!r} is empty (shape {arr.shape})")
    if arr.ndim == 0:
        raise DataError(f"{path}: {key!r} is a scalar, expected one row per sample")
    return arr


def _features(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{path}: {key!r} has non-numeric dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{path}: {key!r} has complex dtype {x.dtype}")
    if x.dtype == np.uint8:
        # uint8 features are pixels: scale to [0, 1] as the built-in image sets are.
        out = x.reshape(len(x), -1).astype(np.float32) / np.float32(255.0)
    else:
        out = x.reshape(len(x), -1).astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        raise DataError(
            f"{path}: {key!r} contains NaN or infinite values ({int(bad.sum())} entries, "
            f"first in row {int(np.argwhere(bad)[0][0])})"
        )
    return np.ascontiguousarray(out)


def _labels(y: np.ndarray, path: Path, key: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{path}: {key!r} must be 1-D class labels, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        finite = np.isfinite(y)
        integral = finite & (np.floor(np.where(finite, y, 0)) == y)
        if not integral.all():
            bad = np.unique(y[~integral])[:5]
            raise DataError(
                f"{path}: {key!r} labels must be integers 0..K-1; found non-integer values "
                f"{', '.join(repr(float(v)) for v in bad)}"
            )
        return y.astype(np.int64)
    raise DataError(f"{path}: {key!r} labels must be integers 0..K-1, got dtype {y.dtype}")


def _check_classes(path: Path, ys: dict[str, np.ndarray | None]) -> int:
    """K = max(y_train) + 1; every class 0..K-1 must occur in training, others stay in range."""
    y_train = ys["train"]
    assert y_train is not None
    values = np.unique(y_train)
    if values[0] < 0:
        neg = values[values < 0][:5]
        raise DataError(
            f"{path}: 'y_train' labels must be integers 0..K-1; found negative values "
            f"{', '.join(str(int(v)) for v in neg)}"
        )
    n_classes = int(values[-1]) + 1
    absent = np.setdiff1d(np.arange(n_classes), values)
    if absent.size:
        raise DataError(
            f"{path}: 'y_train' labels must be integers 0..K-1 with every class present; "
            f"values are {_describe(values)}, missing {_describe(absent)}"
        )
    for split in ("val", "test"):
        y = ys[split]
        if y is None:
            continue
        outside = np.unique(y[(y < 0) | (y >= n_classes)])
        if outside.size:
            raise DataError(
                f"{path}: 'y_{split}' has labels outside 0..{n_classes - 1} (the classes of "
                f"'y_train'): {_describe(outside)}"
            )
    return n_classes


def _describe(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")


def _class_names(archive: np.lib.npyio.NpzFile, path: Path) -> tuple[str, ...]:
    names = _load(archive, path, "class_names")
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(f"{path}: 'class_names' must be a 1-D array of strings")
    return tuple(str(n) for n in names)
