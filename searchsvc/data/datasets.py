"""Data sets for the trainers: ``load_dataset(name, ...) -> Dataset``.

Names:

- ``mnist``, ``fashion_mnist``: the standard IDX ``.gz`` files in ``mnist/`` and
  ``fashion-mnist/`` of a data folder, looked up per file in ``data_dir``, then
  ``$SEARCHSVC_DATA_DIR``, then :func:`default_cache_dir` (downloaded there if absent and
  ``download``). Each file's MD5 is verified before use. Pixels become float32 in [0, 1],
  flattened to 784 features.
- ``digits``: scikit-learn's 8x8 digits (pixels / 16); it has no test split, so a fixed,
  stratified 20 % test split is carved off first (the same for every ``seed``).
- ``npz``: the user's file at ``path`` (see :mod:`searchsvc.data.npz_files`).
- ``synthetic``: a learnable 10-class, 20-feature problem of 2,000 samples generated from
  ``seed`` (20 % test), for fast tests.

The validation split is carved from the training data (stratified, seeded by ``seed``) unless
the data brings one; its default size is 10,000 samples for sets of 50,000 training samples or
more and 20 % otherwise. ``train_subset`` then keeps N of the remaining training samples
(stratified, seeded). The test split is never touched.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from searchsvc.data.idx_files import (
    IDX_DATASETS,
    availability_problem,
    default_cache_dir,
    locate_files,
    read_idx,
)
from searchsvc.data.npz_files import RawData, read_npz
from searchsvc.errors import DataError
from searchsvc.settings import Settings
from searchsvc.trainer import Dataset

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_CLASSES",
    "dataset_problem",
    "default_cache_dir",
    "load_dataset",
]

log = logging.getLogger(__name__)

DATASET_NAMES: tuple[str, ...] = ("mnist", "fashion_mnist", "digits", "npz", "synthetic")

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_LARGE_TRAIN = 50_000  # from this many training samples on, the default val split is 10,000
_LARGE_VAL = 10_000
_SMALL_VAL_FRACTION = 0.2
_TEST_FRACTION = 0.2  # for the sets that come without a test split (digits, synthetic)
_FIXED_TEST_SEED = 0  # the digits test split is a property of the data set, not of a study


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    path: str | Path | None = None,
    val_size: int | float | None = None,
    train_subset: int | None = None,
    seed: int = 0,
    download: bool = True,
    settings: Settings | None = None,
) -> Dataset:
    """Load data set ``name`` (one of :data:`DATASET_NAMES`), split into train/val/test.

    Args:
        name: ``mnist``, ``fashion_mnist`` (``fashion-mnist`` also accepted), ``digits``,
            ``npz`` or ``synthetic``.
        data_dir: folder holding ``mnist/`` and ``fashion-mnist/``; searched before
            ``$SEARCHSVC_DATA_DIR`` and the cache folder.
        path: the ``.npz`` file (``npz`` only).
        val_size: validation size, a count (int) or a fraction of the training data (float);
            ignored when the data brings a validation split.
        train_subset: keep only this many training samples (after carving validation).
        seed: seeds the validation carve and the subset (and the synthetic data).
        download: whether a missing MNIST/Fashion-MNIST file may be downloaded.
        settings: the environment as the command read it (``SEARCHSVC_DATA_DIR``, the cache
            folder); default: read now.

    Raises:
        DataError: unknown name, missing/corrupt files, malformed data, impossible sizes.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in DATASET_NAMES:
        raise DataError(f"unknown data set {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    if key != "npz" and path is not None:
        raise DataError(f"data set {key!r} takes no 'path' (only 'npz' reads a file)")
    raw = _read_raw(key, data_dir, path, seed, download, settings)
    x_train, y_train, x_val, y_val = raw.x_train, raw.y_train, raw.x_val, raw.y_val
    x_test, y_test = raw.x_test, raw.y_test
    n_classes, class_names, image_shape = raw.n_classes, raw.class_names, raw.image_shape
    if x_val is None:
        if val_size is None:
            val_size = _LARGE_VAL if len(x_train) >= _LARGE_TRAIN else _SMALL_VAL_FRACTION
        x_train, y_train, x_val, y_val = _carve(x_train, y_train, val_size, seed, "validation")
    elif val_size is not None:
        log.info("%s brings its own validation split; val_size=%r ignored", key, val_size)
    if train_subset is not None:
        x_train, y_train = _subset(x_train, y_train, train_subset, seed)

    data = Dataset(
        name=key,
        x_train=_as_features(x_train),
        y_train=_as_labels(y_train),
        x_val=_as_features(x_val),
        y_val=_as_labels(y_val),
        x_test=None if x_test is None else _as_features(x_test),
        y_test=None if y_test is None else _as_labels(y_test),
        n_classes=n_classes,
        class_names=class_names,
        image_shape=image_shape,
    )
    log.info(
        "loaded %s: %d train, %d val, %s test, %d features, %d classes",
        key,
        len(data.x_train),
        len(data.x_val),
        "no" if data.x_test is None else len(data.x_test),
        data.n_features,
        n_classes,
    )
    return data


def dataset_problem(
    name: str,
    *,
    data_dir: str | Path | None = None,
    path: str | Path | None = None,
    settings: Settings | None = None,
) -> str | None:
    """Why data set ``name`` cannot be loaded, as a ``dataset: ...`` line, or None: an IDX
    set's files are neither on disk nor downloadable, or an ``npz`` file is missing. Cheap
    (nothing is read), so a run checks it before it creates anything."""
    key = name.replace("-", "_")
    if key in IDX_DATASETS:
        problem = availability_problem(key, data_dir=data_dir, settings=settings)
        return f"dataset: {problem}" if problem else None
    if key == "npz" and path is not None and not Path(path).is_file():
        return f"dataset -> path: {path}: no such file"
    return None


def _read_raw(
    key: str,
    data_dir: str | Path | None,
    path: str | Path | None,
    seed: int,
    download: bool,
    settings: Settings | None,
) -> RawData:
    """Read data set ``key`` with its own test split (carved, for the sets without one)."""
    if key in IDX_DATASETS:
        x_train, y_train, x_test, y_test = _load_idx(key, data_dir, download, settings)
        names = FASHION_MNIST_CLASSES if key == "fashion_mnist" else None
        return RawData(x_train, y_train, None, None, x_test, y_test, 10, names, (28, 28))
    if key == "digits":
        x, y = _digits()
        x_train, y_train, x_test, y_test = _carve(x, y, _TEST_FRACTION, _FIXED_TEST_SEED, "test")
        return RawData(x_train, y_train, None, None, x_test, y_test, 10, None, (8, 8))
    if key == "synthetic":
        x, y = _synthetic(seed)
        x_train, y_train, x_test, y_test = _carve(x, y, _TEST_FRACTION, seed, "test")
        return RawData(x_train, y_train, None, None, x_test, y_test, 10)
    if path is None:
        raise DataError("data set 'npz' needs 'path': the .npz file to read")
    return read_npz(path)


def _load_idx(
    key: str, data_dir: str | Path | None, download: bool, settings: Settings | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The raw uint8 images (n, 28, 28) and labels of an IDX set, checksums verified."""
    spec = IDX_DATASETS[key]
    paths = locate_files(key, data_dir=data_dir, download=download, settings=settings)
    arrays = [read_idx(paths[f.name], f.n_dims, f.n_items) for f in spec.files]
    x_train, y_train, x_test, y_test = arrays
    for labels, f in ((y_train, spec.train_labels), (y_test, spec.test_labels)):
        if labels.max() > 9:  # unreachable with a matching MD5; guards the parsing itself
            raise DataError(f"{paths[f.name]}: labels outside 0..9")
    return x_train, y_train, x_test, y_test


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def _synthetic(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """10 Gaussian clusters in 20 dimensions (10 informative): learnable, not trivial."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=2000,
        n_features=20,
        n_informative=10,
        n_redundant=5,
        n_classes=10,
        n_clusters_per_class=1,
        class_sep=2.0,
        random_state=seed,
    )
    return x.astype(np.float32), y.astype(np.int64)


def _split_indices(
    y: np.ndarray, size: int | float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, carved) of a seeded split of ``size`` samples, stratified when possible."""
    from sklearn.model_selection import train_test_split

    n = len(y)
    if isinstance(size, bool) or not isinstance(size, int | float | np.integer | np.floating):
        raise DataError(f"{what} size must be an int count or a float fraction, got {size!r}")
    if isinstance(size, float | np.floating):
        if not 0.0 < size < 1.0:
            raise DataError(f"{what} fraction must be in (0, 1), got {size}")
        count = int(round(size * n))
    else:
        count = int(size)
    if not 1 <= count < n:
        raise DataError(f"{what} size {size!r} leaves no samples: the data has {n} samples")
    idx = np.arange(n)
    try:
        kept, carved = train_test_split(idx, test_size=count, stratify=y, random_state=seed)
    except ValueError as exc:
        # Too few samples of some class to stratify (tiny user data): a plain split still works.
        log.warning("%s split not stratified (%s)", what, exc)
        kept, carved = train_test_split(idx, test_size=count, random_state=seed)
    # Sorted indices keep the source order (and memory locality); the trainer shuffles anyway.
    return np.sort(kept), np.sort(carved)


def _carve(
    x: np.ndarray, y: np.ndarray, size: int | float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    kept, carved = _split_indices(y, size, seed, what)
    return x[kept], y[kept], x[carved], y[carved]


def _subset(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise DataError(f"train_subset must be a positive int, got {n!r}")
    if n >= len(y):
        log.info("train_subset=%d >= %d training samples: all kept", n, len(y))
        return x, y
    _, kept = _split_indices(y, int(n), seed, "train_subset")
    return x[kept], y[kept]


def _as_features(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1)
    if x.dtype == np.uint8:
        # Pixels: converted after the splits, so each kept row is converted exactly once.
        return np.divide(x, np.float32(255.0), dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def _as_labels(y: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(y, dtype=np.int64)
