"""Attack recipes by name: ``make_attack("pgd", fusion, ["rgb", "ir"], toolkit="art", eps={"rgb": 8/255, "ir": 16/255})``.

A recipe only *configures* a stock toolkit attack (never re-implements one). ``eps`` (and ``step_size``)
is a float or a ``{modality: eps}`` mapping, in each modality's own units. Different budgets per
modality work with both toolkits: ART gets per-element eps arrays, torchattacks a surface scaled so
that its one scalar eps is each modality's own budget. Register your own with
``@register_recipe("name", "toolkit", builds="module:Class", sets=("eps", ...))``: ``builds`` and
``sets`` (the options the recipe gives the class itself) let a spec's ``attack_kwargs`` be checked
before any work (:func:`recipe_options`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import UnsupportedAttackError
from .fusion import FusionModel

__all__ = ["register_recipe", "make_attack", "list_recipes", "recipe_targets", "recipe_declaration", "recipe_options", "attack_eps"]

Recipe = Callable[..., Any]
_RECIPES: dict[tuple[str, str], Recipe] = {}
_TARGETS: dict[str, str] = {}
_BUILDS: dict[tuple[str, str], tuple[str | None, frozenset[str]]] = {}
#: what make_attack sets for every recipe (the harness passes them per cell)
_MAKE_ATTACK_SETS = frozenset({"eps", "steps", "toolkit"})


def register_recipe(
    name: str, toolkit: str, *, targets: str | None = None, builds: str | None = None, sets: Sequence[str] = ()
) -> Callable[[Recipe], Recipe]:
    """``targets="least-likely"`` marks a targeted recipe whose per-pixel targets are the clean model's
    least likely classes (the grid computes them and passes ``targets=`` to :func:`run_attack`).
    ``builds="module:Class"`` names the toolkit class it configures and ``sets`` the options it gives that
    class itself, so :func:`recipe_options` can check a spec's extra options before any work."""

    def add(fn: Recipe) -> Recipe:
        _RECIPES[(name.lower(), toolkit)] = fn
        _BUILDS[(name.lower(), toolkit)] = (builds, frozenset(sets))
        if targets:
            _TARGETS[name.lower()] = targets
        return fn

    return add


def recipe_declaration(name: str, toolkit: str) -> tuple[str | None, frozenset[str]]:
    """What a recipe declared when registered: the toolkit class it builds (``"module:Class"``, None: not
    said) and the options it gives that class itself."""
    key = (name.lower(), toolkit)
    if key not in _RECIPES:
        raise KeyError(f"no recipe '{name}' for toolkit '{toolkit}'; available: {list_recipes()}")
    return _BUILDS[key]


def recipe_options(name: str, toolkit: str) -> tuple[frozenset[str], frozenset[str] | None]:
    """For ``make_attack(name, ..., toolkit=toolkit, **options)``: the options set already (by make_attack
    or the recipe: given again they would clash) and the options accepted (``step_size``, the recipe's own
    keyword parameters, the built class's; None: not known, e.g. a class taking ``**kwargs``). Imports the
    toolkit class."""
    import importlib
    import inspect

    builds, sets = recipe_declaration(name, toolkit)
    reserved = _MAKE_ATTACK_SETS | sets
    params = list(inspect.signature(_RECIPES[(name.lower(), toolkit)]).parameters.values())[5:]  # after (fusion, attacked, eps, step, steps)
    accepted = {"step_size"} | {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if any(p.kind == p.VAR_KEYWORD for p in params):
        if builds is None:
            return reserved, None
        module, _, attr = builds.partition(":")
        cls_params = list(inspect.signature(getattr(importlib.import_module(module), attr)).parameters.values())[1:]  # after the model
        if any(p.kind == p.VAR_KEYWORD for p in cls_params):
            return reserved, None
        accepted |= {p.name for p in cls_params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return reserved, frozenset(accepted - reserved)


def recipe_targets(name: str) -> str | None:
    return _TARGETS.get(name.lower())


def list_recipes() -> list[tuple[str, str]]:
    return sorted(_RECIPES)


def attack_eps(
    fusion: FusionModel, attacked: str | Sequence[str], eps: float | Mapping[str, float | None] | None
) -> dict[str, float]:
    """Each attacked modality's eps (its own units): ``eps`` as given, per modality in a mapping, and its
    threat model's eps where it is None (for all, or for a mapping's entry)."""
    names = [attacked] if isinstance(attacked, str) else list(attacked)
    if isinstance(eps, Mapping):
        missing = [n for n in names if n not in eps]
        if missing:
            raise UnsupportedAttackError(f"no eps given for attacked modality '{missing[0]}'")
    out = {}
    for n in names:
        given = eps.get(n) if isinstance(eps, Mapping) else eps
        if given is None:
            threat = fusion.modality(n).threat
            if threat is None:
                raise UnsupportedAttackError(f"modality '{n}' has no threat model; pass eps=")
            given = threat.eps
        out[n] = float(given)
    return out


def _ta_surface(fusion: FusionModel, attacked: Sequence[str], eps: dict[str, float], step: dict[str, float]):
    """A torchattacks surface on which one scalar eps is each modality's budget, that eps and the step."""
    from .adapters.torchattacks import to_torchattacks

    surface = to_torchattacks(fusion, attacked, budget=eps)
    steps = [step[n] / surface.units.scale[n] for n in surface.attacked]
    if max(steps) - min(steps) > 1e-9 * max(max(steps), 1e-12):
        raise UnsupportedAttackError(
            f"torchattacks takes one scalar step: per-modality step sizes {step} must be proportional to the "
            f"budgets {eps}"
        )
    return surface, surface.eps, steps[0]


def make_attack(
    name: str,
    fusion: FusionModel,
    attacked: str | Sequence[str],
    *,
    toolkit: str = "torchattacks",
    eps: float | Mapping[str, float] | None = None,
    steps: int = 10,
    step_size: float | Mapping[str, float] | None = None,
    **kwargs: Any,
) -> Any:
    """A configured toolkit attack on ``fusion.surface(attacked)``, ready for :func:`run_attack`.

    ``eps`` defaults to each modality's threat model; ``step_size`` to ``2.5 * eps / steps``.
    """
    key = (name.lower(), toolkit)
    if key not in _RECIPES:
        raise KeyError(f"no recipe '{name}' for toolkit '{toolkit}'; available: {list_recipes()}")
    budget = attack_eps(fusion, attacked, eps)
    if step_size is None:
        step = {n: 2.5 * e / max(steps, 1) for n, e in budget.items()}
    else:
        step = attack_eps(fusion, attacked, step_size)
    return _RECIPES[key](fusion, attacked, budget, step, steps, **kwargs)


# ---------------------------------------------------------------- torchattacks
@register_recipe("fgsm", "torchattacks", builds="torchattacks:FGSM", sets=("eps",))
def _ta_fgsm(fusion, attacked, eps, step, steps, **kw):
    import torchattacks

    surface, e, _ = _ta_surface(fusion, attacked, eps, step)
    return torchattacks.FGSM(surface, eps=e, **kw)


@register_recipe("pgd", "torchattacks", builds="torchattacks:PGD", sets=("eps", "alpha"))
def _ta_pgd(fusion, attacked, eps, step, steps, **kw):
    import torchattacks

    surface, e, a = _ta_surface(fusion, attacked, eps, step)
    return torchattacks.PGD(surface, eps=e, alpha=a, steps=steps, **kw)


# ---------------------------------------------------------------- ART
def _art_budgets(est, *budgets: dict[str, float]):
    """Each budget (given in each modality's own units) in the estimator's units: scalars when every
    element shares it, else per-element arrays for all (ART wants eps and eps_step of the same type)."""
    from .adapters.art import eps_array

    arrays = [eps_array(est, b) for b in budgets]
    if all(float(a.min()) == float(a.max()) for a in arrays):
        return [float(a.flat[0]) for a in arrays]
    return arrays


@register_recipe("fgsm", "art", builds="art.attacks.evasion:FastGradientMethod", sets=("eps", "eps_step"))
def _art_fgsm(fusion, attacked, eps, step, steps, **kw):
    from art.attacks.evasion import FastGradientMethod

    from .adapters.art import to_art

    est = to_art(fusion, attacked)
    (e,) = _art_budgets(est, eps)
    return FastGradientMethod(est, eps=e, eps_step=e, **kw)


@register_recipe("pgd", "art", builds="art.attacks.evasion:ProjectedGradientDescent", sets=("eps", "eps_step", "max_iter"))
def _art_pgd(fusion, attacked, eps, step, steps, **kw):
    from art.attacks.evasion import ProjectedGradientDescent

    from .adapters.art import to_art

    est = to_art(fusion, attacked)
    kw.setdefault("verbose", False)
    e, s = _art_budgets(est, eps, step)
    return ProjectedGradientDescent(est, eps=e, eps_step=s, max_iter=steps, **kw)


@register_recipe("bim", "torchattacks", builds="torchattacks:BIM", sets=("eps", "alpha"))
def _ta_bim(fusion, attacked, eps, step, steps, **kw):
    import torchattacks

    surface, e, a = _ta_surface(fusion, attacked, eps, step)
    return torchattacks.BIM(surface, eps=e, alpha=a, steps=steps, **kw)


@register_recipe("fgsm2", "torchattacks", targets="least-likely", builds="torchattacks:FGSM", sets=("eps",))
def _ta_fgsm2(fusion, attacked, eps, step, steps, **kw):
    """FGSM II: one step towards each pixel's least-likely class."""
    atk = _ta_fgsm(fusion, attacked, eps, step, steps, **kw)
    atk.set_mode_targeted_by_label(quiet=True)
    return atk


@register_recipe("ifgsm2", "torchattacks", targets="least-likely", builds="torchattacks:BIM", sets=("eps", "alpha"))
def _ta_ifgsm2(fusion, attacked, eps, step, steps, **kw):
    """Iterative FGSM II: BIM towards each pixel's least-likely class."""
    atk = _ta_bim(fusion, attacked, eps, step, steps, **kw)
    atk.set_mode_targeted_by_label(quiet=True)
    return atk


@register_recipe("eotpgd", "torchattacks", builds="torchattacks:EOTPGD", sets=("eps", "alpha"))
def _ta_eotpgd(fusion, attacked, eps, step, steps, eot_iter: int = 8, **kw):
    """PGD with expectation over the model's randomness (torchattacks.EOTPGD)."""
    import torchattacks

    surface, e, a = _ta_surface(fusion, attacked, eps, step)
    return torchattacks.EOTPGD(surface, eps=e, alpha=a, steps=steps, eot_iter=eot_iter, **kw)


@register_recipe("segpgd", "torchattacks", builds="mmfusion_attacks.attacks:SegPGD", sets=("eps", "alpha"))
def _segpgd(fusion, attacked, eps, step, steps, **kw):
    from .attacks import SegPGD

    surface, e, a = _ta_surface(fusion, attacked, eps, step)
    return SegPGD(surface, eps=e, alpha=a, steps=steps, **kw)


@register_recipe("cospgd", "torchattacks", builds="mmfusion_attacks.attacks:CosPGD", sets=("eps", "alpha"))
def _cospgd(fusion, attacked, eps, step, steps, **kw):
    from .attacks import CosPGD

    surface, e, a = _ta_surface(fusion, attacked, eps, step)
    return CosPGD(surface, eps=e, alpha=a, steps=steps, **kw)


@register_recipe("bim", "art", builds="art.attacks.evasion:BasicIterativeMethod", sets=("eps", "eps_step", "max_iter"))
def _art_bim(fusion, attacked, eps, step, steps, **kw):
    from art.attacks.evasion import BasicIterativeMethod

    from .adapters.art import to_art

    est = to_art(fusion, attacked)
    e, s = _art_budgets(est, eps, step)
    kw.setdefault("verbose", False)
    return BasicIterativeMethod(est, eps=e, eps_step=s, max_iter=steps, **kw)


@register_recipe("fgsm2", "art", targets="least-likely", builds="art.attacks.evasion:FastGradientMethod", sets=("eps", "eps_step", "targeted"))
def _art_fgsm2(fusion, attacked, eps, step, steps, **kw):
    return _art_fgsm(fusion, attacked, eps, step, steps, targeted=True, **kw)


@register_recipe("ifgsm2", "art", targets="least-likely", builds="art.attacks.evasion:BasicIterativeMethod", sets=("eps", "eps_step", "max_iter", "targeted"))
def _art_ifgsm2(fusion, attacked, eps, step, steps, **kw):
    return _art_bim(fusion, attacked, eps, step, steps, targeted=True, **kw)


# ---------------------------------------------------------------- ART: minimum-norm and black-box attacks
@register_recipe("deepfool", "art", builds="art.attacks.evasion:DeepFool", sets=("max_iter",))
def _art_deepfool(fusion, attacked, eps, step, steps, **kw):
    """DeepFool (minimum-norm, white box): ``eps`` is not a budget; ``steps`` is its max_iter."""
    from art.attacks.evasion import DeepFool

    from .adapters.art import to_art

    kw.setdefault("verbose", False)
    return DeepFool(to_art(fusion, attacked), max_iter=steps, **kw)


@register_recipe("jsma", "art", targets="least-likely", builds="art.attacks.evasion:SaliencyMapMethod", sets=("theta",))
def _art_jsma(fusion, attacked, eps, step, steps, **kw):
    """JSMA (ART's SaliencyMapMethod, white box, L0, always targeted: the least-likely class): ``eps`` is the
    change per feature (theta), in the estimator's units; gamma (the fraction of features) defaults to 0.1."""
    from art.attacks.evasion import SaliencyMapMethod

    from .adapters.art import to_art

    est = to_art(fusion, attacked)
    (theta,) = _art_budgets(est, eps)
    kw.setdefault("verbose", False)
    kw.setdefault("gamma", 0.1)
    return SaliencyMapMethod(est, theta=float(theta) if not hasattr(theta, "shape") else float(theta.max()), **kw)


@register_recipe("square", "art", builds="art.attacks.evasion:SquareAttack", sets=("eps", "max_iter"))
def _art_square(fusion, attacked, eps, step, steps, **kw):
    """Square attack (score-based black box, Linf): ``steps`` is its max_iter (queries per example)."""
    from art.attacks.evasion import SquareAttack

    from .adapters.art import to_art

    est = to_art(fusion, attacked)
    (e,) = _art_budgets(est, eps)
    kw.setdefault("verbose", False)
    return SquareAttack(est, eps=e, max_iter=steps, **kw)


@register_recipe("hopskipjump", "art", builds="art.attacks.evasion:HopSkipJump", sets=("max_iter",))
def _art_hopskipjump(fusion, attacked, eps, step, steps, **kw):
    """HopSkipJump (decision-based black box, minimum L2 norm): ``eps`` is not a budget; ``steps`` is its
    max_iter; max_eval / init_eval default low (CPU-sized)."""
    from art.attacks.evasion import HopSkipJump

    from .adapters.art import to_art

    kw.setdefault("verbose", False)
    kw.setdefault("max_eval", 200)
    kw.setdefault("init_eval", 20)
    shape = _declared_shape(fusion, attacked)  # HopSkipJump reads the input shape when it is built
    est = to_art(fusion, attacked, **({"input_shape": shape} if shape is not None else {}))

    class SeededHopSkipJump(HopSkipJump):
        """ART's HopSkipJump, reproducible: ART draws each initial adversarial sample from an unseeded
        ``np.random.RandomState()`` (seeded by the OS: the same seeds gave Linf 0.60 / 0.85 / 0.82 on one
        model); here that generator is seeded from numpy's global one, which callers (the harness: per
        cell and batch) seed."""

        def _init_sample(self, *args, **kwargs):
            import numpy as np

            original = np.random.RandomState
            seed = int(np.random.randint(2**31 - 1))
            np.random.RandomState = lambda *a, **k: original(*a, **k) if (a or k) else original(seed)
            try:
                return super()._init_sample(*args, **kwargs)
            finally:
                np.random.RandomState = original

    return SeededHopSkipJump(est, max_iter=steps, **kw)


def _declared_shape(fusion: FusionModel, attacked: str | Sequence[str]) -> tuple[int, ...] | None:
    """The per-sample shape of one attacked modality whose shape the model declares in full, else None."""
    names = [attacked] if isinstance(attacked, str) else list(attacked)
    if len(names) != 1:
        return None
    shape = fusion.modality(names[0]).shape
    return tuple(shape) if shape is not None and all(isinstance(v, int) for v in shape) else None
