"""Grids of attacks over a stream of batches, accumulated as counts (confusion matrices: one entry per
pixel for segmentation, one per example for classification, so ``accuracy`` is the fraction correct;
plus sums of successes, queries, words changed and perturbation norms), so shards can be summed.

A cell is one attack on one subset of modalities (:class:`Cell`), or a sequence of perturbations applied
to the same example (:class:`ComboCell` of :class:`Step`): a tensor attack (ART / torchattacks recipe),
a TextAttack recipe, a seeded text augmentation, each on the output of the previous one; or a joint
attack (:class:`JointCell`, :class:`~mmfusion_attacks.joint.JointAttack`), or one subset of a worst case
over modality subsets (:class:`SubsetCell`, made by :func:`worst_case_cells`: every subset of a plan is
attacked once per batch and each subset's row takes, per example, the best of its own run and its
subsets', so a superset is never weaker).

Batches are the outer loop and grid cells the inner one, so only one batch (and its adversarials)
is alive at a time: memory does not grow with the number of images. Labels are the ground truth
when a batch has them, else the clean predictions ("pseudo-labels"); the result says which.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..attacks import least_likely_targets
from ..fusion import FusionModel
from ..joint import JointAttack, ModalityAttack, worst_case_over_subsets
from ..metrics import SegmentationMetrics, predicted_classes
from ..recipes import make_attack, recipe_targets
from ..runner import AdversarialBatch, clean_forward, run_attack

__all__ = [
    "Cell",
    "Step",
    "ComboCell",
    "JointCell",
    "SubsetCell",
    "worst_case_cells",
    "CellCounts",
    "GridSpec",
    "GridResult",
    "run_grid",
    "run_transfer",
    "transfer_confusions",
    "to_device",
    "transfer_values",
]

Batch = tuple[Mapping[str, torch.Tensor], "torch.Tensor | None"]


@dataclass(frozen=True)
class Cell:
    """One toolkit attack on one subset; the budget is ``eps_255`` / 255, or ``eps`` (in the attacked
    modalities' own units) when given."""

    attack: str
    eps_255: float
    attacked: tuple[str, ...]
    eps: float | None = None

    @property
    def label(self) -> str:
        return "+".join(m.upper() for m in self.attacked)

    def steps(self, spec: GridSpec) -> tuple[Step, ...]:
        amount = self.eps if self.eps is not None else self.eps_255 / 255
        return (Step("attack", self.attack, self.attacked, amount, toolkit=spec.toolkit, steps=spec.steps),)


@dataclass(frozen=True)
class Step:
    """One perturbation of a cell.

    ``kind``: ``"attack"`` (a tensor recipe of :func:`~mmfusion_attacks.recipes.make_attack`; ``amount``
    is eps in each attacked modality's own units), ``"text-attack"`` (a TextAttack recipe registered in
    :mod:`mmfusion_attacks.text.recipes`; ``amount`` is the query budget, 0 for none) or
    ``"text-augment"`` (``"synonym"`` / ``"deletion"``; ``amount`` is the fraction of words)."""

    kind: str
    name: str
    attacked: tuple[str, ...]
    amount: float = 0.0
    toolkit: str = "torchattacks"
    steps: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("attack", "text-attack", "text-augment"):
            raise ValueError(f"step kind must be 'attack', 'text-attack' or 'text-augment', got {self.kind!r}")
        object.__setattr__(self, "attacked", tuple(self.attacked))

    @property
    def label(self) -> str:
        if self.kind == "attack":
            return f"{self.name.upper()} {self.amount:g} on {'+'.join(self.attacked)}"
        if self.kind == "text-augment":
            return f"{self.name.upper()} {self.amount:.0%} on {'+'.join(self.attacked)}"
        return f"{self.name} on {'+'.join(self.attacked)}"


@dataclass(frozen=True)
class ComboCell:
    """Perturbations applied in order to the same examples (e.g. FGSM on the images, then synonyms in the
    report); ``name`` labels the row."""

    name: str
    steps_: tuple[Step, ...]

    @property
    def label(self) -> str:
        return self.name

    @property
    def attacked(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m for s in self.steps_ for m in s.attacked))

    def steps(self, spec: GridSpec) -> tuple[Step, ...]:
        return self.steps_


@dataclass(frozen=True)
class JointCell:
    """A :class:`~mmfusion_attacks.joint.JointAttack` of ``plan`` (one toolkit attack per modality); on a model
    that lacks some planned modalities, the entries it reads (none: the cell does not apply)."""

    name: str
    plan: tuple[ModalityAttack, ...]
    orchestration: str = "sequential"
    rounds: int = 1
    order: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        return self.name

    @property
    def attacked(self) -> tuple[str, ...]:
        return tuple(e.modality for e in self.plan)


@dataclass(frozen=True)
class SubsetCell:
    """One subset's row of a worst case over modality subsets (see :func:`worst_case_cells`): cells of one
    ``group`` share their runs on each batch."""

    group: str
    plan: tuple[ModalityAttack, ...]
    subset: tuple[str, ...]
    orchestration: str = "sequential"
    rounds: int = 1
    success_fraction: float = 0.5  # segmentation: the fraction of an image's pixels that must be wrong
    skip_broken: bool = False  # a set's own run skips the examples a smaller subset broke (see worst_case_over_subsets)

    @property
    def label(self) -> str:
        return f"{self.group}: {'+'.join(self.subset)}"

    @property
    def attacked(self) -> tuple[str, ...]:
        return self.subset


def worst_case_cells(
    group: str, plan: Sequence[ModalityAttack], *, orchestration: str = "sequential", rounds: int = 1, success_fraction: float = 0.5,
    skip_broken: bool = False,
) -> list[SubsetCell]:
    """One :class:`SubsetCell` per non-empty subset of the plan's modalities (smallest first)."""
    from ..joint.subsets import all_subsets

    plan = tuple(plan)
    return [SubsetCell(group, plan, s, orchestration, rounds, success_fraction, skip_broken) for s in all_subsets([e.modality for e in plan])]


@dataclass
class CellCounts:
    """Everything a classification cell reports, as sums (add two to merge shards)."""

    rows: int = 0
    applied_rows: int = 0
    clean_correct: int = 0
    success: int = 0  # rows right on clean inputs and wrong after the cell's perturbations
    queries: int = 0
    words_changed: int = 0
    words: int = 0
    skipped: int = 0
    weaker: int = 0  # rows a subset broke that this cell's own run did not (worst-case cells)
    norms: dict[str, dict[str, float]] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)

    def add_norms(self, name: str, norms: Mapping[str, torch.Tensor]) -> None:
        slot = self.norms.setdefault(name, {})
        for kind, values in norms.items():
            slot[kind] = slot.get(kind, 0.0) + float(values.double().sum())


@dataclass
class GridSpec:
    """Which attacks, budgets (on the 0-255 scale) and attacked subsets to run, through which toolkit."""

    attacks: Sequence[str] = ("fgsm", "pgd")
    eps_255: Sequence[float] = (10, 20, 40)
    subsets: Sequence[tuple[str, ...]] = (("rgb",), ("ir",), ("rgb", "ir"))
    toolkit: str = "torchattacks"
    steps: int = 10
    attack_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    combos: Sequence[ComboCell | JointCell | SubsetCell] = ()

    def cells(self) -> list[Any]:
        grid: list[Any] = [Cell(a, float(e), tuple(s)) for a in self.attacks for e in self.eps_255 for s in self.subsets]
        return grid + list(self.combos)


@dataclass
class GridResult:
    clean: SegmentationMetrics
    cells: dict[Any, SegmentationMetrics]
    on_target: dict[Any, list[float]]  # [pixels on target, pixels] for targeted cells
    labels_source: str
    meta: dict[str, Any] = field(default_factory=dict)
    counts: dict[Any, CellCounts] = field(default_factory=dict)  # classification cells

    def rows(self, include: Sequence[int] | None = None) -> list[dict[str, Any]]:
        clean = self.clean.miou(include)
        rows = []
        for cell, m in self.cells.items():
            if isinstance(cell, Cell):
                row: dict[str, Any] = {
                    "attack": cell.attack.upper(),
                    "eps_255": cell.eps_255,
                    "attacked": cell.label,
                    "mAcc": m.macc(include),
                    "mIoU": m.miou(include),
                    "IoU_R": m.miou(include) / clean if clean > 0 else float("nan"),
                    "accuracy": m.pixel_accuracy(),
                    "per_class_IoU": [None if v != v else round(v, 6) for v in m.per_class_iou().tolist()],
                }
            else:
                row = {"cell": cell.label, "attacked": "+".join(m_.upper() for m_ in cell.attacked), "accuracy": m.pixel_accuracy()}
                if cell not in self.counts:  # segmentation
                    row.update({"mAcc": m.macc(include), "mIoU": m.miou(include),
                                "IoU_R": m.miou(include) / clean if clean > 0 else float("nan")})
            if cell in self.on_target:
                hit, total = self.on_target[cell]
                row["target_rate"] = hit / max(total, 1)
            if cell in self.counts:
                row.update(self._classification_fields(cell, m))
            rows.append(row)
        return rows

    def _classification_fields(self, cell: Any, m: SegmentationMetrics) -> dict[str, Any]:
        c = self.counts[cell]
        n = max(c.rows, 1)
        row: dict[str, Any] = {
            "cell": cell.label,
            "applies": c.applied_rows > 0,
            "per_class_recall": [None if v != v else round(v, 6) for v in m.per_class_recall().tolist()],
            "success_rate": c.success / max(c.clean_correct, 1),
            "queries_per_example": c.queries / n,
            "words_changed_per_example": c.words_changed / n,
            "fraction_words_changed": c.words_changed / c.words if c.words else 0.0,
            "skipped": c.skipped,
            "weaker_than_a_subset": c.weaker,
            "rows": c.rows,
            "flags": sorted(c.flags),
        }
        for name, sums in c.norms.items():
            for kind, total in sums.items():
                row[f"{name}_{kind}_mean"] = total / n
        return row

    def clean_summary(self, include: Sequence[int] | None = None) -> dict[str, Any]:
        out = {
            "mAcc": self.clean.macc(include),
            "mIoU": self.clean.miou(include),
            "pixel_accuracy": self.clean.pixel_accuracy(),
            "accuracy": self.clean.pixel_accuracy(),
            "per_class_IoU": [None if v != v else round(v, 6) for v in self.clean.per_class_iou().tolist()],
        }
        if self.counts:
            out["per_class_recall"] = [None if v != v else round(v, 6) for v in self.clean.per_class_recall().tolist()]
        return out


def _num_classes(fusion: FusionModel, logits: torch.Tensor) -> int:
    return fusion.num_classes or int(logits.shape[1])


def _build_step(step: Step, fusion: FusionModel, spec: GridSpec) -> Any:
    """The attack / augmenter object of one step on one model (None: the model does not read that modality)."""
    if not all(m in fusion.modalities for m in step.attacked):
        return None
    if step.kind == "attack":
        return make_attack(step.name, fusion, step.attacked, toolkit=step.toolkit, eps=step.amount, steps=step.steps, **spec.attack_kwargs.get(step.name.lower(), {}))
    from ..adapters.textattack import FusionModelWrapper
    from ..text.augment import SynonymSubstitution, WordDeletion
    from ..text.recipes import build_text_attack

    (text,) = step.attacked
    if step.kind == "text-attack":
        budget = int(step.amount) if step.amount else None
        return build_text_attack(step.name, FusionModelWrapper(fusion, text, long_text="skip"), query_budget=budget, **spec.attack_kwargs.get(step.name.lower(), {}))
    augmenters = {"synonym": SynonymSubstitution, "deletion": WordDeletion}
    if step.name not in augmenters:
        raise KeyError(f"unknown text augmentation '{step.name}'; choose from {sorted(augmenters)}")
    return _MemoAugmenter(augmenters[step.name](step.amount, seed=step.seed), (step.name, step.amount, step.seed))


class _MemoAugmenter:
    """A seeded augmenter whose result is a function of (settings, text) alone (its seeds derive from the
    text), remembered across cells and models of one process: a grid over four models perturbs the same
    reports once, not four times (WordNet substitution costs tens of milliseconds per report)."""

    _memo: OrderedDict[tuple, Any] = OrderedDict()
    limit = 100_000

    def __init__(self, augmenter: Any, key: tuple) -> None:
        self.augmenter, self.key = augmenter, key

    def details(self, texts: Sequence[str], ids: Sequence[Any] | None = None) -> list[Any]:
        if ids is not None:
            return self.augmenter.details(texts, ids)
        todo = [t for t in dict.fromkeys(texts) if (self.key, t) not in self._memo]
        if todo:
            for t, d in zip(todo, self.augmenter.details(todo)):
                self._memo[(self.key, t)] = d
            while len(self._memo) > self.limit:
                self._memo.popitem(last=False)
        out = []
        for i, t in enumerate(texts):
            d = self._memo[(self.key, t)]
            out.append(dataclasses.replace(d, index=i) if dataclasses.is_dataclass(d) and hasattr(d, "index") else d)
        return out

    def __call__(self, texts: Sequence[str]) -> list[str]:
        return [d.perturbed for d in self.details(texts)]

    def __repr__(self) -> str:
        return repr(self.augmenter)


def _run_step(step: Step, built: Any, fusion: FusionModel, inputs, labels, clean_logits, logits) -> AdversarialBatch:
    if step.kind == "text-attack":  # recipes draw from random / numpy / torch (DeepWordBug's edits): seed them
        import textattack

        textattack.shared.utils.set_seed(step.seed)
    if step.kind == "text-augment":
        from ..adapters.textattack import perturb_text

        return perturb_text(built, fusion, inputs, labels, text=step.attacked[0])
    targets = None
    if step.kind == "attack" and recipe_targets(step.name) == "least-likely":
        targets = least_likely_targets(logits)
    return run_attack(built, inputs, labels, targets=targets, clean_logits=clean_logits)


def _tally(tally: CellCounts, result: AdversarialBatch, attacked: Iterable[str]) -> None:
    """Add one result's words, norms, queries, skips and flags to a cell's counts."""
    for name in attacked:
        if name in result.norms:
            if "words_changed" in result.norms[name]:
                tally.words_changed += int(result.norms[name]["words_changed"].sum())
                tally.words += int(result.extras.get("words", torch.zeros(1)).sum())
            else:
                tally.add_norms(name, result.norms[name])
    tally.queries += int(result.extras.get("queries", torch.zeros(1)).sum())
    tally.skipped += sum(int(f.split()[1]) for f in result.flags if f.startswith("skipped:"))
    tally.flags.update(f.split(":")[0] for f in result.flags)


def _build_joint(cell: JointCell, fusion: FusionModel) -> JointAttack | None:
    plan = [e for e in cell.plan if e.modality in fusion.modalities]
    if not plan:
        return None
    order = [m for m in cell.order if m in fusion.modalities] if cell.order is not None else None
    return JointAttack(fusion, plan, orchestration=cell.orchestration, rounds=cell.rounds, order=order)


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _run_worst_cases(groups, fusion: FusionModel, inputs, labels, clean_pred, counts, seed=None) -> dict[SubsetCell, tuple[torch.Tensor, bool]]:
    """Each group's worst case on this batch: per cell, the predictions after the best of its own run and
    its subsets' (the clean predictions where the model does not read the whole subset)."""
    out: dict[SubsetCell, tuple[torch.Tensor, bool]] = {}
    for (_, plan, orchestration, rounds, fraction, skip_broken), members in groups.items():
        if seed is not None:
            seed(members[0])
        # a model that lacks some modalities of a subset is attacked on the part it reads (a perturbation of a
        # modality it never sees changes nothing): the superset's row is then its readable subset's
        readable = {c: tuple(m for m in c.subset if m in fusion.modalities) for c in members}
        for c, part in readable.items():
            if not part:
                out[c] = (clean_pred, False)
        parts = list(dict.fromkeys(p for p in readable.values() if p))
        if not parts:
            continue
        report = worst_case_over_subsets(
            fusion, [e for e in plan if e.modality in fusion.modalities], inputs, labels,
            subsets=parts, orchestration=orchestration, rounds=rounds, success_fraction=fraction, skip_broken=skip_broken,
        )
        for c, part in readable.items():
            if not part:
                continue
            own = report.own[part]
            pred = own.adv_pred.clone()
            norms = {m: {k: v.clone() for k, v in d.items()} for m, d in own.norms.items()}
            for i, src in enumerate(report.source[part]):
                if src is None:
                    continue
                pred[i] = report.own[src].adv_pred[i]
                for m, d in norms.items():
                    for k in d:
                        d[k][i] = report.own[src].norms[m][k][i] if m in report.own[src].norms else 0
            out[c] = (pred, True)
            if counts is not None:
                tally = counts[c]
                _tally(tally, dataclasses.replace(own, norms=norms), part)
                tally.weaker += len(report.weaker.get(part, []))
                if report.weaker.get(part):
                    tally.flags.add("optimiser-weaker")
                if part != c.subset:
                    tally.flags.add(f"reads only {'+'.join(part)}")
    return out


def to_device(inputs: Mapping[str, Any], device: torch.device, names: Iterable[str]) -> dict[str, Any]:
    """The ``names`` entries of a batch on ``device`` (tensors moved, texts copied as lists)."""
    return {k: (inputs[k].to(device) if isinstance(inputs[k], torch.Tensor) else list(inputs[k])) for k in names}


def run_grid(
    fusion: FusionModel,
    batches: Iterable[Batch],
    spec: GridSpec,
    *,
    progress: bool = True,
    on_batch: Callable[[int, Mapping[str, torch.Tensor], torch.Tensor, torch.Tensor, dict[Any, AdversarialBatch]], None] | None = None,
    total: int | None = None,
    seed_for: Callable[[Any, int], int] | None = None,
) -> GridResult:
    """Run every cell of ``spec`` on every batch; ``on_batch`` sees each batch's results (for figures).

    ``seed_for(cell, batch_index)``: when given, the random generators (torch, numpy, random) are seeded
    with it before each cell on each batch (a worst-case group: its first cell), so a cell's result does
    not depend on which other cells ran before it: a resumed or sharded run equals an uninterrupted one.

    Batches may hold modalities the model does not read (a vision-only model in an image+text study):
    a step on such a modality does not apply to that model (its rows then score the model on inputs it
    does not read, and ``applies`` is False)."""
    cells = spec.cells()
    device = fusion.device
    classification = fusion.task == "classification"
    built = {c: [(s, _build_step(s, fusion, spec)) for s in c.steps(spec)] for c in cells if isinstance(c, (Cell, ComboCell))}
    joints = {c: _build_joint(c, fusion) for c in cells if isinstance(c, JointCell)}
    groups: dict[tuple, list[SubsetCell]] = {}
    for c in cells:
        if isinstance(c, SubsetCell):
            groups.setdefault((c.group, c.plan, c.orchestration, c.rounds, c.success_fraction, c.skip_broken), []).append(c)
    clean: SegmentationMetrics | None = None
    metrics: dict[Any, SegmentationMetrics] = {}
    counts: dict[Any, CellCounts] = {c: CellCounts() for c in cells} if classification else {}
    on_target: dict[Any, list[float]] = {}
    sources = set()
    bar = tqdm(batches, total=total, desc="batches", disable=None if progress else True, leave=False)
    for index, (inputs, labels) in enumerate(bar):
        inputs = to_device(inputs, device, fusion.modalities)
        clean_logits = clean_forward(fusion, inputs)
        logits = clean_logits.logits
        clean_pred = predicted_classes(logits)
        if labels is None:
            labels, source = clean_pred, "pseudo-labels (clean predictions)"
        else:
            labels, source = labels.to(device), "ground truth"
        sources.add(source)
        n_classes = _num_classes(fusion, logits)
        if clean is None:
            clean = SegmentationMetrics(n_classes, ignore_index=fusion.ignore_index, device=device)
            metrics = {c: SegmentationMetrics(n_classes, ignore_index=fusion.ignore_index, device=device) for c in cells}
        clean.update(clean_pred, labels)
        results: dict[Any, AdversarialBatch] = {}
        subset_preds = _run_worst_cases(groups, fusion, inputs, labels, clean_pred, counts if classification else None,
                                        None if seed_for is None else (lambda c, i=index: _seed_all(seed_for(c, i))))
        for cell in cells:
            if seed_for is not None and not isinstance(cell, SubsetCell):
                _seed_all(seed_for(cell, index))
            current, current_logits, cl, result = inputs, logits, clean_logits, None
            applied = False
            if isinstance(cell, SubsetCell):
                adv_pred, applied = subset_preds[cell]
            elif isinstance(cell, JointCell):
                if joints[cell] is not None:
                    result = joints[cell](inputs, labels)
                    applied = True
                    if classification:
                        _tally(counts[cell], result, result.attacked)
            else:
                for step, attack in built[cell]:
                    if attack is None:
                        continue
                    result = _run_step(step, attack, fusion, current, labels, cl, current_logits)
                    applied = True
                    if classification:
                        _tally(counts[cell], result, step.attacked)
                    current, cl = result.inputs, None
                    if len(built[cell]) > 1:
                        with torch.no_grad():
                            current_logits = fusion(current)
            if isinstance(cell, SubsetCell):
                pass
            elif result is None:  # no step applies to this model: it is scored on the unchanged batch
                adv_pred = clean_pred
            else:
                adv_pred = result.adv_pred
                results[cell] = result
            metrics[cell].update(adv_pred, labels)
            if classification:
                tally = counts[cell]
                tally.rows += len(labels)
                tally.applied_rows += len(labels) if applied else 0
                right = clean_pred == labels
                tally.clean_correct += int(right.sum())
                tally.success += int((right & (adv_pred != labels)).sum())
            if result is not None and isinstance(cell, Cell) and recipe_targets(cell.attack) == "least-likely":
                targets = result.targets
                hit = on_target.setdefault(cell, [0.0, 0.0])
                hit[0] += float((result.adv_pred == targets).sum())
                hit[1] += float(targets.numel())
        if on_batch is not None:
            on_batch(index, inputs, labels, clean_pred, results)
        del results, inputs, logits, clean_logits
    if clean is None:
        raise ValueError("run_grid got no batches")
    return GridResult(clean, metrics, on_target, " + ".join(sorted(sources)), {"toolkit": spec.toolkit, "steps": spec.steps}, counts)


def transfer_confusions(
    sources: Mapping[str, FusionModel],
    targets: Mapping[str, FusionModel],
    batches: Iterable[Batch],
    *,
    attack: str | Mapping[str, str] = "fgsm",
    eps_255: float = 8,
    attacked: tuple[str, ...] = ("rgb", "ir"),
    toolkit: str = "torchattacks",
    steps: int = 10,
    attack_kwargs: Mapping[str, dict[str, Any]] | None = None,
    eval_repeats: int = 1,
    progress: bool = True,
    total: int | None = None,
) -> tuple[dict[str, SegmentationMetrics], dict[tuple[str, str], SegmentationMetrics]]:
    """The confusion matrices behind :func:`run_transfer`: each target's on clean inputs and on the
    adversarials crafted on each source (integers: shards of a dataset sum exactly)."""
    per_source = {s: attack if isinstance(attack, str) else attack[s] for s in sources}
    kwargs = attack_kwargs or {}
    built = {
        s: make_attack(per_source[s], m, attacked, toolkit=toolkit, eps=eps_255 / 255, steps=steps, **kwargs.get(per_source[s].lower(), {}))
        for s, m in sources.items()
    }
    clean: dict[str, SegmentationMetrics] = {}
    adv: dict[tuple[str, str], SegmentationMetrics] = {}
    for inputs, labels in tqdm(batches, total=total, desc="transfer", disable=None if progress else True, leave=False):
        preds = {}
        for t, model in targets.items():
            inputs_t = to_device(inputs, model.device, inputs)
            preds[t] = model.predict(inputs_t)
            truth = preds[t] if labels is None else labels.to(model.device)
            n_classes = model.num_classes or int(model(inputs_t).shape[1])
            clean.setdefault(t, SegmentationMetrics(n_classes, ignore_index=model.ignore_index, device=model.device))
            clean[t].update(preds[t], truth)
            for _ in range(eval_repeats - 1):
                clean[t].update(model.predict(inputs_t), truth)
        for s, src in sources.items():
            inputs_s = to_device(inputs, src.device, inputs)
            truth_s = src.predict(inputs_s) if labels is None else labels.to(src.device)
            crafted = run_attack(built[s], inputs_s, truth_s).inputs
            for t, model in targets.items():
                truth = preds[t] if labels is None else labels.to(model.device)
                key = (s, t)
                adv.setdefault(key, SegmentationMetrics(clean[t].num_classes, ignore_index=model.ignore_index, device=model.device))
                crafted_t = to_device(crafted, model.device, crafted)
                for _ in range(eval_repeats):
                    adv[key].update(model.predict(crafted_t), truth)
    return clean, adv


def transfer_values(clean: Mapping[str, SegmentationMetrics], adv: Mapping[tuple[str, str], SegmentationMetrics],
                    metric: str = "iou_ratio") -> dict[tuple[str, str], float]:
    """``iou_ratio``: adversarial mIoU / clean mIoU of the target; ``accuracy``: fraction of pixels /
    examples right on the adversarials."""
    if metric not in ("iou_ratio", "accuracy"):
        raise ValueError(f"metric must be 'iou_ratio' or 'accuracy', got {metric!r}")
    if metric == "accuracy":
        return {key: m.pixel_accuracy() for key, m in adv.items()}
    return {key: (m.miou() / clean[key[1]].miou() if clean[key[1]].miou() > 0 else float("nan")) for key, m in adv.items()}


def run_transfer(
    sources: Mapping[str, FusionModel],
    targets: Mapping[str, FusionModel],
    batches: Iterable[Batch],
    *,
    attack: str | Mapping[str, str] = "fgsm",
    eps_255: float = 8,
    attacked: tuple[str, ...] = ("rgb", "ir"),
    toolkit: str = "torchattacks",
    steps: int = 10,
    attack_kwargs: Mapping[str, dict[str, Any]] | None = None,
    eval_repeats: int = 1,
    progress: bool = True,
    total: int | None = None,
    metric: str = "iou_ratio",
) -> dict[tuple[str, str], float]:
    """Each target model on adversarials crafted on each source model (white box on the diagonal,
    transfer elsewhere): ``metric="iou_ratio"`` (mIoU on adversarials / clean mIoU) or ``"accuracy"``
    (fraction of pixels / examples right on adversarials). ``attack`` may name one recipe per source;
    ``eval_repeats`` scores stochastic targets (randomised defences) over several draws."""
    if metric not in ("iou_ratio", "accuracy"):
        raise ValueError(f"metric must be 'iou_ratio' or 'accuracy', got {metric!r}")
    clean, adv = transfer_confusions(sources, targets, batches, attack=attack, eps_255=eps_255, attacked=attacked, toolkit=toolkit,
                                     steps=steps, attack_kwargs=attack_kwargs, eval_repeats=eval_repeats, progress=progress, total=total)
    return transfer_values(clean, adv, metric)
