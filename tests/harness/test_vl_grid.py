"""The grid runner on classification with text: tensor attacks, text recipes, augmentations and their
combinations as cells, counts that add up, models that do not read a modality marked as such."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mmfusion_attacks.adapters.textattack")

from mmfusion_attacks.data import create_dataset  # noqa: E402
from mmfusion_attacks.harness import ComboCell, GridSpec, Step, run_grid  # noqa: E402
from mmfusion_attacks.harness.vl import format_table, study_cells  # noqa: E402
from mmfusion_attacks.models import create_model  # noqa: E402

TINY = {"backbone_kwargs": {"channels": (8, 8, 16, 16), "stem_width": 8}, "encoder": "tiny-random", "max_text_tokens": 64}
VIEWS = ("frontal", "lateral")


@pytest.fixture(scope="module")
def data():
    ds = create_dataset("synthetic-xray-reports", split="test", size=6, image_size=32, seed=0)
    return ds.tensors()


def cells():
    fgsm = Step("attack", "fgsm", VIEWS, 0.1)
    syn = Step("text-augment", "synonym", ("text",), 0.4)
    dele = Step("text-augment", "deletion", ("text",), 0.5)
    dwb = Step("text-attack", "deepwordbug", ("text",), 40)
    return [ComboCell("FGSM", (fgsm,)), ComboCell("DEL", (dele,)), ComboCell("FGSM+DEL", (fgsm, dele)),
            ComboCell("SYN", (syn,)), ComboCell("DWB", (dwb,))]


def test_classification_grid_with_text_cells(data):
    torch.manual_seed(0)
    fusion = create_model("vl-early-fusion", **TINY)
    batch, labels = data
    spec = GridSpec(attacks=(), combos=cells())
    grid = run_grid(fusion, [(batch, labels[:6])], spec, progress=False)
    rows = {r["cell"]: r for r in grid.rows()}
    assert set(rows) == {"FGSM", "DEL", "FGSM+DEL", "SYN", "DWB"}
    for r in rows.values():
        assert r["applies"] and r["rows"] == 6 and 0.0 <= r["accuracy"] <= 1.0
        assert len(r["per_class_recall"]) == 2
    assert rows["FGSM"]["frontal_linf_mean"] == pytest.approx(0.1, abs=1e-6)
    assert rows["FGSM"]["words_changed_per_example"] == 0
    assert rows["DEL"]["fraction_words_changed"] == pytest.approx(0.5, abs=0.08)  # floor(0.5 n) of n words
    assert rows["FGSM+DEL"]["frontal_linf_mean"] == pytest.approx(0.1, abs=1e-6)
    assert rows["FGSM+DEL"]["words_changed_per_example"] == rows["DEL"]["words_changed_per_example"]
    assert rows["DWB"]["queries_per_example"] > 0
    # the counts a shard would add: clean-correct and flipped rows
    assert grid.counts[spec.combos[0]].clean_correct == int((fusion.predict(batch) == labels[:6]).sum())


def test_models_without_the_perturbed_modality_are_scored_unchanged(data):
    torch.manual_seed(0)
    vision = create_model("vl-vision", backbone_kwargs=TINY["backbone_kwargs"])
    batch, labels = data
    grid = run_grid(vision, [(batch, labels)], GridSpec(attacks=(), combos=cells()), progress=False)
    rows = {r["cell"]: r for r in grid.rows()}
    clean = grid.clean_summary()["accuracy"]
    for name in ("DEL", "SYN", "DWB"):
        assert not rows[name]["applies"] and rows[name]["accuracy"] == clean
    assert rows["FGSM+DEL"]["applies"]


def test_study_cells_cover_the_table():
    names = [c.label for c in study_cells()]
    assert names[:4] == ["FGSM 0.01", "FGSM 0.05", "FGSM 0.1", "FGSM 0.2"]
    assert {"SYN 20%", "SYN 40%", "DEL 50%", "deepwordbug", "pwws"} <= set(names)
    assert any(n.startswith("ALL:") for n in names)
    combo = next(c for c in study_cells() if c.label.startswith("ALL:"))
    assert [s.kind for s in combo.steps_] == ["attack", "text-augment", "text-augment"]


def test_table_marks_models_that_do_not_read_the_modality():
    result = {
        "meta": {"data": "SYNTHETIC", "test_size": 10},
        "clean": {"vision": 0.9, "language": 0.8},
        "rows": [
            {"model": "vision", "cell": "SYN 20%", "accuracy": 0.9, "applies": False},
            {"model": "language", "cell": "SYN 20%", "accuracy": 0.7, "applies": True},
        ],
        "speed": None,
    }
    table = format_table(result)
    assert "=0.900" in table and "0.700" in table and "SYNTHETIC" in table


def test_vl_benchmark_end_to_end_on_tiny_models(monkeypatch, tmp_path):
    """The preset's plumbing (cells, table, CSV / JSON, plot, cache speed check) with tiny random models
    in place of the trained defaults."""
    import json

    from mmfusion_attacks.harness import vl

    def tiny_models(args, train_set):
        torch.manual_seed(0)
        small = {"backbone_kwargs": TINY["backbone_kwargs"]}
        return {
            "vision": create_model("vl-vision", **small),
            "language": create_model("vl-language", encoder="tiny-random"),
            "early fusion": create_model("vl-early-fusion", **TINY),
            "late fusion": create_model("vl-late-fusion", **TINY),
        }

    monkeypatch.setattr(vl, "_models", tiny_models)
    monkeypatch.setattr(vl, "_speed_model", lambda args: create_model("vl-early-fusion", **TINY))
    result = vl.main(["--test-size", "4", "--image-size", "32", "--fgsm-eps", "0.05", "--recipes", "deepwordbug",
                      "--query-budget", "20", "--recipe-examples", "2", "--speed-examples", "2", "--speed-image-size", "32", "--quiet",
                      "--out", str(tmp_path)])
    assert result["meta"]["synthetic"] and "SYNTHETIC" in result["meta"]["data"]
    cells = {r["cell"] for r in result["rows"]}
    assert {"no attack", "FGSM 0.05", "SYN 20%", "DEL 50%", "deepwordbug"} <= cells
    by = {(r["model"], r["cell"]): r for r in result["rows"]}
    assert not by[("vision", "SYN 20%")]["applies"] and not by[("language", "FGSM 0.05")]["applies"]
    assert by[("early fusion", "FGSM 0.05 + DEL 50%")]["applies"]
    assert by[("early fusion", "deepwordbug")]["rows"] == 2 and by[("early fusion", "SYN 20%")]["rows"] == 4
    assert "* on the first 2 test examples" in vl.format_table(result)
    assert result["speed"]["identical"]
    assert (tmp_path / "vl_fusion.png").stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())["rows"]


def test_grid_augmentations_are_computed_once_per_text_and_equal_the_augmenter(data):
    from mmfusion_attacks.harness.grid import _build_step
    from mmfusion_attacks.text.augment import WordDeletion

    batch, _ = data
    fusion = create_model("vl-language", encoder="tiny-random")
    step = Step("text-augment", "deletion", ("text",), 0.5, seed=7)
    first = _build_step(step, fusion, GridSpec())
    again = _build_step(step, create_model("vl-language", encoder="tiny-random"), GridSpec())
    plain = WordDeletion(0.5, seed=7).details(batch["text"])
    assert first.details(batch["text"]) == plain
    calls = []
    again.augmenter.details = lambda texts, ids=None: calls.append(texts) or []
    assert again.details(batch["text"]) == plain and not calls  # remembered across models


def test_vl_benchmark_on_an_iu_xray_folder(monkeypatch, tmp_path):
    """--data DIR: the four models are trained on the folder's train split and evaluated on its test split."""
    from data.iu_fixture import write_iu_fixture

    from mmfusion_attacks.harness import vl
    from mmfusion_attacks.models import vl_training

    write_iu_fixture(tmp_path / "iu", n=60, seed=1)
    monkeypatch.setenv("MMFUSION_CACHE", str(tmp_path / "cache"))
    tiny = {arch: {**({"backbone_kwargs": TINY["backbone_kwargs"]} if arch != "vl-language" else {}),
                   **({"encoder": "tiny-random"} if arch != "vl-vision" else {})} for arch in vl.MODELS.values()}
    monkeypatch.setattr(vl_training, "SYNTHETIC_CONFIGS", tiny)
    monkeypatch.setattr(vl_training, "SYNTHETIC_RECIPES", {a: vl_training.Recipe("adam", 1e-3, 1, 16) for a in tiny})
    result = vl.main(["--data", str(tmp_path / "iu"), "--image-size", "32", "--fgsm-eps", "0.05", "--synonym", "0.2",
                      "--recipes", "--skip-speed", "--quiet", "--out", str(tmp_path / "out")])
    assert not result["meta"]["synthetic"] and "Indiana University" in result["meta"]["data"]
    assert result["meta"]["test_size"] >= 1
    assert len(list((tmp_path / "cache").glob("vl-*-iu-xray-*.pt"))) == 4  # trained once, cached
