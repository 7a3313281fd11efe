"""The invariant matrix: every supported attack x attacked subset keeps the frozen-modality contract.

For each cell: frozen modalities torch.equal to the input; attacked ones within eps (bounded attacks)
and the valid range; caller tensors not mutated; module modes and requires_grad restored.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchattacks
from art.attacks import evasion as ae
from helpers import assert_contract, mixed_state, snapshot
from mmfusion_attacks.adapters.art import to_art
from mmfusion_attacks.adapters.torchattacks import to_torchattacks

from mmfusion_attacks import find_driver, run_attack
from mmfusion_attacks.attacks import CosPGD, SegPGD

SUBSETS = [("rgb",), ("ir",), ("rgb", "ir")]
EPS = 8 / 255


def _autoattack(s):
    atk = torchattacks.AutoAttack(s, norm="Linf", eps=EPS, n_classes=4, version="standard", seed=0)
    for sub in atk._autoattack.attacks:  # keep the CPU test short: fewer steps / queries
        for attr, value in (("steps", 3), ("n_queries", 20), ("n_restarts", 1)):
            if hasattr(sub, attr):
                setattr(sub, attr, value)
    return atk


def run_cell(fusion, build, batch, labels, attacked, spec, *, toolkit, classes=4, native_eps=None):
    """Build the attack on the right adapter, run it, and check the whole contract. ``native_eps``
    maps the spec's eps (toolkit units) to each modality's budget in its own units (default: equal)."""
    _, eps, norm, must_move = spec
    np.random.seed(0)
    torch.manual_seed(0)
    mixed_state(fusion)
    before = snapshot(fusion, batch)
    if toolkit == "art":
        est = to_art(fusion, attacked)
        with est.bound({k: v[:1] for k, v in batch.items()}, pairing="broadcast"):  # AutoPGD probes the estimator when built
            attack = build(est)
    else:
        attack = build(to_torchattacks(fusion, attacked))
    targets = (labels + 1) % classes if find_driver(attack).targeted(attack) else None
    result = run_attack(attack, batch, labels, targets=targets)
    if eps is not None:
        for name in attacked:  # the budget the result reports, in the modality's own units
            got_norm, got_eps = result.budget[name]
            assert got_norm == norm
            assert float(torch.as_tensor(got_eps).max()) == pytest.approx(native_eps(name, eps) if native_eps else eps, rel=1e-5)
        eps = {name: float(torch.as_tensor(result.budget[name][1]).max()) for name in attacked}
    assert_contract(result, batch, before, fusion, attacked, eps=eps, norm=norm, must_move=must_move)
    return result


# name -> (factory(surface), eps or None, norm, must_move)
TORCHATTACKS_CLS = {
    "FGSM": (lambda s: torchattacks.FGSM(s, eps=EPS), EPS, "inf", True),
    "PGD": (lambda s: torchattacks.PGD(s, eps=EPS, alpha=2 / 255, steps=3), EPS, "inf", True),
    "PGDL2": (lambda s: torchattacks.PGDL2(s, eps=0.5, alpha=0.2, steps=3), 0.5, "2", True),
    "BIM": (lambda s: torchattacks.BIM(s, eps=EPS, alpha=2 / 255, steps=3), EPS, "inf", True),
    "MIFGSM": (lambda s: torchattacks.MIFGSM(s, eps=EPS, alpha=2 / 255, steps=3), EPS, "inf", True),
    "CW": (lambda s: torchattacks.CW(s, c=1.0, steps=5, lr=0.05), None, "2", False),
    "DeepFool": (lambda s: torchattacks.DeepFool(s, steps=5), None, "2", False),
    "APGD": (lambda s: torchattacks.APGD(s, eps=EPS, steps=3, seed=0), EPS, "inf", False),
    "Square": (lambda s: torchattacks.Square(s, eps=EPS, n_queries=20, seed=0), EPS, "inf", False),
    "AutoAttack": (_autoattack, EPS, "inf", False),
}

ART_CLS = {
    "FastGradientMethod": (lambda e: ae.FastGradientMethod(e, eps=EPS), EPS, "inf", True),
    "PGD-numpy": (
        lambda e: ae.ProjectedGradientDescentNumpy(e, eps=EPS, eps_step=2 / 255, max_iter=3, num_random_init=1, verbose=False),
        EPS, "inf", True,
    ),
    "PGD-pytorch": (
        lambda e: ae.ProjectedGradientDescentPyTorch(e, eps=EPS, eps_step=2 / 255, max_iter=3, num_random_init=1, verbose=False),
        EPS, "inf", True,
    ),
    "BasicIterativeMethod": (lambda e: ae.BasicIterativeMethod(e, eps=EPS, eps_step=2 / 255, max_iter=3, verbose=False), EPS, "inf", True),
    "MomentumIterativeMethod": (
        lambda e: ae.MomentumIterativeMethod(e, eps=EPS, eps_step=2 / 255, max_iter=3, verbose=False), EPS, "inf", True,
    ),
    "AutoPGD": (
        lambda e: ae.AutoProjectedGradientDescent(e, eps=EPS, eps_step=2 / 255, max_iter=3, nb_random_init=1, verbose=False),
        EPS, "inf", False,
    ),
    "DeepFool": (lambda e: ae.DeepFool(e, max_iter=5, verbose=False), None, "2", False),
    "CarliniL2": (lambda e: ae.CarliniL2Method(e, max_iter=3, binary_search_steps=2, verbose=False), None, "2", False),
    # JSMA is always targeted (ART's `targeted` attribute says False): it must move towards targets=
    "SaliencyMapMethod": (lambda e: ae.SaliencyMapMethod(e, theta=0.1, gamma=0.1, verbose=False), None, "2", True),
    "SquareAttack": (lambda e: ae.SquareAttack(e, eps=EPS, max_iter=20, verbose=False), EPS, "inf", False),
    "HopSkipJump": (lambda e: ae.HopSkipJump(e, max_iter=2, max_eval=20, init_eval=5, init_size=20, verbose=False), None, "2", False),
    "ZooAttack": (
        lambda e: ae.ZooAttack(e, max_iter=3, nb_parallel=4, use_resize=False, use_importance=False, binary_search_steps=1, verbose=False),
        None, "2", False,
    ),
    "BoundaryAttack": (
        lambda e: ae.BoundaryAttack(e, targeted=False, max_iter=3, num_trial=5, sample_size=5, init_size=20, verbose=False),
        None, "2", False,
    ),
}


@pytest.mark.parametrize("attacked", SUBSETS, ids=lambda s: "+".join(s))
@pytest.mark.parametrize("name", list(TORCHATTACKS_CLS))
def test_torchattacks_classification(name, attacked, classifier, batch, cls_labels):
    spec = TORCHATTACKS_CLS[name]
    run_cell(classifier, spec[0], batch, cls_labels, attacked, spec, toolkit="torchattacks")


@pytest.mark.parametrize("attacked", SUBSETS, ids=lambda s: "+".join(s))
@pytest.mark.parametrize("name", list(ART_CLS))
def test_art_classification(name, attacked, classifier, batch, cls_labels):
    spec = ART_CLS[name]
    run_cell(classifier, spec[0], batch, cls_labels, attacked, spec, toolkit="art")


TORCHATTACKS_SEG = {
    **{k: TORCHATTACKS_CLS[k] for k in ("FGSM", "PGD", "PGDL2", "BIM", "MIFGSM")},
    "EOTPGD": (lambda s: torchattacks.EOTPGD(s, eps=EPS, alpha=2 / 255, steps=3, eot_iter=2), EPS, "inf", True),
    "SegPGD": (lambda s: SegPGD(s, eps=EPS, alpha=2 / 255, steps=3), EPS, "inf", True),
    "CosPGD": (lambda s: CosPGD(s, eps=EPS, alpha=2 / 255, steps=3), EPS, "inf", True),
}


def _art_square_seg(e):
    return ae.SquareAttack(e, eps=EPS, max_iter=20, loss=e.margin_loss, adv_criterion=e.adv_criterion, verbose=False)


ART_SEG = {
    "FastGradientMethod": ART_CLS["FastGradientMethod"],
    # ART's numpy PGD refuses random initialisation for non-classifiers ("only supported for classification")
    "PGD-numpy": (
        lambda e: ae.ProjectedGradientDescentNumpy(e, eps=EPS, eps_step=2 / 255, max_iter=3, verbose=False), EPS, "inf", True,
    ),
    "BasicIterativeMethod": ART_CLS["BasicIterativeMethod"],
    "MomentumIterativeMethod": ART_CLS["MomentumIterativeMethod"],
    "SquareAttack": (_art_square_seg, EPS, "inf", False),
}


@pytest.mark.parametrize("attacked", SUBSETS, ids=lambda s: "+".join(s))
@pytest.mark.parametrize("name", list(TORCHATTACKS_SEG))
def test_torchattacks_segmentation(name, attacked, segmenter, batch, seg_labels):
    spec = TORCHATTACKS_SEG[name]
    result = run_cell(segmenter, spec[0], batch, seg_labels, attacked, spec, toolkit="torchattacks")
    assert result.score.shape == (3,) and bool(((result.score >= 0) & (result.score <= 1)).all())


@pytest.mark.parametrize("attacked", SUBSETS, ids=lambda s: "+".join(s))
@pytest.mark.parametrize("name", list(ART_SEG))
def test_art_segmentation(name, attacked, segmenter, batch, seg_labels):
    spec = ART_SEG[name]
    run_cell(segmenter, spec[0], batch, seg_labels, attacked, spec, toolkit="art")


MORE_TORCHATTACKS = ["DIFGSM", "EOTPGD", "FFGSM", "GN", "Jitter", "NIFGSM", "RFGSM", "SINIFGSM", "TIFGSM", "TPGD", "UPGD", "VANILA", "VMIFGSM", "VNIFGSM"]


@pytest.mark.parametrize("attacked", SUBSETS, ids=lambda s: "+".join(s))
@pytest.mark.parametrize("name", MORE_TORCHATTACKS)
def test_more_torchattacks(name, attacked, classifier, batch, cls_labels):
    """The other attacks declared row-aligned, with torchattacks' defaults (eps 8/255 where bounded)."""
    from mmfusion_attacks import UnsupportedAttackError

    build = getattr(torchattacks, name)
    eps = getattr(build(to_torchattacks(classifier, attacked)), "eps", None)  # torchattacks' default budget
    spec = (build, eps, "inf", name != "VANILA")
    if name == "TIFGSM" and attacked != ("rgb",):
        with pytest.raises(UnsupportedAttackError, match="3 channels"):
            run_cell(classifier, build, batch, cls_labels, attacked, spec, toolkit="torchattacks")
        return
    result = run_cell(classifier, build, batch, cls_labels, attacked, spec, toolkit="torchattacks")
    assert result.batching == "batch"
