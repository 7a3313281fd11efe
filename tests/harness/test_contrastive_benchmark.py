"""The contrastive preset's plumbing on a tiny dual encoder, and the image attacks it runs (every one
changes zero-shot predictions while the prompts stay identical)."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml
from torch import nn

from mmfusion_attacks import run_attack
from mmfusion_attacks.attacks import least_likely_targets
from mmfusion_attacks.models.contrastive import dual_encoder, zero_shot_model
from mmfusion_attacks.recipes import make_attack, recipe_targets

pytest.importorskip("mmfusion_attacks.adapters.textattack")

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")


class Words(nn.Module):
    max_text_tokens = 16

    def __init__(self):
        super().__init__()
        self.emb = nn.EmbeddingBag(211, 8)

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]

    def forward(self, texts):
        ids = [torch.tensor([sum(map(ord, w)) % 211 for w in t.split()]) for t in texts]
        offsets = torch.tensor([0, *torch.tensor([len(i) for i in ids]).cumsum(0)[:-1].tolist()])
        return self.emb(torch.cat(ids), offsets)


def tiny_zero_shot(classes=CLASSES, seed=0):
    torch.manual_seed(seed)
    tower = nn.Sequential(nn.Conv2d(1, 6, 5, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    encoder = dual_encoder(tower, Words(), nn.Linear(24, 8), None, temperature=0.05, image_size=28, channels=1)
    return zero_shot_model(encoder, list(classes)).eval()


@pytest.mark.parametrize("name, toolkit, steps", [("fgsm", "torchattacks", 1), ("pgd", "torchattacks", 5), ("deepfool", "art", 20),
                                                  ("jsma", "art", 1), ("square", "art", 50), ("hopskipjump", "art", 5)])
def test_every_image_attack_changes_zero_shot_predictions_with_the_prompts_identical(name, toolkit, steps):
    fusion = tiny_zero_shot()
    g = torch.Generator().manual_seed(0)
    batch = fusion.model.batch(torch.rand(4, 1, 28, 28, generator=g))
    labels = fusion.predict(batch)
    eps = {"jsma": 1.0, "square": 0.3}.get(name, 32 / 255)  # a random search needs a wide ball on a random model
    attack = make_attack(name, fusion, "image", toolkit=toolkit, eps=eps, steps=steps)
    targets = least_likely_targets(fusion(batch)) if recipe_targets(name) else None
    res = run_attack(attack, batch, labels, targets=targets)
    assert res.inputs["prompts"] == batch["prompts"]
    assert bool((res.adv_pred != labels).any()), (name, res.adv_pred, labels)


TINY = ["--examples", "6", "--slow-examples", "2", "--steps", "2", "--queries", "10", "--square-queries", "5", "--hsj-iter", "1",
        "--deepfool-iter", "3", "--no-jsma", "--eps-255", "16", "--quiet"]


@pytest.fixture
def tiny_clip_like(monkeypatch):
    """``clip-like`` built as the tiny dual encoder (its ``seed`` option picks the weights: the surrogate differs)."""
    import mmfusion_attacks.models as models

    real = models.create_model
    monkeypatch.setattr(models, "create_model", lambda name, **kw: tiny_zero_shot(seed=kw.get("seed", 0)) if name == "clip-like" else real(name, **kw))


def test_spec_round_trips_with_every_row(tiny_clip_like):
    from mmfusion_attacks.harness.contrastive import build_parser, build_spec
    from mmfusion_attacks.harness.spec import parse_spec, spec_to_yaml

    spec = build_spec(build_parser().parse_args(TINY), source="synthetic")
    assert parse_spec(yaml.safe_load(spec_to_yaml(spec))) == spec and spec.table == "contrastive"
    main_rows, slow, grey = spec.experiments
    assert [c["name"] for c in main_rows.combos] == ["FGSM on image", "PGD on image", "SQUARE on image", "DEEPWORDBUG on prompts"]
    assert [c["name"] for c in slow.combos] == ["DEEPFOOL on image", "HOPSKIPJUMP on image"] and slow.limit == 2
    assert grey.transfer["metric"] == "accuracy" and grey.transfer["sources"]["surrogate PGD"]["options"] == {"classes": "all", "seed": 1}
    assert main_rows.model["options"] == {"classes": "all", "seed": 0} and main_rows.data["source"] == "synthetic"


def test_hopskipjump_is_reproducible_under_numpys_seed():
    """ART's HopSkipJump draws its initial sample from an OS-seeded RandomState; the recipe seeds it from
    numpy's global generator (which the harness seeds per cell and batch), so equal seeds give equal rows."""
    import numpy as np

    fusion = tiny_zero_shot()
    batch = fusion.model.batch(torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    outs = []
    for _ in range(2):
        np.random.seed(3)
        attack = make_attack("hopskipjump", fusion, "image", toolkit="art", eps=1.0, steps=2)
        outs.append(run_attack(attack, batch, None).inputs["image"])
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], batch["image"])


def test_preset_and_run_on_its_printed_spec_print_the_same_table(tiny_clip_like, tmp_path, capsys):
    from mmfusion_attacks.cli import main as cli_main
    from mmfusion_attacks.harness.contrastive import main
    from mmfusion_attacks.harness.tables import format_preset_table

    summary = main([*TINY, "--out", str(tmp_path / "a")])
    printed = capsys.readouterr().out
    table = format_preset_table(summary)
    from mmfusion_attacks.data.fashion_mnist import debian_available

    assert table in printed and "zero-shot over ten Fashion-MNIST classes" in table
    assert ("note: SYNTHETIC" in table) == (not debian_available())  # the real images when installed, else said
    lines = table.splitlines()
    for attack, attacked, box in (("PGD", "image", "white"), ("SQUARE", "image", "black"), ("HOPSKIPJUMP", "image", "black"),
                                  ("PGD", "image", "grey"), ("DEEPWORDBUG", "prompts", "black"),
                                  ("PGD + DEEPWORDBUG (worst case)", "image+prompts", "white")):
        assert any(line.startswith(f"{attack:32s} {attacked:14s} {box}") for line in lines), (attack, attacked, box)
    assert any(line.startswith("DEEPFOOL") and line.split()[3] == "2" for line in lines)  # the slow rows: first 2 examples
    worst = {r["cell"]: r["accuracy"] for r in summary["experiments"][0]["raw_rows"] if r["cell"].startswith("worst case")}
    assert worst["worst case: image+prompts"] <= min(worst["worst case: image"], worst["worst case: prompts"])

    assert main([*TINY, "--out", str(tmp_path / "a"), "--print-spec"]) is None
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(capsys.readouterr().out)
    assert cli_main(["run", str(spec_file), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    again = capsys.readouterr().out
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert format_preset_table(a) == format_preset_table(b) == table
    assert table in again
    assert [e["confusion"] for e in a["experiments"]] == [e["confusion"] for e in b["experiments"]]


def test_contrastive_benchmark_refuses_bad_options_before_any_work(monkeypatch, tmp_path, capsys):
    from mmfusion_attacks.harness import contrastive, engine

    monkeypatch.setattr(engine, "run_spec", lambda *a, **k: pytest.fail("the benchmark started working"))
    monkeypatch.setattr(contrastive, "build_spec", lambda *a, **k: pytest.fail("the benchmark started working"))
    f = tmp_path / "file"
    f.write_text("")
    for argv, match in ((["--examples", "0"], "--examples"), (["--examples", "4", "--slow-examples", "8"], "--slow-examples"),
                        (["--eps-255", "-1"], "--eps-255"), (["--device", "nonsense"], "--device"), (["--out", str(f)], "--out")):
        with pytest.raises(SystemExit) as info:
            contrastive.main(argv)
        assert info.value.code == 2 and match in capsys.readouterr().err


def test_zero_shot_data_serve_the_prompt_sets_a_zero_shot_model_reads():
    from mmfusion_attacks.data import create_dataset

    data = create_dataset("fashion-mnist-zero-shot", split="test", size=4, source="synthetic")
    inputs, labels = data.tensors([1, 2])
    fusion = tiny_zero_shot()
    assert inputs["prompts"] == fusion.model.batch(inputs["image"])["prompts"] and labels.tolist() == [1, 2]
    assert data.synthetic and "SYNTHETIC" in data.description
    assert data[3]["prompts"] == fusion.model.prompt_text and data[3]["label"] == 3
    from mmfusion_attacks.data.fashion_mnist import SyntheticDataWarning, debian_available

    if not debian_available():  # the default falls back to the stand-in, saying so
        with pytest.warns(SyntheticDataWarning, match="SYNTHETIC"):
            assert create_dataset("fashion-mnist-zero-shot", split="test", size=2).synthetic


def test_clip_tiny_without_transformers_names_the_text_extra(monkeypatch):
    from mmfusion_attacks.extras import MissingExtraError
    from mmfusion_attacks.models import create_model

    for name in [m for m in sys.modules if m == "transformers" or m.startswith("transformers.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` fails, as in a base install
    with pytest.raises(MissingExtraError, match=r"clip-tiny.*pip install 'mmfusion-attacks\[text\]'") as info:
        create_model("clip-tiny")
    assert info.value.extra == "text"
