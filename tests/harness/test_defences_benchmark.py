"""The defences preset end to end on a tiny setting (the full default runs in benchmarks/): the preset
and ``mmfusion-attacks run`` on its ``--print-spec`` output print the same table."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from mmfusion_attacks import cli
from mmfusion_attacks.data import create_dataset
from mmfusion_attacks.harness.defences import REGIMES, build_parser, build_spec, main, train_fusion
from mmfusion_attacks.harness.spec import parse_spec, spec_to_yaml
from mmfusion_attacks.harness.tables import format_preset_table

TINY = ["--train-size", "30", "--test-size", "6", "--epochs", "2", "--adv-epochs", "1", "--train-steps", "1", "--steps", "1",
        "--eot-samples", "1", "--eval-repeats", "2", "--batch-size", "3", "--quiet"]


def test_spec_round_trips_and_names_every_analysis():
    spec = build_spec(build_parser().parse_args(TINY))
    assert parse_spec(yaml.safe_load(spec_to_yaml(spec))) == spec
    assert spec.table == "defences"
    assert [e.name for e in spec.experiments if e.kind == "grid"] == list(REGIMES)
    transfers = [e for e in spec.experiments if e.kind == "transfer"]
    assert [e.name for e in transfers] == ["median-IR", "noise-IR", "median-RGB+IR", "noise-RGB+IR"]
    median = transfers[0].transfer
    assert median["sources"]["plain"]["wrap"] == [{"kind": "undefended"}] and median["metric"] == "accuracy"
    assert transfers[1].transfer["attack"] == {"pgd": "pgd", "eot": "eotpgd"} and transfers[1].transfer["eval_repeats"] == 2


def test_preset_and_run_on_its_printed_spec_print_the_same_table(tmp_path, capsys):
    summary = main([*TINY, "--out", str(tmp_path / "a")])
    printed = capsys.readouterr().out
    table = format_preset_table(summary)
    assert table in printed and table.startswith("data: SYNTHETIC")
    for name in REGIMES:
        assert any(line.startswith(name + " ") for line in table.splitlines())
    assert "median 3x3 on IR" in table and "Gaussian noise sigma 0.05 on IR" in table and "EOT-PGD" in table

    assert main([*TINY, "--out", str(tmp_path / "a"), "--print-spec"]) is None
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(capsys.readouterr().out)
    assert cli.main(["run", str(spec_file), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    again = capsys.readouterr().out
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert format_preset_table(a) == format_preset_table(b) == table
    assert table in again
    assert [e["confusion"] for e in a["experiments"]] == [e["confusion"] for e in b["experiments"]]


@pytest.mark.parametrize("bad", [["--device", "nonsense"], ["--steps", "0"], ["--test-size", "0"], ["--noise", "0"]])
def test_bad_options_are_refused_before_work(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--out", str(tmp_path / "x"), *bad])
    assert exc.value.code == 2 and not (tmp_path / "x").exists()
    assert "argument --" in capsys.readouterr().err


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(SystemExit):
        main([*TINY, "--out", str(f)])
    assert "not a folder" in capsys.readouterr().err


def test_scene_data_and_adversarial_training_through_art():
    data = create_dataset("synthetic-rgbt-scenes", split="test", size=9)
    batch, labels = data.tensors()
    assert batch["rgb"].shape == (9, 3, 32, 40) and batch["ir"].shape == (9, 1, 32, 40)
    assert labels.tolist() == [0, 1, 2] * 3
    assert torch.equal(create_dataset("synthetic-rgbt-scenes", split="test", size=9)[4]["rgb"], data[4]["rgb"])  # deterministic
    fusion = train_fusion(batch, labels, adversarial=("ir",), eps=8 / 255, epochs=1, pgd_steps=2, seed=0)
    assert not fusion.training and fusion(batch).shape == (9, 3)
