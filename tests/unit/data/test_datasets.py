"""Tests of searchsvc.data.datasets: the IDX sets from the shared data folder, checksums,
downloads, user .npz files and their errors, digits and synthetic."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from searchsvc.data import idx_files
from searchsvc.data.datasets import DATASET_NAMES, default_cache_dir, load_dataset
from searchsvc.errors import DataError

# Published label counts (shared/data/README.md).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the real cache, nor finds data through the environment."""
    cache_home = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.delenv("SEARCHSVC_DATA_DIR", raising=False)
    return cache_home


@pytest.fixture(scope="module")
def mnist(data_dir: Path):
    return load_dataset("mnist", data_dir=data_dir, download=False)


# --- MNIST / Fashion-MNIST -------------------------------------------------------------------


def test_mnist_splits_60000_into_50000_train_10000_val_and_keeps_10000_test(mnist) -> None:
    assert mnist.name == "mnist"
    assert mnist.x_train.shape == (50000, 784)
    assert mnist.x_val.shape == (10000, 784)
    assert mnist.x_test.shape == (10000, 784)
    assert mnist.y_train.shape == (50000,) and mnist.y_val.shape == (10000,)
    assert mnist.x_train.dtype == np.float32 and mnist.y_train.dtype == np.int64
    assert mnist.n_classes == 10 and mnist.n_features == 784
    assert mnist.image_shape == (28, 28)
    assert mnist.class_names is None


def test_mnist_label_counts_and_pixel_mean_match_the_published_values(mnist) -> None:
    train_and_val = np.bincount(np.concatenate([mnist.y_train, mnist.y_val]), minlength=10)
    assert train_and_val.tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist.y_test, minlength=10).tolist() == MNIST_TEST_COUNTS
    pixels = np.concatenate([mnist.x_train, mnist.x_val])
    assert pixels.min() == 0.0 and pixels.max() == 1.0
    assert abs(float(pixels.mean()) - 0.1307) < 5e-4


def test_mnist_validation_split_is_stratified(mnist) -> None:
    val_share = np.bincount(mnist.y_val, minlength=10) / np.array(MNIST_TRAIN_COUNTS)
    assert np.allclose(val_share, 10000 / 60000, atol=0.002)


def test_fashion_mnist_has_class_names_and_6000_images_per_class(data_dir: Path) -> None:
    data = load_dataset("fashion_mnist", data_dir=data_dir, download=False)
    assert data.class_names is not None and len(data.class_names) == 10
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    counts = np.bincount(np.concatenate([data.y_train, data.y_val]), minlength=10)
    assert counts.tolist() == [6000] * 10
    assert np.bincount(data.y_test, minlength=10).tolist() == [1000] * 10
    assert data.x_train.shape == (50000, 784)


def test_data_dir_is_found_through_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    monkeypatch.setenv("SEARCHSVC_DATA_DIR", str(data_dir))
    paths = idx_files.locate_files("mnist", download=False)
    assert all(p.parent == data_dir / "mnist" for p in paths.values())


def test_train_subset_keeps_n_stratified_samples_after_carving_validation(
    data_dir: Path,
) -> None:
    data = load_dataset("mnist", data_dir=data_dir, train_subset=10000, download=False)
    assert data.x_train.shape == (10000, 784)
    assert data.x_val.shape == (10000, 784)  # validation carved before the subset
    counts = np.bincount(data.y_train, minlength=10)
    assert np.allclose(counts / 10000, np.array(MNIST_TRAIN_COUNTS) / 60000, atol=0.002)


@pytest.mark.parametrize("flaw", ["truncated", "flipped byte"])
def test_corrupt_idx_file_raises_data_error_naming_file_and_both_md5s(
    tmp_path: Path, flaw: str, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    # The good copies stay reachable through the environment: the corrupt file, found
    # first, must still be reported rather than skipped.
    monkeypatch.setenv("SEARCHSVC_DATA_DIR", str(data_dir))
    folder = tmp_path / "corrupt" / "mnist"
    folder.mkdir(parents=True)
    name = "train-labels-idx1-ubyte.gz"
    bad = folder / name
    shutil.copy(data_dir / "mnist" / name, bad)
    raw = bad.read_bytes()
    if flaw == "truncated":
        bad.write_bytes(raw[: len(raw) // 2])
    else:
        bad.write_bytes(raw[:100] + bytes([raw[100] ^ 0xFF]) + raw[101:])
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path / "corrupt", download=False)
    message = str(info.value)
    assert str(bad) in message
    assert "d53e105ee54ea40749a09fcbcd1e9432" in message  # expected
    assert idx_files.md5_of(bad) in message  # actual


def test_absent_files_without_download_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist", data_dir=tmp_path / "empty", download=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert str(tmp_path / "empty" / "fashion-mnist") in message
    assert "SEARCHSVC_DATA_DIR" in message


def test_download_verifies_and_renames_into_the_cache_without_leftovers(
    _isolated_cache: Path, tmp_path: Path, data_dir: Path
) -> None:
    mirror = (data_dir / "mnist").as_uri() + "/"
    paths = idx_files.locate_files(
        "mnist", data_dir=tmp_path / "empty", download=True, mirrors=[mirror]
    )
    cache = _isolated_cache / "searchsvc" / "data" / "mnist"
    assert {p.parent for p in paths.values()} == {cache}
    assert sorted(p.name for p in cache.iterdir()) == sorted(paths)  # no .part files
    data = load_dataset("mnist", download=False)  # found in the cache now
    assert data.x_test.shape == (10000, 784)


def test_download_of_a_corrupt_file_is_rejected_and_leaves_nothing(
    _isolated_cache: Path, tmp_path: Path
) -> None:
    mirror_dir = tmp_path / "mirror"
    mirror_dir.mkdir()
    for f in idx_files.IDX_DATASETS["mnist"].files:
        (mirror_dir / f.name).write_bytes(b"not the real file")
    with pytest.raises(DataError) as info:
        idx_files.locate_files(
            "mnist", data_dir=tmp_path / "empty", mirrors=[mirror_dir.as_uri() + "/"]
        )
    assert "MD5" in str(info.value) and "could not download" in str(info.value)
    cache = _isolated_cache / "searchsvc" / "data" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_idx_with_bad_magic_or_wrong_size_is_rejected(tmp_path: Path) -> None:
    bad_magic = tmp_path / "magic.gz"
    bad_magic.write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc"))
    with pytest.raises(DataError, match="bad IDX magic"):
        idx_files.read_idx(bad_magic, 1)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc"))
    with pytest.raises(DataError, match=r"shape \(5,\)"):
        idx_files.read_idx(short, 1)
    ok = tmp_path / "ok.gz"
    ok.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03"))
    assert idx_files.read_idx(ok, 1).tolist() == [1, 2, 3]


def test_default_cache_dir_respects_xdg_cache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "searchsvc" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "searchsvc" / "data"


# --- digits, synthetic, names ---------------------------------------------------------------


def test_digits_loads_scaled_with_a_fixed_stratified_test_split() -> None:
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=1)
    total = len(a.x_train) + len(a.x_val) + len(a.x_test)
    assert total == 1797 and a.n_features == 64 and a.image_shape == (8, 8)
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    assert len(a.x_test) == round(0.2 * 1797)
    assert np.array_equal(a.x_test, b.x_test)  # the test split does not follow the seed
    assert not np.array_equal(a.y_val, b.y_val)  # the validation split does


def test_synthetic_loads_ten_classes_deterministically() -> None:
    a = load_dataset("synthetic", seed=3)
    b = load_dataset("synthetic", seed=3)
    assert a.n_classes == 10 and a.n_features == 20
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 2000
    assert set(np.unique(a.y_train)) == set(range(10))
    assert np.array_equal(a.x_train, b.x_train)


def test_val_size_accepts_a_count_or_a_fraction() -> None:
    assert len(load_dataset("synthetic", val_size=100).x_val) == 100
    assert len(load_dataset("synthetic", val_size=0.5).x_val) == 800
    with pytest.raises(DataError, match="validation"):
        load_dataset("synthetic", val_size=1.5)


def test_unknown_dataset_name_lists_the_known_ones() -> None:
    with pytest.raises(DataError) as info:
        load_dataset("cifar")
    assert all(name in str(info.value) for name in DATASET_NAMES)


# --- npz ------------------------------------------------------------------------------------


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _good_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "x_train": rng.random((60, 5)).astype(np.float32),
        "y_train": np.arange(60) % 3,
        "x_val": rng.random((12, 5)).astype(np.float32),
        "y_val": np.arange(12) % 3,
    }


def test_npz_with_its_own_validation_split_is_used_as_is(tmp_path: Path) -> None:
    arrays = _good_arrays(np.random.default_rng(0))
    path = _write_npz(tmp_path / "ok.npz", **arrays)
    data = load_dataset("npz", path=path)
    assert np.array_equal(data.x_val, arrays["x_val"])
    assert data.n_classes == 3 and data.x_test is None


def test_npz_images_are_flattened_scaled_and_get_an_image_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 4, 6), dtype=np.uint8)
    path = _write_npz(
        tmp_path / "img.npz",
        x_train=x,
        y_train=(np.arange(50) % 5).astype(np.float64),  # integral floats are accepted
        class_names=np.array(["a", "b", "c", "d", "e"]),
    )
    data = load_dataset("npz", path=path, val_size=10)
    assert data.x_train.shape == (40, 24) and data.x_val.shape == (10, 24)
    assert data.image_shape == (4, 6) and data.class_names == ("a", "b", "c", "d", "e")
    assert data.x_train.dtype == np.float32 and data.x_train.max() <= 1.0
    assert data.y_train.dtype == np.int64


def _bad_npz_cases() -> list[tuple[str, dict[str, object], str]]:
    rng = np.random.default_rng(1)
    good = _good_arrays(rng)
    nan_x = good["x_train"].copy()
    nan_x[3, 2] = np.nan
    inf_x = good["x_train"].copy()
    inf_x[5, 0] = np.inf
    return [
        ("missing x_train", {"y_train": good["y_train"]}, "missing key 'x_train'"),
        ("missing y_train", {"x_train": good["x_train"]}, "missing key 'y_train'"),
        ("x_val without y_val", {**good, "y_val": None}, "missing key 'y_val'"),
        (
            "length mismatch",
            {**good, "y_train": good["y_train"][:-1]},
            "'x_train' has 60 rows but 'y_train' has 59",
        ),
        ("nan feature", {**good, "x_train": nan_x}, "'x_train' contains NaN or infinite"),
        ("inf feature", {**good, "x_train": inf_x}, "'x_train' contains NaN or infinite"),
        (
            "negative labels",
            {**good, "y_train": good["y_train"] - 1},
            "found negative values -1",
        ),
        (
            "labels 1..K",
            {**good, "y_train": good["y_train"] + 1, "y_val": good["y_val"] + 1},
            "missing 0",
        ),
        (
            "non-integer labels",
            {**good, "y_train": good["y_train"] + 0.5},
            "non-integer values 0.5",
        ),
        (
            "val label unseen in train",
            {**good, "y_val": np.full(12, 7)},
            "'y_val' has labels outside 0..2",
        ),
        (
            "feature count mismatch",
            {**good, "x_val": good["x_val"][:, :4]},
            "'x_val' has 4 features per sample but 'x_train' has 5",
        ),
        (
            "empty array",
            {**good, "x_train": np.zeros((0, 5)), "y_train": np.zeros(0)},
            "'x_train' is empty",
        ),
    ]


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [(arrays, problem) for _, arrays, problem in _bad_npz_cases()],
    ids=[case for case, _, _ in _bad_npz_cases()],
)
def test_bad_npz_raises_data_error_naming_file_and_problem(
    tmp_path: Path, arrays: dict[str, object], problem: str
) -> None:
    path = _write_npz(tmp_path / "bad.npz", **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(DataError) as info:
        load_dataset("npz", path=path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert problem in message, message
    assert "\n" not in message


def test_unreadable_or_missing_npz_raises_data_error_naming_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match="cannot read as a .npz file") as info:
        load_dataset("npz", path=garbage)
    assert str(garbage) in str(info.value)
    with pytest.raises(DataError, match="file not found") as info:
        load_dataset("npz", path=tmp_path / "absent.npz")
    assert str(tmp_path / "absent.npz") in str(info.value)
    with pytest.raises(DataError, match="needs 'path'"):
        load_dataset("npz")


def test_an_idx_set_neither_on_disk_nor_downloadable_is_named_before_a_run(tmp_path):
    from searchsvc.data.idx_files import availability_problem
    from searchsvc.settings import Settings
    from tests.servers import free_port

    settings = Settings.from_env({"XDG_CACHE_HOME": str(tmp_path / "cache")})
    port = free_port()  # nothing listens there
    problem = availability_problem(
        "mnist", data_dir=tmp_path / "empty", mirrors=(f"http://127.0.0.1:{port}/",),
        settings=settings,
    )  # fmt: skip
    cache = tmp_path / "cache" / "searchsvc" / "data" / "mnist"
    assert problem == (
        "mnist: missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (searched "
        f"{tmp_path / 'empty' / 'mnist'}, {cache}); put the files in <data dir>/mnist/ and pass "
        f"that data dir or set SEARCHSVC_DATA_DIR=<data dir>, or allow downloads into {cache} "
        f"(no download mirror answers: http://127.0.0.1:{port}/train-images-idx3-ubyte.gz: "
        "[Errno 111] Connection refused)"
    )
    assert not (tmp_path / "cache").exists(), "nothing created"


def test_an_idx_set_on_disk_needs_no_mirror(data_dir):
    from searchsvc.data.idx_files import availability_problem

    assert (
        availability_problem("mnist", data_dir=data_dir, mirrors=("http://127.0.0.1:9/",)) is None
    )
