"""Transfer experiments, model wrappers, ``limit`` and preset tables in the spec harness, on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from mmfusion_attacks.harness.engine import run_spec
from mmfusion_attacks.harness.grid import transfer_confusions
from mmfusion_attacks.harness.sources import build_data, build_model, without_defences
from mmfusion_attacks.harness.spec import SpecError, parse_spec, spec_to_yaml
from mmfusion_attacks.harness.tables import PRESET_TABLES, console_text

TINY = {"name": "tiny-rgbt-segmenter", "source": "registry", "num_classes": 9}
DATA = {"name": "synthetic-rgbt", "split": "test", "size": 6, "height": 32, "width": 32}


def _transfer_spec(**transfer) -> dict:
    return {"name": "t", "device": "cpu", "experiments": [{
        "name": "tr", "model": TINY, "data": DATA, "batch_size": 2, "shard_size": 2, "labels": "pseudo",
        "transfer": {"sources": {"a": TINY, "b": {**TINY, "seed": 7}, "a@50%": {**TINY, "wrap": [{"kind": "at-scale", "scale": 0.5, "multiple": 8}]}},
                     "attack": "fgsm", "eps_255": 8, "attacked": ["rgb", "ir"], **transfer}}]}


def test_transfer_records_sum_to_the_unsharded_confusions_and_resume(tmp_path):
    spec = parse_spec(_transfer_spec())
    summary = run_spec(spec, tmp_path / "out", progress=False)
    entry = summary["experiments"][0]
    assert entry["kind"] == "transfer" and entry["shards"]["records_computed"] == 3
    # the same matrices computed in one pass over the data with the same models
    exp = spec.experiments[0]
    models = {label: build_model(m, seed=0, device="cpu") for label, m in exp.transfer["sources"].items()}
    inputs, labels = build_data(DATA, labels="pseudo").examples(0, 6)
    assert labels is None
    clean, adv = transfer_confusions(models, models, [(inputs, labels)], attack="fgsm", eps_255=8, attacked=("rgb", "ir"), progress=False)
    for (s, t), m in adv.items():
        assert entry["confusion"][f"{s} -> {t}"] == m.counts().tolist()
        ratio = m.miou() / clean[t].miou()
        assert entry["transfer"]["values"][f"{s} -> {t}"] == pytest.approx(ratio, abs=1e-12)
    assert {c["name"] for c in entry["checks"]} == {"whitebox-vs-transfer"}
    again = run_spec(spec, tmp_path / "out", progress=False)["experiments"][0]
    assert again["shards"]["records_computed"] == 0 and again["shards"]["records_reused"] == 3
    assert again["transfer"]["values"] == entry["transfer"]["values"]
    text = console_text(json.loads((tmp_path / "out" / "summary.json").read_text()), tmp_path / "out")
    assert "crafted on \\ evaluated on" in text and "a@50%" in text


def test_limit_uses_the_first_examples(tmp_path):
    raw = _transfer_spec()
    raw["experiments"][0]["limit"] = 3
    entry = run_spec(parse_spec(raw), tmp_path / "out", progress=False)["experiments"][0]
    pixels = sum(map(sum, entry["confusion"]["clean a"]))
    assert pixels == 3 * 32 * 32 and entry["shards"]["total"] == 2


def test_transfer_and_wrapper_problems_are_listed_with_their_fields():
    raw = _transfer_spec(attack={"a": "pgd", "zz": "fgsm"}, metric="best", eval_repeats=0, eps_255=-2)
    raw["experiments"][0]["model"] = {**TINY, "wrap": [{"kind": "at-scale"}, {"kind": "blur"}]}
    raw["experiments"][0]["transfer"]["targets"] = {"x": {"name": "no-such-model"}}
    raw["table"] = "nope"
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    text = str(err.value)
    for needle in ("model.wrap[0]: missing field 'scale'", "unknown wrapper 'blur'", "transfer.attack.zz: no source model 'zz'",
                   "give one attack per source model", "transfer.metric: must be iou_ratio or accuracy", "transfer.eval_repeats: must be >= 1",
                   "transfer.eps_255: must be >= 0", "transfer.targets.x.name: unknown model 'no-such-model'", "table: unknown table 'nope'"):
        assert needle in text, needle


def test_transfer_spec_round_trips_through_yaml():
    raw = _transfer_spec(attack={"a": "pgd", "b": "fgsm", "a@50%": "fgsm"}, eval_repeats=2, metric="accuracy")
    raw["table"] = "rgbt"
    raw["experiments"][0]["limit"] = 4
    spec = parse_spec(raw)
    again = parse_spec(yaml.safe_load(spec_to_yaml(spec)))
    assert again == spec and again.table == "rgbt" and sorted(PRESET_TABLES) == ["contrastive", "defences", "joint", "rgbt", "vl"]


def test_undefended_shares_the_weights_and_leaves_the_defended_model_alone():
    model = {"name": "tiny-rgbt-classifier", "source": "registry", "num_classes": 3}
    defended = build_model(model, seed=0, device="cpu")
    from art.defences.preprocessor import SpatialSmoothing

    from mmfusion_attacks.fusion import FusionModel

    defended = FusionModel(defended.model, ["rgb", "ir"], num_classes=3, defences={"ir": SpatialSmoothing(window_size=3, channels_first=True)}).eval()
    plain = without_defences(defended)
    assert len(defended.defences) == 1 and len(plain.defences) == 0 and plain.model is defended.model
    x = {"rgb": torch.rand(2, 3, 16, 16), "ir": torch.rand(2, 1, 16, 16)}
    x["ir"][:, :, ::2, ::2] = 1.0  # salt noise: the median filter changes it
    with torch.no_grad():
        assert not torch.equal(plain(x), defended(x))
        assert torch.equal(plain(x), FusionModel(defended.model, ["rgb", "ir"], num_classes=3).eval()(x))


def test_synthetic_classifier_with_a_defence_from_the_spec(tmp_path):
    raw = {"name": "d", "device": "cpu", "experiments": [{
        "name": "smoothed", "model": {"name": "tiny-rgbt-classifier", "source": "synthetic-rgbt-classifier", "train_size": 16, "epochs": 1,
                                      "defences": {"ir": {"median": 3}}},
        "data": {"name": "synthetic-rgbt-scenes", "split": "test", "size": 8}, "batch_size": 8,
        "transfer": {"sources": {"plain": {"name": "tiny-rgbt-classifier", "source": "synthetic-rgbt-classifier", "train_size": 16, "epochs": 1,
                                           "defences": {"ir": {"median": 3}}, "wrap": [{"kind": "undefended"}]},
                                 "bpda": {"name": "tiny-rgbt-classifier", "source": "synthetic-rgbt-classifier", "train_size": 16, "epochs": 1,
                                          "defences": {"ir": {"median": 3}}}},
                     "targets": {"smoothed": {"name": "tiny-rgbt-classifier", "source": "synthetic-rgbt-classifier", "train_size": 16, "epochs": 1,
                                              "defences": {"ir": {"median": 3}}}},
                     "attack": "pgd", "steps": 2, "eps_255": 8, "attacked": ["ir"], "metric": "accuracy"}}]}
    entry = run_spec(parse_spec(raw), tmp_path / "out", progress=False)["experiments"][0]
    assert set(entry["transfer"]["values"]) == {"plain -> smoothed", "bpda -> smoothed"}
    assert all(0.0 <= v <= 1.0 for v in entry["transfer"]["values"].values())
    assert (tmp_path / "out" / "report.html").is_file()


def test_bad_defence_is_refused():
    raw = {"name": "d", "experiments": [{"name": "x", "model": {"name": "tiny-rgbt-classifier", "source": "synthetic-rgbt-classifier",
                                                              "defences": {"ir": {"blur": 3}}},
                                         "data": {"name": "synthetic-rgbt-scenes"}}]}
    with pytest.raises(SpecError, match=r"model.defences.ir: one of \['gaussian', 'median'\]"):
        parse_spec(raw)


def test_transfer_entry_renders_in_every_report(tmp_path):
    run_spec(parse_spec(_transfer_spec()), tmp_path / "out", progress=False)
    html = (tmp_path / "out" / "report.html").read_text()
    md = (tmp_path / "out" / "report.md").read_text()
    assert "a@50%" in html and "a@50%" in md
    assert Path(tmp_path / "out" / "results.json").is_file()


def test_undefended_strips_the_defences_wherever_it_stands_in_the_wrap_list():
    """`wrap: [at-scale, undefended]` kept the defence (it was stripped from the outer wrapper only)."""
    import torch

    from mmfusion_attacks.fusion import FusionModel
    from mmfusion_attacks.harness.sources import apply_wrappers
    from mmfusion_attacks.models.tiny import TinyRGBTSegmenter

    torch.manual_seed(0)
    defended = FusionModel(TinyRGBTSegmenter(), ["rgb", "ir"], task="segmentation", defences={"ir": torch.zeros_like}).eval()
    x = {"rgb": torch.rand(1, 3, 32, 32), "ir": torch.rand(1, 1, 32, 32)}
    with torch.no_grad():
        plain = apply_wrappers(defended, [{"kind": "undefended"}])(x)
        assert not torch.allclose(plain, defended(x))
        for wrap in ([{"kind": "undefended"}, {"kind": "at-scale", "scale": 1.0}], [{"kind": "at-scale", "scale": 1.0}, {"kind": "undefended"}]):
            assert torch.allclose(apply_wrappers(defended, wrap)(x), plain), wrap


def test_a_transfer_experiment_refuses_records_another_model_made(tmp_path, monkeypatch):
    """Each source and target model's clean outputs are checked on resume, as a grid experiment's are."""
    import spec_models

    from mmfusion_attacks.harness.engine import ChangedModelError

    gained = {"name": "gained", "source": "callable", "factory": "spec_models:gained_tiny_segmenter"}
    raw = _transfer_spec(sources={"a": TINY, "g": gained})
    run_spec(parse_spec(raw), tmp_path / "out", progress=False)
    assert run_spec(parse_spec(raw), tmp_path / "out", progress=False)["experiments"][0]["shards"]["records_computed"] == 0
    monkeypatch.setattr(spec_models, "IR_GAIN", 0.0)
    with pytest.raises(ChangedModelError, match="model 'g'"):
        run_spec(parse_spec(raw), tmp_path / "out", progress=False)
