"""Datasets: bundled splits, file formats, and clear errors for malformed input."""

import gzip
import pickle

import numpy as np
import pytest

from golden.datasets import (Dataset, DatasetError, Normaliser, load_dataset, one_hot, read_idx,
                             stratified_split)


def test_digits_split_is_fixed_and_stratified():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255 and ds.x_train.min() == 0
    counts = np.bincount(ds.y_test, minlength=10)
    assert counts.sum() == 360 and counts.min() >= 35 and counts.max() <= 37
    again = load_dataset("digits")
    assert np.array_equal(ds.y_test, again.y_test) and np.array_equal(ds.x_train, again.x_train)


def test_mnist5k_split():
    ds = load_dataset("mnist5k")
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert np.bincount(ds.y_test).tolist() == [100] * 10


def test_stratified_split_largest_remainder():
    y = np.array([0] * 5 + [1] * 3 + [2] * 2)
    train, test = stratified_split(y, 4)
    assert len(test) == 4 and len(train) == 6 and not set(train) & set(test)
    assert np.bincount(y[test], minlength=3).tolist() == [2, 1, 1]


def test_unknown_and_missing():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("fashion", "/nonexistent/folder")


def _write_idx(path, arr, magic_type=0x08, truncate=0, gz=False):
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, magic_type, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    raw = head + arr.tobytes()
    raw = raw[:len(raw) - truncate]
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def _idx_folder(tmp_path, n_train=20, n_test=10, gz=False, labels_max=9):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(n, 28, 28)), gz=gz)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, labels_max + 1, size=n), gz=gz)
    return tmp_path


@pytest.mark.parametrize("gz", [False, True])
def test_idx_loads(tmp_path, gz):
    ds = load_dataset("fashion", _idx_folder(tmp_path, gz=gz))
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)


def test_idx_malformed(tmp_path):
    _idx_folder(tmp_path)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28)), truncate=5)
    with pytest.raises(DatasetError, match="holds"):
        load_dataset("mnist", tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x12\x34\x08\x03")
    with pytest.raises(DatasetError, match="magic"):
        load_dataset("mnist", tmp_path)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28)), magic_type=0x0D)
    with pytest.raises(DatasetError, match="element type"):
        read_idx(tmp_path / "t10k-images-idx3-ubyte")
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((9, 28, 28)))
    with pytest.raises(DatasetError, match="10 labels"):
        load_dataset("mnist", tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DatasetError, match="missing file"):
        load_dataset("mnist", tmp_path)


def test_idx_labels_out_of_range(tmp_path):
    with pytest.raises(DatasetError, match="outside 0..9"):
        load_dataset("mnist", _idx_folder(tmp_path, labels_max=12, n_train=200))


def _cifar_folder(tmp_path, bad=None):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, size=(4, 3072)).astype(np.uint8), b"labels": [0, 1, 2, 9]}
        if bad == "shape":
            d[b"data"] = d[b"data"][:, :100]
        if bad == "keys":
            d = {b"x": 1}
        with open(tmp_path / name, "wb") as f:
            pickle.dump(d, f)
    return tmp_path


def test_cifar10(tmp_path):
    ds = load_dataset("cifar10", _cifar_folder(tmp_path))
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)


@pytest.mark.parametrize("bad", ["shape", "keys"])
def test_cifar10_malformed(tmp_path, bad):
    with pytest.raises(DatasetError):
        load_dataset("cifar10", _cifar_folder(tmp_path, bad))


def test_dataset_validation():
    x = np.zeros((3, 1, 2, 2), dtype=np.uint8)
    with pytest.raises(DatasetError, match="uint8"):
        Dataset("t", x.astype(np.float32), np.zeros(3, int), x, np.zeros(3, int), 2)
    with pytest.raises(DatasetError, match="shape"):
        Dataset("t", x[:, 0], np.zeros(3, int), x, np.zeros(3, int), 2)
    with pytest.raises(DatasetError, match="labels"):
        Dataset("t", x, np.zeros(2, int), x, np.zeros(3, int), 2)
    with pytest.raises(DatasetError, match="label -1"):
        Dataset("t", x, np.array([0, -1, 1]), x, np.zeros(3, int), 2)
    with pytest.raises(DatasetError, match="empty"):
        Dataset("t", x[:0], np.zeros(0, int), x, np.zeros(3, int), 2)


def test_normaliser_integer_statistics():
    p = np.array([[[[0, 128], [255, 128]]]], dtype=np.uint8)      # x0 = -128, 0, 127, 0
    n = Normaliser.fit(p)
    assert n.mu.tolist() == [0]                 # tdiv(-1, 4) = 0 (floor would give -1)
    assert n.mad.tolist() == [63]               # tdiv(255, 4)
    x = n(p)
    assert x.dtype == np.int8
    assert x.tolist() == [[[[-103, 0], [102, 0]]]]    # tdiv(-128*51, 63) = -103
    with pytest.raises(DatasetError, match="constant"):
        Normaliser.fit(np.full((2, 1, 2, 2), 7, dtype=np.uint8))
    big = Normaliser(np.array([0]), np.array([1]))
    assert big(np.array([[[[0, 255]]]], dtype=np.uint8)).tolist() == [[[[-128, 127]]]]   # clipped


def test_one_hot():
    assert one_hot(np.array([2, 0]), 3).tolist() == [[0, 0, 32], [32, 0, 0]]
    with pytest.raises(ValueError):
        one_hot(np.array([3]), 3)


class _RunsCode:
    """What a crafted pickle does: unpickling calls os.system (here: creates a file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_pickles_of_every_protocol_load(tmp_path, protocol):
    folder = _cifar_folder(tmp_path)
    for name in ["data_batch_1", "test_batch"]:
        with open(folder / name, "rb") as f:
            d = pickle.load(f)
        with open(folder / name, "wb") as f:
            pickle.dump({**d, b"batch_label": b"batch", b"filenames": [b"a.png"] * 4},
                        f, protocol=protocol)
    ds = load_dataset("cifar10", folder)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.y_test.tolist() == [0, 1, 2, 9]


def test_cifar10_crafted_pickle_runs_no_code(tmp_path):
    """A data_batch_1 that would run a command when unpickled is refused naming the file and
    what it asked for, and the command did not run (its marker file does not exist)."""
    folder = _cifar_folder(tmp_path)
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _RunsCode(marker), b"labels": [0]}, f)
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", folder)
    msg = str(err.value)
    assert "data_batch_1" in msg and "refused" in msg and "system" in msg and "\n" not in msg
    assert not marker.exists()
    pickle.loads(pickle.dumps(_RunsCode(marker)))    # the same pickle, unrestricted: it runs
    assert marker.exists()


def test_cifar10_object_arrays_and_odd_contents_are_refused(tmp_path):
    folder = _cifar_folder(tmp_path)
    cases = {
        "object array": ({b"data": np.array([1, "x"], dtype=object), b"labels": [0]}, "object"),
        "string labels": ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [b"cat", b"dog"]},
                          "label b'cat'"),
        "a list": ([1, 2, 3], "not a batch"),
        "label count": ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "1 labels"),
        "label range": ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, "0..9"),
    }
    for what, (content, msg) in cases.items():
        with open(folder / "test_batch", "wb") as f:
            pickle.dump(content, f)
        with pytest.raises(DatasetError, match=msg) as err:
            load_dataset("cifar10", folder)
        assert "test_batch" in str(err.value), what


def test_idx_dimensions_whose_product_overflows(tmp_path):
    """Header dimensions whose product wraps to 0 in 64 bits (4 x 2**16 = 2**64) with an empty
    body: refused by their real size, naming the file (NumPy's product said 0 bytes, and the
    reshape failed with 'cannot reshape')."""
    dims = [2 ** 16] * 4
    assert int(np.prod(dims)) == 0
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 4]) + b"".join(d.to_bytes(4, "big") for d in dims))
    with pytest.raises(DatasetError, match=f"{2 ** 64} bytes.*holds 0") as err:
        read_idx(path)
    assert str(path) in str(err.value)
