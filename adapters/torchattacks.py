"""torchattacks adapter: the attack surface *is* a torchattacks model.

    surface = to_torchattacks(fusion, "ir")          # nn.Module: ir tensor -> logits
    atk = torchattacks.PGD(surface, eps=8/255)
    result = run_attack(atk, batch, labels)          # or: with surface.bound(batch) as x: atk(x, labels)

torchattacks clamps every input to [0, 1] and takes one scalar eps. The surface shows it each
attacked modality mapped exactly onto [0, 1] by its declared valid range (a thermal camera in [0, 2]
or [-1, 1] works; eps is then a fraction of each modality's range), or, with ``budget={modality: eps}``,
scaled so that one scalar eps (``surface.eps``) is each modality's own budget. Results come back in
each modality's own units. Normalisation belongs inside the model (``FusionModel(normalize=)``), not
in ``Attack.set_normalization_used``. Segmentation logits ``(N, C, H, W)`` with labels ``(N, H, W)``
work unchanged with FGSM, PGD, PGDL2, BIM, MIFGSM (their cross-entropy is per pixel).

Bound by hand (``with surface.bound(batch) as x: atk(x, labels)``), the surface pairs a query of the
bound batch's size by row order wherever content agrees with it (``pairing="position"``): torchattacks
never reorders a full-size batch, and its input-diversity, scale-invariance and look-ahead queries
(DIFGSM, TIFGSM, SINIFGSM, NIFGSM, VNIFGSM) land as far from their own example as from any other, so
content alone cannot pair them. Subsets (APGD, FAB, Square, AutoAttack) are paired by content.

However an attack on a surface is called (``run_attack``, ``atk(x, y)``, ``atk.save(loader)``,
``MultiAttack``), :func:`check_call` runs first: the rows it is called on must be the bound examples
(a batch never bound raises ``RowAlignmentError``), and the refusals above (normalisation, segmentation
support, ``ignore_index`` labels) apply; every module's mode is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchattacks.attack import Attack

from mmfusion_attacks.errors import UnsupportedAttackError
from mmfusion_attacks.fusion import FusionModel
from mmfusion_attacks.modality import normalize_norm
from mmfusion_attacks.runner import AttackDriver, Budget, register_driver
from mmfusion_attacks.surface import AttackSurface, frozen_model_state

__all__ = ["to_torchattacks", "check_call", "TorchattacksDriver", "ROW_ALIGNED", "WITHIN_BUDGET", "SEGMENTATION_SUPPORTED"]

#: Attacks that only ever query their whole input batch, in order: safe to run batched.
#: Anything else (APGD, APGDT, FAB, Square, DeepFool, AutoAttack, OnePixel, Pixle, SparseFool, JSMA,
#: MultiAttack...) re-batches or takes subsets and runs one sample at a time.
ROW_ALIGNED = frozenset(
    {
        "FGSM", "PGD", "PGDL2", "BIM", "MIFGSM", "CW", "TPGD", "RFGSM", "FFGSM", "EOTPGD", "VMIFGSM",
        "VNIFGSM", "NIFGSM", "SINIFGSM", "DIFGSM", "TIFGSM", "Jitter", "UPGD", "GN", "VANILA",
    }
)  # fmt: skip

#: Bounded attacks that take subsets of rows but query only within their eps ball: batched, rows
#: paired with their examples by content.
WITHIN_BUDGET = frozenset({"APGD", "APGDT", "Square"})

#: Attacks that accept segmentation labels ``(N, H, W)`` (checked in tests/adapters).
SEGMENTATION_SUPPORTED = frozenset({"FGSM", "PGD", "PGDL2", "BIM", "MIFGSM", "EOTPGD"})


def _check_unit_range(surface: AttackSurface) -> None:
    """Every attacked modality's valid range, in the surface's units, within [0, 1] (per modality: no
    batch is needed, so surfaces whose packing depends on the data, images with waveforms, work too)."""
    lows, highs = [], []
    for name in surface.attacked:
        r = surface.fusion.modalities[name].valid_range
        if r is None:
            raise UnsupportedAttackError(
                f"modality '{name}' is unbounded, but torchattacks clamps every input to [0, 1]: declare its "
                "valid_range, or use ART"
            )
        lo, hi = (float(surface._to_toolkit(name, torch.tensor(v, dtype=torch.float64))) for v in r)
        lows.append(lo)
        highs.append(hi)
    if min(lows) < -1e-12 or max(highs) > 1 + 1e-12:
        raise UnsupportedAttackError(
            f"the surface shows {list(surface.attacked)} outside [0, 1], but torchattacks clamps every input to "
            "[0, 1]: build it with to_torchattacks(fusion, attacked), which maps each modality onto [0, 1]"
        )


def to_torchattacks(
    fusion: FusionModel, attacked: str | Sequence[str], *, budget: Mapping[str, float] | None = None
) -> AttackSurface:
    """One line from a :class:`FusionModel` to a module torchattacks can attack (only ``attacked`` moves).

    Each attacked modality is shown in [0, 1] (mapped exactly by its valid range), so ``eps`` is a
    fraction of each modality's range. ``budget={modality: eps}`` (each in its own units) instead
    scales the modalities so that ONE scalar eps, ``surface.eps``, is each one's budget:
    ``torchattacks.PGD(s, eps=s.eps, alpha=s.eps / 4)``. Bound batches are paired by row order where
    content agrees (torchattacks never reorders a full-size batch; see the module docstring).
    """
    surface = AttackSurface(
        fusion, attacked, units=budget if budget is not None else "unit", flat_as_image=True, pairing="position"
    )
    _check_unit_range(surface)
    return surface


class TorchattacksDriver(AttackDriver):
    toolkit = "torchattacks"
    row_aligned = ROW_ALIGNED
    within_budget = WITHIN_BUDGET

    def accepts(self, attack: Any) -> bool:
        return isinstance(attack, Attack)

    def surface(self, attack: Attack) -> AttackSurface:
        surface = attack.model
        if not isinstance(surface, AttackSurface):
            raise UnsupportedAttackError(
                f"torchattacks.{type(attack).__name__} was built on {type(surface).__name__}; build it on "
                "to_torchattacks(fusion, attacked) so only the attacked modalities are exposed"
            )
        _check_unit_range(surface)
        if getattr(attack, "_normalization_applied", False) or getattr(attack, "normalization_used", None):
            raise UnsupportedAttackError(
                "set_normalization_used() changes torchattacks' input contract; put mean/std inside the model "
                "with FusionModel(normalize=...) instead"
            )
        targeted_parts = [type(a).__name__ for a in getattr(attack, "attacks", None) or () if getattr(a, "targeted", False)]
        if targeted_parts and not attack.targeted:
            raise UnsupportedAttackError(
                f"torchattacks.{type(attack).__name__} keeps a row once its prediction leaves the label (untargeted), "
                f"but {targeted_parts} are targeted: their labels would be taken as targets and the run scored "
                "untargeted. Run targeted attacks on their own"
            )
        seg_ok = type(attack).__name__ in SEGMENTATION_SUPPORTED or getattr(attack, "supports_segmentation", False)
        if surface.fusion.task == "segmentation" and not seg_ok:
            raise UnsupportedAttackError(
                f"torchattacks.{type(attack).__name__} does not support segmentation labels (N, H, W); "
                f"supported: {sorted(SEGMENTATION_SUPPORTED)}"
            )
        if surface.fusion.task == "segmentation" and attack.targeted and attack.attack_mode != "targeted(label)":
            raise UnsupportedAttackError(
                f"torchattacks {attack.attack_mode} mode picks one target per image and fails on (N, H, W) "
                "labels; use set_mode_targeted_by_label() with per-pixel targets"
            )
        return surface

    def targeted(self, attack: Attack) -> bool:
        return bool(attack.targeted)

    def auto_targets(self, attack: Attack, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """The targets of torchattacks' random / least-likely / custom modes, from its own functions."""
        if attack.attack_mode == "targeted(label)":
            return None
        return attack.get_target_label(x, labels).to(labels.device).long()

    def honours_bounds(self, attack: Attack, surface: AttackSurface) -> bool:
        bounds = surface.bounds()  # narrower per-modality ranges are projected afterwards
        return bounds is not None and not isinstance(bounds[0], torch.Tensor) and tuple(bounds) == (0.0, 1.0)

    def generate(self, attack: Attack, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if attack.targeted and attack.attack_mode != "targeted(label)":
            # the runner computed (or was given) the targets: run with them, then restore the mode
            mode = attack.attack_mode
            attack.attack_mode = "targeted(label)"
            try:
                return attack(x, y)
            finally:
                attack.attack_mode = mode
        return attack(x, y)  # checked by the call hook below (check_call)

    def budget(self, attack: Attack, surface: AttackSurface) -> Budget | None:
        eps = getattr(attack, "eps", None)
        if not isinstance(eps, (int, float)):
            return None
        norm = getattr(attack, "norm", "2" if type(attack).__name__.endswith("L2") else "inf")
        return Budget(normalize_norm(norm), float(eps))



_DRIVER = TorchattacksDriver()
register_driver(_DRIVER)


def check_call(attack: Attack, inputs: Any, labels: Any) -> None:
    """What torchattacks would get silently wrong on a fusion surface, refused before its first query
    however the attack is called (``run_attack``, ``atk(x, y)``, ``atk.save(loader)``, ``MultiAttack``):
    the driver's refusals (normalisation, segmentation support, ranges), labels holding ``ignore_index``,
    TIFGSM on other than 3 channels, and input rows that are not the bound examples."""
    surface = _DRIVER.surface(attack)
    ignore = surface.fusion.ignore_index
    if ignore is not None and isinstance(labels, torch.Tensor) and bool((labels == ignore).any()):
        raise UnsupportedAttackError(
            f"labels contain ignore_index={ignore}, but torchattacks' cross-entropy has no ignore_index; "
            "use the ART adapter (its segmentation estimator honours ignore_index)"
        )
    if isinstance(inputs, torch.Tensor):
        if type(attack).__name__ == "TIFGSM" and (inputs.ndim != 4 or inputs.shape[1] != 3):
            raise UnsupportedAttackError(
                f"torchattacks.TIFGSM builds its smoothing kernel for 3 channels; the attacked tensor of "
                f"{list(surface.attacked)} has shape {tuple(inputs.shape[1:])}"
            )
        surface.check_attack_inputs(inputs)


def _install_call_hook() -> None:
    """``Attack.__call__`` on an :class:`AttackSurface`: :func:`check_call` first, and every module's mode
    and every parameter's ``requires_grad`` restored afterwards (torchattacks sets ``model.train()`` back
    wholesale, which would switch on modules the user keeps in eval). Other models: torchattacks unchanged."""
    if getattr(Attack, "_mmfusion_hook", False):
        return
    original = Attack.__call__

    def __call__(self, inputs, labels=None, *args, **kwargs):
        if not isinstance(getattr(self, "model", None), AttackSurface):
            return original(self, inputs, labels, *args, **kwargs)
        check_call(self, inputs, labels)
        with frozen_model_state(self.model, eval_mode=False):
            return original(self, inputs, labels, *args, **kwargs)

    __call__.__doc__ = original.__doc__
    Attack.__call__ = __call__
    Attack._mmfusion_hook = True


_install_call_hook()
