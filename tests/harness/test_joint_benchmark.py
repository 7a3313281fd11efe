"""The joint-attacks preset is a spec: ``--print-spec`` prints it, ``mmfusion-attacks run`` on that file
reproduces the preset's table and confusion matrices exactly, and bad options are refused before any work."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

pytest.importorskip("mmfusion_attacks.adapters.textattack")

from mmfusion_attacks.harness import engine  # noqa: E402
from mmfusion_attacks.harness import joint as joint_harness  # noqa: E402
from mmfusion_attacks.harness.spec import parse_spec, spec_to_yaml  # noqa: E402
from mmfusion_attacks.harness.tables import format_preset_table  # noqa: E402

TINY = ["--vl-examples", "2", "--queries", "5", "--image-size", "16", "--rgbt-examples", "6", "--rgbt-train", "16", "--rgbt-epochs", "1",
        "--steps", "1", "--rounds", "1", "--tri-examples", "4", "--tri-train", "16", "--seg-examples", "2", "--quiet"]


@pytest.fixture
def tiny_models(monkeypatch):
    """Tiny seeded random stand-ins for the cached defaults (the VL models and MFNet), same in both runs."""
    from mmfusion_attacks.models import create_model, vl_training

    tiny = {"backbone_kwargs": {"channels": (8, 8, 16, 16), "stem_width": 8}}

    def tiny_vl(arch, **kwargs):
        torch.manual_seed(0)
        extra = {} if arch == "vl-vision" else {"encoder": "tiny-random"}
        return create_model(arch, **({} if arch == "vl-language" else tiny), **extra).eval()

    def tiny_segmenter(arch, **kwargs):
        torch.manual_seed(0)
        return create_model("tiny-rgbt-segmenter", num_classes=9).eval()

    import mmfusion_attacks.zoo as zoo

    monkeypatch.setattr(vl_training, "vl_synthetic_default", tiny_vl)
    monkeypatch.setattr(zoo, "synthetic_default", tiny_segmenter)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny models gain nothing from threads, and a busy machine makes them spin
    yield
    torch.set_num_threads(threads)


def test_the_spec_round_trips_and_names_every_model_and_family(monkeypatch):
    for argv in ([], ["--seed", "3", "--queries", "0", "--device", "cpu"]):
        spec = joint_harness.build_spec(joint_harness.build_parser().parse_args(argv))
        assert parse_spec(yaml.safe_load(spec_to_yaml(spec))) == spec
        assert spec.table == "joint" and [e.name for e in spec.experiments] == list(joint_harness.EXPERIMENTS)
        assert all(e.sanity is None for e in spec.experiments)
    # MFNet stays the cached seed-0 default whatever --seed is; the classifier is trained with --seed
    mfnet = spec.experiment("mfnet-segmentation").model
    assert mfnet["source"] == "callable" and mfnet["options"] == {"seed": 0}
    assert spec.experiment("rgbt-classifier").model["seed"] == 3
    assert spec.experiment("vl-vision").worst_case[0]["plan"][2]["budget"] is None  # --queries 0: unlimited
    import mmfusion_attacks.zoo as zoo
    from mmfusion_attacks.harness.sources import build_model
    from mmfusion_attacks.models import create_model

    asked = []
    monkeypatch.setattr(zoo, "synthetic_default", lambda arch, **kw: asked.append((arch, kw)) or create_model("tiny-rgbt-segmenter", num_classes=9))
    build_model(mfnet, seed=3, device="cpu")
    assert asked == [("mfnet", {"size": (96, 128), "seed": 0, "progress": False})]


def test_preset_and_run_on_its_printed_spec_give_the_same_table(tiny_models, tmp_path, capsys):
    from mmfusion_attacks.cli import main as cli_main

    a, b = tmp_path / "preset", tmp_path / "run"
    cli_main(["joint", *TINY, "--out", str(a)])
    preset_out = capsys.readouterr().out
    assert joint_harness.main([*TINY, "--out", str(a), "--print-spec"]) is None
    spec_file = tmp_path / "joint.yaml"
    spec_file.write_text(capsys.readouterr().out)
    cli_main(["run", str(spec_file), "--out", str(b), "--quiet"])
    run_out = capsys.readouterr().out

    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    table = format_preset_table(sa)
    assert table == format_preset_table(sb)
    assert table in preset_out and table in run_out
    assert [e["confusion"] for e in sa["experiments"]] == [e["confusion"] for e in sb["experiments"]]
    # the layout: four family blocks, models as columns, every subset and the alternating attack as rows
    for family in ("image+text (", "rgb+thermal (", "image+text+audio (", "rgb+thermal segmentation ("):
        assert "\n" + family in table
    assert "pixel accuracy / mIoU" in table
    lines = table.splitlines()
    # the worst cases, then the alternating attack (the engine runs it first; the table keeps the preset's order)
    assert lines[lines.index(next(x for x in lines if x.startswith("worst case: frontal+lateral+text"))) + 1].startswith("alternating x1 ")
    assert any(line.split() == ["vision", "|", "language", "|", "early", "fusion", "|", "late", "fusion"] for line in lines)
    vision = {r["cell"]: r for r in sa["experiments"][0]["rows"]}
    assert vision["worst case: text"]["applies"] is False
    assert next(line for line in lines if line.startswith("worst case: text ")).split("|")[0].split()[3].startswith("=")
    assert vision["worst case: frontal+lateral+text"]["accuracy"] == vision["worst case: frontal+lateral"]["accuracy"]
    seg = {r["cell"]: r for r in sa["experiments"][-1]["rows"]}
    assert seg["worst case: rgb+ir"]["accuracy"] <= min(seg["worst case: rgb"]["accuracy"], seg["worst case: ir"]["accuracy"])
    assert len(sa["experiments"][5]["rows"]) == 7  # image, text, audio: 7 non-empty subsets
    # re-running the preset resumes: nothing is computed again
    again = joint_harness.main([*TINY, "--out", str(a)])
    assert all(e["shards"]["records_computed"] == 0 for e in again["experiments"])
    assert joint_harness.summary_table(again) == table and table in capsys.readouterr().out


def test_bad_options_are_refused_before_any_work(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(engine, "run_spec", lambda *a, **k: pytest.fail("the benchmark started working"))
    afile = tmp_path / "a-file"
    afile.write_text("")
    for argv, match in ((["--vl-examples", "0"], "--vl-examples"), (["--vl-eps", "2"], "--vl-eps"), (["--device", "cuda:7"], "--device"),
                        (["--seg-fraction", "1.5"], "--seg-fraction"), (["--out", str(afile)], "--out"),
                        (["--vl-examples", "0", "--print-spec"], "--vl-examples")):
        with pytest.raises(SystemExit) as info:
            joint_harness.main(argv)
        assert info.value.code == 2 and match in capsys.readouterr().err
