"""The attack surface: what a toolkit sees when only some modalities are attacked.

An :class:`AttackSurface` is an ``nn.Module`` whose *only* input is the attacked modalities packed
into one tensor; the frozen modalities of the same batch are held inside it as context. A toolkit
therefore cannot perturb, project, or spend an Lp budget on a frozen modality: those tensors never
enter its arrays. This is the one place where the frozen-modality guarantee lives (masks and
gradient hooks leak; see ``docs/design.md``).

Packing: when every attacked modality is an image with the same spatial size, they are concatenated
along channels (``(N, sum C, H, W)``, so image attacks like Square still see an image); otherwise each is
flattened and concatenated (``(N, D)``).

Row alignment: the context has ``n`` rows. A query of ``n`` rows is paired row by row; when ``n == 1``
(one sample at a time) the single context row is repeated for every query row; anything else raises
:class:`~mmfusion_attacks.errors.RowAlignmentError` rather than pairing rows wrongly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import EmptySubsetError, RowAlignmentError, UnknownModalityError, UnsupportedAttackError
from .fusion import FusionModel

__all__ = ["AttackSurface", "Packing", "frozen_model_state"]


class frozen_model_state:
    """Context manager: eval mode and no parameter gradients inside; every module's mode and every
    parameter's ``requires_grad`` restored on exit (even when the attack raises)."""

    def __init__(self, model: torch.nn.Module, *, eval_mode: bool = True) -> None:
        self.model, self.eval_mode = model, eval_mode

    def __enter__(self) -> torch.nn.Module:
        self._modes = [(m, m.training) for m in self.model.modules()]
        self._grads = [(p, p.requires_grad) for p in self.model.parameters()]
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


@dataclass(frozen=True)
class Packing:
    """How the attacked modalities sit inside the packed tensor (per-sample shapes, offsets)."""

    layout: str  # "channels" or "flat"
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]  # per-sample shape of each modality
    sizes: tuple[int, ...]  # channels (layout "channels") or flattened sizes (layout "flat")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        if self.layout == "channels":
            return (sum(self.sizes), *self.shapes[0][1:])
        return (sum(self.sizes),)

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes):
            out[name] = slice(start, start + size)
            start += size
        return out


class AttackSurface(nn.Module):
    """``attacked tensor -> logits`` for a :class:`FusionModel`, holding the frozen modalities.

    Use :meth:`bind` (or the :meth:`bound` context manager) to hold a batch's frozen modalities and
    get the packed attacked tensor to hand to a toolkit; :meth:`unpack` turns the toolkit's output back
    into named tensors.
    """

    def __init__(self, fusion: FusionModel, attacked: str | Sequence[str]) -> None:
        super().__init__()
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
        self._context: dict[str, Any] | None = None
        self._rows = 0
        self.packing: Packing | None = None

    # ------------------------------------------------------------------ packing
    def _packing_for(self, inputs: Mapping[str, Any]) -> Packing:
        tensors = [inputs[n] for n in self.attacked]
        shapes = tuple(tuple(t.shape[1:]) for t in tensors)
        mods = [self.fusion.modalities[n] for n in self.attacked]
        if all(m.kind == "image" for m in mods) and len({s[1:] for s in shapes}) == 1:
            return Packing("channels", self.attacked, shapes, tuple(s[0] for s in shapes))
        return Packing("flat", self.attacked, shapes, tuple(int(torch.Size(s).numel()) for s in shapes))

    def _declared_packing(self) -> Packing:
        """The channel packing implied by declared image channels (before any batch is bound)."""
        mods = [self.fusion.modalities[n] for n in self.attacked]
        if not all(m.kind == "image" and m.channels for m in mods):
            raise RuntimeError(
                f"the packing of {list(self.attacked)} depends on the data: bind() a batch (or pass sample=) first"
            )
        return Packing("channels", self.attacked, tuple((m.channels,) for m in mods), tuple(m.channels for m in mods))

    def pack(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The attacked modalities of ``inputs`` as one new tensor (never a view of the caller's data)."""
        packing = self._packing_for(inputs)
        if self.packing is not None and packing != self.packing and self._context is not None:
            raise RowAlignmentError("pack() called with a batch shaped unlike the bound one")
        self.packing = packing
        tensors = [inputs[n].detach() for n in self.attacked]
        if packing.layout == "channels":
            return torch.cat(tensors, dim=1).clone()
        return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1).clone()

    def unpack(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a packed tensor back into named modalities (views of ``x``)."""
        if self.packing is None:
            raise RuntimeError("unpack() before any batch was packed: call bind() first")
        p = self.packing
        if tuple(x.shape[1:]) != p.sample_shape:
            raise RowAlignmentError(
                f"attack surface for {list(self.attacked)} expects per-sample shape {p.sample_shape}, "
                f"got {tuple(x.shape[1:])}"
            )
        out = {}
        for (name, sl), shape in zip(p.slices().items(), p.shapes):
            part = x[:, sl]
            out[name] = part if p.layout == "channels" else part.reshape(x.shape[0], *shape)
        return out

    def per_element(self, values: Mapping[str, float] | float) -> torch.Tensor:
        """A per-sample-shaped tensor holding ``values[name]`` over each modality's part.

        Broadcastable against the packed batch: ``(C, 1, 1)`` for the channel layout, ``(D,)`` for flat.
        Used for per-modality eps arrays and clip values.
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
        return flat.view(-1, 1, 1) if p.layout == "channels" else flat

    def bounds(self) -> tuple[torch.Tensor | float, torch.Tensor | float] | None:
        """Valid range of the packed tensor: floats when all attacked modalities agree, else per-element."""
        ranges = [self.fusion.modalities[n].valid_range for n in self.attacked]
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

    # ------------------------------------------------------------------ context
    def bind(self, inputs: Mapping[str, Any], *, validate: bool = True) -> torch.Tensor:
        """Hold ``inputs``' frozen modalities as context; return the attacked ones packed."""
        rows = self.fusion.validate_inputs(inputs) if validate else self.fusion.modalities[self.attacked[0]].batch_size(
            inputs[self.attacked[0]]
        )
        self.packing = None
        self._context = None
        x = self.pack(inputs)
        # A private copy: an in-place op inside the user's model can never reach the caller's tensors.
        self._context = {
            n: (inputs[n].detach().clone() if isinstance(inputs[n], torch.Tensor) else list(inputs[n]))
            for n in self.frozen
        }
        self._rows = rows
        return x

    def unbind(self) -> None:
        self._context = None
        self._rows = 0

    @contextmanager
    def bound(self, inputs: Mapping[str, Any]) -> Iterator[torch.Tensor]:
        """``with surface.bound(batch) as x: adv = attack(x, y)``: context held only inside the block.

        Inside, the model is in eval mode with parameter gradients off; every module's mode and every
        parameter's ``requires_grad`` are restored on exit.
        """
        with frozen_model_state(self):
            x = self.bind(inputs)
            try:
                yield x
            finally:
                self.unbind()

    @property
    def is_bound(self) -> bool:
        return self._context is not None

    def _context_for(self, rows: int) -> dict[str, Any]:
        if self._context is None:
            raise RuntimeError(
                f"attack surface for {list(self.attacked)} has no context: bind(batch) before calling it "
                "(run_attack does this; ART attacks that probe the estimator when constructed, such as "
                "AutoProjectedGradientDescent, must be built inside `with estimator.surface.bound(one_sample):`)"
            )
        if rows == self._rows or not self.frozen:  # nothing frozen: nothing to pair
            return self._context
        if self._rows == 1:
            return {
                n: (v.expand(rows, *v.shape[1:]) if isinstance(v, torch.Tensor) else v * rows)
                for n, v in self._context.items()
            }
        raise RowAlignmentError(
            f"the toolkit queried {rows} row(s) but the held context of {list(self.frozen)} has {self._rows}: "
            "rows cannot be paired with their frozen modalities. This attack re-batches or takes subsets; "
            "run it with batching='sample' (one sample at a time)"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self._context_for(int(x.shape[0]))
        context = {n: (v.to(x.device) if isinstance(v, torch.Tensor) else v) for n, v in context.items()}
        return self.fusion({**context, **self.unpack(x)})

    def extra_repr(self) -> str:
        return f"attacked={list(self.attacked)}, frozen={list(self.frozen)}"
