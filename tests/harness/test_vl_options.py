"""The image+text benchmark refuses every bad option before any data is made or any model loads, and
keys the models it trains on a folder by the folder's content, not its path."""

from __future__ import annotations

import csv
import shutil
import warnings

import pytest
import torch

pytest.importorskip("mmfusion_attacks.adapters.textattack")

from mmfusion_attacks.harness import vl  # noqa: E402

FAST = ["--skip-speed", "--quiet"]


@pytest.fixture
def no_work(monkeypatch):
    """Any data generation or model loading fails the test: options must be refused before."""

    def ran(*args, **kwargs):
        raise AssertionError("the benchmark started working although an option is bad")

    monkeypatch.setattr(vl, "run_spec", ran)
    monkeypatch.setattr(vl, "measure_speed", ran)
    monkeypatch.setattr(vl, "iu_trained_model", ran)


def refused(capsys, argv):
    with pytest.raises(SystemExit) as info:
        vl.main([*FAST, *argv])
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], r"argument --batch-size: must be an int >= 1, got 0"),
        (["--recipe-examples", "-1"], r"argument --recipe-examples: must be an int >= 1, got -1"),
        (["--recipe-examples", "0"], r"argument --recipe-examples: must be an int >= 1, got 0"),
        (["--test-size", "0"], r"argument --test-size: must be an int >= 1"),
        (["--test-size", "1000001"], r"argument --test-size: the synthetic test split holds at most 1,000,000"),
        (["--image-size", "0"], r"argument --image-size: must be an int >= 1"),
        (["--speed-examples", "0"], r"argument --speed-examples: must be an int in \[1, 1000000\]"),
        (["--speed-image-size", "-3"], r"argument --speed-image-size: must be an int >= 1"),
        (["--query-budget", "-1"], r"argument --query-budget: must be an int >= 0"),
        (["--seed", "-1"], r"argument --seed: must be an int in \[0, 4294967295\]"),
        (["--seed", "1.5"], r"argument --seed: must be an int .* got '1.5'"),
        (["--fgsm-eps", "0.05", "0"], r"argument --fgsm-eps: must be a number in \(0, 1\]"),
        (["--fgsm-eps", "nan"], r"argument --fgsm-eps: must be a number in \(0, 1\]"),
        (["--fgsm-eps", "2"], r"argument --fgsm-eps: must be a number in \(0, 1\] \(image values are in \[0, 1\]\), got 2"),
        (["--combo-eps", "inf"], r"argument --combo-eps: must be a number in \(0, 1\]"),
        (["--synonym", "1.2"], r"argument --synonym: must be a number in \(0, 1\] \(a fraction of the words\)"),
        (["--deletion", "-0.5"], r"argument --deletion: must be a number in \(0, 1\]"),
        (["--toolkit", "foolbox"], r"argument --toolkit: invalid choice"),
        (["--recipes", "deepwordbug", "nosuch"], r"argument --recipes: unknown text attack 'nosuch'"),
        (["--recipes", "pwws", "PWWS"], r"argument --recipes: pwws and PWWS are the same recipe \(pwws\)"),
        (["--fgsm-eps", "0.05", "0.05"], r"argument --fgsm-eps: 0.05 and 0.05 are the same row \(FGSM 0.05\)"),
        (["--synonym", "0.2", "0.2001"], r"argument --synonym: 0.2 and 0.2001 are the same row \(SYN 20%\)"),
        (["--data", "/nonexistent/iu"], r"argument --data: no folder at /nonexistent/iu"),
        (["--hash-images"], r"argument --hash-images: only with --data"),
        (["--device", "gpu0"], r"argument --device: 'gpu0' is not a device name"),
        (["--speed"], r"argument --skip-speed: not with --speed"),
        (["--print-spec", "--batch-size", "0"], r"argument --batch-size: must be an int >= 1, got 0"),
        (["--print-spec", "--recipes", "nosuch"], r"argument --recipes: unknown text attack 'nosuch'"),
    ],
)
def test_bad_options_are_refused_before_any_work(capsys, no_work, argv, message):
    import re

    assert re.search(message, refused(capsys, argv))
    assert capsys.readouterr().out == ""  # nothing printed (no spec either)


def test_several_problems_are_reported_together(capsys, no_work, tmp_path):
    (tmp_path / "taken").write_text("a file")
    err = refused(capsys, ["--out", str(tmp_path / "taken"), "--data", str(tmp_path / "missing"), "--recipes", "nosuch"])
    assert "--out: " in err and "exists and is not a folder" in err and "--data: no folder" in err and "nosuch" in err


def test_cuda_without_a_cuda_device(capsys, no_work):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert "argument --device: 'cuda' asked for, but torch sees no CUDA device" in refused(capsys, ["--device", "cuda"])


def test_recipe_whose_resources_are_not_offline(capsys, no_work):
    from mmfusion_attacks.errors import MissingResourceError
    from mmfusion_attacks.text.recipes import check_text_attack_resources

    try:
        check_text_attack_resources("alzantot")
    except MissingResourceError:
        pass
    else:
        pytest.skip("alzantot's resources are available here")
    assert "argument --recipes: text attack 'alzantot'" in refused(capsys, ["--recipes", "alzantot"])


def test_good_options_pass(no_work):
    args = vl.build_parser().parse_args(["--recipes", "deepwordbug", "--fgsm-eps", "0.05", "1", "--device", "auto"])
    assert vl.option_problems(args) == []
    with pytest.raises(AssertionError, match="started working"):
        vl.main(["--recipes", "--synonym", "0.3", "--skip-speed"])
    with pytest.raises(AssertionError, match="started working"):
        vl.main(["--recipes", "--speed"])


# -- models trained on a folder are keyed by its content ------------------------------------------


def _flip_labels(root):
    path = root / "indiana_reports.csv"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(dict(r, Problems="Cardiomegaly" if r["Problems"].strip().lower() == "normal" else "normal") for r in rows)


TINY = {"vl-vision": {"backbone_kwargs": {"channels": (8, 8, 16, 16), "stem_width": 8}},
        "vl-language": {"encoder": "tiny-random", "max_text_tokens": 64}}


@pytest.fixture
def tiny_training(monkeypatch, tmp_path):
    """Tiny networks trained for one epoch, cached under ``tmp_path / "cache"``."""
    from mmfusion_attacks.models import vl_training

    monkeypatch.setenv("MMFUSION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(vl_training, "SYNTHETIC_CONFIGS", TINY)
    monkeypatch.setattr(vl_training, "SYNTHETIC_RECIPES", {a: vl_training.Recipe("adam", 1e-2, 1, 16) for a in TINY})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "cache"
    torch.set_num_threads(before)


def test_models_trained_on_a_folder_are_keyed_by_its_content(tiny_training, tmp_path):
    from data.iu_fixture import write_iu_fixture

    from mmfusion_attacks.data import create_dataset

    fx = write_iu_fixture(tmp_path / "iu", n=24, seed=1, image_size=(16, 16))

    def models(root):
        """The IU models the spec's ``callable`` source builds, and the training data's fingerprint."""
        out = {arch: vl.iu_trained_model(arch, str(root), image_size=16) for arch in TINY}
        key = create_dataset("iu-xray", root=root, split="train", image_size=16).fingerprint()
        return {k: {n: t.clone() for n, t in m.model.state_dict().items()} for k, m in out.items()}, key

    def cached():
        return sorted(p.name for p in tiny_training.glob("vl-*-iu-xray-*.pt"))

    first, key = models(fx.root)
    assert len(cached()) == 2
    again, same = models(shutil.copytree(fx.root, tmp_path / "copy"))  # a copy, times kept: the same data
    assert same == key and len(cached()) == 2
    assert all(torch.equal(first["vl-vision"][n], t) for n, t in again["vl-vision"].items())

    _flip_labels(fx.root)  # every label flipped: the old models must not be reused
    flipped, new_key = models(fx.root)
    assert new_key != key and len(cached()) == 4
    assert not all(torch.equal(first["vl-vision"][n], t) for n, t in flipped["vl-vision"].items() if t.is_floating_point())

    import numpy as np
    from PIL import Image

    from mmfusion_attacks.data.iu_xray import iu_split_of

    uid = next(u for u in fx.uids if iu_split_of(u) == "train")
    image = fx.images_dir / fx.files[uid]["frontal"]
    Image.fromarray(255 - np.array(Image.open(image))).save(image)  # one training image rewritten
    assert models(fx.root)[1] not in (key, new_key) and len(cached()) == 6


def test_a_corrupt_cache_of_a_folder_model_is_named_discarded_and_retrained(tiny_training, tmp_path):
    from data.iu_fixture import write_iu_fixture

    from mmfusion_attacks.cache_files import CacheFileWarning

    fx = write_iu_fixture(tmp_path / "iu", n=24, seed=1, image_size=(16, 16))
    first = vl.iu_trained_model("vl-vision", str(fx.root), image_size=16)
    (path,) = tiny_training.glob("vl-vision-iu-xray-*.pt")
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # an interrupted copy
    with pytest.warns(CacheFileWarning, match=rf"discarded the unusable cache .*{path.name}"):
        again = vl.iu_trained_model("vl-vision", str(fx.root), image_size=16)
    assert path.read_bytes() != good[: len(good) // 2]  # re-trained and cached again
    # the same seed and data: the same weights as the first training
    assert all(torch.equal(t, again.model.state_dict()[n]) for n, t in first.model.state_dict().items())
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheFileWarning)
        vl.iu_trained_model("vl-vision", str(fx.root), image_size=16)  # the new cache is read without a word


def test_cli_names_the_subcommand(capsys, no_work):
    from mmfusion_attacks.cli import main

    with pytest.raises(SystemExit):
        main(["vl", "--batch-size", "0"])
    assert "mmfusion-attacks vl: error: argument --batch-size: must be an int >= 1, got 0" in capsys.readouterr().err
