"""The benchmark end to end on tiny settings: embedded default, single frames, and the MF layout; its
``--print-spec`` run by ``mmfusion-attacks run`` reproduces its table exactly."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mmfusion_attacks import cli
from mmfusion_attacks.harness.rgbt import ANALYSES, build_parser, build_spec, load_frames, main, parse_subsets
from mmfusion_attacks.harness.spec import parse_spec, spec_to_yaml
from mmfusion_attacks.harness.tables import format_preset_table

FAST = ["--model", "tiny-rgbt-segmenter", "--limit", "2", "--batch-size", "2", "--steps", "1", "--eps", "10", "40",
        "--train-steps", "5", "--transfer-models", "--eot-iter", "2", "--size", "32", "32", "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMFUSION_CACHE", str(tmp_path / "cache"))


def test_parse_subsets():
    assert parse_subsets(["rgb", "IR", "rgb+ir"]) == [("rgb",), ("ir",), ("rgb", "ir")]


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def test_print_spec_run_reproduces_the_table(tmp_path, capsys):
    """The preset's run and `mmfusion-attacks run` on its --print-spec output: the same table (text) and
    the same confusion matrices, every analysis included."""
    a, b = tmp_path / "a", tmp_path / "b"
    summary = main([*FAST, "--qualitative", "1", "--out", str(a)])
    printed_a = capsys.readouterr().out
    assert main([*FAST, "--qualitative", "1", "--print-spec"]) is None
    spec_text = capsys.readouterr().out
    assert spec_text == (a / "spec.yaml").read_text()  # the spec the preset ran
    spec_file = tmp_path / "rgbt.yaml"
    spec_file.write_text(spec_text)
    assert cli.main(["run", str(spec_file), "--out", str(b), "--quiet"]) == 0
    printed_b = capsys.readouterr().out

    table_a, table_b = format_preset_table(_summary(a)), format_preset_table(_summary(b))
    assert table_a == table_b and table_a == format_preset_table(summary)
    assert table_a in printed_a and table_b in printed_b
    assert [e["confusion"] for e in _summary(a)["experiments"]] == [e["confusion"] for e in _summary(b)["experiments"]]

    assert [e["name"] for e in summary["experiments"]] == list(ANALYSES)
    for text in ("SYNTHETIC", "IoU_R", "least-likely", "target rate", "transfer matrix", "EOT 2 samples/step"):
        assert text in table_a, text
    grid, least, transfer, defence = summary["experiments"]
    assert len(grid["raw_rows"]) == 2 * 2 * 3 and grid["description"]["labels"] == "ground truth"
    assert all("target_rate" in r for r in least["raw_rows"]) and len(least["raw_rows"]) == 2 * 2 * 3
    assert len(transfer["transfer"]["values"]) == 4 * 4
    assert set(defence["transfer"]["values"]) == {f"{s} -> {t}" for s in ("PGD on the base model", "EOT-PGD through the defence")
                                                  for t in ("base model", "defended model")}
    drawn = [q for q in grid["qualitative"] if q["kind"] == "segmentation"]
    assert len(drawn) == 3 and all((a / q["path"]).is_file() for q in drawn)  # 1 example x 3 subsets
    assert (a / "report.html").is_file() and (tmp_path / "cache").is_dir()  # the trained default was cached


def test_spec_round_trips_and_maps_the_options(tmp_path):
    """No work: the spec of several option sets reads back equal; the models, data and classes it names."""
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    frames = _write_frames(tmp_path / "frames")
    argvs = [
        [],
        [*FAST, "--exclude-unlabeled", "--labels", "pseudo", "--amp", "--analyses", "grid", "least-likely"],
        ["--images", *frames, "--weights", str(weights), "--transfer-models", f"rtfnet-18={weights}", "--limit", "1"],
        ["--data-root", str(tmp_path), "--weights", str(weights), "--size", "64", "64", "--limit", "3", "--split", "val"],
    ]
    for argv in argvs:
        spec = build_spec(build_parser().parse_args(argv))
        assert parse_spec(yaml.safe_load(spec_to_yaml(spec))) == spec, argv
        assert spec.table == "rgbt"
    default = build_spec(build_parser().parse_args([]))
    grid = default.experiment("grid")
    assert grid.attacks == ["fgsm", "pgd"] and grid.eps_255 == [10.0, 20.0, 40.0] and grid.subsets == ["rgb", "ir", "rgb+ir"]
    assert grid.include_classes is None and grid.sanity is None and default.table == "rgbt"  # the console table is the run's
    assert grid.model == {"name": "mfnet", "source": "synthetic-rgbt", "train_steps": 400, "size": [96, 128]}
    assert grid.data == {"name": "synthetic-rgbt", "split": "test", "size": 32, "height": 96, "width": 128, "seed": 0}
    assert list(default.experiment("transfer").transfer["sources"]) == ["mfnet@100%", "mfnet@75%", "mfnet@50%", "mfnet-multiscale",
                                                                        "tiny-rgbt-segmenter"]
    defence = default.experiment("defence").transfer
    assert defence["attack"] == {"PGD on the base model": "pgd", "EOT-PGD through the defence": "eotpgd"}
    assert defence["eval_repeats"] == 4 and defence["attack_kwargs"] == {"eotpgd": {"eot_iter": 8}}
    assert defence["targets"]["defended model"]["wrap"] == [{"kind": "random-resize-pad", "low": 0.8, "high": 1.2, "multiple": 16}]

    tiny = build_spec(build_parser().parse_args(argvs[1]))
    assert [e.name for e in tiny.experiments] == ["grid", "least-likely"] and tiny.amp
    assert tiny.experiment("grid").include_classes == list(range(1, 9)) and tiny.experiment("grid").labels == "pseudo"
    assert tiny.experiment("least-likely").attacks == ["fgsm2", "ifgsm2"]
    framed = build_spec(build_parser().parse_args(argvs[2]))
    e = framed.experiment("grid")
    assert e.data == {"name": "rgbt-frames", "paths": frames} and e.labels == "pseudo" and e.limit == 1
    assert e.model == {"name": "mfnet", "source": "registry", "weights": str(weights), "num_classes": 9}
    assert framed.experiment("transfer").transfer["sources"]["rtfnet-18"]["weights"] == str(weights)
    mf = build_spec(build_parser().parse_args(argvs[3])).experiment("grid")
    assert mf.data == {"name": "mf", "root": str(tmp_path), "split": "val", "size": [64, 64], "limit": 3} and mf.labels == "auto"


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
    summary = main([*FAST, "--images", *paths, "--weights", str(weights), "--analyses", "grid", "--amp", "--out", str(tmp_path / "o2")])
    assert "bfloat16 autocast" in format_preset_table(summary) and "bfloat16 autocast" in capsys.readouterr().out
    (grid,) = summary["experiments"]
    assert grid["description"]["labels"].startswith("pseudo") and "2 RGB-T frame(s)" in grid["description"]["data"]


def test_mf_layout(tmp_path):
    from data.test_mf_dataset import make_mf_fixture  # the same generator as the loader's tests

    from mmfusion_attacks.models import create_model

    root = make_mf_fixture(tmp_path / "MF", size=(32, 32))
    weights = tmp_path / "tiny.pt"
    torch.save(create_model("tiny-rgbt-segmenter").model.state_dict(), weights)
    summary = main([*FAST, "--data-root", str(root), "--weights", str(weights), "--analyses", "grid", "--exclude-unlabeled",
                    "--out", str(tmp_path / "o")])
    (grid,) = summary["experiments"]
    assert grid["description"]["labels"] == "ground truth" and "'mf' test split" in grid["description"]["data"]
    assert "class 0 'unlabeled' excluded" in format_preset_table(summary)


def test_bad_images_are_refused(tmp_path):
    p = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(p)
    with pytest.raises(ValueError, match="HxWx4"):
        load_frames([p])
