"""What users hand run_attack: any float dtype, numpy / one-hot labels, models that modify their inputs in
place or return NaN, bad budgets and arguments — a correct result or a clear error, never a silent one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchattacks
from art.attacks import evasion as ae
from conftest import CLASSES, TinyFusionClassifier, make_batch
from mmfusion_attacks.adapters.art import to_art
from mmfusion_attacks.adapters.torchattacks import to_torchattacks
from torch import nn

from mmfusion_attacks import (
    FusionModel,
    InputError,
    Modality,
    NonFiniteOutputError,
    UnsupportedAttackError,
    run_attack,
)


class InPlace(nn.Module):
    """Research code that scales its inputs in place."""

    def __init__(self):
        super().__init__()
        self.net = TinyFusionClassifier()

    def forward(self, rgb, ir):
        ir.mul_(0.5)
        rgb.clamp_(0.1, 0.9)
        return self.net(rgb, ir)


@pytest.mark.parametrize("toolkit", ["torchattacks", "art"])
@pytest.mark.parametrize("attacked", ["rgb", "ir"])
def test_in_place_model_never_changes_caller_or_frozen_data(toolkit, attacked, cls_labels):
    torch.manual_seed(0)
    fusion = FusionModel(InPlace(), ["rgb", "ir"], num_classes=CLASSES)
    batch = make_batch()
    before = {k: v.clone() for k, v in batch.items()}
    if toolkit == "torchattacks":
        attack = torchattacks.PGD(to_torchattacks(fusion, attacked), eps=8 / 255, alpha=2 / 255, steps=3)
    else:
        attack = ae.ProjectedGradientDescent(to_art(fusion, attacked), eps=8 / 255, eps_step=2 / 255, max_iter=3, verbose=False)
    result = run_attack(attack, batch, cls_labels)
    for k in batch:
        assert torch.equal(batch[k], before[k]), f"caller's {k} changed"
    frozen = "ir" if attacked == "rgb" else "rgb"
    assert torch.equal(result.inputs[frozen], before[frozen])


class NaNHead(nn.Module):
    def forward(self, rgb, ir):
        return torch.full((rgb.shape[0], CLASSES), float("nan")) + rgb.mean() * 0


def test_nan_logits_are_an_error_not_a_success(cls_labels):
    fusion = FusionModel(NaNHead(), ["rgb", "ir"], num_classes=CLASSES)
    with pytest.raises(NonFiniteOutputError, match="NaN"):
        run_attack(ae.FastGradientMethod(to_art(fusion, "ir"), eps=8 / 255), make_batch(), cls_labels)


def test_normalisation_statistics_are_checked():
    with pytest.raises(ValueError, match="std must be finite"):
        FusionModel(TinyFusionClassifier(), ["rgb", "ir"], normalize={"ir": (0.5, float("nan"))})
    with pytest.raises(ValueError, match="2 values but the modality has 3"):
        FusionModel(TinyFusionClassifier(), ["rgb", "ir"], normalize={"rgb": ([0.5, 0.5], [0.2, 0.2])})


@pytest.mark.parametrize("value", [2, 0, -0.5, float("nan")])
def test_success_fraction_must_be_a_fraction(value, classifier, cls_labels):
    with pytest.raises(ValueError, match="success_fraction"):
        run_attack(torchattacks.FGSM(to_torchattacks(classifier, "ir")), make_batch(), cls_labels, success_fraction=value)


@pytest.mark.parametrize("mode", ["random", "least_likely"])
def test_torchattacks_target_modes_report_their_targets(mode, classifier):
    atk = torchattacks.PGD(to_torchattacks(classifier, "rgb"), eps=16 / 255, alpha=4 / 255, steps=5)
    getattr(atk, f"set_mode_targeted_{mode}")(quiet=True)
    batch = make_batch()
    torch.manual_seed(0)
    result = run_attack(atk, batch)
    assert result.targets is not None and bool((result.targets != result.labels).all())
    assert torch.equal(result.success, result.adv_pred == result.targets)  # targeted success
    assert atk.attack_mode.startswith("targeted(") and atk.attack_mode != "targeted(label)"  # mode restored
    if mode == "least_likely":
        with torch.no_grad():
            logits = classifier.eval()(batch)
        masked = logits.scatter(1, result.labels[:, None], float("inf"))
        assert torch.equal(result.targets, masked.argmin(1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("toolkit", ["torchattacks", "art"])
def test_any_float_dtype(dtype, toolkit, classifier, cls_labels):
    batch = {k: v.to(dtype) for k, v in make_batch().items()}
    if toolkit == "torchattacks":
        attack = torchattacks.PGD(to_torchattacks(classifier, "ir"), eps=8 / 255, alpha=2 / 255, steps=3)
    else:
        attack = ae.ProjectedGradientDescent(to_art(classifier, "ir"), eps=8 / 255, eps_step=2 / 255, max_iter=3, verbose=False)
    result = run_attack(attack, batch, cls_labels)
    assert result.inputs["ir"].dtype == dtype and torch.equal(result.inputs["rgb"], batch["rgb"])
    delta = (result.inputs["ir"].double() - batch["ir"].double()).abs()
    assert float(delta.max()) <= 8 / 255 and float(delta.max()) > 0  # the budget holds exactly in the caller's dtype
    assert 0 <= float(result.inputs["ir"].min()) and float(result.inputs["ir"].max()) <= 1


def test_empty_batch_is_a_clear_error(classifier):
    empty = {k: v[:0] for k, v in make_batch().items()}
    with pytest.raises(InputError, match="empty"):
        run_attack(torchattacks.FGSM(to_torchattacks(classifier, "ir")), empty)


def test_numpy_int32_and_one_hot_labels(classifier, cls_labels):
    batch = make_batch()
    attack = torchattacks.FGSM(to_torchattacks(classifier, "ir"), eps=8 / 255)
    reference = run_attack(attack, batch, cls_labels)
    for labels in (cls_labels.int(), cls_labels.numpy().astype(np.int32), np.eye(CLASSES, dtype=np.float32)[cls_labels.numpy()]):
        result = run_attack(attack, batch, labels)
        assert torch.equal(result.labels, cls_labels) and torch.equal(result.inputs["ir"], reference.inputs["ir"])
    art_result = run_attack(ae.FastGradientMethod(to_art(classifier, "ir"), eps=8 / 255), batch, np.eye(CLASSES)[cls_labels.numpy()])
    assert torch.equal(art_result.labels, cls_labels)


@pytest.mark.parametrize("eps", [-0.1, float("nan")])
def test_bad_eps_is_refused_before_work(eps, classifier, cls_labels):
    attack = torchattacks.FGSM(to_torchattacks(classifier, "ir"), eps=eps)
    with pytest.raises(UnsupportedAttackError, match="eps must be finite and >= 0"):
        run_attack(attack, make_batch(), cls_labels)


class TwoSizes(nn.Module):
    def __init__(self):
        super().__init__()
        self.rgb, self.ir = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, rgb, ir):
        return self.head(torch.cat([self.rgb(rgb).mean((2, 3)), self.ir(ir).mean((2, 3))], 1))


@pytest.mark.parametrize("name", ["PGDL2", "PGD", "FGSM", "MIFGSM"])
def test_modalities_of_different_sizes_attacked_together(name, cls_labels):
    torch.manual_seed(0)
    fusion = FusionModel(TwoSizes(), ["rgb", "ir"], num_classes=CLASSES)
    batch = {"rgb": torch.rand(3, 3, 8, 8), "ir": torch.rand(3, 1, 4, 4)}
    eps = 0.5 if name == "PGDL2" else 8 / 255
    result = run_attack(getattr(torchattacks, name)(to_torchattacks(fusion, ["rgb", "ir"]), eps=eps), batch, cls_labels)
    assert result.inputs["rgb"].shape == (3, 3, 8, 8) and result.inputs["ir"].shape == (3, 1, 4, 4)
    if name == "PGDL2":
        joint = torch.cat([(result.inputs[k] - batch[k]).flatten(1) for k in batch], 1).norm(dim=1)
        assert float(joint.max()) <= 0.5 * (1 + 1e-5)


def test_unknown_range_modalities_and_float64_art_queries(classifier):
    est = to_art(classifier, "rgb", context=make_batch())
    preds = est.predict(est.x_for(make_batch()).astype(np.float64))
    assert preds.dtype == np.float32
    with pytest.raises(ValueError, match="budget must be"):
        to_art(FusionModel(TinyFusionClassifier(), ["rgb", Modality("ir", "image", 1)]), ["rgb", "ir"], budget={"rgb": 0.0, "ir": 1.0})


def test_budget_check_allows_float_rounding_at_large_magnitudes(cls_labels):
    """Found by fuzzing: ART's float32 x + eps on a [0, 255] modality rounds by ~1e-5."""
    torch.manual_seed(0)
    fusion = FusionModel(TwoSizes(), ["rgb", Modality("ir", "image", 1, valid_range=(0.0, 255.0))], num_classes=CLASSES)
    g = torch.Generator().manual_seed(3)
    batch = {"rgb": torch.rand(3, 3, 4, 4, generator=g), "ir": 255 * torch.rand(3, 1, 4, 4, generator=g)}
    result = run_attack(ae.FastGradientMethod(to_art(fusion, "ir"), eps=0.3), batch, cls_labels)
    assert float((result.inputs["ir"].double() - batch["ir"].double()).abs().max()) <= 0.3


def test_art_square_refuses_what_it_cannot_run(cls_labels):
    """Found by fuzzing: Square crashes deep in numpy ('high <= 0') on images no larger than its squares,
    and on flat (different-size) packings."""
    torch.manual_seed(0)
    fusion = FusionModel(TwoSizes(), ["rgb", "ir"], num_classes=CLASSES)
    tiny = {"rgb": torch.rand(3, 3, 4, 4), "ir": torch.rand(3, 1, 4, 4)}
    with pytest.raises(UnsupportedAttackError, match="squares of side 4"):
        run_attack(ae.SquareAttack(to_art(fusion, "rgb"), eps=8 / 255, max_iter=3, verbose=False), tiny, cls_labels)
    mixed = {"rgb": torch.rand(3, 3, 8, 8), "ir": torch.rand(3, 1, 4, 4)}
    with pytest.raises(UnsupportedAttackError, match="packed flat"):
        run_attack(ae.SquareAttack(to_art(fusion, ["rgb", "ir"]), eps=8 / 255, max_iter=3, verbose=False), mixed, cls_labels)
