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


@pytest.fixture
def one_thread():
    """The end-to-end runs on one torch thread: their tiny convolutions only lose to thread hand-offs, by
    minutes on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def test_classification_grid_with_text_cells(data, one_thread):
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


def test_models_without_the_perturbed_modality_are_scored_unchanged(data, one_thread):
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


TINY_MODELS = {"vl-vision": {"backbone_kwargs": TINY["backbone_kwargs"]}, "vl-language": {"encoder": "tiny-random", "max_text_tokens": 64},
               "vl-early-fusion": TINY, "vl-late-fusion": TINY}
#: the study on tiny options (seconds): 3 test examples, one eps, one recipe on 2 examples with 10 queries each
TINY_ARGV = ["--test-size", "3", "--image-size", "32", "--fgsm-eps", "0.05", "--synonym", "0.2", "--deletion", "0.5",
             "--recipes", "deepwordbug", "--query-budget", "10", "--recipe-examples", "2", "--batch-size", "3", "--quiet"]


@pytest.fixture
def tiny_defaults(monkeypatch, one_thread):
    """Tiny random networks (seeded by the model source) in place of the trained embedded defaults."""
    from mmfusion_attacks.models import vl_training

    def tiny_default(arch, *, seed=0, device="cpu", progress=True, image_size=48, n_train=1024):
        torch.manual_seed(seed)
        return create_model(arch, **TINY_MODELS[arch]).to(device).eval()

    monkeypatch.setattr(vl_training, "vl_synthetic_default", tiny_default)


def _reproduced(capsys, tmp_path, argv, speed=()):
    """The preset run into A, its --print-spec run by `mmfusion-attacks run` into B: both summaries and stdouts."""
    import json

    from mmfusion_attacks.cli import main as cli_main
    from mmfusion_attacks.harness import vl

    summary = vl.main([*argv, *speed, "--out", str(tmp_path / "A")])
    preset_out = capsys.readouterr().out
    assert vl.main([*argv, *speed, "--print-spec"]) is None
    spec_text = capsys.readouterr().out
    assert not (tmp_path / "B").exists()  # --print-spec runs nothing
    (tmp_path / "vl.yaml").write_text(spec_text)
    assert cli_main(["run", str(tmp_path / "vl.yaml"), "--out", str(tmp_path / "B"), "--quiet"]) == 0
    run_out = capsys.readouterr().out
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in "AB")
    return summary, a, b, preset_out, run_out, spec_text


def test_vl_preset_table_is_reproduced_by_run_on_its_spec(capsys, tmp_path, tiny_defaults, monkeypatch):
    """`mmfusion-attacks run` on the preset's --print-spec gives the preset's table (and confusions) exactly;
    the cells, "=" for models that do not read the perturbed modality, the recipe rows on their examples."""
    from mmfusion_attacks.harness import vl
    from mmfusion_attacks.harness.tables import format_preset_table

    monkeypatch.setattr(vl, "_speed_model", lambda args: create_model("vl-early-fusion", **TINY))
    speed = ["--speed", "--speed-examples", "2", "--speed-image-size", "32"]
    summary, a, b, preset_out, run_out, spec_text = _reproduced(capsys, tmp_path, TINY_ARGV, speed)
    table = format_preset_table(a)
    assert table == format_preset_table(b) == vl.summary_table(summary)
    assert table in preset_out and table in run_out
    assert [e["confusion"] for e in a["experiments"]] == [e["confusion"] for e in b["experiments"]]
    # the timing is printed after the table, by the preset only, and is not part of the spec
    assert "held-image feature cache" in preset_out.split(table)[1] and "identical results: True" in preset_out
    assert "held-image feature cache" not in run_out and "held-image feature cache" not in table
    assert vl.main([*TINY_ARGV, "--print-spec"]) is None and capsys.readouterr().out == spec_text

    assert "SYNTHETIC" in table
    lines = {line.split("  ")[0].rstrip("*"): line for line in table.splitlines()}
    cells = ["no attack", "FGSM 0.05", "SYN 20%", "DEL 50%", "FGSM 0.05 + SYN 20%", "FGSM 0.05 + DEL 50%", "SYN 20% + DEL 50%",
             "ALL: FGSM 0.05 + SYN 20% + DEL 50%", "deepwordbug"]
    assert all(c in lines for c in cells)
    assert table.index("FGSM 0.05 +") < table.index("ALL:") < table.index("deepwordbug")
    header = next(line for line in table.splitlines() if "early fusion" in line)
    assert header.split() == ["vision", "language", "early", "fusion", "late", "fusion"]
    syn, fgsm, both = (lines[c].split()[-4:] for c in ("SYN 20%", "FGSM 0.05", "FGSM 0.05 + DEL 50%"))  # vision, language, early, late
    assert syn[0].startswith("=") and not any(v.startswith("=") for v in syn[1:])  # vision does not read the report
    assert fgsm[1].startswith("=") and not any(v.startswith("=") for v in (fgsm[0], *fgsm[2:]))  # language does not read the images
    assert not any(v.startswith("=") for v in both)  # each model reads one of the perturbed modalities at least
    assert lines["deepwordbug"].startswith("deepwordbug*") and "* on the first 2 test examples" in table
    assert "(clean " in table and "on 2)" in table and "success " in table and "queries " in table
    # the rows behind it: one experiment per model, one more per model for the recipes (limit: --recipe-examples)
    names = [e["name"] for e in a["experiments"]]
    assert names == [n for arch in vl.MODELS.values() for n in (arch, arch + "-recipes")]
    early = {r["cell"]: r for r in a["experiments"][4]["rows"]}
    assert early["FGSM 0.05"]["rows"] == 3 and early["FGSM 0.05"]["frontal_linf_mean"] == pytest.approx(0.05, abs=1e-6)
    assert {r["cell"]: r for r in a["experiments"][5]["rows"]}["deepwordbug"]["rows"] == 2


def test_vl_spec_round_trips_and_runs_the_study_cells(tmp_path):
    import yaml

    from mmfusion_attacks.harness import vl
    from mmfusion_attacks.harness.engine import experiment_units
    from mmfusion_attacks.harness.spec import load_spec, parse_spec, spec_to_yaml

    for argv in ([], ["--recipes", "--toolkit", "art", "--seed", "3", "--synonym", "0.1", "0.3"]):
        args = vl.build_parser().parse_args(argv)
        spec = vl.build_spec(args)
        assert spec.table == "vl" and spec.seed == args.seed
        assert parse_spec(yaml.safe_load(spec_to_yaml(spec))) == spec
        (tmp_path / "s.yaml").write_text(spec_to_yaml(spec))
        loaded = load_spec(tmp_path / "s.yaml")
        assert [e.name for e in loaded.experiments] == [e.name for e in spec.experiments]
        cells = vl.study_cells(fgsm_eps=args.fgsm_eps, synonym=args.synonym, deletion=args.deletion, combo_eps=args.combo_eps, recipes=(),
                               toolkit=args.toolkit, seed=args.seed)
        main = spec.experiment("vl-early-fusion")
        assert [u.cell for u in experiment_units(main, spec)] == cells  # no sanity row, nothing else
        assert main.sanity is None and main.limit is None and main.model["source"] == "synthetic-vl"
        recipes = [e for e in spec.experiments if e.name.endswith("-recipes")]
        assert len(recipes) == (4 if args.recipes else 0)
        for e in recipes:
            assert e.limit == args.recipe_examples
            assert [u.cell for u in experiment_units(e, spec)] == vl.study_cells(
                fgsm_eps=(), synonym=(), deletion=(), recipes=args.recipes, query_budget=args.query_budget, toolkit=args.toolkit, seed=args.seed)


def test_vl_spec_on_a_folder_trains_with_the_callable_source(tmp_path):
    import yaml
    from data.iu_fixture import write_iu_fixture

    from mmfusion_attacks.harness import vl
    from mmfusion_attacks.harness.spec import parse_spec, spec_to_yaml

    write_iu_fixture(tmp_path / "iu", n=8, seed=1)
    args = vl.build_parser().parse_args(["--data", str(tmp_path / "iu"), "--hash-images", "--test-size", "5"])
    spec = vl.build_spec(args)
    assert parse_spec(yaml.safe_load(spec_to_yaml(spec))) == spec
    e = spec.experiment("vl-late-fusion")
    assert e.model["source"] == "callable" and e.model["factory"] == vl.IU_FACTORY
    assert e.model["options"] == {"arch": "vl-late-fusion", "data": str((tmp_path / "iu").resolve()), "image_size": 48, "seed": 0,
                                  "hash_images": True, "device": "cpu"}
    assert e.data == {"name": "iu-xray", "root": str((tmp_path / "iu").resolve()), "split": "test", "image_size": 48, "limit": 5}


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


def test_vl_benchmark_on_an_iu_xray_folder(capsys, monkeypatch, tmp_path, one_thread):
    """--data DIR: the four models are trained on the folder's train split (once: cached) and evaluated on
    its test split; `mmfusion-attacks run` on the printed spec gives the same table."""
    from data.iu_fixture import write_iu_fixture

    from mmfusion_attacks.harness import vl
    from mmfusion_attacks.harness.tables import format_preset_table
    from mmfusion_attacks.models import vl_training

    write_iu_fixture(tmp_path / "iu", n=24, seed=1, image_size=(16, 16))
    monkeypatch.setenv("MMFUSION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(vl_training, "SYNTHETIC_CONFIGS", TINY_MODELS)
    monkeypatch.setattr(vl_training, "SYNTHETIC_RECIPES", {a: vl_training.Recipe("adam", 1e-3, 1, 16) for a in TINY_MODELS})
    argv = ["--data", str(tmp_path / "iu"), "--image-size", "16", "--test-size", "3", "--fgsm-eps", "0.05", "--synonym", "0.2", "--recipes",
            "--quiet"]
    summary, a, b, preset_out, run_out, _ = _reproduced(capsys, tmp_path, argv)
    table = format_preset_table(a)
    assert table == format_preset_table(b) and table in preset_out and table in run_out
    assert [e["confusion"] for e in a["experiments"]] == [e["confusion"] for e in b["experiments"]]
    n = sum(map(sum, a["experiments"][0]["confusion"]["clean"]))
    assert 1 <= n <= 3 and f"Indiana University chest X-rays + reports from {(tmp_path / 'iu').resolve()} (test split, {n} examples)" in table
    assert "SYNTHETIC" not in table and "*" not in table
    assert [e["name"] for e in summary["experiments"]] == list(vl.MODELS.values())  # no recipes: no recipe experiments
    assert len(list((tmp_path / "cache").glob("vl-*-iu-xray-*.pt"))) == 4  # trained once, cached
