"""The benchmark end to end on tiny settings: embedded default, single frames, and the MF layout."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmfusion_attacks.harness.rgbt import load_frames, main, parse_subsets

FAST = ["--model", "tiny-rgbt-segmenter", "--limit", "2", "--batch-size", "2", "--steps", "1", "--eps", "10", "40",
        "--train-steps", "5", "--transfer-models", "--eot-iter", "2", "--size", "32", "32", "--device", "cpu"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMFUSION_CACHE", str(tmp_path / "cache"))


def test_parse_subsets():
    assert parse_subsets(["rgb", "IR", "rgb+ir"]) == [("rgb",), ("ir",), ("rgb", "ir")]


def test_default_run_writes_every_output(tmp_path, capsys):
    out = tmp_path / "out"
    report = main([*FAST, "--out", str(out)])
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "IoU_R" in printed and "transfer matrix" in printed and "EOT" in printed
    for name in ("grid.txt", "grid.csv", "grid.json", "figure1.png", "least_likely.json", "transfer.txt", "defence.json", "summary.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "qualitative").glob("*.png"))) >= 2
    grid = json.loads((out / "grid.json").read_text())
    assert len(grid["rows"]) == 2 * 2 * 3 and grid["labels"] == "ground truth"
    assert set(report) == {"grid", "least-likely", "transfer", "defence"}
    assert (tmp_path / "cache").is_dir()  # the trained default was cached


def _write_frames(folder, n=2, size=(32, 32)):
    folder.mkdir()
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}D.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (*size, 4), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_frames_use_pseudo_labels_and_need_weights(tmp_path, capsys):
    paths = _write_frames(tmp_path / "frames")
    batch = load_frames(paths)
    assert batch["rgb"].shape == (2, 3, 32, 32) and batch["ir"].shape == (2, 1, 32, 32)
    with pytest.raises(SystemExit):
        main([*FAST, "--images", *paths, "--out", str(tmp_path / "o")])
    assert "argument --weights: weights are needed" in capsys.readouterr().err
    from mmfusion_attacks.models import create_model

    weights = tmp_path / "tiny.pt"
    torch.save(create_model("tiny-rgbt-segmenter").model.state_dict(), weights)
    out = tmp_path / "o2"
    main([*FAST, "--images", *paths, "--weights", str(weights), "--analyses", "grid", "--amp", "--out", str(out)])
    assert "bfloat16 autocast" in (out / "grid.txt").read_text()
    assert json.loads((out / "grid.json").read_text())["labels"].startswith("pseudo")


def test_mf_layout(tmp_path):
    from data.test_mf_dataset import make_mf_fixture  # the same generator as the loader's tests

    from mmfusion_attacks.models import create_model

    root = make_mf_fixture(tmp_path / "MF", size=(32, 32))
    weights = tmp_path / "tiny.pt"
    torch.save(create_model("tiny-rgbt-segmenter").model.state_dict(), weights)
    out = tmp_path / "o"
    main([*FAST, "--data-root", str(root), "--weights", str(weights), "--analyses", "grid", "--out", str(out)])
    grid = json.loads((out / "grid.json").read_text())
    assert grid["labels"] == "ground truth" and "MF dataset" in grid["data"]


def test_bad_images_are_refused(tmp_path):
    p = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(p)
    with pytest.raises(ValueError, match="HxWx4"):
        load_frames([p])
