"""Runner behaviour: budgets per modality, row alignment, labels, targets, and refusing wrong setups."""

import numpy as np
import pytest
import torch
import torchattacks
from art.attacks import evasion as ae
from conftest import CLASSES, TinyFusionClassifier, TinyPackedSegmenter, make_batch, rule_labels
from mmfusion_attacks.adapters.art import eps_array, to_art
from mmfusion_attacks.adapters.torchattacks import to_torchattacks
from torchattacks.attack import Attack

from mmfusion_attacks import (
    EmptySubsetError,
    FusionModel,
    InvariantViolationError,
    LabelError,
    Modality,
    RowAlignmentError,
    UnsupportedAttackError,
    clean_forward,
    run_attack,
)


def interior_batch(seed=0):
    """Values in [0.2, 0.8]: small budgets are never cut by the valid range."""
    return {k: 0.2 + 0.6 * v for k, v in make_batch(seed=seed).items()}


def test_l2_budget_goes_to_the_attacked_modality_only(classifier, cls_labels):
    batch = interior_batch()
    attack = ae.ProjectedGradientDescent(to_art(classifier, "rgb"), norm=2, eps=1.0, eps_step=0.5, max_iter=10, verbose=False)
    result = run_attack(attack, batch, cls_labels)
    assert torch.allclose(result.norms["rgb"]["l2"], torch.ones(3), atol=1e-3)
    assert torch.equal(result.inputs["ir"], batch["ir"])


def test_per_modality_linf_budgets_in_one_art_run(classifier, cls_labels):
    batch = interior_batch()
    est = to_art(classifier, ["rgb", "ir"])
    eps = eps_array(est, {"rgb": 8 / 255, "ir": 16 / 255})
    assert eps.shape == (4, 1, 1)
    for attack in (
        ae.FastGradientMethod(est, eps=eps, eps_step=eps),
        ae.ProjectedGradientDescent(est, eps=eps, eps_step=eps / 4, max_iter=8, verbose=False),
    ):
        result = run_attack(attack, batch, cls_labels)
        assert float(result.norms["rgb"]["linf"].max()) == pytest.approx(8 / 255, abs=1e-6)
        assert float(result.norms["ir"]["linf"].max()) == pytest.approx(16 / 255, abs=1e-6)


def test_batched_mode_pairs_rows_exactly_like_one_sample_at_a_time(classifier, cls_labels):
    batch = make_batch()
    for attack in (torchattacks.FGSM(to_torchattacks(classifier, "ir"), eps=8 / 255), ae.FastGradientMethod(to_art(classifier, "ir"), eps=8 / 255)):
        batched = run_attack(attack, batch, cls_labels, batching="batch")
        single = run_attack(attack, batch, cls_labels, batching="sample")
        assert batched.batching == "batch" and single.batching == "sample"
        assert torch.allclose(batched.inputs["ir"], single.inputs["ir"], atol=1e-7)


class _FarReversed(Attack):
    """A re-batching attack that queries its rows in reverse order and far beyond any budget."""

    def __init__(self, model):
        super().__init__("FarReversed", model)

    def forward(self, images, labels=None):
        self.get_logits((1 - images).flip(0)[:-1])
        return images


def test_forcing_batch_mode_on_a_rebatching_attack_raises(classifier, cls_labels):
    attack = _FarReversed(to_torchattacks(classifier, "ir"))
    with pytest.raises(RowAlignmentError, match="batching='sample'"):
        run_attack(attack, make_batch(), cls_labels, batching="batch")
    assert run_attack(attack, make_batch(), cls_labels).batching == "sample"


def test_a_batch_whose_queries_contradict_their_order_runs_one_example_at_a_time(classifier, cls_labels):
    batch = make_batch()
    batch["rgb"][0] = 0.02 + 0.01 * batch["rgb"][0]  # a night frame: SINIFGSM's x / 16 of the others lies next to it
    result = run_attack(torchattacks.SINIFGSM(to_torchattacks(classifier, "rgb"), steps=2), batch, cls_labels)
    assert result.batching == "batch" and result.flags == ["fallback: rows 0..2 ran one example at a time"]
    assert torch.equal(result.inputs["ir"], batch["ir"])
    with pytest.raises(RowAlignmentError, match="not in the bound order"):
        run_attack(torchattacks.SINIFGSM(to_torchattacks(classifier, "rgb"), steps=2), batch, cls_labels, batching="batch")


def test_art_chunks_follow_the_attack_batch_size(classifier):
    batch = make_batch(n=5)
    labels = torch.arange(5) % CLASSES
    attack = ae.FastGradientMethod(to_art(classifier, "ir"), eps=8 / 255, batch_size=2)
    whole = ae.FastGradientMethod(to_art(classifier, "ir"), eps=8 / 255, batch_size=64)
    assert torch.allclose(run_attack(attack, batch, labels).inputs["ir"], run_attack(whole, batch, labels).inputs["ir"], atol=1e-7)


def test_pseudo_labels_when_no_labels_given(classifier):
    result = run_attack(torchattacks.FGSM(to_torchattacks(classifier, "rgb"), eps=8 / 255), make_batch())
    assert result.labels_source == "clean-prediction"
    assert torch.equal(result.labels, result.clean_pred)
    assert torch.equal(result.success, result.adv_pred != result.clean_pred)


def test_success_is_misclassification(classifier, cls_labels):
    result = run_attack(torchattacks.PGD(to_torchattacks(classifier, ["rgb", "ir"]), eps=0.5, alpha=0.1, steps=10), make_batch(), cls_labels)
    assert torch.equal(result.success, result.adv_pred != cls_labels)
    assert result.success_rate == float((result.adv_pred != cls_labels).float().mean())
    summary = result.summary()
    assert summary["toolkit"] == "torchattacks" and summary["attacked"] == ["rgb", "ir"]


def test_torchattacks_segmentation_targeted_by_label(trained_segmenter):
    batch = make_batch()
    seg_labels = rule_labels(batch)
    targets = torch.full_like(seg_labels, 2)
    atk = torchattacks.PGD(to_torchattacks(trained_segmenter, ["rgb", "ir"]), eps=0.3, alpha=0.05, steps=20)
    atk.set_mode_targeted_by_label(quiet=True)
    result = run_attack(atk, batch, seg_labels, targets=targets)
    clean_on_target = (result.clean_pred == 2).float().mean()
    assert float(result.score.mean()) > float(clean_on_target) + 0.2
    assert result.targets is not None and torch.equal(result.score, (result.adv_pred == 2).flatten(1).float().mean(1))


def test_art_segmentation_targeted_fgsm(trained_segmenter):
    batch = make_batch()
    seg_labels = rule_labels(batch)
    targets = torch.full_like(seg_labels, 1)
    attack = ae.FastGradientMethod(to_art(trained_segmenter, ["rgb", "ir"]), eps=0.3, targeted=True)
    result = run_attack(attack, batch, seg_labels, targets=targets)
    assert float(result.score.mean()) > float((result.clean_pred == 1).float().mean()) + 0.2


def test_targeted_attack_without_targets_is_refused(classifier, cls_labels):
    attack = ae.FastGradientMethod(to_art(classifier, "ir"), eps=8 / 255, targeted=True)
    with pytest.raises(UnsupportedAttackError, match="targets="):
        run_attack(attack, make_batch(), cls_labels)


def test_bad_labels_are_refused_before_attacking(classifier):
    atk = torchattacks.FGSM(to_torchattacks(classifier, "ir"))
    with pytest.raises(LabelError, match="outside"):
        run_attack(atk, make_batch(), torch.tensor([0, 1, CLASSES]))
    with pytest.raises(LabelError, match="shape"):
        run_attack(atk, make_batch(), torch.zeros(3, 8, 8, dtype=torch.long))


def test_attacks_not_built_on_a_surface_are_refused(classifier, cls_labels):
    with pytest.raises(UnsupportedAttackError, match="to_torchattacks"):
        run_attack(torchattacks.FGSM(classifier), make_batch(), cls_labels)
    with pytest.raises(UnsupportedAttackError, match="no adapter"):
        run_attack(object(), make_batch(), cls_labels)
    with pytest.raises(EmptySubsetError):
        to_torchattacks(classifier, [])


def test_torchattacks_sees_any_declared_range_as_unit(cls_labels):
    fm = FusionModel(TinyFusionClassifier(), [Modality("rgb", "image", 3, valid_range=(0, 255)), "ir"], num_classes=CLASSES)
    batch = {"rgb": make_batch()["rgb"] * 255, "ir": make_batch()["ir"]}
    result = run_attack(torchattacks.FGSM(to_torchattacks(fm, "rgb"), eps=4 / 255), batch, cls_labels)
    assert float(result.norms["rgb"]["linf"].max()) <= 4.0 + 1e-4  # 4/255 of a 255-wide range
    assert result.budget["rgb"] == ("inf", pytest.approx(4.0))
    with pytest.raises(UnsupportedAttackError, match="to_torchattacks"):
        run_attack(torchattacks.FGSM(fm.surface("rgb"), eps=4 / 255), batch, cls_labels)  # native units: refused
    unbounded = FusionModel(TinyFusionClassifier(), [Modality("rgb", "image", 3, valid_range=None), "ir"])
    with pytest.raises(UnsupportedAttackError, match="unbounded"):
        to_torchattacks(unbounded, "rgb")


def test_torchattacks_normalisation_mode_is_refused(classifier, cls_labels):
    atk = torchattacks.FGSM(to_torchattacks(classifier, "ir"))
    atk.set_normalization_used(mean=[0.5], std=[0.5])
    with pytest.raises(UnsupportedAttackError, match="normalize"):
        run_attack(atk, make_batch(), cls_labels)


@pytest.mark.parametrize("name", ["CW", "DeepFool", "APGD", "Square"])
def test_torchattacks_without_segmentation_support_raise(name, segmenter, seg_labels):
    atk = getattr(torchattacks, name)(to_torchattacks(segmenter, "ir"))
    with pytest.raises(UnsupportedAttackError, match="segmentation"):
        run_attack(atk, make_batch(), seg_labels)


def test_least_likely_mode_on_segmentation_is_refused(segmenter, seg_labels):
    atk = torchattacks.PGD(to_torchattacks(segmenter, "ir"))
    atk.set_mode_targeted_least_likely(quiet=True)
    with pytest.raises(UnsupportedAttackError, match="set_mode_targeted_by_label"):
        run_attack(atk, make_batch(), seg_labels)


class _Overshoot(Attack):
    """A deliberately broken toolkit attack: steps past its eps."""

    def __init__(self, model, eps, shift):
        super().__init__("Overshoot", model)
        self.eps, self.shift = eps, shift

    def forward(self, images, labels=None):
        return images + self.shift


def test_toolkit_budget_and_range_violations_are_caught(classifier, cls_labels):
    batch = interior_batch()
    with pytest.raises(InvariantViolationError, match="Linf budget"):
        run_attack(_Overshoot(to_torchattacks(classifier, "ir"), eps=0.01, shift=0.05), batch, cls_labels)
    with pytest.raises(InvariantViolationError, match="valid range"):
        run_attack(_Overshoot(to_torchattacks(classifier, "ir"), eps=1.0, shift=0.5), batch, cls_labels)


def test_an_l1_budget_is_checked_like_the_others(classifier, cls_labels):
    """An attack declaring an L1 budget it does not keep is refused, as for Linf and L2; ART's L1 attacks
    keep theirs and come back within it in the caller's units."""
    over = _Overshoot(to_torchattacks(classifier, "ir"), eps=1.0, shift=0.05)
    over.norm = "L1"
    with pytest.raises(InvariantViolationError, match="L1 budget 1"):
        run_attack(over, interior_batch(), cls_labels)
    batch = interior_batch()
    r = run_attack(ae.ProjectedGradientDescent(to_art(classifier, "rgb"), norm=1, eps=2.0, eps_step=1.0, max_iter=3, verbose=False), batch, cls_labels)
    assert r.budget["rgb"] == ("1", 2.0)
    assert float((r.inputs["rgb"].double() - batch["rgb"].double()).flatten(1).abs().sum(1).max()) <= 2.0


def test_unknown_attacks_default_to_one_sample_at_a_time(classifier, cls_labels):
    atk = _Overshoot(to_torchattacks(classifier, "ir"), eps=0.1, shift=0.01)
    assert run_attack(atk, interior_batch(), cls_labels).batching == "sample"
    atk.row_aligned = True
    assert run_attack(atk, interior_batch(), cls_labels).batching == "batch"


def test_art_estimator_casts_float64_queries(classifier):
    est = to_art(classifier, "rgb", sample=make_batch())
    assert est.input_shape == (3, 8, 8)
    with est.surface.bound(make_batch()) as x:
        preds = est.predict(x.numpy().astype(np.float64))
    assert preds.shape == (3, CLASSES) and preds.dtype == np.float32


def test_art_input_shape_needs_a_batch_when_packing_depends_on_data():
    class ImageAudio(torch.nn.Module):
        def forward(self, image, audio):
            return torch.stack([image.mean((1, 2, 3)), audio.mean(1)], 1)

    fm = FusionModel(ImageAudio(), ["image", "audio"], num_classes=2)
    est = to_art(fm, ["image", "audio"])
    with pytest.raises(RuntimeError, match="sample="):
        _ = est.input_shape
    est = to_art(fm, ["image", "audio"], sample={"image": torch.rand(1, 3, 4, 4), "audio": torch.rand(1, 10)})
    assert est.input_shape == (58,)


def test_segmentation_norms_and_scores(segmenter, seg_labels):
    fm = FusionModel(TinyPackedSegmenter(), ["rgb", "ir"], task="segmentation", input_style="packed", num_classes=CLASSES, ignore_index=255)
    labels = seg_labels.clone()
    labels[:, :4] = 255
    with pytest.raises(UnsupportedAttackError, match="ignore_index=255"):
        run_attack(torchattacks.FGSM(to_torchattacks(fm, "rgb"), eps=8 / 255), make_batch(), labels)
    result = run_attack(ae.FastGradientMethod(to_art(fm, "rgb"), eps=8 / 255), make_batch(), labels)
    valid = labels != 255
    wrong = ((result.adv_pred != labels) & valid).flatten(1).sum(1) / valid.flatten(1).sum(1)
    assert torch.allclose(result.score, wrong)


@pytest.mark.parametrize("toolkit", ["torchattacks", "art"])
def test_attack_and_prediction_run_in_eval_mode(toolkit, classifier, cls_labels):
    """Regression: torchattacks restored the *surface's* training flag and left batch-norm in train
    mode for later chunks and for the adversarial prediction."""
    classifier.train()
    batch = make_batch(n=5)
    labels = torch.arange(5) % CLASSES
    if toolkit == "torchattacks":
        attack = torchattacks.APGD(to_torchattacks(classifier, "ir"), eps=8 / 255, steps=2)  # one sample at a time
    else:
        attack = ae.FastGradientMethod(to_art(classifier, "ir"), eps=8 / 255, batch_size=2)
    result = run_attack(attack, batch, labels)
    assert classifier.training  # restored afterwards
    assert torch.equal(result.adv_pred, classifier.predict(result.inputs))
    assert torch.equal(result.clean_pred, classifier.predict(batch))


def test_given_clean_logits_save_a_forward_and_change_nothing(classifier, cls_labels):
    batch = make_batch()
    calls = []
    handle = classifier.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        attack = torchattacks.FGSM(to_torchattacks(classifier, "rgb"), eps=8 / 255)
        plain = run_attack(attack, batch)
        n_plain = len(calls)
        was = classifier.training
        logits = clean_forward(classifier, batch)  # eval mode, as run_attack computes them
        assert classifier.training == was
        calls.clear()
        given = run_attack(attack, batch, clean_logits=logits)
    finally:
        handle.remove()
    assert len(calls) == n_plain - 1
    assert torch.equal(given.inputs["rgb"], plain.inputs["rgb"]) and torch.equal(given.clean_pred, plain.clean_pred)
    with pytest.raises(ValueError, match="another batch"):
        run_attack(attack, make_batch(seed=5), clean_logits=logits)  # same shape, other data
    with pytest.raises(TypeError, match="clean_forward"):
        run_attack(attack, batch, clean_logits=logits.logits)


@pytest.mark.parametrize("kind", ["classifier", "segmenter"])
def test_clean_logits_from_the_attacks_first_query_equal_a_separate_clean_forward(kind, classifier, segmenter, cls_labels, seg_labels):
    """The optimised path (labels given, the attack's first query is the clean batch: its logits are the
    clean ones) vs the unoptimised one (clean logits computed separately): the same result, one forward
    fewer; an attack whose first query is not the clean batch (random start) gets a real clean forward."""
    fusion, labels = (classifier, cls_labels) if kind == "classifier" else (segmenter, seg_labels)
    batch = make_batch()
    calls = []
    handle = fusion.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        for start in (False, True):
            pgd = lambda start=start: torchattacks.PGD(to_torchattacks(fusion, "ir"), eps=8 / 255, alpha=2 / 255, steps=3, random_start=start)  # noqa: E731
            separate = run_attack(pgd(), batch, labels, clean_logits=clean_forward(fusion, batch))
            torch.manual_seed(0)
            first = run_attack(pgd(), batch, labels)  # the logit shape is known from the run above
            calls.clear()
            torch.manual_seed(0)
            again = run_attack(pgd(), batch, labels)
            assert len(calls) == 3 + 1 + (1 if start else 0)  # 3 steps, the final forward, a clean forward only after a random start
            for r in (first, again):
                assert torch.equal(r.clean_pred, separate.clean_pred) and torch.equal(r.labels, separate.labels)
                assert r.labels_source == separate.labels_source
                if not start:
                    assert torch.equal(r.inputs["ir"], separate.inputs["ir"]) and torch.equal(r.success, separate.success)
            assert torch.equal(first.inputs["ir"], again.inputs["ir"])
    finally:
        handle.remove()
    bad = labels.clone()
    bad.view(-1)[0] = 99
    calls.clear()
    with pytest.raises(LabelError, match="outside"):  # still checked before any query
        run_attack(torchattacks.PGD(to_torchattacks(fusion, "ir"), eps=8 / 255, steps=3), batch, bad)
    assert not calls
