"""The MF loader on a small fixture generated in exactly the public layout."""

import re
from pathlib import Path

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
    good = (root / "images" / "00001D.png").read_bytes()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "00001D.png")
    with pytest.raises(ValueError, match="00001D.*HxWx4"):
        create_dataset("mf", root=root, split="test")  # the PNG header already says 3 channels
    with pytest.raises(ValueError, match="00001D.*HxWx4"):
        create_dataset("mf", root=root, split="test", validate="files")[0]
    (root / "images" / "00001D.png").write_bytes(good)
    Image.fromarray(np.full((8, 8), 12, np.uint8)).save(root / "labels" / "00003D.png")
    with pytest.raises(ValueError, match="00003D.*class 12"):
        create_dataset("mf", root=root, split="test")[2]


# -- validation before work starts -------------------------------------------------------------

OFFICIAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mfnet-official"


def test_real_mf_frames_are_rgba_and_load(tmp_path):
    """The published MF frames are PNGs that PIL reports as RGBA (thermal in the alpha slot): the
    opaque-alpha rule must accept them. Copied into a temporary MF layout, never into the repo."""
    frames = [OFFICIAL / "01234N.png", OFFICIAL / "01477D.png"]
    if not all(f.is_file() for f in frames):
        pytest.skip(f"real MF frames not found in {OFFICIAL}")
    root = tmp_path / "MF"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for frame in frames:
        with Image.open(frame) as image:
            assert image.mode == "RGBA"
            size = image.size
        (root / "images" / frame.name).write_bytes(frame.read_bytes())
        Image.fromarray(np.zeros(size[::-1], np.uint8)).save(root / "labels" / frame.name)
    (root / "test.txt").write_text("01234N\n01477D.png\n")
    ds = create_dataset("mf", root=root, split="test", validate="pixels")
    item = ds[1]
    raw = np.array(Image.open(frames[1]))
    assert item["ir"].shape == (1, 480, 640) and item["name"] == "01477D"
    assert torch.equal((item["ir"][0] * 255).round().byte(), torch.from_numpy(raw[..., 3]))


def test_opaque_alpha_is_not_read_as_thermal(tmp_path):
    root = make_mf_fixture(tmp_path / "MF", size=(8, 8))
    path = root / "images" / "00002N.png"
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("RGBA").save(path)  # an ordinary RGB picture with an opaque alpha channel
    assert Image.open(path).mode == "RGBA"
    ds = create_dataset("mf", root=root, split="test", validate="headers")  # the header is that of a real frame
    ds[0]
    with pytest.raises(ValueError, match=f"{path}.*channel 3.*255 at every pixel"):
        ds[1]
    with pytest.raises(ValueError, match=f"{path}.*255 at every pixel"):
        create_dataset("mf", root=root, split="test", validate="pixels")
    # a thermal channel that is hot somewhere but not everywhere is fine
    thermal = np.full((8, 8, 1), 255, np.uint8)
    thermal[0, 0] = 254
    Image.fromarray(np.concatenate([rgb, thermal], 2)).save(path)
    assert int(create_dataset("mf", root=root, split="test", validate="pixels")[1]["ir"].min() * 255 + 0.5) == 254


@pytest.mark.parametrize("text", ["", "\n", "  \n\n\t\n"])
def test_empty_split_file(tmp_path, text):
    root = make_mf_fixture(tmp_path / "MF", size=(8, 8))
    (root / "val.txt").write_text(text)
    with pytest.raises(ValueError, match=r"val\.txt lists no frame names"):
        create_dataset("mf", root=root, split="val")


def test_duplicate_names(tmp_path):
    root = make_mf_fixture(tmp_path / "MF", size=(8, 8))
    (root / "train.txt").write_text("00001D\n00002N\n00003D\n00001D.png\n")
    with pytest.raises(ValueError, match=r"train\.txt lists 1 frame name.*'00001D' on lines 1, 4"):
        create_dataset("mf", root=root, split="train")


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "2"])
def test_limit_must_be_none_or_positive(tmp_path, limit):
    root = make_mf_fixture(tmp_path / "MF", size=(8, 8))
    with pytest.raises(ValueError, match="limit must be None.*positive int"):
        create_dataset("mf", root=root, split="test", limit=limit)


def test_limit_counts_frames(tmp_path):
    root = make_mf_fixture(tmp_path / "MF", size=(8, 8))
    assert len(create_dataset("mf", root=root, split="test", limit=1)) == 1
    assert len(create_dataset("mf", root=root, split="test", limit=np.int64(2))) == 2
    assert len(create_dataset("mf", root=root, split="test", limit=100)) == 3
    assert len(create_dataset("mf", root=root, split="test", limit=None)) == 3


@pytest.mark.parametrize("entry", ["../secret", "../../etc/passwd", "/etc/passwd", "sub/00001D", "..\\secret", "..", "."])
def test_entries_that_escape_the_root(tmp_path, entry):
    root = make_mf_fixture(tmp_path / "MF", size=(8, 8))
    # a frame outside images/ that the entry could reach
    Image.fromarray(np.ones((8, 8, 4), np.uint8)).save(root / "secret.png")
    (root / "test.txt").write_text(f"00001D\n{entry}\n")
    with pytest.raises(ValueError, match=r"test\.txt has 1 entry that (is|are) not (a )?plain frame names?.*line 2: " + re.escape(repr(entry))):
        create_dataset("mf", root=root, split="test")


def test_missing_files_fail_at_construction(tmp_path):
    root = make_mf_fixture(tmp_path / "MF", size=(8, 8))
    (root / "labels" / "00003D.png").unlink()
    (root / "images" / "00002N.png").unlink()
    for validate in ("files", "headers", "pixels"):
        with pytest.raises(FileNotFoundError, match=r"2 file\(s\).*missing.*images.00002N\.png.*labels.00003D\.png"):
            create_dataset("mf", root=root, split="test", validate=validate)
    assert create_dataset("mf", root=root, split="test", limit=1).names == ["00001D"]  # only the selected frames are needed
    (root / "labels").rename(root / "labels-old")
    with pytest.raises(FileNotFoundError, match="missing labels/"):
        create_dataset("mf", root=root, split="test")


def test_header_checks(tmp_path):
    root = make_mf_fixture(tmp_path / "MF", size=(8, 8))
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(root / "labels" / "00002N.png")
    with pytest.raises(ValueError, match="00002N' are 6x8, image is 8x8"):
        create_dataset("mf", root=root, split="test")
    ds = create_dataset("mf", root=root, split="test", validate="files")  # cheaper check: found when read
    with pytest.raises(ValueError, match="00002N' are \\(6, 8\\)"):
        ds[1]
    (root / "images" / "00003D.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="00003D: cannot read the PNG header"):
        create_dataset("mf", root=root, split="test")
    with pytest.raises(ValueError, match="validate must be one of"):
        create_dataset("mf", root=root, split="test", validate="everything")


def test_pixels_validation_reads_every_frame_up_front(tmp_path):
    root = make_mf_fixture(tmp_path / "MF", size=(8, 8))
    Image.fromarray(np.full((8, 8), 12, np.uint8)).save(root / "labels" / "00003D.png")
    create_dataset("mf", root=root, split="test", validate="headers")  # headers cannot see class ids
    with pytest.raises(ValueError, match="00003D.*class 12"):
        create_dataset("mf", root=root, split="test", validate="pixels")
    with pytest.raises(ValueError, match="00003D.*class 12"):
        create_dataset("mf", root=root, split="test")  # the default


# -- sizes, RGB label maps, truncated files ---------------------------------------------------------


@pytest.mark.parametrize("size", [(0, 0), (0, 16), (16, -1), (16,), (16, 16, 3), (16.0, 16), (True, 16), 16, "16x16"])
def test_size_is_checked_at_construction(tmp_path, size):
    root = make_mf_fixture(tmp_path / "MF", size=(8, 8))
    with pytest.raises(ValueError, match=r"size must be None or \(H, W\) with two positive ints"):
        create_dataset("mf", root=root, split="test", size=size)
    assert create_dataset("mf", root=root, split="test", size=[np.int64(4), 6])[0]["rgb"].shape == (3, 4, 6)


def test_rgb_labels_must_have_equal_channels(tmp_path):
    from mmfusion_attacks.data.mf_dataset import MFImageError

    root = make_mf_fixture(tmp_path / "MF", size=(8, 8))
    ids = np.random.default_rng(2).integers(0, 9, (8, 8), dtype=np.uint8)
    path = root / "labels" / "00002N.png"
    Image.fromarray(np.stack([ids] * 3, 2)).save(path)  # RGB, equal channels: the ids
    assert torch.equal(create_dataset("mf", root=root, split="test")[1]["labels"], torch.from_numpy(ids.astype(np.int64)))
    coloured = np.stack([ids, (ids + 1) % 9, ids], 2)  # channel 0 alone looks like valid ids
    coloured[..., 1][ids == 3] = 3
    Image.fromarray(coloured).save(path)
    ds = create_dataset("mf", root=root, split="test", validate="headers")  # the header (mode RGB) is allowed
    with pytest.raises(MFImageError, match=rf"{re.escape(str(path))}.*3 channels that differ at \d+ pixel"):
        ds[1]
    with pytest.raises(MFImageError, match="00002N"):
        create_dataset("mf", root=root, split="test", validate="pixels")


@pytest.mark.parametrize(("folder", "kind"), [("images", "image"), ("labels", "labels")])
def test_truncated_png_names_the_file(tmp_path, folder, kind):
    from mmfusion_attacks.data.mf_dataset import MFImageError

    root = make_mf_fixture(tmp_path / "MF", size=(64, 64))
    path = root / folder / "00003D.png"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # the header survives, the pixels do not
    ds = create_dataset("mf", root=root, split="test", validate="headers")  # headers are readable
    with pytest.raises(MFImageError, match=rf"MF {kind} '00003D' \({re.escape(str(path))}\) cannot be decoded.*truncated"):
        ds[2]
    with pytest.raises(MFImageError, match=re.escape(str(path))):
        create_dataset("mf", root=root, split="test", validate="pixels")
    assert issubclass(MFImageError, ValueError)


def test_split_file_that_is_not_utf8(tmp_path):
    root = make_mf_fixture(tmp_path / "MF", size=(8, 8))
    (root / "val.txt").write_bytes(b"00001D\n0000\xff2N\n")
    with pytest.raises(ValueError, match=r"val\.txt line 2: byte\(s\) ff are not UTF-8"):
        create_dataset("mf", root=root, split="val")


# -- every frame checked before the first item is read (validate="pixels", on_error) -------------------


def _break_two_frames(root):
    """A truncated image in the middle of the split and a label map with class 12."""
    image = root / "images" / "00002N.png"
    image.write_bytes(image.read_bytes()[: len(image.read_bytes()) // 2])
    labels = root / "labels" / "00004D.png"
    Image.fromarray(np.full((64, 64), 12, np.uint8)).save(labels)
    return image, labels


NAMES = ("00001D", "00002N", "00003D", "00004D", "00005N")


def test_one_error_lists_every_bad_frame_before_any_item_is_read(tmp_path, monkeypatch):
    from mmfusion_attacks.data.mf_dataset import MFDataset, MFImageError

    root = make_mf_fixture(tmp_path / "MF", names=NAMES, size=(64, 64))
    image, labels = _break_two_frames(root)
    monkeypatch.setattr(MFDataset, "__getitem__", lambda self, i: pytest.fail("an item was read"))
    with pytest.raises(MFImageError) as info:
        create_dataset("mf", root=root, split="test")
    message = str(info.value)
    assert "2 of 5 frame(s)" in message and "on_error='skip'" in message
    assert re.search(rf"{re.escape(str(image))}\) cannot be decoded.*truncated", message)
    assert re.search(rf"00004D' \({re.escape(str(labels))}\) contain class 12; ids must be < 9", message)
    assert [(n, r) for n, r, _ in info.value.problems] == [("00002N", "unreadable"), ("00004D", "bad_labels")]
    # limit: only the selected frames are checked
    assert create_dataset("mf", root=root, split="test", limit=1).names == ["00001D"]
    with pytest.raises(MFImageError, match="1 of 3 frame"):
        create_dataset("mf", root=root, split="test", limit=3)


def test_skip_mode_counts_and_names_the_bad_frames(tmp_path):
    from mmfusion_attacks.data.mf_dataset import MFSkipWarning

    root = make_mf_fixture(tmp_path / "MF", names=NAMES, size=(64, 64))
    _break_two_frames(root)
    with pytest.warns(MFSkipWarning, match=r"skipped 2 bad frame\(s\) \(unreadable: 1 \(00002N\); bad_labels: 1 \(00004D\)\); 3 frame\(s\) kept"):
        ds = create_dataset("mf", root=root, split="test", on_error="skip")
    assert len(ds) == 3 and ds.names == ["00001D", "00003D", "00005N"]
    assert ds.skipped == {"unreadable": 1, "bad_labels": 1} and ds.skipped_names == {"unreadable": ["00002N"], "bad_labels": ["00004D"]}
    assert [ds[i]["name"] for i in range(len(ds))] == ds.names and ds.frame_size() == (64, 64)
    # limit counts usable frames, as in the IU X-ray loader
    with pytest.warns(MFSkipWarning, match="skipped 1 bad frame"):
        assert create_dataset("mf", root=root, split="test", limit=2, on_error="skip").names == ["00001D", "00003D"]


def test_skip_mode_missing_files_and_nothing_left(tmp_path):
    from mmfusion_attacks.data.mf_dataset import MFImageError, MFSkipWarning

    root = make_mf_fixture(tmp_path / "MF", names=NAMES[:3], size=(8, 8))
    (root / "labels" / "00003D.png").unlink()
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(root / "labels" / "00001D.png")
    with pytest.raises(FileNotFoundError, match=r"1 file\(s\).*labels.00003D\.png.*Also 1 other problem.*00001D.*class 9") as info:
        create_dataset("mf", root=root, split="test")
    assert [r for _, r, _ in info.value.problems] == ["bad_labels", "missing_file"]
    with pytest.warns(MFSkipWarning, match="missing_file: 1 \\(00003D\\)"):
        assert len(create_dataset("mf", root=root, split="test", on_error="skip")) == 1
    (root / "test.txt").write_text("00001D\n00003D\n")
    with pytest.warns(MFSkipWarning), pytest.raises(MFImageError, match="no usable frame"):
        create_dataset("mf", root=root, split="test", on_error="skip")


def test_validate_method_and_opt_out(tmp_path):
    from mmfusion_attacks.data.mf_dataset import MFImageError, MFSkipWarning

    root = make_mf_fixture(tmp_path / "MF", names=NAMES, size=(64, 64))
    _break_two_frames(root)
    ds = create_dataset("mf", root=root, split="test", validate="headers")  # the opt-out: pixels not decoded
    assert len(ds) == 5
    with pytest.raises(MFImageError, match="2 of 5"):
        ds.validate()
    assert len(ds) == 5
    with pytest.warns(MFSkipWarning, match="skipped 2"):
        assert ds.validate(on_error="skip") is ds
    assert len(ds) == 3 and ds.skipped == {"unreadable": 1, "bad_labels": 1}
    with pytest.raises(ValueError, match="on_error must be one of"):
        create_dataset("mf", root=root, split="test", on_error="ignore")
    with pytest.raises(ValueError, match="level must be one of"):
        ds.validate(level="all")


def test_resized_labels_stay_on_their_pixels(tmp_path):
    """Labels are resized at pixel centres, as the image is (bilinear): a plain "nearest" takes each block's
    top-left pixel, shifting the labels (scale - 1) / 2 source pixels up and left of the image."""
    root = make_mf_fixture(tmp_path / "MF", names=("00001D",), size=(16, 16))
    image = np.zeros((16, 16, 4), dtype=np.uint8)
    image[..., 3] = np.arange(16, dtype=np.uint8)[None, :] * 8  # a thermal gradient (255 everywhere reads as alpha)
    image[:, 6:, :3] = 255  # an object from column 6 on
    labels = np.zeros((16, 16), dtype=np.uint8)
    labels[:, 6:] = 1
    Image.fromarray(image).save(root / "images" / "00001D.png")
    Image.fromarray(labels).save(root / "labels" / "00001D.png")
    item = create_dataset("mf", root=root, split="test", size=(4, 4))[0]
    # output column 1 covers source columns 4..7 (centre 5.5): half object in the image; its label is
    # that of the source pixel under its centre (column 5 rounds to 6 in nearest-exact: object)
    assert item["labels"][0].tolist() == [0, 1, 1, 1]
    assert (item["rgb"][0, 0] > 0.25).tolist() == [False, True, True, True]
