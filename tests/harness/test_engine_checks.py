"""Engine faults that gave silent or late wrong results: include_classes checked against the model before
any work, one qualitative panel per seed, every rank's counts in a torchrun summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmfusion_attacks.harness.engine import run_spec
from mmfusion_attacks.harness.spec import SpecError, parse_spec

ROOT = Path(__file__).resolve().parents[2]
SEG = {"name": "seg", "model": {"name": "tiny-rgbt-segmenter"},
       "data": {"name": "synthetic-rgbt", "split": "test", "size": 4, "height": 16, "width": 16},
       "batch_size": 2, "shard_size": 2, "attacks": ["fgsm"], "eps_255": [8], "subsets": ["rgb"], "sanity": False, "qualitative": 0}
SCENES = {"name": "scenes", "model": {"name": "tiny-rgbt-classifier"},
          "data": {"name": "synthetic-rgbt-scenes", "split": "test", "size": 4, "height": 16, "width": 16},
          "batch_size": 2, "shard_size": 2, "attacks": ["fgsm"], "eps_255": [8], "subsets": ["rgb"], "sanity": False, "qualitative": 0}


def _spec(*experiments: dict) -> object:
    return parse_spec({"name": "t", "device": "cpu", "experiments": list(experiments)})


def test_include_classes_past_the_models_classes_is_refused_before_any_record(tmp_path):
    spec = _spec(SCENES, {**SEG, "include_classes": [7, 99]})
    with pytest.raises(SpecError, match=r"experiments\.seg\.include_classes: class\(es\) \[99\] do not exist: the model has 9 classes"):
        run_spec(spec, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "records").exists()  # the first experiment did not run either


def test_include_classes_on_a_classifier_is_refused(tmp_path):
    spec = _spec({**SCENES, "include_classes": [1]})
    with pytest.raises(SpecError, match=r"experiments\.scenes\.include_classes: the model is a classification model"):
        run_spec(spec, tmp_path / "out", progress=False)


def test_include_classes_in_range_still_runs(tmp_path):
    summary = run_spec(_spec({**SEG, "include_classes": [1, 8]}), tmp_path / "out", progress=False)
    assert summary["experiments"][0]["description"]["classes in the means"] == "1, 8"


def test_qualitative_panels_of_each_seed_are_kept(tmp_path):
    summary = run_spec(_spec({**SEG, "seeds": [0, 1], "qualitative": 1}), tmp_path / "out", progress=False)
    panels = summary["experiments"][0]["qualitative"]
    assert len(panels) == 2 and len({q["path"] for q in panels}) == 2, panels
    assert all((tmp_path / "out" / q["path"]).is_file() for q in panels)
    assert {q["caption"].split(" -- ")[0] for q in panels} == {"FGSM 8/255 on RGB (seed 0)", "FGSM 8/255 on RGB (seed 1)"}


@pytest.mark.slow
def test_torchrun_summary_counts_every_ranks_records(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"name": "t", "device": "cpu", "experiments": [{**SCENES, "data": {**SCENES["data"], "size": 8}}]}))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mmfusion_attacks", "run", str(spec),
           "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = json.loads((out / "summary.json").read_text())["experiments"][0]["shards"]
    assert shards["records_computed"] == 4 * 2 and shards["records_reused"] == 0  # (clean + 1 cell) x 4 shards, over both ranks
    # corrupt one record of a shard of each rank: both are listed and recomputed
    for shard in ("shard-00000.json", "shard-00001.json"):
        path = next(p for p in (out / "records").rglob(shard) if '"seconds":' in p.read_text())
        path.write_text(path.read_text().replace('"seconds":', '"seconds":1e-9+'))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    shards = summary["experiments"][0]["shards"]
    assert (shards["records_computed"], shards["records_reused"]) == (2, 6), shards
    assert sorted(Path(r["path"]).name for r in summary["invalid_records"]) == ["shard-00000.json", "shard-00001.json"]


def test_resuming_after_the_models_code_changed_is_refused(tmp_path, monkeypatch):
    """Same weights, same spec, other outputs (its code edited): the records of the folder were made by
    another model; reusing them would mix two models in one table. Refused before the experiment's work."""
    import spec_models

    from mmfusion_attacks.harness.engine import ChangedModelError

    exp = {**SCENES, "model": {"name": "gained", "source": "callable", "factory": "spec_models:gained_scene_classifier"}}
    out = tmp_path / "out"
    first = run_spec(_spec(exp), out, progress=False)["experiments"][0]["shards"]
    again = run_spec(_spec(exp), out, progress=False)["experiments"][0]["shards"]
    assert again["records_computed"] == 0 and again["records_reused"] == first["records_computed"]
    monkeypatch.setattr(spec_models, "IR_GAIN", 0.0)
    with pytest.raises(ChangedModelError, match="code .* changed"):
        run_spec(_spec(exp), out, progress=False)
    run_spec(_spec(exp), tmp_path / "fresh", progress=False)  # a new folder: computed afresh

    unseeded = {**SCENES, "model": {"name": "unseeded", "source": "callable", "factory": "spec_models:unseeded_scene_classifier"}}
    run_spec(_spec(unseeded), tmp_path / "noisy", progress=False)
    run_spec(_spec(unseeded), tmp_path / "noisy", progress=False)  # outputs never repeat: not checked, not refused


def test_each_seed_reseeds_the_text_steps_and_plans_its_rows_run():
    """Text augmenters and TextAttack recipes seed themselves from their step's own seed: without an offset
    per experiment seed, `seeds: [0, 1]` repeated the same text rows (zero spread that is not real)."""
    from mmfusion_attacks.harness.engine import experiment_units
    from mmfusion_attacks.text.augment import WordDeletion

    exp = {**SCENES, "attacks": [], "combos": [{"name": "DEL", "steps": [{"kind": "text-augment", "name": "deletion", "attacked": ["text"],
                                                                         "amount": 0.5}]}],
           "joint": [{"name": "J", "plan": [{"modality": "text", "attack": "deletion", "budget": 0.5}]}], "seeds": [0, 1]}
    spec = _spec(exp)
    units = experiment_units(spec.experiments[0], spec)
    combo = {u.seed: u.cell for u in units if u.label.startswith("DEL")}
    joint = {u.seed: u.cell for u in units if u.label.startswith("J")}
    assert combo[0].steps_[0].seed == 0 and combo[1].steps_[0].seed != 0  # seed 0: the seeds as written
    assert joint[0].plan[0].seed == 0 and joint[1].plan[0].seed != 0
    texts = [f"the {w} lung fields are clear with no focal consolidation seen today" for w in ("left", "right", "upper", "lower")]
    assert WordDeletion(0.5, seed=combo[0].steps_[0].seed)(texts) != WordDeletion(0.5, seed=combo[1].steps_[0].seed)(texts)


def test_records_of_another_toolkit_version_are_recomputed(tmp_path, monkeypatch):
    from mmfusion_attacks.harness import engine

    out = tmp_path / "out"
    first = run_spec(_spec(SCENES), out, progress=False)["experiments"][0]["shards"]
    upgraded = {**engine.toolkit_versions(), "torchattacks": "99.0"}
    monkeypatch.setattr(engine, "toolkit_versions", lambda: upgraded)
    summary = run_spec(_spec(SCENES), out, progress=False)
    assert summary["experiments"][0]["shards"]["records_computed"] == first["records_computed"]
    assert any("toolkits changed" in r["reason"] for r in summary["invalid_records"])


def test_a_run_of_some_experiments_keeps_the_others_in_the_report(tmp_path):
    """--only seg after a full run: the summary (and the reports) still hold scenes, as long as the spec
    still describes scenes as it did; changed, scenes is left out rather than shown with old numbers."""
    out = tmp_path / "out"
    full = run_spec(_spec(SCENES, SEG), out, progress=False)
    part = run_spec(_spec(SCENES, SEG), out, progress=False, only=["seg"])
    assert [e["name"] for e in part["experiments"]] == ["scenes", "seg"]
    assert part["experiments"][0] == full["experiments"][0]
    changed = run_spec(_spec({**SCENES, "eps_255": [4]}, SEG), out, progress=False, only=["seg"])
    assert [e["name"] for e in changed["experiments"]] == ["seg"]


def test_a_registry_model_that_trains_itself_is_described_by_its_origin():
    """The contrastive preset's clip-like model (no weights in the spec) was described as randomly initialised."""
    import torch

    from mmfusion_attacks import FusionModel
    from mmfusion_attacks.harness.engine import describe_model

    fusion = FusionModel(torch.nn.Flatten(), ["image"], num_classes=2)
    assert "randomly initialised" in describe_model({"name": "m", "source": "registry"}, fusion)
    fusion.origin = "heads trained by this project on SYNTHETIC Fashion-MNIST"
    assert describe_model({"name": "m", "source": "registry"}, fusion) == "m (heads trained by this project on SYNTHETIC Fashion-MNIST)"


def test_clean_prompts_other_than_the_zero_shot_models_are_refused():
    """The logits of a zero-shot classifier come from the prompts each row carries: data built with another
    template than the model's would be scored against the data's prompts under the model's class names."""
    import torch
    from models.test_contrastive import own_encoder

    from mmfusion_attacks.harness.engine import check_prompts
    from mmfusion_attacks.models.contrastive import zero_shot_model

    fusion = zero_shot_model(own_encoder(), ["bag", "boot", "coat"], template="a sketch of a {}")
    exp = _spec(SCENES).experiments[0]
    batch = fusion.model.batch(torch.rand(2, 1, 16, 16))
    check_prompts(exp, fusion, batch, None)  # the model's own prompts
    other = zero_shot_model(own_encoder(), ["bag", "boot", "coat"], template="a photo of a {}").model.batch(torch.rand(2, 1, 16, 16))
    with pytest.raises(SpecError, match="not the model's class prompts"):
        check_prompts(exp, fusion, other, None)


def test_skip_broken_on_a_segmentation_experiment_is_refused_before_any_record(tmp_path):
    seg = {**SEG, "attacks": [], "worst_case": [{"group": "wc", "plan": [{"modality": "rgb", "attack": "fgsm", "budget": 0.03},
                                                                        {"modality": "ir", "attack": "fgsm", "budget": 0.03}],
                                                "skip_broken": True}]}
    with pytest.raises(SpecError, match="skip_broken is for classification"):
        run_spec(_spec(seg), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "records").exists()
