"""Fashion-MNIST loader on generated IDX fixtures (gzip and raw), captions, held-out classes, and the
SYNTHETIC fallback with its install message. Never reads the real package: DEBIAN_ROOT is redirected."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pytest
import torch

from mmfusion_attacks.data import create_dataset
from mmfusion_attacks.data import fashion_mnist as fm
from mmfusion_attacks.errors import MissingResourceError


def write_fixture(root, n_train=30, n_test=20, compress=True, seed=0):
    g = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = g.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        img_stem, lab_stem = fm._FILES[split]
        suffix = ".gz" if compress else ""
        fm.write_idx(root / (img_stem + suffix), images)
        fm.write_idx(root / (lab_stem + suffix), labels)
        out[split] = (images, labels)
    return out


@pytest.fixture
def no_debian(tmp_path, monkeypatch):
    """The Debian package looks absent (its folder redirected to an empty one)."""
    monkeypatch.setattr(fm, "DEBIAN_ROOT", tmp_path / "absent")
    return tmp_path / "absent"


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip_and_loader(tmp_path, compress):
    arrays = write_fixture(tmp_path / "fm", compress=compress)
    path = tmp_path / "fm" / ("train-images-idx3-ubyte" + (".gz" if compress else ""))
    assert np.array_equal(fm.read_idx(path), arrays["train"][0])
    data = fm.FashionMNIST("test", root=tmp_path / "fm")
    assert data.source == "fashion-mnist" and not data.synthetic and len(data) == 20
    batch, labels = data.tensors([0, 3])
    assert batch["image"].shape == (2, 1, 28, 28) and batch["image"].dtype == torch.float32
    assert torch.equal(batch["image"][1, 0], torch.from_numpy(arrays["test"][0][3]).float() / 255)
    assert labels.tolist() == [0, 3]
    image, label = data[5]
    assert image.shape == (1, 28, 28) and label == 5
    assert data.captions([1])[0] in [t.format("trouser") for t in fm.CAPTION_TEMPLATES]


def test_class_filter_size_and_held_out_split(tmp_path):
    write_fixture(tmp_path / "fm")
    seen = fm.seen_classes()
    assert set(seen) | set(fm.HELD_OUT_CLASSES) == set(fm.CLASS_NAMES) and not set(seen) & set(fm.HELD_OUT_CLASSES)
    data = fm.FashionMNIST("train", root=tmp_path / "fm", classes=seen, size=10)
    held = {fm.CLASS_NAMES.index(c) for c in fm.HELD_OUT_CLASSES}
    assert len(data) == 10 and not set(data.labels.tolist()) & held
    assert fm.FashionMNIST("train", root=tmp_path / "fm", classes=[8, "bag"]).labels.tolist() == [8, 8, 8]
    with pytest.raises(ValueError, match="unknown Fashion-MNIST class 'hat'"):
        fm.FashionMNIST("train", root=tmp_path / "fm", classes=["hat"])
    with pytest.raises(ValueError, match="not Fashion-MNIST classes"):
        fm.seen_classes(["hat"])
    a, b = fm.FashionMNIST("train", root=tmp_path / "fm"), fm.FashionMNIST("train", root=tmp_path / "fm")
    assert a.fingerprint() == b.fingerprint() and a.captions() == b.captions()


def test_malformed_idx_files_name_the_file(tmp_path):
    good = fm.write_idx(tmp_path / "a.idx", np.zeros((2, 3), np.uint8))
    (tmp_path / "short.idx").write_bytes(good.read_bytes()[:-1])
    with pytest.raises(fm.IDXFormatError, match=r"short.idx.*truncated"):
        fm.read_idx(tmp_path / "short.idx")
    (tmp_path / "magic.idx").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(fm.IDXFormatError, match="magic.idx.*bad magic"):
        fm.read_idx(tmp_path / "magic.idx")
    (tmp_path / "type.idx").write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(fm.IDXFormatError, match="unknown element type 0x07"):
        fm.read_idx(tmp_path / "type.idx")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(good.read_bytes())[:20])
    with pytest.raises(fm.IDXFormatError, match="bad.gz"):
        fm.read_idx(tmp_path / "bad.gz")
    floats = fm.write_idx(tmp_path / "f.idx", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert fm.read_idx(floats).dtype == np.float32 and fm.read_idx(floats)[1, 2] == 5.0
    root = tmp_path / "wrong"
    write_fixture(root)
    fm.write_idx(root / "train-labels-idx1-ubyte.gz", np.full(30, 12, np.uint8))
    with pytest.raises(fm.IDXFormatError, match="hold class 12"):
        fm.FashionMNIST("train", root=root)


def test_synthetic_fallback_says_how_to_install(no_debian):
    with pytest.warns(fm.SyntheticDataWarning, match=r"apt-get install dataset-fashion-mnist.*SYNTHETIC"):
        data = create_dataset("fashion-mnist", split="train", size=25)
    assert data.synthetic and data.source == "synthetic" and "SYNTHETIC" in data.description
    assert len(data) == 25 and data.images.dtype == np.uint8 and data.images.shape[1:] == (28, 28)
    assert data.labels.tolist()[:10] == list(range(10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = fm.FashionMNIST("train", source="synthetic", size=25)
    assert np.array_equal(again.images, data.images)  # deterministic per (seed, split, index)
    assert not np.array_equal(fm.FashionMNIST("test", source="synthetic", size=25).images, data.images)
    with pytest.raises(MissingResourceError, match="apt-get install dataset-fashion-mnist"):
        fm.FashionMNIST("train", source="debian")
    with pytest.raises(fm.FashionMNISTMissingError, match="not in"):
        fm.FashionMNIST("train", root=no_debian)  # an explicit folder never falls back silently
    assert not fm.debian_available()


def test_synthetic_classes_differ():
    """Each class's silhouettes are closer to their own class mean than to any other's (learnable)."""
    data = fm.FashionMNIST("train", source="synthetic", size=200)
    x = data.images.reshape(len(data), -1).astype(np.float32)
    means = np.stack([x[data.labels == c].mean(0) for c in range(10)])
    nearest = ((x[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == data.labels).mean() > 0.9


@pytest.mark.parametrize("labels", [np.array([0, -1, 3, -5], np.int8), np.array([0.0, 2.5, 3.0, 7.9], np.float32)])
def test_labels_that_are_not_class_ids_are_refused(tmp_path, labels):
    """Negative (a signed IDX file) or fractional labels fell out of the class filter silently."""
    images = np.zeros((4, 28, 28), np.uint8)
    for stem in ("train", "t10k"):
        fm.write_idx(tmp_path / f"{stem}-images-idx3-ubyte", images)
        fm.write_idx(tmp_path / f"{stem}-labels-idx1-ubyte", labels)
    with pytest.raises(fm.IDXFormatError, match="labels"):
        fm.FashionMNIST("test", root=tmp_path, source="debian")
