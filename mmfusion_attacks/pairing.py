"""Pairing: which example's frozen modalities go with each row a toolkit hands the attack surface.

A toolkit sees only the attacked modalities, so the surface must find, for every row it is queried
with, the example that row came from — toolkits shuffle (ART's ``fit``), take subsets (AutoPGD,
Square, the adversarial trainers) and re-batch. Counting rows cannot detect a permutation, so rows
are paired by *content*, within a threat model:

1. **exact** — a row bit-identical to a bound example's clean attacked part is that example;
2. **within the radius** — otherwise, the row is paired with the one example whose clean attacked
   part lies within the pairing radius (per attacked modality: a norm and an eps, by default the
   modality's declared threat model). When the attack respects that radius this is certain: the
   true example is within it and no other example is;
3. examples whose frozen modalities are identical count as one (pairing either is correct).

A row within the radius of several examples with different frozen modalities, or of none, raises
:class:`~mmfusion_attacks.errors.RowAlignmentError` — never a silent guess. Two trusted modes for
callers that know their attack's structure (the runner): ``"position"`` falls back to row ``i`` of
a query as long as the bound batch for rows that rule 1-2 cannot pair (attacks that keep row order
but move rows far, such as CW), and ``"broadcast"`` pairs every row with the single bound example
(one example at a time, for attacks that query anywhere: HopSkipJump, Boundary, DeepFool).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .errors import RowAlignmentError
from .modality import normalize_norm

__all__ = ["Pairing", "RadiusPart", "ContextTable", "PAIRING_MODES"]

Pairing = Literal["content", "position", "broadcast"]
PAIRING_MODES = ("content", "position", "broadcast")
_REL_TOL = 1e-5  # toolkits project onto their ball in float32: allow their rounding
_ABS_TOL = 1e-6
_CHUNK = 1 << 24  # elements per verification chunk (bounds memory on large segmentation inputs)


@dataclass(frozen=True)
class RadiusPart:
    """The pairing radius on one attacked modality, in the surface's (toolkit) units.

    ``start:stop`` is the modality's span in a flattened packed row; ``eps`` is a float or, for
    ``norm="inf"``, a per-element tensor of length ``stop - start``.
    """

    name: str
    start: int
    stop: int
    norm: str
    eps: float | torch.Tensor

    def __post_init__(self) -> None:
        norm = normalize_norm(self.norm)
        if norm == "0":
            raise ValueError(f"modality '{self.name}': an L0 pairing radius is not supported; give 'inf', '2' or '1'")
        object.__setattr__(self, "norm", norm)
        eps = self.eps
        if isinstance(eps, torch.Tensor):
            if eps.numel() == 1:
                eps = float(eps)
            elif norm != "inf":
                raise ValueError(f"modality '{self.name}': a per-element pairing radius needs the Linf norm")
            else:
                eps = eps.detach().flatten().to(torch.float64)
                if eps.numel() != self.stop - self.start:
                    raise ValueError(f"modality '{self.name}': radius has {eps.numel()} elements, expected {self.stop - self.start}")
        if isinstance(eps, float) or isinstance(eps, int):
            eps = float(eps)
            if not (math.isfinite(eps) and eps >= 0):
                raise ValueError(f"modality '{self.name}': the pairing radius must be finite and >= 0, got {eps}")
        elif not bool((torch.isfinite(eps) & (eps >= 0)).all()):
            raise ValueError(f"modality '{self.name}': the pairing radius must be finite and >= 0")
        object.__setattr__(self, "eps", eps)

    def l2_bound(self) -> float:
        """An upper bound on the L2 distance of any point within this radius (for the prefilter)."""
        if self.norm == "inf":
            if isinstance(self.eps, torch.Tensor):
                return float(self.eps.norm())
            return self.eps * math.sqrt(self.stop - self.start)
        return float(self.eps)  # L2 <= L1

    def within(self, diff: torch.Tensor, atol: float = _ABS_TOL) -> torch.Tensor:
        """Which rows of ``diff`` (P, D) lie within the radius on this modality (``atol``: the rounding
        a toolkit's float arithmetic adds at the values' magnitude)."""
        part = diff[:, self.start : self.stop].to(torch.float64)
        if self.norm == "inf":
            eps = self.eps.to(part.device) if isinstance(self.eps, torch.Tensor) else self.eps
            excess = part.abs() - eps * (1 + _REL_TOL)
            return excess.amax(1) <= atol if part.shape[1] else torch.ones(len(part), dtype=torch.bool, device=part.device)
        dist = part.norm(p=2 if self.norm == "2" else 1, dim=1)
        return dist <= float(self.eps) * (1 + _REL_TOL) + atol * max(1.0, math.sqrt(self.stop - self.start))

    def distance(self, diff: torch.Tensor) -> torch.Tensor:
        """This modality's distance in units of its radius (<= 1 means within)."""
        part = diff[:, self.start : self.stop].to(torch.float64)
        if self.norm == "inf":
            eps = self.eps.to(part.device) if isinstance(self.eps, torch.Tensor) else self.eps
            scaled = part.abs() / torch.as_tensor(eps, dtype=torch.float64, device=part.device).clamp_min(1e-300)
            return scaled.amax(1)
        return part.norm(p=2 if self.norm == "2" else 1, dim=1) / max(float(self.eps), 1e-300)

    def describe(self) -> str:
        eps = self.eps
        if isinstance(eps, torch.Tensor):
            lo, hi = float(eps.min()), float(eps.max())
            value = f"{lo:.4g}" if lo == hi else f"{lo:.4g}..{hi:.4g}"
        else:
            value = f"{eps:.4g}"
        return f"{self.name}: L{self.norm} <= {value}"


def _fingerprint(value: Any) -> bytes:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        return str(t.dtype).encode() + str(tuple(t.shape)).encode() + t.numpy().tobytes()
    return repr(value).encode()


class ContextTable:
    """The examples a surface can pair query rows with: clean attacked rows (``keys``, packed, in the
    toolkit's units) and the frozen modalities of the same examples (``context``)."""

    def __init__(
        self,
        keys: torch.Tensor,
        context: Mapping[str, Any],
        radius: Sequence[RadiusPart],
        *,
        attacked: Sequence[str],
        pairing: Pairing = "content",
    ) -> None:
        if pairing not in PAIRING_MODES:
            raise ValueError(f"pairing must be one of {PAIRING_MODES}, got {pairing!r}")
        self.keys = keys.detach()
        self.rows = int(keys.shape[0])
        if pairing == "broadcast" and self.rows != 1:
            raise RowAlignmentError(
                f"pairing='broadcast' pairs every query row with ONE example, but {self.rows} were bound"
            )
        self.context = dict(context)
        self.radius = tuple(radius)
        self.attacked = tuple(attacked)
        self.pairing: Pairing = pairing
        self._flat = self.keys.flatten(1)
        self._sq = self._flat.double().pow(2).sum(1).to(self._flat.dtype)
        # Examples with identical frozen modalities form one group: either is the right pairing.
        groups: dict[bytes, int] = {}
        ids = []
        for i in range(self.rows):
            h = hashlib.blake2b(digest_size=16)
            for name in sorted(self.context):
                h.update(_fingerprint(self.context[name][i]))
            ids.append(groups.setdefault(h.digest(), len(groups)))
        self.group = torch.tensor(ids, dtype=torch.long)
        self.prefilter = math.sqrt(sum(p.l2_bound() ** 2 for p in self.radius))
        magnitude = float(self._flat.abs().max()) if self._flat.numel() else 1.0
        eps = torch.finfo(self._flat.dtype).eps if self._flat.is_floating_point() else 0.0
        self.atol = _ABS_TOL + 4 * eps * max(1.0, magnitude)
        #: an example to pair unpairable rows with (set by a driver that knows the toolkit's loop)
        self.fallback: int | None = None

    # ------------------------------------------------------------------ pairing
    def pair(self, x: torch.Tensor, *, where: str = "") -> torch.Tensor:
        """Index of the bound example each row of ``x`` belongs to (``(M,)`` long, on CPU)."""
        m = int(x.shape[0])
        if self.pairing == "broadcast":
            return torch.zeros(m, dtype=torch.long)
        q = x.detach().flatten(1)
        if q.shape[1] != self._flat.shape[1]:
            raise RowAlignmentError(f"query rows have {q.shape[1]} values, bound examples {self._flat.shape[1]}")
        if m == self.rows and torch.equal(q, self._flat.to(q.device)):
            return torch.arange(m)
        keys = self._flat.to(q.device)
        # Prefilter: squared L2 distances through one matrix product (a necessary condition for being
        # within the radius), with slack for float32 rounding; candidates are then verified exactly.
        qk = q.to(keys.dtype)
        qsq = qk.double().pow(2).sum(1).to(keys.dtype)
        ksq = self._sq.to(q.device)
        d2 = qsq[:, None] + ksq[None, :] - 2 * (qk @ keys.T)
        slack = 1e-3 * (qsq[:, None] + ksq[None, :]) + 1e-6
        bound = self.prefilter * (1 + _REL_TOL) + self.atol * math.sqrt(q.shape[1])
        rows, cols = torch.nonzero(d2 <= bound**2 + slack, as_tuple=True)
        within = torch.zeros(len(rows), dtype=torch.bool)
        exact = torch.zeros(len(rows), dtype=torch.bool)
        per = max(1, _CHUNK // max(1, q.shape[1]))
        for start in range(0, len(rows), per):
            r, c = rows[start : start + per], cols[start : start + per]
            diff = q[r] - keys[c]
            ok = torch.ones(len(r), dtype=torch.bool, device=q.device)
            for part in self.radius:
                ok &= part.within(diff, self.atol)
            within[start : start + per] = ok.cpu()
            exact[start : start + per] = (diff == 0).all(1).cpu()
        rows, cols = rows.cpu(), cols.cpu()
        groups = self.group[cols]
        exact_pick, exact_unique, exact_any = self._per_row(m, rows, cols, groups, exact)
        near_pick, near_unique, near_any = self._per_row(m, rows, cols, groups, within)
        out = torch.where(exact_any & exact_unique, exact_pick, torch.where(~exact_any & near_unique & near_any, near_pick, -1))
        unresolved = out < 0
        if bool(unresolved.any()):
            # trusted row order (position) or a driver's fallback example, for rows content cannot pair:
            # only where no example is within the radius, or the trusted one is among those that are
            near_rows = rows[within]
            near_cols = cols[within]
            for j in unresolved.nonzero().flatten().tolist():
                keys_j = near_cols[near_rows == j]
                for trusted in ((j,) if self.pairing == "position" and m == self.rows else ()) + (
                    (self.fallback,) if self.fallback is not None else ()
                ):
                    if len(keys_j) == 0 or bool((keys_j == trusted).any()):
                        out[j] = trusted
                        break
        problems = [(j, "ambiguous" if bool(near_any[j]) else "none") for j in (out < 0).nonzero().flatten().tolist()]
        if problems:
            raise RowAlignmentError(self._explain(q, problems, where))
        return out

    @staticmethod
    def _per_row(m: int, rows: torch.Tensor, cols: torch.Tensor, groups: torch.Tensor, mask: torch.Tensor):
        """Per query row, over its candidate keys selected by ``mask``: the first key, whether they all
        share one frozen context, and whether there is any."""
        big = torch.iinfo(torch.long).max
        r, c, g = rows[mask], cols[mask], groups[mask]
        first = torch.full((m,), big, dtype=torch.long).scatter_reduce(0, r, c, "amin")
        gmin = torch.full((m,), big, dtype=torch.long).scatter_reduce(0, r, g, "amin")
        gmax = torch.full((m,), -1, dtype=torch.long).scatter_reduce(0, r, g, "amax")
        return first, gmin == gmax, gmax >= 0

    def _explain(self, q: torch.Tensor, problems: list[tuple[int, str]], where: str) -> str:
        j, kind = problems[0]
        diff = q[j : j + 1] - self._flat.to(q.device)
        dist = torch.zeros(self.rows, dtype=torch.float64, device=q.device)
        for part in self.radius:
            dist = torch.maximum(dist, part.distance(diff))
        order = dist.argsort()[:2].tolist()
        radius = "; ".join(p.describe() for p in self.radius)
        nearest = ", ".join(f"example {i} at {float(dist[i]):.3g} x radius" for i in order)
        frozen = sorted(self.context)
        head = f"{where}: " if where else ""
        if kind == "ambiguous":
            what = (
                f"row {j} lies within the pairing radius of several bound examples whose frozen {frozen} differ "
                f"({nearest}): it cannot be paired with its own example"
            )
        else:
            what = (
                f"row {j} is not within the pairing radius of any bound example (nearest: {nearest}), so its "
                f"frozen {frozen} are unknown"
            )
        more = f" ({len(problems)} row(s) of {len(q)} affected)" if len(problems) > 1 else ""
        return f"{head}{what}{more}. Pairing radius ({radius})."
