"""torchattacks called directly on a surface (``atk(x, y)``, ``atk.save(loader)``), not through run_attack:
the adapter's refusals and the frozen-modality pairing hold there too, and modes come back as they were."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from conftest import CLASSES, TinyFusionClassifier, make_batch
from mmfusion_attacks.adapters.torchattacks import to_torchattacks

from mmfusion_attacks import FusionModel, RowAlignmentError, UnsupportedAttackError, run_attack


def _fusion():
    torch.manual_seed(0)
    return FusionModel(TinyFusionClassifier(), ["rgb", "ir"], num_classes=CLASSES)


def _pgd(surface):
    return torchattacks.PGD(surface, eps=8 / 255, alpha=2 / 255, steps=1)


def test_an_attack_called_on_rows_that_are_not_the_bound_batch_is_refused():
    """A full-size query is paired by position: a batch never bound, or the bound one reordered, would
    meet the bound batch's frozen modalities. The attack's own input is checked before its first query."""
    fusion = _fusion()
    surface = to_torchattacks(fusion, "rgb")
    seen = []
    fusion.model.register_forward_pre_hook(lambda m, a, k: seen.append(k["ir"].clone()), with_kwargs=True)
    b1, b2, y = make_batch(n=3, seed=0), make_batch(n=3, seed=5), torch.tensor([0, 1, 2])
    with surface.bound(b1) as x1:
        _pgd(surface)(x1, y)  # the bound batch: fine
        with pytest.raises(RowAlignmentError, match="not within the pairing radius of example 0"):
            _pgd(surface)(surface.pack(b2), y)
        with pytest.raises(RowAlignmentError, match="not the bound examples in their order"):
            _pgd(surface)(x1[torch.tensor([1, 0, 2])], y)
        _pgd(surface)(x1[:2], y[:2])  # a subset: paired by content
    assert seen and all(torch.equal(t, b1["ir"][: len(t)]) for t in seen)

    data, labels = make_batch(n=6, seed=0), torch.tensor([0, 1, 2, 3, 0, 1])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(surface.pack(data), labels), batch_size=3)
    with surface.bound({k: v[:3] for k, v in data.items()}), pytest.raises(RowAlignmentError):
        _pgd(surface).save(loader, verbose=False)  # its second batch was never bound
    with surface.bound(data, pairing="content"):
        _pgd(surface).save(loader, verbose=False)  # the whole data bound: each batch paired with its own rows


def test_direct_calls_get_the_adapters_refusals_and_keep_mixed_modes():
    fusion = _fusion()
    surface = to_torchattacks(fusion, "ir")
    b, y = make_batch(n=3), torch.tensor([0, 1, 2])
    atk = _pgd(surface)
    atk.set_normalization_used(mean=[0.5], std=[0.25])
    with surface.bound(b) as x, pytest.raises(UnsupportedAttackError, match="set_normalization_used"):
        atk(x, y)

    fusion.train()
    kept_in_eval = next(m for m in fusion.model.modules() if m is not fusion.model)
    kept_in_eval.eval()  # e.g. frozen batch norm in a training model
    modes = [m.training for m in fusion.modules()]
    x = surface.bind(b)  # bound without freezing: torchattacks sets the mode itself
    try:
        _pgd(surface)(x, y)
    finally:
        surface.unbind()
    assert [m.training for m in fusion.modules()] == modes


def test_a_multiattack_with_targeted_parts_is_refused():
    """MultiAttack scores untargeted; a targeted part would take the labels as targets."""
    fusion = _fusion()
    surface = to_torchattacks(fusion, "ir")
    targeted = _pgd(surface)
    targeted.set_mode_targeted_by_label()
    multi = torchattacks.MultiAttack([_pgd(surface), targeted])
    with pytest.raises(UnsupportedAttackError, match="targeted"):
        run_attack(multi, make_batch(n=3), torch.tensor([0, 1, 2]))
    run_attack(torchattacks.MultiAttack([_pgd(surface), _pgd(surface)]), make_batch(n=3), torch.tensor([0, 1, 2]))
