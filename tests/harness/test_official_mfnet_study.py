"""The MFNet study's grid on the two real RGB-T frames with the official checkpoint (pseudo-labels).

Checks the study's qualitative findings: every single-modality attack lowers mIoU; attacking both
modalities is at least as harmful as either alone; PGD is at least as strong as FGSM at the same eps.
Also: FGSM II / iterative FGSM II put pixels on their least-likely class. Skips without ../shared.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from harness.test_eot_defence import plain_vs_eot

from mmfusion_attacks.harness import GridSpec, run_grid
from mmfusion_attacks.harness.rgbt import load_frames
from mmfusion_attacks.models import create_model

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mfnet-official"
FRAMES = [SHARED / "01234N.png", SHARED / "01477D.png"]


@pytest.fixture(scope="module")
def official():
    if not (SHARED / "final.pth").is_file():
        pytest.skip(f"official MFNet checkpoint not found in {SHARED}")
    torch.manual_seed(0)
    return create_model("mfnet", weights=str(SHARED / "final.pth")), load_frames(FRAMES)


@pytest.fixture(scope="module")
def study(official):
    fusion, batch = official
    spec = GridSpec(attacks=("fgsm", "pgd"), eps_255=(10, 20, 40), steps=5)
    result = run_grid(fusion, [(batch, None)], spec, progress=False)
    return {(r["attack"], r["eps_255"], r["attacked"]): r for r in result.rows()}, result


def test_grid_uses_pseudo_labels(study):
    rows, result = study
    assert result.labels_source.startswith("pseudo-labels")
    assert result.clean.miou() == pytest.approx(1.0)  # clean predictions scored against themselves
    assert len(rows) == 18


def test_every_single_modality_attack_lowers_miou(study):
    rows, _ = study
    for (attack, eps, attacked), r in rows.items():
        assert r["mIoU"] < 1.0 and r["IoU_R"] < 1.0, (attack, eps, attacked)


def test_fgsm_eps10_matches_the_measured_reference(study):
    """The shared README measured FGSM at 10/255 on these frames: mIoU ~0.28 (RGB), 0.33 (IR), 0.17 (both)."""
    rows, _ = study
    for attacked, reference in (("RGB", 0.28), ("IR", 0.33), ("RGB+IR", 0.17)):
        assert rows[("FGSM", 10, attacked)]["mIoU"] == pytest.approx(reference, abs=0.02), attacked


OBJECTS = range(1, 9)  # every class but 0 (unlabeled)


def test_both_modalities_at_least_as_harmful_as_either(study):
    """By mAcc and by the object classes' mIoU, in every cell of the grid."""
    _, result = study
    for (attack, eps) in {(c.attack, c.eps_255) for c in result.cells}:
        cell = {c.label: m for c, m in result.cells.items() if (c.attack, c.eps_255) == (attack, eps)}
        for measure in (lambda m: m.macc(), lambda m: m.miou(OBJECTS)):
            both = measure(cell["RGB+IR"])
            assert both <= measure(cell["RGB"]) + 1e-9 and both <= measure(cell["IR"]) + 1e-9, (attack, eps)


def test_both_modalities_by_the_studys_miou(study):
    """By the study's mIoU (unlabeled included) too, except one-step FGSM at 40/255: there RGB+IR
    wipes out the objects and predicts nearly every pixel as unlabeled, which *raises* the
    unlabeled IoU (0.89 vs 0.72 for RGB alone); mIoU over {unlabeled, objects} then reads 0.18
    against 0.17 although every object class is hit harder. The test pins that explanation down."""
    rows, result = study
    for attack, eps in [("PGD", e) for e in (10, 20, 40)] + [("FGSM", 10), ("FGSM", 20)]:
        both = rows[(attack, eps, "RGB+IR")]["mIoU"]
        assert both <= rows[(attack, eps, "RGB")]["mIoU"] + 1e-9, (attack, eps)
        assert both <= rows[(attack, eps, "IR")]["mIoU"] + 1e-9, (attack, eps)
    cell = {c.label: m for c, m in result.cells.items() if (c.attack, c.eps_255) == ("fgsm", 40)}
    both, rgb = cell["RGB+IR"], cell["RGB"]
    predicted = both.confusion.sum(0).double()
    assert predicted[0] / predicted.sum() > 0.95  # nearly all pixels predicted unlabeled
    assert both.per_class_iou()[0] > rgb.per_class_iou()[0]  # so the unlabeled IoU goes up
    assert both.miou(OBJECTS) < rgb.miou(OBJECTS)  # while the objects are hit harder
    assert rows[("FGSM", 40, "RGB+IR")]["mIoU"] <= rows[("FGSM", 40, "IR")]["mIoU"]


def test_pgd_at_least_as_strong_as_fgsm(study):
    rows, _ = study
    for eps in (10, 20, 40):
        for attacked in ("RGB", "IR", "RGB+IR"):
            assert rows[("PGD", eps, attacked)]["mIoU"] <= rows[("FGSM", eps, attacked)]["mIoU"] + 1e-9, (eps, attacked)


def test_least_likely_attacks_hit_their_targets(official):
    fusion, batch = official
    spec = GridSpec(attacks=("fgsm2", "ifgsm2"), eps_255=(20,), subsets=(("rgb", "ir"),), steps=5)
    result = run_grid(fusion, [(batch, None)], spec, progress=False)
    rates = {r["attack"]: r["target_rate"] for r in result.rows()}
    # clean: no pixel is predicted as its own least-likely class (rate exactly 0), so any hit is a rise
    assert rates["FGSM2"] > 0 and rates["IFGSM2"] > rates["FGSM2"]


def test_eot_beats_the_randomised_defence_where_plain_pgd_does_not(official):
    """Random resize (nearest, x[0.8, 1.2]) + pad, drawn per image and scored over 4 draws, against
    PGD crafted on the base model (ignoring the defence) and EOT-PGD (torchattacks EOTPGD, 8 samples
    per step) through it; eps 8/255 on RGB+IR, 10 steps, frames at 240x320 to keep it fast.
    Measured: white box 0.07; on the defended model plain PGD 0.48, EOT-PGD 0.36 (seeds 1-3: plain
    0.35 / 0.42 / 0.48, EOT 0.14 / 0.28 / 0.20; the margin is always above 0.1)."""
    fusion, _ = official
    white_box, plain, eot = plain_vs_eot(fusion, load_frames(FRAMES, size=(240, 320)), None)
    print(f"white box {white_box:.3f}, plain PGD vs defence {plain:.3f}, EOT-PGD vs defence {eot:.3f}")
    assert plain > white_box + 0.2  # the defence blunts plain PGD
    assert eot < plain - 0.05  # EOT beats it by a clear margin
