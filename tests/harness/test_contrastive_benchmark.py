"""The contrastive preset's plumbing on a tiny dual encoder, and the image attacks it runs (every one
changes zero-shot predictions while the prompts stay identical)."""

from __future__ import annotations

import json

import pytest
import torch
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


def test_contrastive_benchmark_end_to_end_on_a_tiny_model(monkeypatch, tmp_path, capsys):
    import mmfusion_attacks.models as models
    from mmfusion_attacks.cli import main as cli_main

    real = models.create_model
    monkeypatch.setattr(models, "create_model", lambda name, **kw: tiny_zero_shot(seed=kw.get("seed", 0)) if name == "clip-like" else real(name, **kw))
    out = tmp_path / "c"
    cli_main(["contrastive", "--examples", "6", "--slow-examples", "2", "--steps", "2", "--queries", "10", "--square-queries", "5",
              "--hsj-iter", "1", "--deepfool-iter", "3", "--no-jsma", "--eps-255", "16", "--out", str(out)])
    text = capsys.readouterr().out
    rows = json.loads((out / "contrastive.json").read_text())["rows"]
    attacks = {(r["attack"], r["attacked"], r["box"].split()[0]) for r in rows}
    assert {("PGD", "image", "white"), ("SQUARE", "image", "black"), ("HOPSKIPJUMP", "image", "black"), ("PGD", "image", "grey"),
            ("DEEPWORDBUG", "prompts", "black"), ("PGD + DEEPWORDBUG (worst case)", "image+prompts", "white")} <= attacks
    worst = {r["attacked"]: r["robust_accuracy"] for r in rows if r["attack"].endswith("(worst case)")}
    assert worst["image+prompts"] <= min(worst["image"], worst["prompts"])
    assert "zero-shot over" in text and (out / "contrastive.png").is_file()


def test_contrastive_benchmark_refuses_bad_options_before_any_work(monkeypatch, capsys):
    from mmfusion_attacks.harness import contrastive

    monkeypatch.setattr(contrastive, "run", lambda args: pytest.fail("the benchmark started working"))
    for argv, match in ((["--examples", "0"], "--examples"), (["--examples", "4", "--slow-examples", "8"], "--slow-examples"),
                        (["--eps-255", "-1"], "--eps-255")):
        with pytest.raises(SystemExit) as info:
            contrastive.main(argv)
        assert info.value.code == 2 and match in capsys.readouterr().err
