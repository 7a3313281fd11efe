"""The MFNet study's grid on the two real RGB-T frames with the official checkpoint (pseudo-labels).

Checks the study's qualitative findings: every single-modality attack lowers mIoU; attacking both
modalities is at least as harmful as either alone; PGD is at least as strong as FGSM at the same eps.
Also: FGSM II / iterative FGSM II put pixels on their least-likely class. Skips without ../shared.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


def test_both_modalities_at_least_as_harmful_as_either(study):
    """Holds for PGD at every eps and for FGSM at 10 and 20/255. Measured exception on these two
    frames: one-step FGSM at 40/255 on RGB+IR leaves mIoU 0.180 vs 0.168 for RGB alone (single-step
    FGSM is not monotone at large eps); it is still more harmful than IR alone."""
    rows, _ = study
    for attack, eps in [("PGD", e) for e in (10, 20, 40)] + [("FGSM", 10), ("FGSM", 20)]:
        both = rows[(attack, eps, "RGB+IR")]["mIoU"]
        assert both <= rows[(attack, eps, "RGB")]["mIoU"] + 1e-9, (attack, eps)
        assert both <= rows[(attack, eps, "IR")]["mIoU"] + 1e-9, (attack, eps)
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
