"""The attack surface: what a toolkit sees when only some modalities are attacked.

An :class:`AttackSurface` is an ``nn.Module`` whose *only* input is the attacked modalities packed
into one tensor; the frozen modalities are held inside it as context. A toolkit therefore cannot
perturb, project, or spend an Lp budget on a frozen modality: those tensors never enter its arrays.
This is the one place where the frozen-modality guarantee lives (masks and gradient hooks leak;
see ``docs/design.md``).

Packing: when every attacked modality is an image with the same spatial size, they are concatenated
along channels (``(N, sum C, H, W)``, so image attacks like Square still see an image); otherwise each is
flattened and concatenated (``(N, D)``, or ``(N, 1, 1, D)`` with ``flat_as_image=True`` for toolkits
that assume 4-D inputs).

Units: the toolkit sees each attacked modality through an exact affine map ``u = (x - offset) / scale``
(``units="native"``: the identity; ``"unit"``: every bounded modality mapped to [0, 1], so a toolkit
that only knows [0, 1] can attack a thermal camera declared in [0, 2]; a mapping of per-modality
budgets: scaled so one scalar eps, :attr:`AttackSurface.eps`, is each modality's own budget).

Pairing: every query row is paired with the frozen modalities of ITS example by content, within
the threat model or by a wide margin; a surface made for a toolkit that keeps row order
(``pairing="position"``, as ``to_torchattacks`` makes them) also pairs full-size queries by their order
where content does not contradict it (:mod:`mmfusion_attacks.pairing`). Rows that cannot be paired
raise :class:`~mmfusion_attacks.errors.RowAlignmentError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import EmptySubsetError, RowAlignmentError, UnknownModalityError, UnsupportedAttackError
from .fusion import FusionModel
from .modality import normalize_norm
from .pairing import PAIRING_MODES, ContextTable, Pairing, RadiusPart

__all__ = ["AttackSurface", "Packing", "Units", "frozen_model_state", "unfrozen"]

Radius = float | tuple[str, float] | Mapping[str, float | tuple[str, float]] | None


class frozen_model_state:
    """Context manager: eval mode and no parameter gradients inside; every module's mode and every
    parameter's ``requires_grad`` restored on exit (even when the attack raises).

    The saved state is recorded on the model so that :func:`unfrozen` can lift the freeze for a
    training call made inside the block (``with surface.bound(batch): est.fit(...)``)."""

    def __init__(self, model: torch.nn.Module, *, eval_mode: bool = True) -> None:
        self.model, self.eval_mode = model, eval_mode

    def __enter__(self) -> torch.nn.Module:
        self._modes = [(m, m.training) for m in self.model.modules()]
        self._grads = [(p, p.requires_grad) for p in self.model.parameters()]
        stack = self.model.__dict__.setdefault("_mmfusion_frozen", [])
        stack.append(self)
        if self.eval_mode:
            self.model.eval()
        for p, _ in self._grads:
            p.requires_grad_(False)
        return self.model

    def __exit__(self, *exc: Any) -> None:
        for m, mode in self._modes:
            m.training = mode
        for p, flag in self._grads:
            p.requires_grad_(flag)
        stack = self.model.__dict__.get("_mmfusion_frozen", [])
        if stack and stack[-1] is self:
            stack.pop()


@contextmanager
def unfrozen(model: torch.nn.Module) -> Iterator[None]:
    """Inside a :class:`frozen_model_state` block, give parameters back the ``requires_grad`` they had
    before it (for training); the freeze resumes on exit. Outside such a block: nothing to do."""
    stack = model.__dict__.get("_mmfusion_frozen") or []
    if not stack:
        yield
        return
    outer = stack[0]
    now = [(p, p.requires_grad) for p in model.parameters()]
    for p, flag in outer._grads:
        p.requires_grad_(flag)
    try:
        yield
    finally:
        for p, flag in now:
            p.requires_grad_(flag)


@dataclass(frozen=True)
class Packing:
    """How the attacked modalities sit inside the packed tensor (per-sample shapes, offsets)."""

    layout: str  # "channels" or "flat"
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]  # per-sample shape of each modality
    sizes: tuple[int, ...]  # channels (layout "channels") or flattened sizes (layout "flat")
    as_image: bool = False  # flat layout presented as (1, 1, D)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        if self.layout == "channels":
            return (sum(self.sizes), *self.shapes[0][1:])
        return (1, 1, sum(self.sizes)) if self.as_image else (sum(self.sizes),)

    @property
    def features(self) -> int:
        return int(math.prod(self.sample_shape))

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes):
            out[name] = slice(start, start + size)
            start += size
        return out

    def flat_spans(self) -> dict[str, tuple[int, int]]:
        """Each modality's span in a flattened packed row (channels are outermost, so spans are contiguous)."""
        per = 1 if self.layout == "flat" else int(math.prod(self.shapes[0][1:]))
        return {name: (sl.start * per, sl.stop * per) for name, sl in self.slices().items()}


@dataclass(frozen=True)
class Units:
    """Per attacked modality, the exact affine map to the toolkit's units: ``u = (x - offset) / scale``."""

    offset: dict[str, float]
    scale: dict[str, float]
    eps: float | None = None  # budget units: the one scalar eps that means each modality's budget

    def is_identity(self, name: str) -> bool:
        return self.offset[name] == 0.0 and self.scale[name] == 1.0


def _units_for(fusion: FusionModel, attacked: Sequence[str], units: Any) -> Units:
    mods = {n: fusion.modalities[n] for n in attacked}
    if units is None or units == "native":
        return Units({n: 0.0 for n in attacked}, {n: 1.0 for n in attacked})
    if units == "unit":
        offset, scale = {}, {}
        for n, m in mods.items():
            lo, hi = m.valid_range if m.valid_range is not None else (0.0, 1.0)
            offset[n], scale[n] = float(lo), float(hi - lo)
        return Units(offset, scale)
    if isinstance(units, Mapping):
        budgets = {}
        for n in attacked:
            if n not in units:
                raise UnknownModalityError(f"no budget given for attacked modality '{n}' (budgets: {dict(units)})")
            value = float(units[n])
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"modality '{n}': a budget must be a finite number > 0, got {units[n]!r}")
            budgets[n] = value
        for n in units:
            if n not in mods:
                raise UnknownModalityError(f"budget given for '{n}', which this surface does not attack {list(attacked)}")
        widths = {n: m.valid_range[1] - m.valid_range[0] for n, m in mods.items() if m.valid_range is not None}
        # The modality with the smallest budget relative to its range spans exactly [0, 1]; the others a
        # part of it, so a [0, 1]-only toolkit never has to clip below a modality's own range.
        common = min((budgets[n] / w for n, w in widths.items()), default=1.0)
        offset = {n: float(mods[n].valid_range[0]) if mods[n].valid_range is not None else 0.0 for n in attacked}
        scale = {n: budgets[n] / common for n in attacked}
        return Units(offset, scale, eps=common)
    raise ValueError(f"units must be 'native', 'unit' or a mapping of per-modality budgets, got {units!r}")


class AttackSurface(nn.Module):
    """``attacked tensor -> logits`` for a :class:`FusionModel`, holding the frozen modalities.

    Use :meth:`bind` (or the :meth:`bound` context manager) to hold a batch's frozen modalities and
    get the packed attacked tensor to hand to a toolkit; :meth:`unpack` turns the toolkit's output back
    into named tensors in each modality's own units.

    Args:
        fusion: the model.
        attacked: the modalities the toolkit may change.
        units: ``"native"`` (default), ``"unit"`` or ``{modality: budget}`` (see the module docstring).
        flat_as_image: present a flat packing as ``(N, 1, 1, D)`` (toolkits that assume 4-D inputs).
        pairing: how :meth:`bind` / :meth:`bound` pair query rows unless told otherwise: ``"content"``
            (default) or ``"position"`` for a toolkit that never reorders a full-size batch.
    """

    def __init__(
        self,
        fusion: FusionModel,
        attacked: str | Sequence[str],
        *,
        units: str | Mapping[str, float] | None = "native",
        flat_as_image: bool = False,
        pairing: Pairing = "content",
    ) -> None:
        super().__init__()
        if pairing not in PAIRING_MODES:
            raise ValueError(f"pairing must be one of {PAIRING_MODES}, got {pairing!r}")
        if not isinstance(fusion, FusionModel):
            raise TypeError(f"AttackSurface wraps a FusionModel, got {type(fusion).__name__}")
        names = [attacked] if isinstance(attacked, str) else list(attacked)
        if not names:
            raise EmptySubsetError(f"the attacked subset is empty; choose from {fusion.names}")
        for name in names:
            if name not in fusion.modalities:
                raise UnknownModalityError(
                    f"unknown modality '{name}' in the attacked subset; this model's modalities are {fusion.names}"
                )
            if not fusion.modalities[name].is_tensor:
                raise UnsupportedAttackError(
                    f"modality '{name}' is text: tensor toolkits cannot perturb it "
                    "(use the TextAttack adapter for text)"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate modality in the attacked subset: {names}")
        self.fusion = fusion
        self.attacked: tuple[str, ...] = tuple(n for n in fusion.names if n in names)
        self.frozen: tuple[str, ...] = tuple(n for n in fusion.names if n not in names)
        self.units = _units_for(fusion, self.attacked, units)
        self.flat_as_image = flat_as_image
        self.pairing: Pairing = pairing
        self._table: ContextTable | None = None
        self._bound_by = "user"
        self.packing: Packing | None = None
        self.unused_input = False  # set when a query's output did not depend on the attacked tensor
        self._capture_x: torch.Tensor | None = None
        self._captured: torch.Tensor | None = None

    # ------------------------------------------------------------------ units
    @property
    def eps(self) -> float | None:
        """With per-modality budget units: the scalar eps to give the attack (each modality's own budget)."""
        return self.units.eps

    def toolkit_eps(self, eps: Mapping[str, float] | float) -> torch.Tensor:
        """Per-element eps in the toolkit's units for budgets given in each modality's own units."""
        if not isinstance(eps, Mapping):
            eps = {n: float(eps) for n in self.attacked}
        for name in eps:
            if name not in self.attacked:
                what = "frozen on this surface" if name in self.frozen else f"not a modality of this model {self.fusion.names}"
                raise UnknownModalityError(
                    f"a budget was given for modality '{name}' ({what}); this surface attacks only {list(self.attacked)}"
                )
        return self.per_element({n: float(v) / self.units.scale[n] for n, v in eps.items()})

    def native_eps(self, eps: float | torch.Tensor) -> dict[str, float | torch.Tensor]:
        """A toolkit-unit budget (scalar or per-element) as each modality's budget in its own units."""
        p = self.packing or self._declared_packing()
        out: dict[str, float | torch.Tensor] = {}
        if isinstance(eps, torch.Tensor) and eps.numel() > 1:
            full = eps.detach().to(torch.float64).expand(p.sample_shape).reshape(-1)
            for name, (a, b) in p.flat_spans().items():
                part = full[a:b] * self.units.scale[name]
                out[name] = float(part[0]) if bool((part == part[0]).all()) else part
            return out
        value = float(eps)
        return {name: value * self.units.scale[name] for name in self.attacked}

    # ------------------------------------------------------------------ packing
    def _packing_for(self, inputs: Mapping[str, Any]) -> Packing:
        tensors = [inputs[n] for n in self.attacked]
        shapes = tuple(tuple(t.shape[1:]) for t in tensors)
        mods = [self.fusion.modalities[n] for n in self.attacked]
        if all(m.kind == "image" for m in mods) and len({s[1:] for s in shapes}) == 1:
            return Packing("channels", self.attacked, shapes, tuple(s[0] for s in shapes))
        sizes = tuple(int(torch.Size(s).numel()) for s in shapes)
        return Packing("flat", self.attacked, shapes, sizes, as_image=self.flat_as_image)

    def _declared_packing(self, spatial: tuple[int, ...] = ()) -> Packing:
        """The channel packing implied by declared image channels (before any batch is bound); ``spatial``
        is the image size when a query shows it (without it, only the channel layout is known)."""
        mods = [self.fusion.modalities[n] for n in self.attacked]
        if not all(m.kind == "image" and m.channels for m in mods):
            raise RuntimeError(
                f"the packing of {list(self.attacked)} depends on the data: bind() a batch (or pass sample=) first"
            )
        return Packing("channels", self.attacked, tuple((m.channels, *spatial) for m in mods), tuple(m.channels for m in mods))

    def _to_toolkit(self, name: str, t: torch.Tensor) -> torch.Tensor:
        if self.units.is_identity(name):
            return t
        return (t - self.units.offset[name]) / self.units.scale[name]

    def _to_native(self, name: str, t: torch.Tensor) -> torch.Tensor:
        if self.units.is_identity(name):
            return t
        return t * self.units.scale[name] + self.units.offset[name]

    def pack(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The attacked modalities of ``inputs`` as one new tensor in toolkit units (never a view of the
        caller's data)."""
        packing = self._packing_for(inputs)
        if self.packing is not None and packing != self.packing and self._table is not None:
            raise RowAlignmentError("pack() called with a batch shaped unlike the bound one")
        self.packing = packing
        tensors = [self._to_toolkit(n, inputs[n].detach()) for n in self.attacked]
        if packing.layout == "channels":
            return torch.cat(tensors, dim=1).clone()
        flat = torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1).clone()
        return flat.view(flat.shape[0], 1, 1, -1) if packing.as_image else flat

    def unpack(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a packed tensor back into named modalities, in each modality's own units."""
        if self.packing is None:
            try:
                self.packing = self._declared_packing(tuple(x.shape[2:]))
            except RuntimeError:
                raise RuntimeError("unpack() before any batch was packed: call bind() first") from None
        p = self.packing
        if tuple(x.shape[1:]) != p.sample_shape:
            raise RowAlignmentError(
                f"attack surface for {list(self.attacked)} expects per-sample shape {p.sample_shape}, "
                f"got {tuple(x.shape[1:])}"
            )
        if p.layout == "flat" and p.as_image:
            x = x.reshape(x.shape[0], -1)
        out = {}
        for (name, sl), shape in zip(p.slices().items(), p.shapes):
            part = x[:, sl]
            part = part if p.layout == "channels" else part.reshape(x.shape[0], *shape)
            out[name] = self._to_native(name, part)
        return out

    def per_element(self, values: Mapping[str, float] | float) -> torch.Tensor:
        """A per-sample-shaped tensor holding ``values[name]`` over each modality's part (toolkit units
        are the caller's business: see :meth:`toolkit_eps`).

        Broadcastable against the packed batch: ``(C, 1, 1)`` for the channel layout, ``(D,)`` for flat
        (``(1, 1, D)`` with ``flat_as_image``). Used for per-modality eps arrays and clip values.
        """
        p = self.packing or self._declared_packing()
        if not isinstance(values, Mapping):
            values = {n: float(values) for n in p.names}
        for name in values:
            if name not in p.names:
                raise UnknownModalityError(f"modality '{name}' is not attacked by this surface {list(p.names)}")
        parts = []
        for name, size in zip(p.names, p.sizes):
            if name not in values:
                raise UnknownModalityError(f"no value given for attacked modality '{name}'")
            parts.append(torch.full((size,), float(values[name])))
        flat = torch.cat(parts)
        if p.layout == "channels":
            return flat.view(-1, 1, 1)
        return flat.view(1, 1, -1) if p.as_image else flat

    def bounds(self) -> tuple[torch.Tensor | float, torch.Tensor | float] | None:
        """Valid range of the packed tensor in toolkit units: floats when all attacked modalities agree,
        else per-element."""
        ranges = []
        for n in self.attacked:
            r = self.fusion.modalities[n].valid_range
            if r is None:
                ranges.append(None)
                continue
            lo, hi = (self._to_toolkit(n, torch.tensor(v, dtype=torch.float64)) for v in r)
            ranges.append((float(lo), float(hi)))
        if any(r is None for r in ranges):
            if all(r is None for r in ranges):
                return None
            inf = float("inf")
            ranges = [r if r is not None else (-inf, inf) for r in ranges]
        if len(set(ranges)) == 1:
            return ranges[0]
        lo = self.per_element({n: r[0] for n, r in zip(self.attacked, ranges)})
        hi = self.per_element({n: r[1] for n, r in zip(self.attacked, ranges)})
        return lo, hi

    # ------------------------------------------------------------------ pairing radius
    def radius_parts(self, radius: Radius = None) -> list[RadiusPart]:
        """The pairing radius per attacked modality, in toolkit units.

        ``radius`` is in each modality's own units: ``None`` (each modality's declared threat model),
        a float (that eps in each modality's threat-model norm), ``(norm, eps)`` for all, or a mapping
        ``{modality: eps or (norm, eps)}``.
        """
        p = self.packing or self._declared_packing()
        spans = p.flat_spans()
        parts = []
        for name in self.attacked:
            mod = self.fusion.modalities[name]
            spec: Any = radius.get(name) if isinstance(radius, Mapping) else radius
            if isinstance(radius, Mapping) and name not in radius:
                spec = None
            if spec is None:
                if mod.threat is None:
                    raise ValueError(f"modality '{name}' has no threat model: give the pairing radius explicitly")
                norm, eps = mod.threat.norm, mod.threat.eps
            elif isinstance(spec, tuple):
                norm, eps = normalize_norm(spec[0]), float(spec[1])
            else:
                norm = mod.threat.norm if mod.threat is not None else "inf"
                eps = float(spec)
            a, b = spans[name]
            parts.append(RadiusPart(name, a, b, norm, eps / self.units.scale[name]))
        return parts

    def budget_radius(self, norm: str, eps: float | torch.Tensor) -> list[RadiusPart]:
        """The pairing radius implied by an attack's budget over the packed tensor (toolkit units)."""
        p = self.packing or self._declared_packing()
        norm = normalize_norm(norm)
        parts = []
        eps_t = torch.as_tensor(eps, dtype=torch.float64)
        full = eps_t.expand(p.sample_shape).reshape(-1) if eps_t.numel() > 1 else None
        for name, (a, b) in p.flat_spans().items():
            if norm == "inf" and full is not None:
                parts.append(RadiusPart(name, a, b, "inf", full[a:b]))
            elif norm in ("inf", "2", "1"):
                # a joint L2 (L1) ball bounds each modality's part by the same radius
                parts.append(RadiusPart(name, a, b, norm, float(eps_t.max())))
            else:
                raise ValueError(f"cannot pair rows under an L{norm} budget")
        return parts

    # ------------------------------------------------------------------ context
    def bind(
        self,
        inputs: Mapping[str, Any],
        *,
        validate: bool = True,
        pairing: Pairing | None = None,
        radius: Radius = None,
        radius_parts: Sequence[RadiusPart] | None = None,
        bound_by: str = "user",
    ) -> torch.Tensor:
        """Hold ``inputs``' frozen modalities as the context of their examples; return the attacked ones
        packed (toolkit units).

        Every later query row is paired with its own example by content (``pairing="content"``): a row
        equal to an example's attacked part, within ``radius`` of exactly one example (default: each
        attacked modality's threat model, in its own units), or beyond it but unambiguously nearest one
        (:mod:`mmfusion_attacks.pairing`). ``pairing="broadcast"`` (one example) pairs every row with it,
        however far; ``"position"`` pairs a full-size query by row order where content agrees.
        ``None``: the surface's own default (:attr:`pairing`).
        """
        pairing = self.pairing if pairing is None else pairing
        if pairing not in PAIRING_MODES:
            raise ValueError(f"pairing must be one of {PAIRING_MODES}, got {pairing!r}")
        if validate:
            self.fusion.validate_inputs(inputs)
        self.packing = None
        self._table = None
        x = self.pack(inputs)
        # A private copy: an in-place op inside the user's model can never reach the caller's tensors.
        context = {
            n: (inputs[n].detach().clone() if isinstance(inputs[n], torch.Tensor) else list(inputs[n]))
            for n in self.frozen
        }
        parts = list(radius_parts) if radius_parts is not None else self.radius_parts(radius)
        self._table = ContextTable(x, context, parts, attacked=self.attacked, pairing=pairing)
        self._bound_by = bound_by
        return x

    def unbind(self) -> None:
        self._table = None

    @contextmanager
    def bound(
        self,
        inputs: Mapping[str, Any],
        *,
        pairing: Pairing | None = None,
        radius: Radius = None,
        freeze: bool = True,
    ) -> Iterator[torch.Tensor]:
        """``with surface.bound(batch) as x: adv = attack(x, y)``: context held only inside the block.

        With ``freeze`` (default) the model is in eval mode with parameter gradients off inside, as an
        attack wants; every module's mode and every parameter's ``requires_grad`` are restored on
        exit. Training inside the block works too: the ART estimators' ``fit`` lifts the freeze.
        """
        previous = (self._table, self.packing, self._bound_by)
        state = frozen_model_state(self) if freeze else None
        if state is not None:
            state.__enter__()
        try:
            x = self.bind(inputs, pairing=pairing, radius=radius)
            yield x
        finally:
            # an enclosing context comes back; otherwise the packing stays known (for unpack)
            if previous[0] is not None:
                self._table, self.packing, self._bound_by = previous
            else:
                self._table, self._bound_by = None, previous[2]
            if state is not None:
                state.__exit__(None, None, None)

    @property
    def is_bound(self) -> bool:
        return self._table is not None

    @property
    def context(self) -> ContextTable | None:
        """The bound examples (clean attacked rows and their frozen modalities), or None."""
        return self._table

    def _advice(self) -> str:
        if self._bound_by == "run_attack":
            return (
                "This attack re-batches rows or moves them beyond its budget; run it with "
                "run_attack(..., batching='sample') (one example at a time)"
            )
        return (
            "If these rows are adversarial examples of a larger budget, declare it when binding "
            "(bind/bound/set_context(batch, radius=...)); if they are other examples, bind those. Attacks "
            "that move rows arbitrarily far (DeepFool, Carlini, HopSkipJump, Boundary, ZOO) need one example "
            "at a time: run_attack(attack, batch, labels), or mmfusion_attacks.adapters.art.generate(attack, x, y)"
        )

    def pair(self, x: torch.Tensor) -> torch.Tensor:
        """The index of the bound example each row of the packed query ``x`` belongs to."""
        if self._table is None:
            raise RuntimeError(
                f"attack surface for {list(self.attacked)} has no context: bind(batch) before calling it "
                "(run_attack does this; ART attacks that probe the estimator when constructed, such as "
                "AutoProjectedGradientDescent, must be built inside "
                "`with estimator.surface.bound(one_sample, pairing='broadcast'):`)"
            )
        try:
            return self._table.pair(x, where=f"attack surface for {list(self.attacked)} (frozen {list(self.frozen)})")
        except RowAlignmentError as err:
            raise RowAlignmentError(f"{err} {self._advice()}") from None

    def check_attack_inputs(self, x: torch.Tensor) -> None:
        """Refuse an attack called on rows that are not the bound examples (:meth:`ContextTable.check_entry`);
        a toolkit adapter calls this before the attack's first query. Nothing frozen or nothing bound:
        nothing to check (an unbound surface raises at its first query)."""
        if not self.frozen or self._table is None:
            return
        try:
            self._table.check_entry(x, where=f"attack surface for {list(self.attacked)} (frozen {list(self.frozen)})")
        except RowAlignmentError as err:
            raise RowAlignmentError(f"{err} {self._advice()}") from None

    def _context_for(self, x: torch.Tensor) -> dict[str, Any]:
        if not self.frozen:
            return {}  # nothing frozen: no context needed; unpack() resolves the declared packing
        idx = self.pair(x)
        table = self._table
        assert table is not None
        out: dict[str, Any] = {}
        for name, value in table.context.items():
            if isinstance(value, torch.Tensor):
                out[name] = value.index_select(0, idx.to(value.device)).to(x.device)
            else:
                out[name] = [value[i] for i in idx.tolist()]
        return out

    def capture_first_query(self, x: torch.Tensor) -> None:
        """Keep the logits of the next query if its input is exactly ``x`` and the model is in eval mode:
        an attack whose first query is the clean batch (PGD without random start, FGSM, BIM...) then pays
        for the clean forward the runner needs (:meth:`captured_logits`)."""
        self._capture_x, self._captured = x.detach(), None

    def captured_logits(self) -> torch.Tensor | None:
        """The logits kept by :meth:`capture_first_query` (None when the first query was not ``x``); disarms."""
        out, self._capture_x, self._captured = self._captured, None, None
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        want, self._capture_x = self._capture_x, None  # only the first query after arming can be the clean batch
        first_is_clean = (
            want is not None and x.shape == want.shape and x.dtype == want.dtype and x.device == want.device
            and not self.training and not self.fusion.training and torch.equal(x.detach(), want)
        )
        context = self._context_for(x)
        logits = self.fusion({**context, **self.unpack(x)})
        if first_is_clean:
            self._captured = logits.detach().clone()
        if x.requires_grad and not logits.requires_grad:
            # The attacked modalities do not reach the output (a baseline that ignores them): keep the
            # graph connected so toolkits get the true, zero gradient instead of an autograd error.
            self.unused_input = True
            logits = logits + 0.0 * x.reshape(-1)[:1].sum()
        return logits

    def extra_repr(self) -> str:
        units = "native" if all(self.units.is_identity(n) for n in self.attacked) else "rescaled"
        return f"attacked={list(self.attacked)}, frozen={list(self.frozen)}, units={units}, pairing={self.pairing}"
