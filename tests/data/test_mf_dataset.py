"""The MF loader on a small fixture generated in exactly the public layout."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmfusion_attacks.data import MF_SPLITS, create_dataset


def make_mf_fixture(root, names=("00001D", "00002N", "00003D"), size=(480, 640)):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name in names:
        Image.fromarray(rng.integers(0, 256, (*size, 4), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(rng.integers(0, 9, size, dtype=np.uint8)).save(root / "labels" / f"{name}.png")
    for split in MF_SPLITS:
        (root / f"{split}.txt").write_text("\n".join(names) + "\n")
    (root / "test_night.txt").write_text("00002N\n")
    return root


def test_reads_the_public_layout(tmp_path):
    root = make_mf_fixture(tmp_path / "MF")
    ds = create_dataset("mf", root=root, split="test")
    assert len(ds) == 3 and not ds.synthetic
    item = ds[1]
    raw = np.array(Image.open(root / "images" / "00002N.png"))
    assert item["rgb"].shape == (3, 480, 640) and item["ir"].shape == (1, 480, 640)
    assert torch.equal((item["rgb"] * 255).round().byte(), torch.from_numpy(raw[..., :3]).permute(2, 0, 1))
    assert torch.equal((item["ir"][0] * 255).round().byte(), torch.from_numpy(raw[..., 3]))
    assert torch.equal(item["labels"], torch.from_numpy(np.asarray(Image.open(root / "labels" / "00002N.png")).astype(np.int64)))
    assert item["name"] == "00002N"
    assert [n for n in create_dataset("mf", root=root, split="test_night").names] == ["00002N"]


def test_resize_and_limit(tmp_path):
    ds = create_dataset("mf", root=make_mf_fixture(tmp_path / "MF"), split="train", size=(120, 160), limit=2)
    item = ds[0]
    assert len(ds) == 2 and item["rgb"].shape == (3, 120, 160) and item["labels"].shape == (120, 160)
    assert item["labels"].dtype == torch.int64 and int(item["labels"].max()) < 9
    assert 0 <= float(item["rgb"].min()) and float(item["rgb"].max()) <= 1


def test_batches_through_a_dataloader(tmp_path):
    ds = create_dataset("mf", root=make_mf_fixture(tmp_path / "MF", size=(48, 64)), split="val")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["rgb"].shape == (2, 3, 48, 64) and batch["name"] == ["00001D", "00002N"]


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="MFNet authors"):
        create_dataset("mf", root=tmp_path / "nowhere")
    root = make_mf_fixture(tmp_path / "MF", size=(8, 8))
    with pytest.raises(ValueError, match="split"):
        create_dataset("mf", root=root, split="holdout")
    (root / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="val.txt"):
        create_dataset("mf", root=root, split="val")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "00001D.png")
    with pytest.raises(ValueError, match="00001D.*HxWx4"):
        create_dataset("mf", root=root, split="test")[0]
    Image.fromarray(np.full((8, 8), 12, np.uint8)).save(root / "labels" / "00003D.png")
    with pytest.raises(ValueError, match="00003D.*class 12"):
        create_dataset("mf", root=root, split="test")[2]
