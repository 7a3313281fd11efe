"""The worst case over modality subsets: which subset of the attacked modalities breaks each example.

Every non-empty subset of the planned modalities (2^k - 1, or the ``subsets`` given) is attacked with
the same per-modality plan entries (equal budgets), each by its own :class:`JointAttack`. A superset is
never reported weaker than its subsets: per example, the result for a set is the best of its own run
and of every subset's (the highest score: fooled or not; for segmentation the fraction of fooled
pixels, an example counting as fooled from ``success_fraction`` on), and every cell where the optimiser
alone did worse than a subset is listed in :attr:`SubsetReport.weaker` (a finding about the optimiser,
not an error).

With ``skip_broken=True`` a set's own run attacks only the examples none of its subsets broke (the rest
are reported from the smallest breaking subset, and the optimiser's weakness is not measured on them),
so the worst case costs less than its 2^k - 1 subset runs; an attack that treats examples independently
gives the same success per example either way. Classification only: for segmentation the kept
adversarial (its fooled pixels, so pixel accuracy and mIoU) would depend on the skipping, so it is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import torch

from ..errors import EmptySubsetError, UnknownModalityError
from ..fusion import FusionModel
from ..result import AdversarialBatch, clean_forward, clean_pass
from .attack import JointAttack
from .plan import ModalityAttack, check_order, check_plan

__all__ = ["SubsetReport", "worst_case_over_subsets", "all_subsets", "check_skip_broken"]

Subset = tuple[str, ...]


def all_subsets(names: Sequence[str]) -> list[Subset]:
    """Every non-empty subset of ``names``, smallest first, each in ``names`` order."""
    return [c for k in range(1, len(names) + 1) for c in combinations(tuple(names), k)]


@dataclass
class SubsetReport:
    """Per subset: its own run (``own``), the per-example success after taking the best of its subsets
    (``success``), the rows where its own run was weaker than a subset (``weaker``)."""

    subsets: list[Subset]
    labels: torch.Tensor
    clean_pred: torch.Tensor
    own: dict[Subset, AdversarialBatch]
    success: dict[Subset, torch.Tensor]
    source: dict[Subset, list[Subset | None]]  # per example: which subset's adversarial the best result is
    weaker: dict[Subset, list[int]] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)

    clean_fooled: torch.Tensor | None = None  # per example: already fooled on clean inputs (segmentation: by fraction)

    @property
    def clean_correct(self) -> torch.Tensor:
        if self.clean_fooled is not None:
            return ~self.clean_fooled
        return (self.clean_pred == self.labels).cpu()

    def broken(self) -> torch.Tensor:
        """Per example: whether any subset broke it (or it was wrong on clean inputs)."""
        out = ~self.clean_correct
        for s in self.subsets:
            out |= self.success[s]
        return out

    def smallest(self) -> list[Subset | None]:
        """Per example: the smallest subset whose own run fooled the model (``()`` when the clean input
        already was wrong; None when no subset did)."""
        out: list[Subset | None] = []
        for i in range(len(self.labels)):
            if not bool(self.clean_correct[i]):
                out.append(())
                continue
            hit = [s for s in self.subsets if bool(self.own[s].success[i])]
            out.append(min(hit, key=len) if hit else None)
        return out

    def adversarial(self, subset: Subset, i: int) -> dict[str, Any]:
        """Example ``i``'s best adversarial for ``subset`` (from its own run or the subset that broke it)."""
        src = self.source[subset][i] or subset
        return {k: (v[i : i + 1] if isinstance(v, torch.Tensor) else [v[i]]) for k, v in self.own[src].inputs.items()}

    def rows(self) -> list[dict[str, Any]]:
        """One row per subset: robust accuracy (right after the best attack), success rate among examples
        right on clean inputs, the own run's success rate, and how many rows the optimiser lost to a subset."""
        n = len(self.labels)
        right = self.clean_correct
        out = []
        for s in self.subsets:
            own = self.own[s].success.cpu() & right
            best = self.success[s] & right
            row: dict[str, Any] = {
                "subset": "+".join(s),
                "size": len(s),
                "clean_accuracy": float(right.float().mean()),
                "robust_accuracy": float((right & ~best).float().sum() / n),
                "success_rate": float(best.float().sum() / max(int(right.sum()), 1)),
                "own_success_rate": float(own.float().sum() / max(int(right.sum()), 1)),
                "weaker_than_a_subset": len(self.weaker.get(s, [])),
                "queries_per_example": float(self.own[s].extras.get("queries", torch.zeros(1)).float().mean()),
                "attack": self.own[s].attack_name,
            }
            for name, norms in self.own[s].norms.items():
                for kind, values in norms.items():
                    row[f"{name}_{kind}_mean"] = float(values.double().mean())
            out.append(row)
        return out


def check_skip_broken(fusion: Any) -> None:
    """``skip_broken`` is for classification (ValueError otherwise): on a segmenter a skipped example keeps a
    subset's adversarial where the set's own run may have fooled more pixels (or into other classes)."""
    if fusion.task != "classification":
        raise ValueError(
            f"skip_broken=True is for classification, the model is {fusion.task}: a skipped example keeps a subset's "
            "adversarial where its own run may have fooled more pixels (or other classes), which changes pixel accuracy "
            "and mIoU; run without skip_broken"
        )


def worst_case_over_subsets(
    fusion: FusionModel,
    plan: Sequence[ModalityAttack],
    inputs: Mapping[str, Any],
    labels: Any = None,
    *,
    subsets: Sequence[Sequence[str]] | None = None,
    orchestration: str = "sequential",
    rounds: int = 1,
    order: Sequence[str] | None = None,
    stop_at_success: bool = True,
    success_fraction: float = 0.5,
    skip_broken: bool = False,
) -> SubsetReport:
    """Attack every subset of the plan's modalities and report, per example, whether any subset broke it
    and the smallest that did; a superset is never weaker than its subsets (see the module docstring).
    Every subset's attack is built (and so checked) before any runs."""
    check_plan(fusion, plan)
    if order is not None:
        check_order(plan, order)  # filtered per subset below, where a typo would just drop out
    if skip_broken:
        check_skip_broken(fusion)
    names = [e.modality for e in plan]
    if subsets is None:
        wanted = all_subsets(names)
    else:
        wanted = []
        for s in subsets:
            s = tuple(s)
            if not s:
                raise EmptySubsetError("a subset to attack must name at least one modality")
            unknown = [m for m in s if m not in names]
            if unknown:
                raise UnknownModalityError(
                    f"subset {list(s)} names {unknown}, which the plan does not attack (planned: {names}; model: {fusion.names})"
                )
            wanted.append(tuple(m for m in names if m in s))
        wanted = sorted(dict.fromkeys(wanted), key=len)
    attacks = {
        s: JointAttack(
            fusion,
            [e for e in plan if e.modality in s],
            orchestration=orchestration,
            rounds=rounds,
            order=[m for m in order if m in s] if order is not None else None,
            stop_at_success=stop_at_success,
            success_fraction=success_fraction,
        )
        for s in wanted
    }
    logits = clean_forward(fusion, inputs)  # one clean forward for every subset's run
    clean = clean_pass(fusion, inputs, labels, clean_logits=logits)
    clean_pred, used = clean.clean_pred, clean.labels
    own: dict[Subset, AdversarialBatch] = {}
    success: dict[Subset, torch.Tensor] = {}
    source: dict[Subset, list[Subset | None]] = {}
    weaker: dict[Subset, list[int]] = {}
    best: dict[Subset, torch.Tensor] = {}
    for s in wanted:  # smallest first: every proper subset is already final
        skip = None
        if skip_broken:
            skip = torch.zeros(len(clean_pred), dtype=torch.bool)
            for t in wanted:
                if len(t) < len(s) and set(t) < set(s):
                    skip |= success[t]
        own[s] = attacks[s].run(inputs, used, clean_logits=logits, skip=skip)
        skipped = set() if skip is None else set(skip.nonzero().flatten().tolist())
        mine = own[s].success.cpu().clone()
        score = own[s].score.detach().cpu().double().clone()  # 1/0 per example; segmentation: the fooled fraction
        src: list[Subset | None] = [None] * len(mine)
        lost = []
        for t in wanted:
            if len(t) < len(s) and set(t) < set(s):
                for i in (best[t] > score).nonzero().flatten().tolist():
                    score[i] = best[t][i]
                    mine[i] = mine[i] | success[t][i]
                    src[i] = source[t][i] or t
                    if i not in skipped:
                        lost.append(i)
        best[s], success[s], source[s] = score, mine, src
        if lost:
            weaker[s] = sorted(set(lost))
    flags = [
        f"optimiser-weaker: {'+'.join(s)}'s own run missed rows {rows[:10]} that a subset broke (taken from the subset)"
        for s, rows in weaker.items()
    ]
    fooled = next(iter(attacks.values()))._fooled(clean_pred, used)
    return SubsetReport(wanted, used, clean_pred, own, success, source, weaker, flags, clean_fooled=fooled)
