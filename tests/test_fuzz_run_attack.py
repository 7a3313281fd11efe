"""Property-based fuzzing of the public entry point: dtypes, shapes, ranges, labels and eps drawn at
random. Every draw either raises one of the documented error types before any result exists, or
returns a result that keeps the whole contract (frozen modalities bit-identical, caller tensors
untouched, attacked modalities within their range and their budget in their own units, the caller's
dtype)."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torchattacks
from art.attacks import evasion as ae
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mmfusion_attacks.adapters.art import to_art
from mmfusion_attacks.adapters.torchattacks import to_torchattacks
from torch import nn

from mmfusion_attacks import FusionModel, MMFusionError, Modality, run_attack

CLASSES = 3
RANGES = [(0.0, 1.0), (0.0, 2.0), (-1.0, 1.0), (0.0, 255.0)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
EPS = [0.0, 1 / 255, 8 / 255, 0.3, 1.5, -0.01, float("nan"), float("inf")]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.rgb = nn.Conv2d(3, 4, 3, padding=1)
        self.ir = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, rgb, ir):
        return self.head(torch.cat([self.rgb(rgb).mean((2, 3)), self.ir(ir).mean((2, 3))], 1))


torch.manual_seed(0)
NET = Net()


# CI runs a fixed (derandomised) set of 80 draws; MMFUSION_FUZZ_EXAMPLES=2000 explores new ones
FUZZ = os.environ.get("MMFUSION_FUZZ_EXAMPLES")


@settings(max_examples=int(FUZZ or 80), deadline=None, derandomize=not FUZZ, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(DTYPES),
    n=st.integers(1, 4),
    size=st.integers(2, 6),
    ir_size=st.sampled_from([None, 2, 3]),
    ir_range=st.sampled_from(RANGES),
    attacked=st.sampled_from([("rgb",), ("ir",), ("rgb", "ir")]),
    label_form=st.sampled_from(["long", "int32", "numpy", "onehot", "none", "out-of-range", "float"]),
    eps=st.sampled_from(EPS),
    attack=st.sampled_from(["ta.FGSM", "ta.PGD", "ta.PGDL2", "ta.APGD", "art.FGSM", "art.PGD", "art.BIM", "art.Square"]),
    seed=st.integers(0, 1000),
)
def test_run_attack_fuzz(dtype, n, size, ir_size, ir_range, attacked, label_form, eps, attack, seed):
    fusion = FusionModel(NET, ["rgb", Modality("ir", "image", 1, valid_range=ir_range)], num_classes=CLASSES)
    g = torch.Generator().manual_seed(seed)
    lo, hi = ir_range
    batch = {
        "rgb": torch.rand(n, 3, size, size, generator=g).to(dtype),
        "ir": (lo + (hi - lo) * torch.rand(n, 1, ir_size or size, ir_size or size, generator=g)).to(dtype),
    }
    before = {k: v.clone() for k, v in batch.items()}
    ids = torch.randint(0, CLASSES, (n,), generator=g)
    labels = {
        "long": ids,
        "int32": ids.int(),
        "numpy": ids.numpy(),
        "onehot": np.eye(CLASSES, dtype=np.float32)[ids.numpy()],
        "none": None,
        "out-of-range": ids + CLASSES,
        "float": ids.float(),
    }[label_form]
    try:
        if attack.startswith("ta."):
            surface = to_torchattacks(fusion, attacked)
            name = attack[3:]
            atk = getattr(torchattacks, name)(surface, eps=eps, **({"steps": 2} if name != "FGSM" else {}))
            if name == "APGD":
                atk.n_restarts = 1
        else:
            est = to_art(fusion, attacked)
            if attack == "art.FGSM":
                atk = ae.FastGradientMethod(est, eps=eps)
            elif attack == "art.Square":
                atk = ae.SquareAttack(est, eps=eps, max_iter=5, verbose=False)
            else:
                cls = ae.ProjectedGradientDescent if attack == "art.PGD" else ae.BasicIterativeMethod
                atk = cls(est, eps=eps, eps_step=eps / 2 if math.isfinite(eps) and eps > 0 else 0.1, max_iter=2, verbose=False)
    except (ValueError, TypeError, MMFusionError) as err:  # a toolkit or adapter refusing the configuration up front
        event(f"refused at construction: {type(err).__name__}")
        return
    try:
        result = run_attack(atk, batch, labels)
    except MMFusionError as err:  # only the package's own, specific errors: never a crash deep in a toolkit
        assert str(err)  # a clear, specific error
        event(f"run_attack raised {type(err).__name__}")
        for k in batch:
            assert torch.equal(batch[k], before[k])
        return
    event("result")
    for k in batch:
        assert torch.equal(batch[k], before[k]), "caller tensor changed"
        assert result.inputs[k].dtype == dtype and result.inputs[k].shape == batch[k].shape
    for k in ("rgb", "ir"):
        if k not in attacked:
            assert torch.equal(result.inputs[k], batch[k])
            continue
        r_lo, r_hi = fusion.modalities[k].valid_range
        assert r_lo <= float(result.inputs[k].min()) and float(result.inputs[k].max()) <= r_hi
        norm, budget = result.budget[k]
        delta = (result.inputs[k].double() - batch[k].double()).flatten(1)
        if norm == "inf":
            assert float(delta.abs().max()) <= float(torch.as_tensor(budget).max()) * (1 + 1e-6) + 1e-12
        else:
            # one L2 ball in the toolkit's units: sum over modalities of (||delta_m|| / budget_m)^2 <= 1
            # (with different ranges it is an ellipsoid in the modalities' own units)
            norms = {a: (result.inputs[a].double() - batch[a].double()).flatten(1).norm(dim=1) for a in attacked}
            if float(budget) == 0:
                assert float(norms[k].max()) == 0
            else:
                ratio = sum((norms[a] / float(result.budget[a][1])) ** 2 for a in attacked)
                assert float(ratio.max()) <= (1 + 1e-4) ** 2 + 1e-9
