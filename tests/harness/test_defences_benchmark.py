"""The defences benchmark end to end on a tiny setting (the full default runs in benchmarks/)."""

from __future__ import annotations

import json

import pytest
import torch

from mmfusion_attacks.data import create_dataset
from mmfusion_attacks.harness.defences import main, train_fusion


@pytest.mark.slow
def test_defences_benchmark_small(tmp_path, capsys):
    result = main(["--train-size", "60", "--test-size", "30", "--epochs", "2", "--adv-epochs", "2", "--train-steps", "2", "--steps", "3",
                   "--eot-samples", "2", "--eval-repeats", "2", "--batch-size", "30", "--out", str(tmp_path)])
    assert result["meta"]["data"].startswith("SYNTHETIC")
    models = [r["model"] for r in result["training"]]
    assert models == ["normal", "adv-IR", "adv-RGB", "adv-RGB+IR"]
    for r in result["training"]:
        for key in ("clean", "RGB", "IR", "RGB+IR"):
            assert 0.0 <= r[key] <= 1.0
    kinds = {r["defence"] for r in result["defences"]}
    assert len(kinds) == 2 and len(result["defences"]) == 4
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["training"] == result["training"]
    assert "robust accuracy" in capsys.readouterr().out


def test_scene_data_and_adversarial_training_through_art():
    data = create_dataset("synthetic-rgbt-scenes", split="test", size=9)
    batch, labels = data.tensors()
    assert batch["rgb"].shape == (9, 3, 32, 40) and batch["ir"].shape == (9, 1, 32, 40)
    assert labels.tolist() == [0, 1, 2] * 3
    assert torch.equal(create_dataset("synthetic-rgbt-scenes", split="test", size=9)[4]["rgb"], data[4]["rgb"])  # deterministic
    fusion = train_fusion(batch, labels, adversarial=("ir",), eps=8 / 255, epochs=1, pgd_steps=2, seed=0)
    assert not fusion.training and fusion(batch).shape == (9, 3)
