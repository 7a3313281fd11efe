"""SegPGD, CosPGD and least-likely targets on a trained tiny segmenter."""

import pytest
import torch
from conftest import make_batch, rule_labels
from mmfusion_attacks.adapters.torchattacks import to_torchattacks

from mmfusion_attacks import run_attack
from mmfusion_attacks.attacks import CosPGD, SegPGD, least_likely_targets


def test_least_likely_is_the_per_pixel_argmin():
    logits = torch.tensor([[[[0.0]], [[-2.0]], [[1.0]]]])  # (1, 3, 1, 1)
    assert least_likely_targets(logits).tolist() == [[[1]]]


@pytest.mark.parametrize("cls", [SegPGD, CosPGD])
def test_untargeted_lowers_pixel_accuracy(cls, trained_segmenter):
    batch = make_batch(n=4, seed=3)
    labels = rule_labels(batch)
    atk = cls(to_torchattacks(trained_segmenter, ["rgb", "ir"]), eps=16 / 255, alpha=4 / 255, steps=5)
    result = run_attack(atk, batch, labels)
    clean_acc = (result.clean_pred == labels).float().mean()
    adv_acc = (result.adv_pred == labels).float().mean()
    assert adv_acc < clean_acc - 0.05
    assert result.batching == "batch" and float(result.norms["ir"]["linf"].max()) <= 16 / 255 + 1e-6


@pytest.mark.parametrize("cls", [SegPGD, CosPGD])
def test_targeted_by_label(cls, trained_segmenter):
    batch = make_batch(n=4, seed=4)
    targets = torch.full_like(rule_labels(batch), 2)
    atk = cls(to_torchattacks(trained_segmenter, ["rgb", "ir"]), eps=0.3, alpha=0.05, steps=10)
    atk.set_mode_targeted_by_label(quiet=True)
    result = run_attack(atk, batch, rule_labels(batch), targets=targets)
    assert float(result.score.mean()) > float((result.clean_pred == 2).float().mean()) + 0.1


def test_segpgd_is_at_least_as_strong_as_pgd_here(trained_segmenter):
    import torchattacks

    batch = make_batch(n=8, seed=5)
    labels = rule_labels(batch)
    surface = to_torchattacks(trained_segmenter, ["rgb", "ir"])
    torch.manual_seed(0)
    pgd = run_attack(torchattacks.PGD(surface, eps=8 / 255, alpha=2 / 255, steps=10, random_start=False), batch, labels)
    seg = run_attack(SegPGD(surface, eps=8 / 255, alpha=2 / 255, steps=10, random_start=False), batch, labels)
    assert (seg.adv_pred == labels).float().mean() <= (pgd.adv_pred == labels).float().mean() + 0.02
