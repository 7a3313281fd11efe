"""The IU X-ray loader on fixtures written in the exact release format (tests/data/iu_fixture.py)."""

import csv
import warnings

import numpy as np
import pytest
import torch
from iu_fixture import IGNORE_KINDS, SKIP_KINDS, write_iu_fixture
from PIL import Image

from mmfusion_attacks.data import create_dataset
from mmfusion_attacks.data.iu_xray import (
    IUXray,
    IUXrayFormatError,
    IUXrayImageError,
    IUXrayMissingFileError,
    IUXraySkipWarning,
    iu_split_of,
)
from mmfusion_attacks.errors import InputError, MissingResourceError


def load(root, **kwargs):
    """The dataset and the IUXraySkipWarnings its construction emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = create_dataset("iu-xray", root=root, **kwargs)
    return ds, [w for w in caught if issubclass(w.category, IUXraySkipWarning)]


def test_round_trip(tmp_path):
    fx = write_iu_fixture(tmp_path / "iu", n=9, image_size=(24, 24))
    ds, caught = load(fx.root, image_size=24)
    assert not caught and ds.skipped == {} and ds.skipped_uids == {} and ds.ignored_projection_rows == {}
    assert not ds.synthetic and ds.classes == ("normal", "abnormal") and ds.views == ("frontal", "lateral")
    assert ds.uids == fx.uids and len(ds) == 9  # CSV order
    for i, uid in enumerate(fx.uids):
        item = ds[i]
        assert set(item) == {"frontal", "lateral", "text", "label", "uid"}
        assert item["uid"] == uid and item["text"] == fx.texts[uid] and item["label"] == fx.labels[uid]
        for view in ("frontal", "lateral"):
            raw = np.array(Image.open(fx.images_dir / fx.files[uid][view]))
            assert item[view].dtype == torch.float32 and item[view].shape == (1, 24, 24)
            assert torch.equal((item[view][0] * 255).round().byte(), torch.from_numpy(raw))  # no resize: exact
    # the first image by file name, although the CSV lists another frontal image first
    with open(fx.root / "indiana_projections.csv", newline="") as handle:
        first_listed = next(r["filename"] for r in csv.DictReader(handle) if r["uid"] == "3")
    assert first_listed.endswith("-3001.dcm.png") and ds.records[ds.uids.index("3")].files["frontal"].name.endswith("-1001.dcm.png")


def test_text_joining_and_labels(tmp_path):
    fx = write_iu_fixture(tmp_path / "iu", n=1)
    with open(fx.root / "indiana_reports.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"])
        writer.writerow(["1", "normal", "  NORMAL ", "Xray Chest PA and Lateral", "XXXX-year-old  male.", "None.", "nan",
                         "No active\n disease."])
    ds, _ = load(fx.root)
    assert ds[0]["text"] == "XXXX-year-old male. No active disease." and ds[0]["label"] == 0


def test_resizes_rectangular_images(tmp_path):
    fx = write_iu_fixture(tmp_path / "iu", n=2, image_size=(40, 28))
    ds, _ = load(fx.root, image_size=16)
    batch, labels = ds.tensors()
    assert batch["frontal"].shape == batch["lateral"].shape == (2, 1, 16, 16) and batch["frontal"].dtype == torch.float32
    assert 0 <= float(batch["frontal"].min()) and float(batch["lateral"].max()) <= 1
    assert batch["text"] == ds.texts and labels.dtype == torch.long and labels.tolist() == ds.labels
    sub, sub_labels = ds.tensors([1])
    assert sub["frontal"].shape == (1, 1, 16, 16) and sub["text"] == [ds.texts[1]] and sub_labels.tolist() == [ds.labels[1]]


@pytest.mark.parametrize("kind", SKIP_KINDS)
def test_each_bad_row_kind_is_skipped_and_counted(tmp_path, kind):
    fx = write_iu_fixture(tmp_path / "iu", n=5, bad={kind: 2})
    ds, caught = load(fx.root)
    assert ds.uids == fx.uids
    assert ds.skipped == {kind: len(fx.bad[kind])} and ds.skipped_uids == {kind: fx.bad[kind]}
    assert len(caught) == 1 and kind in str(caught[0].message) and f"{len(fx.bad[kind])} report row" in str(caught[0].message)


def test_all_kinds_together_and_ignored_projection_rows(tmp_path):
    fx = write_iu_fixture(tmp_path / "iu", n=6, bad={**{k: 1 for k in SKIP_KINDS}, **{k: 2 for k in IGNORE_KINDS}})
    ds, caught = load(fx.root)
    assert ds.uids == fx.uids and list(ds.skipped) == list(SKIP_KINDS)  # reasons in check order
    assert ds.skipped == {k: len(v) for k, v in fx.bad.items()} and ds.ignored_projection_rows == fx.ignored
    message = str(caught[0].message)
    assert len(caught) == 1 and "skipped 9 report row(s)" in message and "ignored 4 row(s) of indiana_projections.csv" in message


def test_validation_levels(tmp_path):
    fx = write_iu_fixture(tmp_path / "iu", n=3, bad={"unreadable_image": 2})  # one empty file, one not a PNG
    assert load(fx.root, validate="files")[0].skipped == {"unreadable_image": 1}  # only the empty one
    assert load(fx.root, validate="headers")[0].skipped == {"unreadable_image": 2}
    assert load(fx.root, validate="full")[0].skipped == {"unreadable_image": 2}
    ds, _ = load(fx.root, validate="files")
    with pytest.raises(IUXrayImageError, match="not a png|cannot be decoded"):
        [ds[i] for i in range(len(ds))]
    with pytest.raises(ValueError, match="validate"):
        load(fx.root, validate="pixels")


def test_frontal_only(tmp_path):
    fx = write_iu_fixture(tmp_path / "iu", n=4, bad={"missing_projection": 2})
    ds, caught = load(fx.root, views=("frontal",))
    assert not caught and ds.views == ("frontal",)
    assert sorted(ds.uids, key=int) == sorted(fx.uids + fx.frontal_only_uids, key=int)
    item = ds[0]
    assert set(item) == {"frontal", "text", "label", "uid"} and item["text"] == fx.texts[item["uid"]]
    batch, _ = ds.tensors()
    assert set(batch) == {"frontal", "text"}
    for views in [("lateral",), ("frontal", "frontal"), ("frontal", "axial"), "lateral"]:
        with pytest.raises(ValueError, match="views"):
            IUXray(fx.root, views=views)


def test_missing_files_and_columns_name_the_file(tmp_path):
    with pytest.raises(IUXrayMissingFileError, match="nowhere"):
        IUXray(tmp_path / "nowhere")
    fx = write_iu_fixture(tmp_path / "iu", n=2)
    (fx.root / "indiana_projections.csv").rename(fx.root / "projections.csv")
    with pytest.raises(FileNotFoundError, match="indiana_projections.csv"):
        IUXray(fx.root)
    (fx.root / "projections.csv").rename(fx.root / "indiana_projections.csv")

    reports = fx.root / "indiana_reports.csv"
    with open(reports, newline="") as handle:
        rows = list(csv.reader(handle))
    with open(reports, "w", newline="") as handle:
        csv.writer(handle).writerows([r[:2] + r[3:] for r in rows])  # without the Problems column
    with pytest.raises(IUXrayFormatError, match=r"indiana_reports\.csv.*Problems"):
        IUXray(fx.root)
    with open(reports, "w", newline="") as handle:
        csv.writer(handle).writerows([rows[0], rows[1], rows[2][:4]])
    with pytest.raises(IUXrayFormatError, match=r"indiana_reports\.csv line 3"):
        IUXray(fx.root)
    reports.write_text("")
    with pytest.raises(IUXrayFormatError, match="indiana_reports.csv is empty"):
        IUXray(fx.root)
    assert issubclass(IUXrayFormatError, InputError) and issubclass(IUXrayMissingFileError, MissingResourceError)


def test_images_dir_detection(tmp_path):
    fx = write_iu_fixture(tmp_path / "a", n=2, images_subdir="images_normalized")
    assert load(fx.root)[0].images_dir == fx.root / "images_normalized"
    fx = write_iu_fixture(tmp_path / "b", n=2, images_subdir="images")
    assert load(fx.root)[0].images_dir == fx.root / "images"
    fx = write_iu_fixture(tmp_path / "c", n=2, images_subdir="pngs")
    with pytest.raises(IUXrayMissingFileError, match="images_normalized"):
        IUXray(fx.root)
    assert len(load(fx.root, images_dir="pngs")[0]) == 2
    with pytest.raises(IUXrayMissingFileError, match="missing_dir"):
        IUXray(fx.root, images_dir="missing_dir")


def test_unsafe_file_names_and_empty_uids_are_rejected(tmp_path):
    fx = write_iu_fixture(tmp_path / "iu", n=2)
    projections = fx.root / "indiana_projections.csv"
    original = projections.read_text()
    projections.write_text(original + "1,../../etc/passwd,Frontal\n")
    with pytest.raises(IUXrayFormatError, match="passwd"):
        IUXray(fx.root)
    projections.write_text(original + ",x.png,Frontal\n")
    with pytest.raises(IUXrayFormatError, match="empty uid"):
        IUXray(fx.root)


def test_no_usable_rows(tmp_path):
    fx = write_iu_fixture(tmp_path / "iu", n=0, bad={"missing_image": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IUXraySkipWarning)
        with pytest.raises(IUXrayFormatError, match=r"no usable example.*missing_image"):
            IUXray(fx.root)


def test_split_is_a_deterministic_hash_partition(tmp_path):
    assert [iu_split_of(str(u)) for u in range(1, 11)] == [iu_split_of(str(u)) for u in range(1, 11)]
    shares = np.bincount([("train", "val", "test").index(iu_split_of(str(u))) for u in range(5000)]) / 5000
    assert abs(shares[0] - 0.8) < 0.03 and abs(shares[1] - 0.1) < 0.02 and abs(shares[2] - 0.1) < 0.02
    fx = write_iu_fixture(tmp_path / "iu", n=40, image_size=(8, 8))
    everything = load(fx.root, image_size=8)[0].uids
    parts = {split: load(fx.root, split=split, image_size=8)[0].uids for split in ("train", "val", "test")}
    assert all(parts.values()) and sorted(sum(parts.values(), []), key=int) == sorted(everything, key=int)
    assert set(parts["train"]).isdisjoint(parts["val"]) and set(parts["val"]).isdisjoint(parts["test"])
    assert set(parts["train"]).isdisjoint(parts["test"])
    assert all(iu_split_of(u) == split for split, uids in parts.items() for u in uids)
    with pytest.raises(ValueError, match="split"):
        IUXray(fx.root, split="holdout")


def test_limit(tmp_path):
    fx = write_iu_fixture(tmp_path / "iu", n=5, bad={"missing_image": 1})
    ds, _ = load(fx.root, limit=3)
    assert ds.uids == fx.uids[:3]
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="limit"):
            IUXray(fx.root, limit=bad)
    with pytest.raises(ValueError, match="image_size"):
        IUXray(fx.root, image_size=0)


# -- one image, two patients; bytes that are not UTF-8; the fingerprint --------------------------


def _projection_rows(root):
    with open(root / "indiana_projections.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _write_projection_rows(root, rows):
    with open(root / "indiana_projections.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["uid", "filename", "projection"])
        writer.writeheader()
        writer.writerows(rows)


def test_an_image_named_by_two_uids_skips_both_and_names_the_file(tmp_path):
    fx = write_iu_fixture(tmp_path / "iu", n=4, bad={"shared_image": 1})
    ds, caught = load(fx.root)
    (a, b) = fx.bad["shared_image"]
    assert a not in ds.uids and b not in ds.uids and ds.uids == fx.uids
    assert ds.skipped_uids == {"shared_image": [a, b]}
    (name, claims), = ds.shared_images.items()
    assert claims == sorted([f"{a} frontal", f"{b} frontal"]) and name.endswith("-1001.dcm.png")
    assert len(caught) == 1 and name in str(caught[0].message) and "shared_image: 2" in str(caught[0].message)


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_a_link_to_another_patients_image_is_the_same_image(tmp_path, how):
    fx = write_iu_fixture(tmp_path / "iu", n=3, image_size=(8, 8))
    first, second = fx.uids[0], fx.uids[1]
    rows = _projection_rows(fx.root)
    target = fx.images_dir / fx.files[first]["frontal"]
    alias = fx.images_dir / "alias.png"
    alias.symlink_to(target) if how == "symlink" else alias.hardlink_to(target)
    for row in rows:
        if row["uid"] == second and row["projection"] == "Frontal":
            row["filename"] = "alias.png"
    _write_projection_rows(fx.root, rows)
    ds, _ = load(fx.root, image_size=8)
    assert ds.skipped_uids == {"shared_image": [first, second]} and ds.uids == fx.uids[2:]


def test_one_file_as_both_views_of_a_uid_and_views_not_read(tmp_path):
    fx = write_iu_fixture(tmp_path / "iu", n=4, image_size=(8, 8))
    first, second = fx.uids[0], fx.uids[1]
    rows = _projection_rows(fx.root)
    for row in rows:
        if row["uid"] == first and row["projection"] == "Lateral":  # its own frontal file, as the lateral view
            row["filename"] = fx.files[first]["frontal"]
        if row["uid"] == second and row["projection"] == "Lateral":  # the lateral view of the third uid
            row["filename"] = fx.files[fx.uids[2]]["lateral"]
    _write_projection_rows(fx.root, rows)
    ds, _ = load(fx.root, image_size=8)
    assert ds.skipped_uids == {"shared_image": [first, second, fx.uids[2]]} and ds.uids == fx.uids[3:]
    # frontal only: the lateral files are not read, so only the uid whose frontal file is also a lateral one is skipped
    ds, _ = load(fx.root, image_size=8, views=("frontal",))
    assert ds.skipped_uids == {"shared_image": [first]} and ds.uids == fx.uids[1:]
    # the same row twice is one claim, not a conflict
    _write_projection_rows(tmp_path / "b", _projection_rows(write_iu_fixture(tmp_path / "b", n=2).root) * 2)
    assert load(tmp_path / "b")[0].skipped == {}


@pytest.mark.parametrize("csv_name", ["indiana_reports.csv", "indiana_projections.csv"])
def test_a_byte_that_is_not_utf8_names_file_line_and_column(tmp_path, csv_name):
    fx = write_iu_fixture(tmp_path / "iu", n=3)
    path = fx.root / csv_name
    original = path.read_bytes()
    lines = original.split(b"\n")
    lines[2] = b"ab" + "é".encode("latin-1") + lines[2]  # a Latin-1 e-acute at column 3 of line 3
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(IUXrayFormatError, match=rf"{csv_name} line 3, column 3 .*byte\(s\) e9 are not UTF-8") as info:
        IUXray(fx.root)
    assert not isinstance(info.value, UnicodeDecodeError)
    # a byte-order mark is still fine
    path.write_bytes(b"\xef\xbb\xbf" + original)
    assert load(fx.root)[0].uids == fx.uids


def test_fingerprint_changes_with_labels_reports_and_images(tmp_path):
    import os
    import shutil

    fx = write_iu_fixture(tmp_path / "iu", n=6, image_size=(8, 8))
    base = load(fx.root, image_size=8)[0].fingerprint()
    assert load(fx.root, image_size=8)[0].fingerprint() == base  # deterministic
    assert load(fx.root, image_size=16)[0].fingerprint() != base  # served at another size
    assert load(fx.root, image_size=8, views=("frontal",))[0].fingerprint() != base
    copy = shutil.copytree(fx.root, tmp_path / "copy")  # copy2: contents and mtimes kept
    assert load(copy, image_size=8)[0].fingerprint() == base  # not keyed by the path

    reports = fx.root / "indiana_reports.csv"
    original = reports.read_text()
    with open(reports, newline="") as handle:
        rows = list(csv.DictReader(handle))
    flipped = [dict(r, Problems="Cardiomegaly" if r["Problems"].strip().lower() == "normal" else "normal") for r in rows]
    for changed in (flipped, [dict(rows[0], findings=rows[0]["findings"] + " Small effusion.")] + rows[1:]):
        with open(reports, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(changed)
        assert load(fx.root, image_size=8)[0].fingerprint() != base
    reports.write_text(original)
    assert load(fx.root, image_size=8)[0].fingerprint() == base

    image = fx.images_dir / fx.files[fx.uids[0]]["frontal"]
    before = image.stat()
    pixels = np.array(Image.open(image))
    Image.fromarray(255 - pixels).save(image)  # rewritten: new mtime
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    assert load(fx.root, image_size=8)[0].fingerprint() != base
    # the documented blind spot of the cheap default: same size, modification time set back
    with open(image, "r+b") as handle:
        data = bytearray(open(copy / image.relative_to(fx.root), "rb").read())
        handle.write(bytes(data[:-1]) + bytes([data[-1] ^ 1]))
        handle.truncate(len(data))
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    if image.stat().st_size == before.st_size:
        assert load(fx.root, image_size=8)[0].fingerprint() == base
    deep = load(copy, image_size=8)[0].fingerprint(image_contents=True)
    assert load(fx.root, image_size=8)[0].fingerprint(image_contents=True) != deep
