"""EOT against the randomised resize+pad defence, compared with plain PGD.

"Plain PGD" is the attack that ignores the defence (crafted on the base model, as in Xie et al. and
Arnab et al.); EOT-PGD (torchattacks.EOTPGD) averages gradients over the defence's randomness. The
defended model draws a transform per sample and is scored over 4 draws. Uses the embedded default
MFNet trained on the synthetic scenes (trained once, ~1.5 min on 2 CPU cores, then cached).

Measured here (IoU ratio on the defended model, eps 8/255 on RGB+IR): plain PGD 0.737, EOT-PGD 0.704,
against 0.519 white box on the undefended model. The margin is small on this model because the
transformed synthetic model is hard to attack at all (white-box PGD on one fixed draw of the
transform reaches only 0.66; see docs/rgbt-benchmark.md). The clear-margin check runs on the official
MFNet and the real frames (tests/harness/test_official_mfnet_study.py); this one checks the
direction on data every clone has.
"""

import pytest
import torch

from mmfusion_attacks.data import create_dataset
from mmfusion_attacks.harness import run_transfer
from mmfusion_attacks.models.wrappers import random_resize_pad
from mmfusion_attacks.zoo import synthetic_default


def plain_vs_eot(base, batch, labels, *, seed: int = 0) -> tuple[float, float, float]:
    """IoU ratios (white box on the base model, plain PGD on the defended model, EOT-PGD on the
    defended model): eps 8/255 on RGB+IR, 10 steps, 8 EOT samples, the defended model scored over 4
    draws of random resize (nearest, x[0.8, 1.2]) + pad."""
    torch.manual_seed(seed)
    defended = random_resize_pad(base, 0.8, 1.2, size_multiple=16)
    ratios = run_transfer(
        {"plain": base, "eot": defended},
        {"base": base, "defended": defended},
        [(batch, labels)],
        attack={"plain": "pgd", "eot": "eotpgd"},
        eps_255=8,
        steps=10,
        attack_kwargs={"eotpgd": {"eot_iter": 8}},
        eval_repeats=4,
        progress=False,
    )
    return ratios[("plain", "base")], ratios[("plain", "defended")], ratios[("eot", "defended")]


@pytest.mark.slow
def test_eot_beats_the_randomised_defence():
    base = synthetic_default("mfnet", progress=False)
    data = create_dataset("synthetic-rgbt", split="test", size=16, height=96, width=128)
    items = [data[i] for i in range(16)]
    batch = {"rgb": torch.stack([i["rgb"] for i in items]), "ir": torch.stack([i["ir"] for i in items])}
    labels = torch.stack([i["labels"] for i in items])
    white_box, plain_vs_defence, eot_vs_defence = plain_vs_eot(base, batch, labels)
    assert plain_vs_defence > white_box + 0.1  # the defence blunts plain PGD
    assert eot_vs_defence < plain_vs_defence - 0.015  # EOT does better than plain PGD against it
