"""Assertions shared by the attack tests: the frozen-modality contract, checked cell by cell."""

from __future__ import annotations

import torch

from mmfusion_attacks import AdversarialBatch, FusionModel

TOL = 1e-6


def snapshot(fusion: FusionModel, batch: dict) -> dict:
    return {
        "batch": {k: v.clone() for k, v in batch.items()},
        "modes": [m.training for m in fusion.modules()],
        "grads": [p.requires_grad for p in fusion.parameters()],
    }


def mixed_state(fusion: FusionModel) -> None:
    """Put the model in a state an attack must not leave changed: training mode, some params frozen."""
    fusion.train()
    params = list(fusion.parameters())
    params[0].requires_grad_(False)


def assert_contract(
    result: AdversarialBatch,
    batch: dict,
    before: dict,
    fusion: FusionModel,
    attacked: tuple[str, ...],
    eps: float | dict | None = None,
    norm: str = "inf",
    must_move: bool = False,
) -> None:
    # caller tensors untouched
    for k, v in batch.items():
        assert torch.equal(v, before["batch"][k]), f"caller tensor '{k}' was mutated"
    # model state restored
    assert [m.training for m in fusion.modules()] == before["modes"], "module train/eval modes not restored"
    assert [p.requires_grad for p in fusion.parameters()] == before["grads"], "requires_grad not restored"
    assert set(result.inputs) == set(batch)
    for name, clean in batch.items():
        adv = result.inputs[name]
        assert adv.shape == clean.shape and adv.dtype == clean.dtype
        if name not in attacked:
            assert torch.equal(adv, clean), f"frozen modality '{name}' changed"
            assert name not in result.norms
            continue
        lo, hi = fusion.modalities[name].valid_range
        assert float(adv.min()) >= lo and float(adv.max()) <= hi, f"'{name}' left its valid range"
        delta = (adv - clean).flatten(1)
        budget = eps[name] if isinstance(eps, dict) else eps
        if budget is not None:
            if norm == "inf":
                assert float(delta.abs().max()) <= budget + TOL, f"'{name}' exceeds Linf eps {budget}"
            else:
                assert float(delta.norm(dim=1).max()) <= budget * (1 + 1e-5) + TOL
        assert torch.allclose(result.norms[name]["linf"], delta.abs().amax(1))
        if must_move:
            assert float(delta.abs().max()) > 0, f"attack did not perturb '{name}'"
