"""ART workflows beyond a single attack call: cloning, budgets ART cannot take, mixed ranges, targeted
attacks that ignore `targeted`, side effects on the user's model, defences that return float64."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchattacks
from art.attacks import evasion as ae
from conftest import CLASSES, TinyFusionClassifier, make_batch
from mmfusion_attacks.adapters.art import FusionClassifier, eps_array, to_art
from mmfusion_attacks.adapters.torchattacks import to_torchattacks
from torch import nn

from mmfusion_attacks import (
    FusionModel,
    Modality,
    NoPerturbationWarning,
    RowAlignmentError,
    UnknownModalityError,
    UnsupportedAttackError,
    run_attack,
)

IR02 = Modality("ir", "image", 1, valid_range=(0.0, 2.0))


def wide_ir_model(seed: int = 0) -> FusionModel:
    torch.manual_seed(seed)
    return FusionModel(TinyFusionClassifier(), ["rgb", IR02], num_classes=CLASSES)


def wide_ir_batch(n: int = 3) -> dict[str, torch.Tensor]:
    b = make_batch(n=n)
    return {"rgb": b["rgb"], "ir": b["ir"] * 2}


def test_clone_for_refitting_keeps_surface_and_context(classifier, batch, cls_labels):
    est = to_art(classifier, "ir", context=batch, optimizer=torch.optim.Adam(classifier.parameters(), lr=0.01))
    clone = est.clone_for_refitting()
    assert type(clone) is FusionClassifier and clone.surface is not est.surface
    assert clone.surface.attacked == ("ir",) and clone.context is not None
    assert clone.input_shape == est.input_shape and clone.nb_classes == est.nb_classes
    x = est.x_for(batch)
    clone.fit(x, cls_labels.numpy(), nb_epochs=1, batch_size=2)  # refits on its own copy of the model
    assert clone.predict(x).shape == (3, CLASSES)


def test_clone_for_refitting_segmenter(segmenter, batch):
    est = to_art(segmenter, "rgb", context=batch, optimizer=torch.optim.SGD(segmenter.parameters(), lr=0.01))
    clone = est.clone_for_refitting()
    assert clone.predict(est.x_for(batch)).shape == (3, CLASSES, 8, 8)


def test_jsma_is_targeted_and_moves_towards_the_targets(classifier, batch, cls_labels):
    est = to_art(classifier, "rgb")
    jsma = ae.SaliencyMapMethod(est, theta=0.2, gamma=0.5, verbose=False)
    with pytest.raises(UnsupportedAttackError, match="targeted: pass targets="):
        run_attack(jsma, batch, cls_labels)
    targets = (cls_labels + 1) % CLASSES
    result = run_attack(jsma, batch, cls_labels, targets=targets)
    assert result.targets is not None and torch.equal(result.targets, targets)
    assert float(result.norms["rgb"]["linf"].max()) > 0 and not result.flags


def test_an_attack_that_changes_nothing_is_flagged(classifier, batch, cls_labels):
    attack = torchattacks.FGSM(to_torchattacks(classifier, "ir"), eps=0.0)
    with pytest.warns(NoPerturbationWarning, match="changed nothing"):
        result = run_attack(attack, batch)  # pseudo-labels: no row is fooled before the attack
    assert any(f.startswith("no-perturbation") for f in result.flags)


def test_scalar_only_art_attacks_refuse_eps_arrays_up_front(classifier, batch, cls_labels):
    est = to_art(classifier, ["rgb", "ir"])
    eps = eps_array(est, {"rgb": 8 / 255, "ir": 16 / 255})
    pgd = ae.ProjectedGradientDescentNumpy(est, eps=eps, eps_step=eps / 4, max_iter=2, num_random_init=1, verbose=False)
    with pytest.raises(UnsupportedAttackError, match="ProjectedGradientDescentNumpy.*num_random_init.*budget="):
        run_attack(pgd, batch, cls_labels)
    fgm = ae.FastGradientMethod(est, eps=eps, eps_step=eps / 4)  # both as arrays: works
    result = run_attack(fgm, batch, cls_labels)
    assert float(result.norms["ir"]["linf"].max()) > 8 / 255


def test_eps_array_names_a_modality_it_does_not_attack(classifier, batch):
    est = to_art(classifier, "ir", sample=batch)
    with pytest.raises(UnknownModalityError, match=r"'rgb' \(frozen on this surface\); this surface attacks only \['ir'\]"):
        eps_array(est, {"rgb": 8 / 255})  # was a bare KeyError
    with pytest.raises(UnknownModalityError, match="'depth' .*not a modality of this model"):
        eps_array(est, {"ir": 8 / 255, "depth": 8 / 255})
    assert eps_array(est, {"ir": 8 / 255}).shape == (1, 1, 1)


@pytest.mark.parametrize(
    "build",
    [
        lambda e: ae.ProjectedGradientDescent(e, eps=e.surface.eps, eps_step=e.surface.eps / 4, max_iter=3, num_random_init=1, verbose=False),
        lambda e: ae.SquareAttack(e, eps=e.surface.eps, max_iter=10, verbose=False),
        lambda e: ae.AutoProjectedGradientDescent(e, eps=e.surface.eps, eps_step=e.surface.eps / 4, max_iter=3, verbose=False),
    ],
    ids=["PGD-random-init", "Square", "AutoPGD"],
)
def test_per_modality_budgets_for_scalar_only_attacks(build, batch, cls_labels):
    fusion = wide_ir_model()
    est = to_art(fusion, ["rgb", "ir"], budget={"rgb": 8 / 255, "ir": 40 / 255})
    with est.bound({k: v[:1] for k, v in wide_ir_batch().items()}, pairing="broadcast"):
        attack = build(est)  # AutoPGD probes the estimator when constructed
    b = wide_ir_batch()
    result = run_attack(attack, b, cls_labels)
    assert result.budget == {"rgb": ("inf", pytest.approx(8 / 255)), "ir": ("inf", pytest.approx(40 / 255))}
    assert float(result.norms["rgb"]["linf"].max()) <= 8 / 255 + 1e-6
    assert float(result.norms["ir"]["linf"].max()) <= 40 / 255 + 1e-6
    assert float(result.inputs["ir"].max()) <= 2 and float(result.inputs["ir"].min()) >= 0


@pytest.mark.parametrize(
    "build",
    [
        lambda e: ae.SaliencyMapMethod(e, theta=0.2, gamma=0.3, verbose=False),
        lambda e: ae.ZooAttack(e, max_iter=3, nb_parallel=4, use_resize=False, use_importance=False, binary_search_steps=1, verbose=False),
    ],
    ids=["JSMA", "ZOO"],
)
def test_mixed_ranges_attacked_together(build, cls_labels):
    fusion, b = wide_ir_model(), wide_ir_batch()
    est = to_art(fusion, ["rgb", "ir"], sample=b)  # different ranges: ART sees both in [0, 1]
    assert np.asarray(est.clip_values).tolist() == [0.0, 1.0]
    attack = build(est)
    result = run_attack(attack, b, cls_labels, targets=(cls_labels + 1) % CLASSES if "Saliency" in type(attack).__name__ else None)
    for name, (lo, hi) in (("rgb", (0, 1)), ("ir", (0, 2))):
        assert lo <= float(result.inputs[name].min()) and float(result.inputs[name].max()) <= hi
    native = to_art(fusion, ["rgb", "ir"], units="native", sample=b)
    with pytest.raises(UnsupportedAttackError, match="per-element clip values.*units='unit'"):
        run_attack(build(native), b, cls_labels, targets=(cls_labels + 1) % CLASSES)


@pytest.mark.parametrize("valid_range", [(0.0, 2.0), (-1.0, 1.0)])
def test_torchattacks_on_thermal_in_any_range(valid_range, cls_labels):
    torch.manual_seed(0)
    fusion = FusionModel(TinyFusionClassifier(), ["rgb", Modality("ir", "image", 1, valid_range=valid_range)], num_classes=CLASSES)
    lo, hi = valid_range
    b = make_batch()
    b["ir"] = lo + (hi - lo) * b["ir"]
    result = run_attack(torchattacks.PGD(to_torchattacks(fusion, ["rgb", "ir"]), eps=8 / 255, alpha=2 / 255, steps=3), b, cls_labels)
    assert torch.equal(result.inputs["rgb"].sub(b["rgb"]).abs().amax() <= 8 / 255 + 1e-6, torch.tensor(True))
    assert float(result.norms["ir"]["linf"].max()) <= (hi - lo) * 8 / 255 + 1e-6
    assert float(result.norms["ir"]["linf"].max()) > 8 / 255  # eps is a fraction of the 2-wide range
    assert lo <= float(result.inputs["ir"].min()) and float(result.inputs["ir"].max()) <= hi
    # per-modality budgets in one torchattacks run
    s = to_torchattacks(fusion, ["rgb", "ir"], budget={"rgb": 4 / 255, "ir": 16 / 255})
    result = run_attack(torchattacks.PGD(s, eps=s.eps, alpha=s.eps / 2, steps=3), b, cls_labels)
    assert float(result.norms["rgb"]["linf"].max()) <= 4 / 255 + 1e-6
    assert 4 / 255 < float(result.norms["ir"]["linf"].max()) <= 16 / 255 + 1e-6


def test_error_advice_fits_where_it_was_raised(classifier, batch):
    est = to_art(classifier, "ir", context=batch)
    with pytest.raises(RowAlignmentError) as err:
        est.predict(est.x_for(batch) + 0.5)
    assert "batching='sample'" not in str(err.value) and "generate(attack, x, y)" in str(err.value)


class IgnoresThermal(nn.Module):
    def __init__(self):
        super().__init__()
        self.rgb = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, CLASSES))

    def forward(self, rgb, ir):
        return self.rgb(rgb)


@pytest.mark.parametrize("toolkit", ["torchattacks", "art"])
def test_a_modality_that_does_not_reach_the_output(toolkit, batch, cls_labels):
    torch.manual_seed(0)
    fusion = FusionModel(IgnoresThermal(), ["rgb", "ir"], num_classes=CLASSES)
    if toolkit == "torchattacks":
        attack = torchattacks.PGD(to_torchattacks(fusion, "ir"), eps=8 / 255, alpha=2 / 255, steps=3)
    else:
        attack = ae.ProjectedGradientDescent(to_art(fusion, "ir"), eps=8 / 255, eps_step=2 / 255, max_iter=3, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoPerturbationWarning)
        result = run_attack(attack, batch, cls_labels)
    assert torch.equal(result.adv_pred, result.clean_pred)  # nothing the attack does on ir can matter
    if toolkit == "torchattacks":
        assert any(f.startswith("unused-input") for f in result.flags)


def test_art_calls_keep_the_users_gradients_and_modes(classifier, batch, cls_labels):
    est = to_art(classifier, "ir", context=batch)
    classifier.train()
    loss = classifier(batch).sum()
    loss.backward()
    grads = [p.grad.clone() for p in classifier.parameters()]
    est.loss_gradient(est.x_for(batch), np.eye(CLASSES)[cls_labels.numpy()])
    est.class_gradient(est.x_for(batch), label=0)
    assert all(torch.equal(p.grad, g) for p, g in zip(classifier.parameters(), grads))
    assert classifier.training
    est.clear_context()
    with pytest.raises(RuntimeError, match="no context"):
        est.predict(est.x_for(batch))
    assert classifier.training and all(m.training for m in classifier.modules())


def test_feature_squeezing_on_a_float32_model(classifier, batch, cls_labels):
    from art.defences.preprocessor import FeatureSqueezing

    est = to_art(classifier, "ir", context=batch, preprocessing_defences=[FeatureSqueezing(clip_values=(0, 1), bit_depth=4)])
    x = est.x_for(batch)
    # squeezing moves rows up to 1/30, beyond the pairing radius of 8/255 but far nearer their own
    # example than any other: paired by margin, no radius to declare
    assert est.predict(x).dtype == np.float32
    assert est.loss_gradient(x, np.eye(CLASSES)[cls_labels.numpy()]).dtype == np.float32
    est.set_context(batch, radius=1 / 16)  # declared: within half a 4-bit step
    assert est.predict(x).dtype == np.float32


def test_arts_other_entry_points_keep_modes_gradients_and_frozen_dtypes(classifier, batch, cls_labels):
    """get_activations, fit_generator and custom_loss_gradient (FeatureAdversaries' path) restore every
    module's mode and keep the user's gradients, as predict / fit / loss_gradient do; a float64 frozen
    modality is held bit-identical (only ART's x is float32)."""
    from art.data_generators import PyTorchDataGenerator

    y = np.eye(CLASSES)[cls_labels.numpy()].astype(np.float32)

    def state():
        return [m.training for m in classifier.modules()], [p.requires_grad for p in classifier.parameters()]

    classifier.train()
    before = state()
    est = to_art(classifier, "rgb", context=batch, optimizer=torch.optim.SGD(classifier.parameters(), lr=0.01))
    x = est.x_for(batch)
    est.get_activations(x, 0, batch_size=len(x))
    assert state() == before
    classifier.eval()
    before = state()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=len(x))
    est.fit_generator(PyTorchDataGenerator(loader, size=len(x), batch_size=len(x)), nb_epochs=1)
    assert state() == before
    classifier(batch).sum().backward()
    grads = [p.grad.clone() for p in classifier.parameters()]
    est.custom_loss_gradient(lambda d, p=2: d.norm(p=p), x[:1], x[1:2] + 0, layer_name=est.layer_names[0])
    assert all(torch.equal(p.grad, g) for p, g in zip(classifier.parameters(), grads)) and state() == before

    torch.manual_seed(0)
    fusion64 = FusionModel(TinyFusionClassifier().double(), ["rgb", "ir"], num_classes=CLASSES)
    b64 = {k: v.double() for k, v in batch.items()}
    b64["ir"] = b64["ir"] + 1e-12  # detail below float32's resolution
    seen = []
    fusion64.model.register_forward_pre_hook(lambda m, a, k: seen.append(k["ir"].clone()), with_kwargs=True)
    est64 = to_art(fusion64, "rgb", context=b64)
    est64.predict(est64.x_for(b64))
    assert seen and all(torch.equal(t, b64["ir"]) for t in seen)
