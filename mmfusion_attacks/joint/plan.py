"""What a joint attack does to each modality: one :class:`ModalityAttack` per attacked modality.

A plan names, per modality, a real toolkit attack (a tensor recipe of :mod:`mmfusion_attacks.recipes`
for ART / torchattacks, a TextAttack recipe of :mod:`mmfusion_attacks.text.recipes`) or a seeded text
augmenter, with that modality's own budget. :func:`build_steps` turns the plan for one subset of
modalities into the toolkit attacks that run it: tensor modalities that share a recipe become ONE
toolkit attack on a multi-modality surface with per-modality budgets (gradient-joint); every other
entry is a step of its own. Nothing here implements an attack.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import EmptySubsetError, UnknownModalityError, UnsupportedAttackError
from ..fusion import FusionModel

__all__ = ["ModalityAttack", "JointStep", "build_steps", "check_order", "check_plan"]

#: text-side kinds: a TextAttack recipe, or a seeded augmenter (not optimised against the model)
TEXT_KINDS = ("text-attack", "text-augment")
_AUGMENTERS = ("synonym", "deletion")


@dataclass(frozen=True)
class ModalityAttack:
    """How one modality is attacked.

    ``attack``: a tensor recipe name (``"pgd"``, ``"fgsm"``, ``"square"``...; see
    :func:`~mmfusion_attacks.recipes.list_recipes`) for image / tensor modalities, a TextAttack recipe
    name (``"deepwordbug"``, ``"pwws"``...) or ``"synonym"`` / ``"deletion"`` (seeded augmenters) for
    text. ``budget``: eps in the modality's own units for tensor recipes (``None``: its threat model), the
    query budget for TextAttack recipes (``None``: unlimited), the fraction of words for augmenters.
    ``options`` go to the recipe (``steps``, ``norm``...)."""

    modality: str
    attack: str
    budget: float | None = None
    toolkit: str = "torchattacks"
    steps: int = 10
    seed: int = 0
    options: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:  # hashable (grid cells are dict keys): options kept as sorted pairs
        items = self.options.items() if isinstance(self.options, Mapping) else self.options
        object.__setattr__(self, "options", tuple(sorted(items)))

    def kind(self, fusion: FusionModel) -> str:
        """``"attack"`` (tensor), ``"text-attack"`` or ``"text-augment"``."""
        mod = fusion.modality(self.modality)
        if mod.kind != "text":
            return "attack"
        return "text-augment" if self.attack.lower() in _AUGMENTERS else "text-attack"

    @property
    def label(self) -> str:
        amount = "" if self.budget is None else f" {self.budget:g}"
        return f"{self.attack.upper()}{amount} on {self.modality}"


@dataclass
class JointStep:
    """One toolkit call inside a joint attack: ``attack`` is the built toolkit object (or augmenter) and
    ``entries`` the plan entries it runs (several for a gradient-joint tensor attack)."""

    kind: str
    modalities: tuple[str, ...]
    entries: tuple[ModalityAttack, ...]
    attack: Any

    @property
    def label(self) -> str:
        if len(self.entries) == 1:
            return self.entries[0].label
        e = self.entries[0]
        budgets = ", ".join(f"{x.modality} {x.budget:g}" if x.budget is not None else x.modality for x in self.entries)
        return f"{e.attack.upper()} on {'+'.join(self.modalities)} ({budgets})"


def check_plan(fusion: FusionModel, plan: Sequence[ModalityAttack]) -> None:
    """Refuse, before any work, a plan the model or the toolkits cannot run: an unknown modality, a
    modality planned twice, a tensor recipe on text or a text recipe on a tensor modality, a recipe or
    toolkit that does not exist, a bad budget."""
    if not plan:
        raise EmptySubsetError("a joint attack needs at least one modality to attack")
    seen: set[str] = set()
    for entry in plan:
        if not isinstance(entry, ModalityAttack):
            raise TypeError(f"a joint plan holds ModalityAttack entries, got {type(entry).__name__}")
        if entry.modality not in fusion.modalities:
            raise UnknownModalityError(
                f"the plan attacks modality '{entry.modality}', which this model does not have (its modalities: {fusion.names})"
            )
        if entry.modality in seen:
            raise ValueError(f"modality '{entry.modality}' appears twice in the plan: give one ModalityAttack per modality")
        seen.add(entry.modality)
        kind = entry.kind(fusion)
        if entry.budget is not None and (isinstance(entry.budget, bool) or not isinstance(entry.budget, (int, float)) or not math.isfinite(entry.budget) or entry.budget < 0):
            raise ValueError(f"modality '{entry.modality}': budget must be a finite number >= 0 or None, got {entry.budget!r}")
        if kind == "attack":
            names = _tensor_recipe_names(entry.toolkit)
            if entry.attack.lower() not in names:
                text_like = _is_text_recipe(entry.attack)
                raise UnsupportedAttackError(
                    f"modality '{entry.modality}' is a {fusion.modality(entry.modality).kind} modality: "
                    + (f"'{entry.attack}' is a text attack. " if text_like else "")
                    + f"{entry.toolkit} recipes for tensors are {sorted(names)}"
                )
            _tensor_eps(fusion, entry)  # a zero eps would fail later inside a toolkit, naming no modality
        elif kind == "text-attack":
            if not _is_text_recipe(entry.attack):
                from ..text.recipes import list_text_attacks

                tensor = entry.attack.lower() in {n for t in ("torchattacks", "art") for n in _tensor_recipe_names(t)}
                raise UnsupportedAttackError(
                    f"modality '{entry.modality}' is text: "
                    + (f"'{entry.attack}' is a tensor attack (it perturbs numbers, not words). " if tensor or entry.attack.lower() in ("jsma", "deepfool", "cw") else f"'{entry.attack}' is no text attack. ")
                    + f"Text attacks: {sorted(r['name'] for r in list_text_attacks())} or the augmenters {list(_AUGMENTERS)}"
                )
            if entry.budget is not None and (entry.budget < 1 or entry.budget != int(entry.budget)):
                raise ValueError(f"modality '{entry.modality}': a TextAttack budget is a query count >= 1, got {entry.budget!r}")
        elif entry.budget is not None and not 0 < entry.budget <= 1:
            raise ValueError(f"modality '{entry.modality}': an augmenter's budget is a fraction of words in (0, 1], got {entry.budget!r}")


def check_order(plan: Sequence[ModalityAttack], order: Sequence[str]) -> None:
    """``order`` names each planned modality at most once and nothing else (a typo is an error, not a
    modality silently left to the default order)."""
    planned = [e.modality for e in plan]
    if isinstance(order, str):
        raise ValueError(f"order must be a list of modality names, got the string {order!r}")
    unknown = [m for m in order if m not in planned]
    if unknown or len(set(order)) != len(order):
        raise ValueError(f"order {list(order)} must list each planned modality once ({planned})" + (f": {unknown} not planned" if unknown else ""))


def _tensor_eps(fusion: FusionModel, entry: ModalityAttack) -> float:
    """A tensor entry's eps: its budget, or (``None``) its modality's threat model; finite and > 0."""
    from ..recipes import attack_eps

    eps = attack_eps(fusion, entry.modality, entry.budget)[entry.modality]
    source = "its threat model's eps" if entry.budget is None else "budget"
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"modality '{entry.modality}': a tensor attack needs an eps > 0 (finite), {source} is {eps!r}")
    return float(eps)


def check_single_change(fusion: FusionModel, plan: Sequence[ModalityAttack]) -> None:
    """Refuse a plan attacking several modalities of a model that scores rows with at most one modality
    changed (a :class:`~mmfusion_attacks.models.contrastive.CaptionMatcher` finds a row's gallery pair by
    its unchanged image or caption): it would fail mid-run with row indices of a sub-batch."""
    if len({e.modality for e in plan}) < 2:
        return
    from ..models.contrastive import CaptionMatcher

    matcher = next((m for m in fusion.model.modules() if isinstance(m, CaptionMatcher)), None)
    if matcher is not None:
        raise UnsupportedAttackError(
            f"modalities {[e.modality for e in plan]}: the model is a CaptionMatcher (image-caption retrieval), which scores "
            f"a row with at most one of '{matcher.image_name}' / '{matcher.text_name}' changed (it finds the row's gallery "
            "pair by the other): attack one modality at a time (worst_case_over_subsets(..., subsets=[(m,) for m in ...]))"
        )


def _tensor_recipe_names(toolkit: str) -> set[str]:
    from ..recipes import list_recipes

    return {name for name, tk in list_recipes() if tk == toolkit}


def _is_text_recipe(name: str) -> bool:
    try:
        from ..text.recipes import get_text_attack

        get_text_attack(name)
        return True
    except KeyError:
        return False


def build_steps(fusion: FusionModel, plan: Sequence[ModalityAttack], *, order: Sequence[str] | None = None) -> list[JointStep]:
    """The toolkit attacks that run ``plan`` on ``fusion``: tensor entries sharing (recipe, toolkit, steps,
    options) merge into one gradient-joint attack with per-modality budgets; text entries are one step
    each. Steps run tensor first, then text, unless ``order`` lists modalities in the order to attack."""
    from ..recipes import make_attack

    check_plan(fusion, plan)
    check_single_change(fusion, plan)
    if order is not None:
        check_order(plan, order)
    groups: dict[tuple, list[ModalityAttack]] = {}
    for entry in plan:
        kind = entry.kind(fusion)
        if kind == "attack":
            key = ("attack", entry.attack.lower(), entry.toolkit, entry.steps, entry.options)
        else:
            key = (kind, entry.modality)
        groups.setdefault(key, []).append(entry)
    steps = []
    for key, entries in groups.items():
        mods = tuple(e.modality for e in entries)
        kind = key[0]
        if kind == "attack":
            e = entries[0]
            eps = {x.modality: x.budget for x in entries}  # None: that modality's threat model
            attack = make_attack(e.attack, fusion, mods, toolkit=e.toolkit, eps=eps, steps=e.steps, **dict(e.options))
        elif kind == "text-attack":
            attack = _text_attack(fusion, entries[0])
        else:
            attack = _augmenter(entries[0])
        steps.append(JointStep(kind, mods, tuple(entries), attack))
    if order is None:
        steps.sort(key=lambda s: s.kind != "attack")
    else:
        rank = {m: i for i, m in enumerate(order)}
        steps.sort(key=lambda s: min(rank.get(m, len(rank)) for m in s.modalities))
    return steps


def _text_attack(fusion: FusionModel, entry: ModalityAttack) -> Any:
    from ..adapters.textattack import FusionModelWrapper
    from ..text.recipes import build_text_attack

    budget = int(entry.budget) if entry.budget is not None else None
    wrapper = FusionModelWrapper(fusion, entry.modality, long_text="skip")
    return build_text_attack(entry.attack, wrapper, query_budget=budget, **dict(entry.options))


def _augmenter(entry: ModalityAttack) -> Any:
    from ..text.augment import SynonymSubstitution, WordDeletion

    make = {"synonym": SynonymSubstitution, "deletion": WordDeletion}[entry.attack.lower()]
    return make(entry.budget if entry.budget is not None else 0.2, seed=entry.seed)
