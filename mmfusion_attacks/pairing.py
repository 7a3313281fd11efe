"""Pairing: which example's frozen modalities go with each row a toolkit hands the attack surface.

A toolkit sees only the attacked modalities, so the surface must find, for every row it is queried
with, the example that row came from — toolkits shuffle (ART's ``fit``), take subsets (AutoPGD,
Square, the adversarial trainers) and re-batch. Counting rows cannot detect a permutation, so rows
are paired by *content* (``pairing="content"``):

1. **exact** — a row bit-identical to a bound example's clean attacked part is that example;
2. **within the radius** — the one example whose clean attacked part lies within the pairing radius
   (per attacked modality a norm and an eps: by default the modality's threat model; under
   ``run_attack`` the attack's own budget). When the attack respects the radius this is certain: the
   true example is within it and no other is;
3. **by a wide margin** — a row within the radius of no example (an adversarial trainer's PGD with a
   larger eps than the threat model, Gaussian noise, an L2 or L1 budget) is paired with its nearest
   example when that one lies within :data:`REACH` radii and every example with other frozen
   modalities is at least :data:`MARGIN` times farther. Distances are Euclidean, each attacked
   modality scaled by its radius (``RadiusPart.l2_bound``), so the measure is a norm and the triangle
   inequality gives the guarantee: if the row came from example ``t`` moved by ``delta`` and is paired
   with ``k``, then ``|x_t - x_k| <= |delta| * (1 + 1/MARGIN)``. A wrong pairing therefore needs a
   query the toolkit moved at least ``MARGIN / (MARGIN + 1)`` (4/5) of the way onto another example;
   a row moved less than ``1 / (MARGIN + 1)`` of the way to the nearest other example is always
   paired, and anything in between is refused. Examples close to each other (consecutive video
   frames) are refused rather than guessed, as is any row near several examples;
4. examples whose frozen modalities are identical count as one (pairing either is correct).

No content rule can pair a query that a toolkit moved onto or past other examples: torchattacks'
input-diversity transforms (DIFGSM, TIFGSM resize and pad), SINIFGSM's scaled copies ``x / 2 .. x / 16``
(nearer a dark example than their own) and far look-ahead points (NIFGSM, VNIFGSM) leave a row about as
far from its own example as from the others. Those attacks query their whole batch in row order, which
``pairing="position"`` uses: a query of the bound batch's size is paired row ``i`` with example ``i``
when content contradicts that order nowhere (no row exactly equal to, within the radius of, or
``MARGIN`` times nearer to an example with other frozen modalities than its own); a query that does
contradict it is paired by rules 1-2 or refused, so a shuffled full-size batch is never paired by
position, unless content cannot tell its rows apart (examples whose attacked modalities are identical:
then row order is all there is). The rows an attack is *called on* are checked as well
(:meth:`ContextTable.check_entry`): each must lie within the radius of its own position's example, so
a batch that was never bound cannot meet the bound batch's frozen modalities. There rule 3 never pairs
a row, it only tests the order: a scaled copy that lands next to a dark example must raise, not be
paired with it. Queries of another size are paired by content. ``to_torchattacks`` surfaces pair this way by default (torchattacks never
reorders a full-size batch); ART estimators pair by content (ART's ``fit`` and trainers shuffle).
``"broadcast"`` pairs every row with the single bound example (one example at a time, for attacks that
query anywhere: HopSkipJump, Boundary, DeepFool).

Anything else raises :class:`~mmfusion_attacks.errors.RowAlignmentError` — never a silent guess.
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

__all__ = ["Pairing", "RadiusPart", "ContextTable", "PAIRING_MODES", "MARGIN", "REACH"]

Pairing = Literal["content", "position", "broadcast"]
PAIRING_MODES = ("content", "position", "broadcast")
_REL_TOL = 1e-5  # toolkits project onto their ball in float32: allow their rounding
_ABS_TOL = 1e-6
_CHUNK = 1 << 24  # elements per verification chunk (bounds memory on large segmentation inputs)
_GRAM_CHUNK = 1 << 22  # float64 elements per slice of the distance products
#: rule 3: every example with other frozen modalities must be at least this many times farther than the nearest
MARGIN = 4.0
#: rule 3: the nearest example must lie within this many pairing radii (root mean square over the
#: attacked modalities): farther, a row is no perturbation of it under any budget near its threat
#: model, and with one bound context nothing else would refuse a row of an example never bound
REACH = 8.0
_RESOLVE = 1e-10  # relative float64 rounding allowed for in distance comparisons


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
        # Examples with identical frozen modalities form one group: either is the right pairing.
        groups: dict[bytes, int] = {}
        ids = []
        for i in range(self.rows):
            h = hashlib.blake2b(digest_size=16)
            for name in sorted(self.context):
                h.update(_fingerprint(self.context[name][i]))
            ids.append(groups.setdefault(h.digest(), len(groups)))
        self.group = torch.tensor(ids, dtype=torch.long)
        self.groups = len(groups)
        self.prefilter = math.sqrt(sum(p.l2_bound() ** 2 for p in self.radius))
        # Rule 3 measures each modality in units of its radius' L2 extent: a row within the radius on
        # every modality lies within sqrt(len(radius)) of its example.
        self._weights = [1.0 / b**2 if b > 0 else 1.0 for b in (p.l2_bound() for p in self.radius)]
        self._ksq = [self._flat[:, p.start : p.stop].double().pow(2).sum(1).cpu() for p in self.radius]
        weighted = torch.zeros(self.rows, dtype=torch.float64)
        for weight, ksq in zip(self._weights, self._ksq):
            weighted += weight * ksq
        self._kw = float(weighted.max()) if self.rows else 0.0
        magnitude = float(self._flat.abs().max()) if self._flat.numel() else 1.0
        eps = torch.finfo(self._flat.dtype).eps if self._flat.is_floating_point() else 0.0
        self.atol = _ABS_TOL + 4 * eps * max(1.0, magnitude)
        #: an example to pair the NEXT query's unpairable rows with (set by a driver that knows the toolkit's
        #: loop; one query only: a later query of another example must not meet it)
        self.fallback: int | None = None

    # ------------------------------------------------------------------ pairing
    def pair(self, x: torch.Tensor, *, where: str = "") -> torch.Tensor:
        """Index of the bound example each row of ``x`` belongs to (``(M,)`` long, on CPU)."""
        m = int(x.shape[0])
        fallback, self.fallback = self.fallback, None  # one query only
        if self.pairing == "broadcast":
            return torch.zeros(m, dtype=torch.long)
        q = x.detach().flatten(1)
        if q.shape[1] != self._flat.shape[1]:
            raise RowAlignmentError(f"query rows have {q.shape[1]} values, bound examples {self._flat.shape[1]}")
        if m == 0:
            return torch.zeros(0, dtype=torch.long)
        keys = self._flat.to(q.device)
        if m == self.rows and torch.equal(q, keys):
            return torch.arange(m)
        d2, w2, qsq, qw = self._distances(q, keys)
        # Rules 1-2: the squared L2 distance prefilters (a necessary condition for being within the
        # radius, with slack for rounding); candidates are then verified exactly.
        ksq = sum(self._ksq, torch.zeros(self.rows, dtype=torch.float64))
        bound = self.prefilter * (1 + _REL_TOL) + self.atol * math.sqrt(q.shape[1])
        slack = 1e-6 * (qsq[:, None] + ksq[None, :]) + 1e-9
        rows, cols = torch.nonzero(d2 <= bound**2 + slack, as_tuple=True)
        within = torch.zeros(len(rows), dtype=torch.bool)
        exact = torch.zeros(len(rows), dtype=torch.bool)
        per = max(1, _CHUNK // max(1, q.shape[1]))
        for start in range(0, len(rows), per):
            r, c = rows[start : start + per].to(q.device), cols[start : start + per].to(q.device)
            diff = q[r] - keys[c]
            within[start : start + per] = self._within(diff).cpu()
            exact[start : start + per] = (diff == 0).all(1).cpu()
        groups = self.group[cols]
        exact_pick, exact_unique, exact_any = self._per_row(m, rows, cols, groups, exact)
        near_pick, near_unique, near_any = self._per_row(m, rows, cols, groups, within)
        out = torch.where(exact_any & exact_unique, exact_pick, torch.where(~exact_any & near_unique & near_any, near_pick, -1))
        # each row's distance to the nearest example of every frozen context (rule 3's units)
        gmin = torch.full((m, self.groups), math.inf, dtype=torch.float64).scatter_reduce(1, self.group.expand(m, -1), w2, "amin")
        err = _RESOLVE * (qw + self._kw)  # float64 rounding of the distance products
        order = None
        if self.pairing == "position" and m == self.rows:
            order = self._order_contradiction(out, rows, cols, within, exact, gmin, err)
            if order is None:
                return torch.arange(m)  # content agrees with the bound order everywhere: row i is example i
        else:  # content, or position for a query of another size (a subset has no order to go by)
            d1, best = gmin.min(1)
            second = gmin.scatter(1, best[:, None], math.inf).amin(1)
            far = (out < 0) & ~near_any
            clear = (second - err >= MARGIN**2 * (d1 + err)) & (d1 + err <= REACH**2 * max(1, len(self.radius)))
            out = torch.where(far & clear, w2.argmin(1), out)
        unresolved = out < 0
        if bool(unresolved.any()) and fallback is not None and order is None:
            # a driver's fallback example, for rows content cannot pair: only where no example is within
            # the radius, or the fallback is among those that are
            near_rows, near_cols = rows[within], cols[within]
            for j in unresolved.nonzero().flatten().tolist():
                keys_j = near_cols[near_rows == j]
                if len(keys_j) == 0 or bool((keys_j == fallback).any()):
                    out[j] = fallback
        problems = [(j, "ambiguous" if bool(near_any[j]) else "none") for j in (out < 0).nonzero().flatten().tolist()]
        if problems:
            raise RowAlignmentError(self._explain(q, problems, where, gmin, order))
        return out

    def check_entry(self, x: torch.Tensor, *, where: str = "") -> None:
        """Check the rows an attack is *called on* (not a query it makes): they must be the bound examples.

        A query of the bound batch's size is paired by position, which trusts row order; the input of an
        attack call is where that trust is checked: row ``i`` must lie within the pairing radius of example
        ``i`` (or of an example with the same frozen modalities), so a batch that was never bound, or the
        bound one reordered, raises instead of meeting the bound batch's frozen modalities. Other sizes and
        ``pairing="content"`` go through :meth:`pair`; ``"broadcast"`` declares its one example."""
        if self.pairing == "broadcast":
            return
        q = x.detach().flatten(1)
        if not (self.pairing == "position" and q.shape[0] == self.rows and q.shape[1] == self._flat.shape[1]):
            self.pair(x, where=where)
            return
        keys = self._flat.to(q.device)
        if torch.equal(q, keys):
            return
        for i in (~self._within(q - keys)).nonzero().flatten().tolist():
            same = (self.group == self.group[i]).nonzero().flatten().to(q.device)
            if not bool(self._within(q[i : i + 1] - keys[same]).any()):
                radius = "; ".join(p.describe() for p in self.radius)
                head = f"{where}: " if where else ""
                raise RowAlignmentError(
                    f"{head}the attack was called on {self.rows} rows, the bound batch's size, so its queries are "
                    f"paired by position, but row {i} is not within the pairing radius of example {i} ({radius}): "
                    "these rows are not the bound examples in their order (another batch, or the bound one "
                    "reordered)."
                )

    def _within(self, diff: torch.Tensor) -> torch.Tensor:
        """Which rows of ``diff`` (query - example, flattened) lie within the radius on every attacked modality."""
        ok = torch.ones(len(diff), dtype=torch.bool, device=diff.device)
        for part in self.radius:
            ok &= part.within(diff, self.atol)
        return ok

    def _order_contradiction(self, out, rows, cols, within, exact, gmin, err) -> tuple[int, str, int] | None:
        """For a query of the bound batch's size, the first row whose content says it is not its
        position's example, as ``(row, how, example)``; None when content agrees with the order."""
        m = len(out)
        own = self.group
        same = self.group[cols] == own[rows]

        def rows_with(mask: torch.Tensor) -> torch.Tensor:
            hit = torch.zeros(m, dtype=torch.bool)
            hit[rows[mask]] = True
            return hit

        # an exact copy of another context's example, or within the radius of others but not of its own
        equal_other = rows_with(exact & ~same) & ~rows_with(exact & same)
        near_other = rows_with(within & ~same) & ~rows_with(within & same)
        # rule 3 turned round: another context MARGIN times nearer than its own
        g_own = gmin.gather(1, own[:, None]).squeeze(1)
        d_other, g_near = gmin.scatter(1, own[:, None], math.inf).min(1)
        nearer = g_own - err > MARGIN**2 * (d_other + err)
        bad = equal_other | near_other | nearer
        if not bool(bad.any()):
            return None
        j = int(bad.nonzero()[0])
        if bool(equal_other[j] | near_other[j]):
            mask = (rows == j) & ~same & (exact if bool(equal_other[j]) else within)
            return j, "equal to" if bool(equal_other[j]) else "within the pairing radius of", int(cols[mask][0])
        return j, f"{MARGIN:g} times nearer to", int((self.group == g_near[j]).nonzero()[0])

    def _distances(self, q: torch.Tensor, keys: torch.Tensor):
        """Squared L2 distances of every query row to every key, plain and in rule 3's radius units (both
        ``(M, N)`` float64 on CPU), and the rows' squared norms in both."""
        m, n = len(q), len(keys)
        d2 = torch.zeros(m, n, dtype=torch.float64, device=q.device)
        w2 = torch.zeros_like(d2)
        qsq_all = torch.zeros(m, dtype=torch.float64, device=q.device)
        qw = torch.zeros_like(qsq_all)
        step = max(1, _GRAM_CHUNK // (m + n))
        for part, weight, ksq in zip(self.radius, self._weights, self._ksq):
            gram = torch.zeros(m, n, dtype=torch.float64, device=q.device)
            qsq = torch.zeros(m, dtype=torch.float64, device=q.device)
            for a in range(part.start, part.stop, step):
                b = min(a + step, part.stop)
                qa = q[:, a:b].double()
                gram += qa @ keys[:, a:b].double().T
                qsq += qa.pow(2).sum(1)
            dist = (qsq[:, None] + ksq.to(q.device)[None, :] - 2 * gram).clamp_min(0)
            d2 += dist
            w2 += weight * dist
            qsq_all += qsq
            qw += weight * qsq
        return d2.cpu(), w2.cpu(), qsq_all.cpu(), qw.cpu()

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

    def _explain(self, q: torch.Tensor, problems: list[tuple[int, str]], where: str, gmin: torch.Tensor, order) -> str:
        j, kind = problems[0]
        diff = q[j : j + 1] - self._flat.to(q.device)
        dist = torch.zeros(self.rows, dtype=torch.float64, device=q.device)
        for part in self.radius:
            dist = torch.maximum(dist, part.distance(diff))
        order_j = dist.argsort()[:2].tolist()
        radius = "; ".join(p.describe() for p in self.radius)
        nearest = ", ".join(f"example {i} at {float(dist[i]):.3g} x radius" for i in order_j)
        frozen = sorted(self.context)
        head = f"{where}: " if where else ""
        if order is not None:
            row, how, k = order
            what = (
                f"a query the size of the bound batch would be paired by position, but its row {row} is {how} "
                f"example {k} rather than example {row}: the rows are not in the bound order (or a row was moved "
                f"onto another example), so row {j} cannot be paired by position and content does not pair it"
            )
        elif kind == "ambiguous":
            what = (
                f"row {j} lies within the pairing radius of several bound examples whose frozen {frozen} differ "
                f"({nearest}): it cannot be paired with its own example"
            )
        else:
            g = gmin[j].sqrt() / math.sqrt(max(1, len(self.radius)))
            two = g.sort().values[:2].tolist() + [math.inf]
            margin = (
                f"; the nearest frozen context is {two[0]:.3g} radii away (root mean square), the next {two[1]:.3g}: "
                f"beyond the radius a row is paired only within {REACH:g} radii and {MARGIN:g} times nearer than "
                "any other"
            )
            what = (
                f"row {j} is not within the pairing radius of any bound example (nearest: {nearest}){margin}, so its "
                f"frozen {frozen} are unknown"
            )
        more = f" ({len(problems)} row(s) of {len(q)} affected)" if len(problems) > 1 else ""
        return f"{head}{what}{more}. Pairing radius ({radius})."
