"""The RGB-T benchmark refuses every bad option before any work (a model trained or loaded, a spec run),
naming the option; ``--print-spec`` is refused alike."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from mmfusion_attacks.harness import rgbt

FAST = ["--model", "tiny-rgbt-segmenter", "--limit", "2", "--size", "32", "32", "--transfer-models", "--device", "cpu"]


@pytest.fixture(autouse=True)
def no_work(monkeypatch, tmp_path):
    def work(*args, **kwargs):
        raise AssertionError("the spec ran (a model was loaded or trained) although an option is bad")

    monkeypatch.setattr(rgbt, "run_spec", work)
    monkeypatch.setenv("MMFUSION_CACHE", str(tmp_path / "cache"))


def refused(capsys, argv):
    with pytest.raises(SystemExit) as info:
        rgbt.main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def frame(path, channels=4, size=(32, 32), alpha=None):
    pixels = np.random.default_rng(0).integers(0, 255, (*size, channels), dtype=np.uint8)
    if alpha is not None:
        pixels[..., 3] = alpha
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], r"argument --batch-size: must be an int >= 1, got 0"),
        (["--steps", "0"], r"argument --steps: must be an int >= 1"),
        (["--limit", "0"], r"argument --limit: must be an int >= 1"),
        (["--size", "0", "32"], r"argument --size: must be an int >= 1"),
        (["--eps", "10", "0"], r"argument --eps: must be a number in \(0, 255\] \(on the 0-255 scale\)"),
        (["--eps", "nan"], r"argument --eps: must be a number in \(0, 255\]"),
        (["--transfer-eps", "300"], r"argument --transfer-eps: must be a number in \(0, 255\]"),
        (["--defence-eps", "-8"], r"argument --defence-eps: must be a number in \(0, 255\]"),
        (["--defence-range", "1"], r"argument --defence-range: must be a number in \[0, 1\)"),
        (["--eot-iter", "0"], r"argument --eot-iter: must be an int >= 1"),
        (["--train-steps", "0"], r"argument --train-steps: must be an int >= 1"),
        (["--qualitative", "-1"], r"argument --qualitative: must be an int >= 0"),
        (["--seed", "-1"], r"argument --seed: must be an int in \[0, 4294967295\]"),
        (["--split", "holdout"], r"argument --split: invalid choice"),
        (["--analyses", "grid", "grid"], r"argument --analyses: grid and grid are the same analysis"),
        (["--attacks", "fgsm", "nosuch"], r"argument --attacks: no attack recipe 'nosuch' for toolkit 'torchattacks'"),
        (["--attacks", "pgd", "PGD"], r"argument --attacks: pgd and PGD are the same attack"),
        (["--eps", "10", "10.0"], r"argument --eps: 10.0 and 10.0 are the same budget \(10/255\)"),
        (["--modalities", "rgb", "ir+rgb", "rgb+ir"], r"argument --modalities: ir\+rgb and rgb\+ir are the same subset"),
        (["--modalities", "rgb", "depth"], r"argument --modalities: 'depth' is not a subset of the modalities rgb, ir"),
        (["--transfer-modality", "rgb+rgb"], r"argument --transfer-modality: 'rgb\+rgb' is not a subset"),
        (["--transfer-attack", "nosuch"], r"argument --transfer-attack: no attack recipe 'nosuch'"),
        (["--model", "nosuch"], r"argument --model: unknown model 'nosuch'; registered: .*mfnet"),
        (["--transfer-models", "nosuch"], r"argument --transfer-models: unknown model 'nosuch'"),
        (["--weights", "/nonexistent/final.pth"], r"argument --weights: no weights file at /nonexistent/final.pth"),
        (["--data-root", "/nonexistent/MF"], r"argument --data-root: no folder at /nonexistent/MF"),
        (["--device", "tpu"], r"argument --device: 'tpu' is not a device name"),
        (["--model", "mfnet", "--size", "40", "56"], r"argument --size: 'mfnet' cannot take 40x56 inputs"),
        (["--model", "tiny-rgbt-classifier"], r"argument --model/--transfer-models: 'tiny-rgbt-classifier' is a classification model"),
    ],
)
def test_bad_options_are_refused_before_any_model(capsys, argv, message):
    assert re.search(message, refused(capsys, [*FAST, *argv]))
    assert re.search(message, refused(capsys, [*FAST, *argv, "--print-spec"]))


def test_rtfnet_size_that_does_not_line_up(capsys):
    err = refused(capsys, [*FAST, "--model", "rtfnet-18", "--size", "40", "56"])
    assert "argument --size: 'rtfnet-18' turns 40x56 inputs into 64x64 logits" in err


def test_frames_are_checked_before_the_model(tmp_path, capsys):
    good = frame(tmp_path / "good.png")
    rgb = frame(tmp_path / "rgb.png", channels=3)
    opaque = frame(tmp_path / "opaque.png", alpha=255)
    wide = frame(tmp_path / "wide.png", size=(32, 48))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(frame(tmp_path / "full.png", size=(64, 64)), "rb").read()[:400])
    weights = ["--weights", good]  # any existing file: nothing is loaded before the checks
    err = refused(capsys, [*FAST, *weights, "--images", good, rgb, opaque, str(truncated)])
    assert f"{rgb}: expected an HxWx4 RGB-thermal PNG" in err
    assert f"{opaque}: channel 3, read as thermal, is 255 at every pixel" in err
    assert f"RGB-T frame {truncated} cannot be read" in err
    no_size = [a for a in FAST if a not in ("--size", "32")]
    assert "the frames differ in size" in refused(capsys, [*no_size, *weights, "--images", good, wide])
    assert "give one of them" in refused(capsys, [*FAST, *weights, "--images", good, "--data-root", str(tmp_path)])
    with pytest.raises(ValueError, match=f"{opaque}.*255 at every pixel"):
        rgbt.load_frames([opaque])


def test_mf_frames_of_different_sizes_need_size(tmp_path, capsys):
    from data.test_mf_dataset import make_mf_fixture

    root = make_mf_fixture(tmp_path / "MF", size=(32, 32))
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 48, 4), dtype=np.uint8)).save(root / "images" / "00002N.png")
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(root / "labels" / "00002N.png")
    no_size = [a for a in FAST if a not in ("--size", "32")]
    err = refused(capsys, [*no_size, "--limit", "3", "--weights", str(root / "test.txt"), "--data-root", str(root)])
    assert "argument --size: MF test: the frames differ in size (00001D 32x32" in err and "00002N 32x48" in err


def test_mf_layout_problems_name_the_data_root(tmp_path, capsys):
    (tmp_path / "MF" / "images").mkdir(parents=True)
    (tmp_path / "MF" / "labels").mkdir()
    err = refused(capsys, [*FAST, "--weights", __file__, "--data-root", str(tmp_path / "MF")])
    assert "argument --data-root: split file" in err and "test.txt not found" in err


def test_good_options_reach_the_run(tmp_path, capsys):
    with pytest.raises(AssertionError, match="the spec ran"):
        rgbt.main([*FAST, "--out", str(tmp_path / "out")])
    assert rgbt.main([*FAST, "--print-spec"]) is None and "table: rgbt" in capsys.readouterr().out
