"""Pairing under every ART workflow: a probe model records, for every row it sees, which example its
RGB and its thermal came from; a mis-paired row (one example's RGB with another's thermal) is counted.

Every workflow here shuffles, subsets or re-batches rows (ART's DataLoader, the adversarial trainers,
AutoPGD, Square, the universal perturbation): before content pairing, `fit` after binding N rows
mis-paired 31 of 32 rows and AdversarialTrainer 186 of 192. Trainers whose PGD budget exceeds the
threat model need no declared radius (rows far nearer their own example than any other are paired by
margin); near-duplicate examples (video frames) raise instead of being guessed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from art.attacks import evasion as ae
from art.defences.trainer import AdversarialTrainer, AdversarialTrainerFBFPyTorch, AdversarialTrainerMadryPGD
from mmfusion_attacks.adapters.art import generate, to_art
from torch import nn

from mmfusion_attacks import FusionModel, Modality, RowAlignmentError, run_attack

N, SIZE, CLASSES = 12, 6, 3
LEVELS = torch.linspace(0.15, 0.85, N)  # example k's code value; 0.064 apart > 2 x 8/255


def probe_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random images whose top-left pixel (every channel) holds the example's code LEVELS[k]: the
    probe model ignores that pixel, so gradient attacks never move it (bounded ones move it by at
    most eps), and any row's source example can be read off each modality."""
    g = torch.Generator().manual_seed(seed)
    rgb, ir = torch.rand(N, 3, SIZE, SIZE, generator=g), torch.rand(N, 1, SIZE, SIZE, generator=g)
    rgb[:, :, 0, 0] = LEVELS.view(N, 1)
    ir[:, :, 0, 0] = LEVELS.view(N, 1)
    return {"rgb": rgb, "ir": ir}


class Probe(nn.Module):
    """A small trainable fusion classifier (batch norm included) that records the source example of
    each modality of every row it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.rgb = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.ir = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, CLASSES)
        mask = torch.ones(1, 1, SIZE, SIZE)
        mask[..., 0, 0] = 0
        self.register_buffer("mask", mask)
        self.seen: list[tuple[int, int]] = []

    @staticmethod
    def source(t: torch.Tensor) -> torch.Tensor:
        return (t.detach()[:, :, 0, 0].mean(1)[:, None] - LEVELS[None, :]).abs().argmin(1)

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        self.seen += list(zip(self.source(rgb).tolist(), self.source(ir).tolist()))
        return self.head(torch.cat([self.rgb(rgb * self.mask), self.ir(ir * self.mask)], 1))


def mispaired(probe: Probe) -> tuple[int, int]:
    bad = sum(a != b for a, b in probe.seen)
    return bad, len(probe.seen)


@pytest.fixture
def setup():
    torch.manual_seed(0)
    np.random.seed(0)
    probe = Probe()
    fusion = FusionModel(probe, ["rgb", "ir"], num_classes=CLASSES)
    batch = probe_batch()
    labels = torch.arange(N) % CLASSES
    return probe, fusion, batch, labels


def estimator(fusion, batch, attacked="ir", **kwargs):
    opt = torch.optim.SGD(fusion.parameters(), lr=0.05)
    return to_art(fusion, attacked, context=batch, optimizer=opt, **kwargs)


def onehot(labels: torch.Tensor) -> np.ndarray:
    return np.eye(CLASSES, dtype=np.float32)[labels.numpy()]


@pytest.mark.parametrize("attacked", ["ir", "rgb"])
def test_predict_any_order_and_batch_size(setup, attacked):
    probe, fusion, batch, labels = setup
    est = estimator(fusion, batch, attacked)
    x = est.x_for(batch)
    reference = est.predict(x)
    rng = np.random.default_rng(0)
    for batch_size in (1, 3, 5, N):
        perm = rng.permutation(N)[: rng.integers(1, N + 1)]
        out = est.predict(x[perm], batch_size=batch_size)
        np.testing.assert_allclose(out, reference[perm], atol=1e-5)
    assert mispaired(probe)[0] == 0 and mispaired(probe)[1] > 2 * N


def test_rows_of_unbound_examples_raise_instead_of_pairing(setup):
    probe, fusion, batch, _ = setup
    est = estimator(fusion, {k: v[:6] for k, v in batch.items()})
    with pytest.raises(RowAlignmentError, match="not within the pairing radius"):
        est.predict(est.x_for(batch)[6:])  # other examples: not in the context
    assert probe.seen == []  # refused before the model ran


@pytest.mark.parametrize("batch_size", [N, 5])
def test_fit_pairs_every_shuffled_row(setup, batch_size):
    probe, fusion, batch, labels = setup
    est = estimator(fusion, batch)
    before = [p.detach().clone() for p in fusion.parameters()]
    est.fit(est.x_for(batch), labels.numpy(), batch_size=batch_size, nb_epochs=3)
    assert any(not torch.equal(a, b) for a, b in zip(before, fusion.parameters()))  # it trained
    assert mispaired(probe) == (0, 3 * N)


def test_fit_inside_a_bound_block_trains(setup):
    probe, fusion, batch, labels = setup
    est = to_art(fusion, "ir", optimizer=torch.optim.SGD(fusion.parameters(), lr=0.05))
    fusion.train()
    before = [p.detach().clone() for p in fusion.parameters()]
    with est.surface.bound(batch) as x:
        est.fit(x.numpy(), labels.numpy(), batch_size=4, nb_epochs=1)
    assert any(not torch.equal(a, b) for a, b in zip(before, fusion.parameters()))
    assert fusion.training and all(p.requires_grad for p in fusion.parameters())
    assert mispaired(probe) == (0, N)


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_adversarial_trainer(setup, ratio):
    probe, fusion, batch, labels = setup
    est = estimator(fusion, batch)
    pgd = ae.ProjectedGradientDescent(est, eps=8 / 255, eps_step=2 / 255, max_iter=3, verbose=False)
    AdversarialTrainer(est, pgd, ratio=ratio).fit(est.x_for(batch), onehot(labels), batch_size=5, nb_epochs=2)
    bad, seen = mispaired(probe)
    assert bad == 0 and seen > 2 * N


def test_adversarial_trainer_madry_pgd(setup):
    probe, fusion, batch, labels = setup
    est = estimator(fusion, batch, ["ir"])
    trainer = AdversarialTrainerMadryPGD(est, nb_epochs=2, batch_size=4, eps=8 / 255, eps_step=2 / 255, max_iter=3, num_random_init=1)
    trainer.fit(est.x_for(batch), onehot(labels))
    bad, seen = mispaired(probe)
    assert bad == 0 and seen > 2 * N


def test_adversarial_trainer_fbf(setup):
    probe, fusion, batch, labels = setup
    est = estimator(fusion, batch, "rgb")
    AdversarialTrainerFBFPyTorch(est, eps=8 / 255).fit(est.x_for(batch), onehot(labels), batch_size=5, nb_epochs=2)
    bad, seen = mispaired(probe)
    assert bad == 0 and seen > 2 * N


def test_rebatching_and_universal_attacks_through_run_attack(setup):
    probe, fusion, batch, labels = setup
    est = to_art(fusion, "ir")
    with est.bound({k: v[:1] for k, v in batch.items()}, pairing="broadcast"):
        apgd = ae.AutoProjectedGradientDescent(est, eps=8 / 255, eps_step=2 / 255, max_iter=3, verbose=False)
    for attack in (
        apgd,
        ae.SquareAttack(est, eps=8 / 255, max_iter=10, verbose=False),
        ae.UniversalPerturbation(est, attacker="fgsm", attacker_params={"eps": 4 / 255}, eps=8 / 255, max_iter=2, verbose=False),
    ):
        probe.seen.clear()
        result = run_attack(attack, batch, labels)
        assert result.batching in ("content", "universal")
        assert mispaired(probe)[0] == 0 and torch.equal(result.inputs["rgb"], batch["rgb"])


def test_universal_perturbation_is_one_perturbation(setup):
    probe, fusion, batch, labels = setup
    interior = {k: 0.3 + 0.4 * v for k, v in batch.items()}  # no clipping: x_adv - x is the same everywhere
    est = to_art(fusion, "ir")
    attack = ae.UniversalPerturbation(est, attacker="deepfool", attacker_params={"max_iter": 5, "verbose": False}, eps=8 / 255, max_iter=2, verbose=False)
    result = run_attack(attack, interior, labels)
    assert result.batching == "universal" and mispaired(probe)[0] == 0
    noise = result.extras["universal_perturbation"]
    assert noise.shape[0] == 1 and float(noise.abs().max()) <= 8 / 255 + 1e-6
    delta = result.inputs["ir"] - interior["ir"]
    assert torch.allclose(delta, delta[:1].expand_as(delta), atol=1e-6)  # the same perturbation for every example


def test_direct_generate_helper_runs_far_moving_attacks_per_example(setup):
    probe, fusion, batch, labels = setup
    est = estimator(fusion, batch)
    x = est.x_for(batch)
    perm = np.array([5, 2, 9, 0])
    deepfool = ae.DeepFool(est, max_iter=5, verbose=False)
    adv = generate(deepfool, x[perm])
    assert adv.shape == x[perm].shape and mispaired(probe)[0] == 0
    pgd = ae.ProjectedGradientDescent(est, eps=8 / 255, eps_step=2 / 255, max_iter=3, verbose=False)
    probe.seen.clear()
    adv = generate(pgd, x[perm], labels.numpy()[perm])
    assert np.abs(adv - x[perm]).max() <= 8 / 255 + 1e-6 and mispaired(probe)[0] == 0


# ------------------------------------------------------------------ budgets beyond the threat model
IR02 = Modality("ir", "image", 1, valid_range=(0.0, 2.0))  # a thermal camera in [0, 2]; threat model Linf 8/255
EPS = 0.05  # the trainers' PGD budget in thermal units: 1.6 times the threat model, no radius declared


class WideProbe(Probe):
    """The probe on a thermal modality in [0, 2]: its code pixel is doubled."""

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        return super().forward(rgb, ir / 2)


def wide(batch: dict[str, torch.Tensor]):
    torch.manual_seed(0)
    np.random.seed(0)
    probe = WideProbe()
    fusion = FusionModel(probe, ["rgb", IR02], num_classes=CLASSES)
    return probe, fusion, {"rgb": batch["rgb"], "ir": batch["ir"] * 2}, torch.arange(N) % CLASSES


def frames(seed: int = 0) -> dict[str, torch.Tensor]:
    """Consecutive video frames: one scene with sensor noise (std 0.01), each frame's code pixel set."""
    g = torch.Generator().manual_seed(seed)
    scene_rgb, scene_ir = torch.rand(1, 3, SIZE, SIZE, generator=g), torch.rand(1, 1, SIZE, SIZE, generator=g)
    rgb = (scene_rgb + 0.01 * torch.randn(N, 3, SIZE, SIZE, generator=g)).clamp(0, 1)
    ir = (scene_ir + 0.01 * torch.randn(N, 1, SIZE, SIZE, generator=g)).clamp(0, 1)
    rgb[:, :, 0, 0] = LEVELS.view(N, 1)
    ir[:, :, 0, 0] = LEVELS.view(N, 1)
    return {"rgb": rgb, "ir": ir}


def _trainer(kind: str, est):
    if kind == "AdversarialTrainer":
        pgd = ae.ProjectedGradientDescent(est, eps=EPS, eps_step=EPS / 4, max_iter=3, verbose=False)
        return AdversarialTrainer(est, pgd, ratio=1.0), {"batch_size": 5, "nb_epochs": 2}
    trainer = AdversarialTrainerMadryPGD(est, nb_epochs=2, batch_size=4, eps=EPS, eps_step=EPS / 4, max_iter=3, num_random_init=1)
    return trainer, {}


@pytest.mark.parametrize("kind", ["AdversarialTrainer", "AdversarialTrainerMadryPGD"])
def test_trainers_with_a_budget_beyond_the_threat_model_need_no_radius(kind):
    probe, fusion, batch, labels = wide(probe_batch())
    est = estimator(fusion, batch)  # no radius=: rows up to 0.05 from their example, 1.6 x the radius
    trainer, kwargs = _trainer(kind, est)
    trainer.fit(est.x_for(batch), onehot(labels), **kwargs)
    bad, seen = mispaired(probe)
    assert bad == 0 and seen > 2 * N


@pytest.mark.parametrize("kind", ["AdversarialTrainer", "AdversarialTrainerMadryPGD"])
def test_near_duplicate_frames_raise_rather_than_mispair(kind):
    probe, fusion, batch, labels = wide(frames())
    est = estimator(fusion, batch)
    x = est.x_for(batch)
    perm = np.random.default_rng(0).permutation(N)
    est.predict(x[perm])  # clean frames, any order: paired exactly
    trainer, kwargs = _trainer(kind, est)
    with pytest.raises(RowAlignmentError, match="not within the pairing radius"):
        trainer.fit(x, onehot(labels), **kwargs)  # perturbed frames lie as near their neighbours as their own
    bad, seen = mispaired(probe)
    assert bad == 0 and seen >= N


@pytest.mark.parametrize("trainer", ["TRADES", "AWP"])
def test_trainers_that_drive_the_model_directly_leave_its_modes_as_they_were(trainer):
    """TRADES and AWP set the model to training mode themselves (not through the estimator's fit): the
    adapter's hook on ART's trainers restores every module's mode, frozen batch norm included."""
    from art.defences.trainer import AdversarialTrainerAWPPyTorch, AdversarialTrainerTRADESPyTorch

    torch.manual_seed(0)
    np.random.seed(0)
    probe = Probe()
    fusion = FusionModel(probe, ["rgb", "ir"], num_classes=CLASSES)
    batch, labels = probe_batch(), torch.arange(N) % CLASSES
    est = estimator(fusion, batch, "ir")
    fusion.train()
    kept_in_eval = next(m for m in fusion.model.modules() if isinstance(m, nn.BatchNorm2d))
    kept_in_eval.eval()
    modes = [m.training for m in fusion.modules()]
    pgd = ae.ProjectedGradientDescent(est, eps=8 / 255, eps_step=2 / 255, max_iter=2, verbose=False)
    if trainer == "TRADES":
        AdversarialTrainerTRADESPyTorch(est, pgd, beta=6.0).fit(est.x_for(batch), onehot(labels), batch_size=4, nb_epochs=1)
    else:
        import copy

        proxy = copy.deepcopy(est)
        AdversarialTrainerAWPPyTorch(est, proxy, pgd, mode="PGD", gamma=0.01, beta=6.0, warmup=0).fit(
            est.x_for(batch), onehot(labels), batch_size=4, nb_epochs=1)
    assert [m.training for m in fusion.modules()] == modes
