"""Run a spec: every experiment's cells over its data in shards, each (cell, shard) stored as a record
the moment it is done, then reduced, checked and reported.

- **Resumable.** A (cell, shard) with a valid record (:mod:`.store`) is not recomputed; the random
  generators are seeded per (cell, batch) (:func:`~.grid.run_grid`'s ``seed_for``), so a resumed run
  ends with the results of an uninterrupted one.
- **Distributed.** Under ``torchrun`` (``WORLD_SIZE`` > 1) shard ``i`` belongs to rank ``i % WORLD_SIZE``;
  every rank sends its records to rank 0 with ``torch.distributed.gather_object`` (gloo on CPUs, NCCL
  on GPUs), which stores them and reduces all shards in shard order: confusion matrices and counts are
  integers, summed exactly, so N processes give the numbers of one. Each rank uses its share of the
  machine's cores for torch's threads.
- **Checked.** The reduced rows go through :mod:`.validity`; failed checks are marked in the rows.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..joint import ModalityAttack, check_skip_broken
from ..metrics import SegmentationMetrics
from .grid import (
    Cell,
    CellCounts,
    ComboCell,
    GridResult,
    GridSpec,
    JointCell,
    Step,
    SubsetCell,
    run_grid,
    to_device,
    transfer_confusions,
    worst_case_cells,
)
from .sources import apply_wrappers, build_data, build_model, data_fingerprint, model_fingerprint
from .spec import ExperimentSpec, RunSpec, spec_to_dict, spec_to_yaml
from .store import ResultsStore, atomic_write_text, digest, restore_floats

__all__ = ["Unit", "experiment_units", "run_spec", "summarize", "summarize_transfer", "OversubscriptionWarning", "threads_for_rank",
           "write_summary", "describe_model", "check_prompts", "ChangedModelError"]


class OversubscriptionWarning(RuntimeWarning):
    """More torch threads (over every process of this machine) than cores: timings are unreliable."""


@dataclass(frozen=True)
class Unit:
    """One row of an experiment: a grid cell under one seed, with the facts a report and the validity
    checks need (``meta``) and the hash of everything its records depend on (``key``)."""

    cell: Any
    seed: int
    label: str
    meta: tuple[tuple[str, Any], ...]
    key: str

    def info(self) -> dict[str, Any]:
        return dict(self.meta)


def _cell_config(cell: Any) -> dict[str, Any]:
    return {"type": type(cell).__name__, **dataclasses.asdict(cell)}


def _experiment_config(exp: ExperimentSpec, spec: RunSpec) -> dict[str, Any]:
    """What every record of the experiment depends on (not: how results are summarised or shown)."""
    config = {"model": exp.model, "data": exp.data, "batch_size": exp.batch_size, "shard": exp.shard, "labels": exp.labels,
              "toolkit": exp.toolkit, "steps": exp.steps, "attack_kwargs": exp.attack_kwargs, "amp": spec.amp,
              "seed": spec.seed, "qualitative": exp.qualitative}
    if exp.limit is not None:
        config["limit"] = exp.limit
    if exp.transfer:
        config["transfer"] = exp.transfer
    return config


def _plan(entries: Sequence[dict[str, Any]], exp: ExperimentSpec) -> tuple[ModalityAttack, ...]:
    return tuple(ModalityAttack(e["modality"], e["attack"], e.get("budget"), toolkit=e.get("toolkit", exp.toolkit),
                                steps=e.get("steps", exp.steps), seed=e.get("seed", 0), options=e.get("options") or {}) for e in entries)


def _eps_text(eps_255: float | None, eps: float | None) -> str:
    return f"{eps:g}" if eps is not None else f"{eps_255:g}/255"


def toolkit_versions() -> dict[str, str | None]:
    """The installed versions of the attack toolkits (what an attack's result depends on besides this
    package): part of every record's identity, so an upgrade recomputes instead of mixing versions."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("torchattacks", "adversarial-robustness-toolbox", "textattack"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


#: experiment seed s offsets the cells' own seeds by s times this (seed 0: the seeds as written)
_SEED_STRIDE = 1_000_003


def _reseeded(cell: Any, seed: int) -> Any:
    """``cell`` with its steps' and plan entries' own seeds offset by the experiment seed: text augmenters and
    TextAttack recipes seed themselves from those, so without it every seed of ``seeds:`` repeated the same
    text rows (torch attacks vary through the per-cell seeding of the random generators anyway)."""
    if seed == 0:
        return cell
    offset = seed * _SEED_STRIDE
    if isinstance(cell, ComboCell):
        return dataclasses.replace(cell, steps_=tuple(dataclasses.replace(s, seed=s.seed + offset) for s in cell.steps_))
    if isinstance(cell, (JointCell, SubsetCell)):
        return dataclasses.replace(cell, plan=tuple(dataclasses.replace(m, seed=m.seed + offset) for m in cell.plan))
    return cell


def experiment_units(exp: ExperimentSpec, spec: RunSpec, sanity_modalities: Sequence[str] = ()) -> list[Unit]:
    """The experiment's rows in report order: attacks x budgets x subsets, combinations, joint attacks,
    worst cases over subsets, the unbounded sanity attack (on ``sanity_modalities``); times each seed."""
    cells: list[tuple[Any, str, dict[str, Any]]] = []
    budgets = [(e, None) for e in exp.eps_255] + [(e * 255, e) for e in exp.eps]
    for a in exp.attacks:
        for e255, e in budgets:
            for s in exp.subsets:
                attacked = tuple(s.split("+"))
                cell = Cell(a, float(e255), attacked, eps=e)
                label = f"{a.upper()} {_eps_text(e255, e)} on {'+'.join(m.upper() for m in attacked)}"
                cells.append((cell, label, {"kind": "attack", "attack": a, "toolkit": exp.toolkit, "eps": e if e is not None else e255 / 255,
                                            "eps_unit": "own units" if e is not None else "x/255",
                                            "steps": exp.steps, "attacked": list(attacked), "group": None}))
    for c in exp.combos:
        steps = tuple(Step(s["kind"], s["name"], tuple(s["attacked"]), float(s.get("amount", 0.0)), toolkit=s.get("toolkit", exp.toolkit),
                           steps=s.get("steps", exp.steps), seed=s.get("seed", 0)) for s in c["steps"])
        cell = ComboCell(c["name"], steps)
        single = steps[0] if len(steps) == 1 and steps[0].kind == "attack" else None
        cells.append((cell, c["name"], {"kind": "combo", "attack": single.name if single else None, "toolkit": single.toolkit if single else None,
                                        "eps": single.amount if single else None, "steps": single.steps if single else None,
                                        "attacked": list(cell.attacked), "group": None}))
    for j in exp.joint:
        cell = JointCell(j["name"], _plan(j["plan"], exp), orchestration=j.get("orchestration", "sequential"), rounds=j.get("rounds", 1),
                         order=tuple(j["order"]) if j.get("order") else None)
        cells.append((cell, j["name"], {"kind": "joint", "attack": None, "toolkit": None, "eps": None, "steps": None,
                                        "attacked": list(cell.attacked), "group": None}))
    for w in exp.worst_case:
        for cell in worst_case_cells(w["group"], _plan(w["plan"], exp), orchestration=w.get("orchestration", "sequential"),
                                     rounds=w.get("rounds", 1), success_fraction=w.get("success_fraction", 0.5),
                                     skip_broken=w.get("skip_broken", False)):
            cells.append((cell, cell.label, {"kind": "worst-case", "attack": None, "toolkit": None, "eps": None, "steps": None,
                                             "attacked": list(cell.subset), "group": w["group"]}))
    if exp.sanity and sanity_modalities:
        a = exp.sanity.get("attack", "bim").lower()
        toolkit = exp.sanity.get("toolkit", exp.toolkit)
        n = exp.sanity.get("steps", exp.steps)
        attacked = tuple(sanity_modalities)
        name = f"SANITY {a.upper()} unbounded on {'+'.join(m.upper() for m in attacked)}"
        cell = ComboCell(name, (Step("attack", a, attacked, 1.0, toolkit=toolkit, steps=n),))
        cells.append((cell, name, {"kind": "sanity", "attack": a, "toolkit": toolkit, "eps": 1.0, "steps": n, "attacked": list(attacked),
                                   "group": None}))
    config = _experiment_config(exp, spec)
    units = []
    for seed in exp.seeds:
        for template, label, meta in cells:
            cell = _reseeded(template, seed)
            shown = label if len(exp.seeds) == 1 else f"{label} (seed {seed})"
            key = digest({"cell": _cell_config(cell), "seed": seed, "experiment": config})
            units.append(Unit(cell, seed, shown, tuple(meta.items()), key))
    labels = [u.label for u in units]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        from .spec import SpecError

        raise SpecError([f"experiments.{exp.name}: rows {twice} are given more than once (each row is run and counted once)"], spec.source)
    return units


def threads_for_rank(local_world: int) -> int:
    """Torch threads for one of ``local_world`` processes on this machine: its share of the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_world))


def _setup_distributed(device: str) -> tuple[int, int, str]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.set_num_threads(threads_for_rank(local_world))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _warn_oversubscribed(rank_threads: int, local_world: int) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if rank_threads * local_world > cores:
        warnings.warn(f"{local_world} process(es) x {rank_threads} torch threads on {cores} cores: oversubscribed (measured: 10-50x "
                      "slower); set OMP_NUM_THREADS or run fewer processes", OversubscriptionWarning, stacklevel=3)
    elif load > cores + 0.5:
        warnings.warn(f"this machine is busy (load {load:.1f} on {cores} cores): timings will be slower than the machine can do",
                      OversubscriptionWarning, stacklevel=3)


def _payload(result: GridResult, cell: Any, seconds: float, examples: list[dict[str, Any]]) -> dict[str, Any]:
    m = result.cells[cell]
    counts = result.counts.get(cell)
    return {
        "confusion": m.counts().tolist(),
        "counts": None if counts is None else {**dataclasses.asdict(counts), "flags": sorted(counts.flags)},
        "on_target": result.on_target.get(cell),
        "labels_source": result.labels_source,
        "examples": examples,
        "seconds": seconds,
    }


def _counts_from(d: dict[str, Any]) -> CellCounts:
    d = dict(d)
    d["flags"] = set(d.get("flags", []))
    return CellCounts(**d)


def _add_counts(a: CellCounts, b: CellCounts) -> CellCounts:
    out = CellCounts()
    for f in dataclasses.fields(CellCounts):
        if f.name in ("norms", "flags"):
            continue
        setattr(out, f.name, getattr(a, f.name) + getattr(b, f.name))
    out.flags = a.flags | b.flags
    for src in (a.norms, b.norms):
        for name, sums in src.items():
            slot = out.norms.setdefault(name, {})
            for kind, v in sums.items():
                slot[kind] = slot.get(kind, 0.0) + v
    return out


class _Qualitative:
    """Draws (segmentation) or quotes (text) the first examples of the first shard for the report."""

    def __init__(self, out: Path, exp: ExperimentSpec, units: list[Unit], fusion: Any, labels_known: bool) -> None:
        self.out, self.exp, self.fusion, self.labels_known = out, exp, fusion, labels_known
        # a panel is named by its unit (cell and seed): named by the cell alone, seed 1's overwrote seed 0's
        self.names = {u.cell: f"{digest(_cell_config(u.cell), 12)}_seed{u.seed}" for u in units}
        attack_units = [u for u in units if u.info()["kind"] == "attack"]
        self.draw = set()
        for subset in dict.fromkeys(tuple(u.info()["attacked"]) for u in attack_units):
            last = [u for u in attack_units if tuple(u.info()["attacked"]) == subset and u.info()["attack"] == attack_units[-1].info()["attack"]]
            if last:
                self.draw.add(max(last, key=lambda u: u.info()["eps"]).cell)
        self.examples: dict[Any, list[dict[str, Any]]] = {}

    def __call__(self, index: int, inputs: dict, labels: torch.Tensor, clean_pred: torch.Tensor, results: dict) -> None:
        if index != 0 or not self.exp.qualitative:
            return
        n = min(self.exp.qualitative, len(labels))
        texts = [m for m, mod in self.fusion.modalities.items() if mod.kind == "text"]
        for cell, res in results.items():
            out = self.examples.setdefault(cell, [])
            for name in texts:
                for i in range(n):
                    before, after = inputs[name][i], res.inputs[name][i]
                    if before != after:
                        out.append({"kind": "text", "modality": name, "original": before, "adversarial": after})
            if self.fusion.task == "segmentation" and cell in self.draw:
                for i in range(n):
                    rel = f"qualitative/{self.exp.name}/{self.names[cell]}_{i}.png"
                    self._draw(self.out / rel, inputs, res, labels, clean_pred, i)
                    out.append({"kind": "segmentation", "path": rel, "index": i})

    def _draw(self, path: Path, inputs: dict, res: Any, labels: torch.Tensor, clean_pred: torch.Tensor, i: int) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .report import colorize

        panels = []
        for name, mod in self.fusion.modalities.items():
            if mod.kind != "image":
                continue
            for tag, x in (("", inputs[name][i]), (" (adversarial)", res.inputs[name][i])):
                x = x.detach().float().cpu()
                lo, hi = mod.valid_range or (float(x.min()), float(x.max()) + 1e-9)
                x = ((x - lo) / (hi - lo)).clamp(0, 1)
                panels.append((x[:3].permute(1, 2, 0).numpy() if x.shape[0] >= 3 else x[0].numpy(), name + tag, None if x.shape[0] >= 3 else "inferno"))
        if self.labels_known:
            panels.append((colorize(labels[i]), "ground truth", None))
        panels += [(colorize(clean_pred[i]), "clean prediction", None), (colorize(res.adv_pred[i]), "adversarial prediction", None)]
        fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.4))
        for ax, (img, title, cmap) in zip(axes, panels):
            ax.imshow(img, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
        fig.savefig(tmp, dpi=80)
        plt.close(fig)
        os.replace(tmp, path)


class _Models:
    """The run's models, each unwrapped model entry built (trained, loaded) once and shared by every
    experiment and every wrapped variant of it (wrappers share the network's weights)."""

    def __init__(self, spec: RunSpec, device: str, progress: bool) -> None:
        self.spec, self.device, self.progress, self.built = spec, device, progress, {}

    def __call__(self, entry: dict[str, Any]) -> Any:
        plain = {k: v for k, v in entry.items() if k != "wrap"}
        key = digest(plain)
        if key not in self.built:
            self.built[key] = build_model(plain, seed=self.spec.seed, device=self.device, progress=self.progress)
        fusion = apply_wrappers(self.built[key], entry.get("wrap") or ())
        return fusion.use_amp() if self.spec.amp else fusion


def _check_include_classes(exp: ExperimentSpec, fusion: Any, num_classes: int | None, source: str) -> None:
    """``include_classes`` against the model: a classifier has no pixel means to restrict (it was ignored),
    a class id past the model's classes crashed after every record was computed."""
    from .spec import SpecError

    where = f"experiments.{exp.name}.include_classes"
    if fusion.task != "segmentation":
        raise SpecError([f"{where}: the model is a {fusion.task} model; include_classes picks the classes of a segmentation "
                         "model's mIoU / mAcc: remove it"], source)
    bad = [k for k in exp.include_classes or () if num_classes is not None and k >= num_classes]
    if bad:
        raise SpecError([f"{where}: class(es) {bad} do not exist: the model has {num_classes} classes (0..{num_classes - 1})"], source)


def _preflight(experiments: Sequence[ExperimentSpec], spec: RunSpec, models: _Models) -> None:
    """What needs a model checked for every experiment before the first one runs (models are built once
    and kept for the run, so building them here costs nothing extra)."""
    from .spec import SpecError

    for exp in experiments:
        if exp.kind == "grid" and exp.include_classes is not None:
            fusion = models(exp.model)
            _check_include_classes(exp, fusion, fusion.num_classes, spec.source)
        if exp.kind == "grid" and any(w.get("skip_broken") for w in exp.worst_case):
            try:
                check_skip_broken(models(exp.model))
            except ValueError as err:
                raise SpecError([f"experiments.{exp.name}.worst_case: skip_broken is for classification ({err})"], spec.source) from None


class ChangedModelError(RuntimeError):
    """The model computes other outputs than when the records of an output folder were made, though its
    weights and the spec are the same (its code changed, or a library it calls): reusing them would mix
    two models in one table."""


#: values of the behaviour probe kept (evenly spaced over the first batch's clean logits)
_PROBE_VALUES = 4096
#: relative difference of the probe's logits allowed on resume (other threads, devices, TF32: ~1e-6..1e-3)
_PROBE_TOLERANCE = 1e-2


def _behaviour_probe(fusion: Any, inputs: dict[str, Any], *, twice: bool) -> dict[str, Any]:
    """Clean logits of ``inputs`` (seeded, so models with random defences repeat; ``twice``: run again to
    find models that do not), evenly subsampled: what a resumed run compares before it reuses any record."""
    import random

    import numpy as np

    from ..surface import frozen_model_state

    def once() -> torch.Tensor:
        devices = [fusion.device] if fusion.device.type == "cuda" else []
        state = (random.getstate(), np.random.get_state())
        try:
            with torch.random.fork_rng(devices=devices), frozen_model_state(fusion), torch.no_grad():
                torch.manual_seed(0)
                random.seed(0)
                np.random.seed(0)
                return fusion(inputs).detach().to(torch.float64).flatten().cpu()
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])

    first = once()
    idx = torch.linspace(0, first.numel() - 1, steps=min(_PROBE_VALUES, first.numel())).round().long()
    return {"logits": first[idx].tolist(), "deterministic": bool(torch.equal(first, once())) if twice else None}


def _check_behaviour(exp: ExperimentSpec, store: ResultsStore, out: Path, fusion: Any, inputs: dict[str, Any], identity: dict[str, Any],
                     rank: int, label: str | None = None) -> None:
    """Refuse to reuse an output folder's records when the model's clean outputs on the first examples
    differ from those recorded with them (weights and spec unchanged: e.g. its code was edited); record
    them on a first run. Models that do not repeat under a fixed seed are not checked. ``label``: which
    model of a transfer experiment."""
    key = (exp.name, digest({"behaviour-probe": True} if label is None else {"behaviour-probe": True, "model": label}), 0)
    stored = store.load(key, identity)
    if stored is None:  # a first run: two forwards of the first batch (do they repeat?)
        probe = _behaviour_probe(fusion, inputs, twice=True)
        if rank == 0:
            store.save(key, identity, probe)
        return
    if not stored.get("deterministic"):
        return
    probe = _behaviour_probe(fusion, inputs, twice=False)  # one forward: a model that stopped repeating changed too
    old, new = torch.tensor(stored["logits"], dtype=torch.float64), torch.tensor(probe["logits"], dtype=torch.float64)
    scale = max(1.0, float(old.abs().max())) if old.numel() else 1.0
    if old.shape != new.shape or float((old - new).abs().max()) > _PROBE_TOLERANCE * scale:
        diff = float((old - new).abs().max()) if old.shape == new.shape else float("inf")
        raise ChangedModelError(
            f"experiment {exp.name}: the model{'' if label is None else f' {label!r}'}'s clean outputs on the first examples differ from those recorded in {out} "
            f"(max |difference| {diff:.3g}, tolerance {_PROBE_TOLERANCE:g} x {scale:.3g}), though its weights and the spec "
            "are the same: its code (or a library it calls) changed, so the records there were made by another model. "
            f"Run into a new --out folder, or delete {store.path(key).parents[1]} to recompute this experiment"
        )


def check_prompts(exp: ExperimentSpec, fusion: Any, inputs: dict[str, Any], source: str | None) -> None:
    """A zero-shot classifier scores each row against the prompts the row carries (its attackable text):
    clean rows must carry the model's own class prompts, else the logits come from the data's prompts
    while the results are read as the model's classes (a template given to the data but not the model)."""
    net = fusion.model
    prompt_text, text = getattr(net, "prompt_text", None), getattr(net, "text_name", None)
    if not isinstance(prompt_text, str) or text not in inputs:
        return
    bad = [i for i, t in enumerate(inputs[text]) if t != prompt_text]
    if bad:
        from .spec import SpecError

        raise SpecError([f"experiments.{exp.name}: the data's clean prompts (row {bad[0]}: {inputs[text][bad[0]][:80]!r}...) are not "
                         f"the model's class prompts ({prompt_text[:80]!r}...): give the data and the model the same template"], source)


def _seed_for(units_by_cell: dict[Any, Unit], base: int):
    def seed(cell: Any, batch: int) -> int:
        return int(digest({"unit": units_by_cell[cell].key, "batch": batch, "seed": base}, 15), 16)

    return seed


def _run_experiment(exp: ExperimentSpec, spec: RunSpec, store: ResultsStore, out: Path, *, rank: int, world: int, device: str,
                    progress: bool, models: _Models | None = None) -> dict[str, Any]:
    from tqdm.auto import tqdm

    start = time.time()
    data = build_data(exp.data, seed=spec.seed, labels=exp.labels)
    data.validate()
    n = len(data) if exp.limit is None else min(len(data), exp.limit)
    if n == 0:
        from ..errors import InputError

        raise InputError(f"experiment {exp.name}: the data has no examples")
    fusion = (models or _Models(spec, device, progress and rank == 0))(exp.model)
    data_mods = data.modalities()
    missing = [m for m in fusion.modalities if m not in data_mods]
    if missing:
        from ..errors import InputError

        raise InputError(f"experiment {exp.name}: the model reads {missing}, which the data ({data_mods}) does not have")
    if exp.include_classes is not None and fusion.task == "segmentation" and fusion.num_classes is None:
        inputs, _ = data.examples(0, 1)  # one forward for the class count, before any record
        with torch.no_grad():
            _check_include_classes(exp, fusion, int(fusion(to_device(inputs, fusion.device, inputs)).shape[1]), spec.source)
    sanity_mods = [m for m, mod in fusion.modalities.items() if mod.is_tensor and mod.valid_range is not None]
    units = experiment_units(exp, spec, sanity_mods)
    for u in units:
        for m in u.info()["attacked"]:
            if m not in data_mods:
                from .spec import SpecError

                raise SpecError([f"experiments.{exp.name}: row '{u.label}' attacks '{m}', which the data does not have ({data_mods})"], spec.source)
    model_fp = model_fingerprint(fusion)
    clean_key = digest({"clean": True, "experiment": _experiment_config(exp, spec)})
    probe_inputs, probe_labels = data.examples(0, min(exp.batch_size, n))
    check_prompts(exp, fusion, probe_inputs, spec.source)
    _check_behaviour(exp, store, out, fusion, to_device(probe_inputs, fusion.device, fusion.modalities),
                     {"version": __version__, "data": data_fingerprint(probe_inputs, probe_labels), "model": model_fp,
                      "config": digest({"behaviour-probe": True, "experiment": _experiment_config(exp, spec)})}, rank)
    shards = [(i, s, min(s + exp.shard, n)) for i, s in enumerate(range(0, n, exp.shard))]
    mine = [s for s in shards if s[0] % world == rank]
    collected: dict[tuple[str, int], dict[str, Any]] = {}
    made: dict[tuple[str, int], tuple[dict[str, Any], dict[str, Any]]] = {}  # computed here: (identity, payload)
    computed = reused = 0
    bar = tqdm(total=len(mine) * (len(units) + 1), desc=f"{exp.name} (cells x shards)", disable=None if progress and rank == 0 else True,
               leave=False)
    for index, lo, hi in mine:
        inputs, labels = data.examples(lo, hi)
        identity = {"version": __version__, "toolkits": toolkit_versions(), "data": data_fingerprint(inputs, labels), "model": model_fp}
        ids = {u.key: {**identity, "config": u.key} for u in units}
        ids[clean_key] = {**identity, "config": clean_key}
        found = {k: store.load((exp.name, k, index), ident) for k, ident in ids.items()}
        pending = [u for u in units if found[u.key] is None]
        # a worst-case group is one computation: any missing member reruns the group
        groups = {u.cell.group for u in pending if isinstance(u.cell, SubsetCell)}
        pending_keys = {u.key for u in pending} | {u.key for u in units if isinstance(u.cell, SubsetCell) and u.cell.group in groups}
        todo = [u for u in units if u.key in pending_keys]
        reused += sum(1 for k in ids if found[k] is not None)
        bar.update(sum(1 for k in ids if found[k] is not None))
        for k, payload in found.items():
            if payload is not None:
                collected[(k, index)] = payload
        if todo or found[clean_key] is None:
            by_seed: dict[int, list[Unit]] = {}
            for u in todo:
                by_seed.setdefault(u.seed, []).append(u)
            for seed, seed_units in (by_seed.items() or [(exp.seeds[0], [])]):
                t = time.time()
                by_cell = {u.cell: u for u in seed_units}
                qual = _Qualitative(out, exp, seed_units, fusion, labels is not None) if index == 0 and rank == 0 else None
                batches = [({k: v[s:s + exp.batch_size] for k, v in inputs.items()}, None if labels is None else labels[s:s + exp.batch_size])
                           for s in range(0, hi - lo, exp.batch_size)]
                result = run_grid(fusion, batches, GridSpec(attacks=(), combos=[u.cell for u in seed_units], toolkit=exp.toolkit, steps=exp.steps,
                                                            attack_kwargs=exp.attack_kwargs),
                                  progress=False, on_batch=qual, seed_for=_seed_for(by_cell, seed * 1_000_003 + lo // exp.batch_size))
                seconds = (time.time() - t) / max(len(seed_units), 1)
                if found[clean_key] is None and (clean_key, index) not in collected:
                    payload = {"confusion": result.clean.counts().tolist(), "labels_source": result.labels_source}
                    store.save((exp.name, clean_key, index), ids[clean_key], payload)
                    collected[(clean_key, index)] = payload
                    made[(clean_key, index)] = (ids[clean_key], payload)
                    computed += 1
                    bar.update(1)
                for u in seed_units:
                    payload = _payload(result, u.cell, seconds, (qual.examples.get(u.cell, []) if qual else []))
                    if found[u.key] is None:
                        store.save((exp.name, u.key, index), ids[u.key], payload)
                        made[(u.key, index)] = (ids[u.key], payload)
                        computed += 1
                        bar.update(1)
                        collected[(u.key, index)] = payload
    bar.close()
    if world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world if rank == 0 else None
        dist.gather_object((collected, made, computed, reused), gathered, dst=0)
        if rank == 0:  # every rank's records and counts (rank 0's alone undercounted)
            computed = reused = 0
            for part, part_made, part_computed, part_reused in gathered:
                collected.update(part)
                made.update(part_made)
                computed += part_computed
                reused += part_reused
    collected = {k: restore_floats(v) for k, v in collected.items()}
    return {"units": units, "collected": collected, "made": made, "shards": [s[0] for s in shards], "clean_key": clean_key, "data": data,
            "fusion": fusion, "computed": computed, "reused": reused, "seconds": time.time() - start}


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _run_transfer_experiment(exp: ExperimentSpec, spec: RunSpec, store: ResultsStore, *, rank: int, world: int, device: str,
                             progress: bool, models: _Models | None = None) -> dict[str, Any]:
    """A transfer experiment: per shard, each target's confusion matrix on clean inputs and on the
    adversarials crafted on each source, one record per shard (seeded per shard: resumable, shardable)."""
    from tqdm.auto import tqdm

    start = time.time()
    t = exp.transfer or {}
    data = build_data(exp.data, seed=spec.seed, labels=exp.labels)
    data.validate()
    n = len(data) if exp.limit is None else min(len(data), exp.limit)
    if n == 0:
        from ..errors import InputError

        raise InputError(f"experiment {exp.name}: the data has no examples")
    models = models or _Models(spec, device, progress and rank == 0)
    made_models: dict[str, Any] = {}

    def model(entry: dict[str, Any]) -> Any:
        k = digest(entry)  # one object per entry: a target that is also a source is the same model
        if k not in made_models:
            made_models[k] = models(entry)
        return made_models[k]

    sources = {label: model(m) for label, m in t["sources"].items()}
    targets = {label: model(m) for label, m in (t.get("targets") or t["sources"]).items()}
    data_mods = data.modalities()
    for label, fusion in {**sources, **targets}.items():
        missing = [m for m in fusion.modalities if m not in data_mods]
        if missing:
            from ..errors import InputError

            raise InputError(f"experiment {exp.name}: model '{label}' reads {missing}, which the data ({data_mods}) does not have")
    attacked = tuple(t["attacked"])
    eps_255 = float(t["eps_255"]) if t.get("eps_255") is not None else float(t["eps"]) * 255
    key = digest({"transfer": True, "experiment": _experiment_config(exp, spec)})
    fps = {label: model_fingerprint(f) for label, f in {**sources, **targets}.items()}
    probe_inputs, probe_labels = data.examples(0, min(exp.batch_size, n))
    for label, fusion in {**sources, **targets}.items():  # each model's code unchanged since the records were made
        _check_behaviour(exp, store, store.root, fusion, to_device(probe_inputs, fusion.device, fusion.modalities),
                         {"version": __version__, "data": data_fingerprint(probe_inputs, probe_labels), "model": fps[label],
                          "config": digest({"behaviour-probe": True, "experiment": _experiment_config(exp, spec), "model": label})},
                         rank, label)
    shards = [(i, s, min(s + exp.shard, n)) for i, s in enumerate(range(0, n, exp.shard))]
    mine = [s for s in shards if s[0] % world == rank]
    collected: dict[tuple[str, int], dict[str, Any]] = {}
    made: dict[tuple[str, int], tuple[dict[str, Any], dict[str, Any]]] = {}
    computed = reused = 0
    for index, lo, hi in tqdm(mine, desc=f"{exp.name} (shards)", disable=None if progress and rank == 0 else True, leave=False):
        inputs, labels = data.examples(lo, hi)
        identity = {"version": __version__, "toolkits": toolkit_versions(), "data": data_fingerprint(inputs, labels), "model": digest(fps),
                    "config": key}
        payload = store.load((exp.name, key, index), identity)
        if payload is not None:
            reused += 1
            collected[(key, index)] = payload
            continue
        _seed_everything(int(digest({"unit": key, "shard": index, "seed": spec.seed}, 15), 16))
        batches = [({k: v[s:s + exp.batch_size] for k, v in inputs.items()}, None if labels is None else labels[s:s + exp.batch_size])
                   for s in range(0, hi - lo, exp.batch_size)]
        t0 = time.time()
        clean, adv = transfer_confusions(sources, targets, batches, attack=t.get("attack", "fgsm"), eps_255=eps_255, attacked=attacked,
                                         toolkit=t.get("toolkit", exp.toolkit), steps=t.get("steps", exp.steps),
                                         attack_kwargs=t.get("attack_kwargs") or exp.attack_kwargs, eval_repeats=t.get("eval_repeats", 1),
                                         progress=False)
        payload = {"clean": {k: m.counts().tolist() for k, m in clean.items()},
                   "adv": {f"{s} -> {g}": m.counts().tolist() for (s, g), m in adv.items()}, "seconds": time.time() - t0}
        store.save((exp.name, key, index), identity, payload)
        collected[(key, index)] = payload
        made[(key, index)] = (identity, payload)
        computed += 1
    if world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world if rank == 0 else None
        dist.gather_object((collected, made, computed, reused), gathered, dst=0)
        if rank == 0:  # every rank's records and counts (rank 0's alone undercounted)
            computed = reused = 0
            for part, part_made, part_computed, part_reused in gathered:
                collected.update(part)
                made.update(part_made)
                computed += part_computed
                reused += part_reused
    return {"key": key, "collected": collected, "made": made, "shards": [s[0] for s in shards], "data": data, "sources": list(sources),
            "targets": list(targets), "task": next(iter(targets.values())).task, "modalities": list(next(iter(targets.values())).modalities),
            "eps_255": eps_255, "computed": computed, "reused": reused, "seconds": time.time() - start}


def summarize_transfer(exp: ExperimentSpec, run: dict[str, Any]) -> dict[str, Any]:
    """A transfer experiment's report entry: the matrix (``transfer.values['source -> target']``), the
    targets' clean scores, the whitebox-vs-transfer check."""
    key, shards, collected = run["key"], run["shards"], run["collected"]
    missing = [s for s in shards if (key, s) not in collected]
    if missing:
        raise RuntimeError(f"experiment {exp.name}: {len(missing)} record(s) missing after the run (shards {missing[:3]})")
    t = exp.transfer or {}
    metric = t.get("metric", "iou_ratio")

    def total(part: str, name: str) -> torch.Tensor:
        return sum(torch.tensor(collected[(key, s)][part][name], dtype=torch.int64) for s in shards)

    first = collected[(key, shards[0])]
    clean = {name: SegmentationMetrics.from_confusion(total("clean", name)) for name in first["clean"]}
    values, confusion = {}, {}
    for name in first["adv"]:
        m = SegmentationMetrics.from_confusion(total("adv", name))
        target = name.split(" -> ")[1]
        base = clean[target].miou()
        # a target with clean mIoU 0 has no ratio: NaN (shown as such), not a division error or a made-up number
        values[name] = m.pixel_accuracy() if metric == "accuracy" else (m.miou() / base if base > 0 else float("nan"))
        confusion[name] = total("adv", name).tolist()
    attack = t.get("attack", "fgsm")
    attack_text = attack.upper() if isinstance(attack, str) else ", ".join(f"{a.upper()} from {s}" for s, a in attack.items())
    eps_text = f"{t['eps']:g}" if t.get("eps") is not None else f"{run['eps_255']:g}/255"
    description = {"data": run["data"].description, "attack": attack_text, "budget": eps_text, "attacked": "+".join(t["attacked"]),
                   "toolkit": t.get("toolkit", exp.toolkit), "steps": str(t.get("steps", exp.steps)),
                   "evaluation draws": str(t.get("eval_repeats", 1)),
                   "models": "; ".join(f"{label}: {describe_model(m)}" for label, m in {**t["sources"], **(t.get("targets") or {})}.items())}
    entry = {
        "name": exp.name, "kind": "transfer", "task": run["task"],
        "title": exp.title or f"{exp.name}: transfer of {attack_text} {eps_text} on {'+'.join(t['attacked']).upper()}",
        "description": description, "metric": "accuracy" if metric == "accuracy" else "IoU ratio",
        "clean": {name: (m.pixel_accuracy() if metric == "accuracy" else m.miou()) for name, m in clean.items()},
        "modalities": run["modalities"], "rows": [], "raw_rows": [], "qualitative": [],
        "transfer": {"values": values, "metric": "accuracy" if metric == "accuracy" else "IoU ratio (adv mIoU / clean mIoU)",
                     "sources": run["sources"], "targets": run["targets"], "attack": attack, "eps_255": run["eps_255"],
                     "attacked": list(t["attacked"]), "eval_repeats": t.get("eval_repeats", 1)},
        "confusion": {**{f"clean {k}": total("clean", k).tolist() for k in first["clean"]}, **confusion},
        "seconds": round(run["seconds"], 1),
        "shards": {"done": len(shards), "total": len(shards), "records_computed": run["computed"], "records_reused": run["reused"]},
    }
    from .validity import annotate_rows, check_experiment

    checks = check_experiment(entry)
    entry["rows"] = annotate_rows(entry, checks)
    entry["checks"] = [c.to_dict() for c in checks]
    return entry


def summarize(exp: ExperimentSpec, run: dict[str, Any]) -> dict[str, Any]:
    """Reduce an experiment's records (in shard order) to its report entry: rows, clean scores, checks."""
    units: list[Unit] = run["units"]
    collected, shards, fusion = run["collected"], run["shards"], run["fusion"]
    missing = [(u.label, s) for u in units for s in shards if (u.key, s) not in collected]
    missing += [("clean", s) for s in shards if (run["clean_key"], s) not in collected]
    if missing:
        raise RuntimeError(f"experiment {exp.name}: {len(missing)} record(s) missing after the run, e.g. {missing[:3]}")

    def total(key: str) -> torch.Tensor:
        return sum((torch.tensor(collected[(key, s)]["confusion"], dtype=torch.int64) for s in shards[1:]),
                   torch.tensor(collected[(key, shards[0])]["confusion"], dtype=torch.int64))

    clean = SegmentationMetrics.from_confusion(total(run["clean_key"]))
    sources = {collected[(run["clean_key"], s)]["labels_source"] for s in shards}
    classification = fusion.task == "classification"
    include = exp.include_classes if not classification else None
    rows: list[dict[str, Any]] = []
    raw_rows: list[dict[str, Any]] = []
    confusions: dict[str, list[list[int]]] = {"clean": total(run["clean_key"]).tolist()}
    qualitative: list[dict[str, Any]] = []
    for seed in exp.seeds:
        seed_units = [u for u in units if u.seed == seed]
        metrics, counts, on_target = {}, {}, {}
        for u in seed_units:
            metrics[u.cell] = SegmentationMetrics.from_confusion(total(u.key))
            confusions[u.label] = total(u.key).tolist()
            payloads = [collected[(u.key, s)] for s in shards]
            if classification:
                c = _counts_from(payloads[0]["counts"])
                for p in payloads[1:]:
                    c = _add_counts(c, _counts_from(p["counts"]))
                counts[u.cell] = c
            if payloads[0].get("on_target") is not None:
                on_target[u.cell] = [sum(p["on_target"][0] for p in payloads), sum(p["on_target"][1] for p in payloads)]
            for ex in payloads[0].get("examples") or []:
                qualitative.append({**ex, "cell": u.label, "caption": f"{u.label} -- example {ex.get('index', 0)}"})
        grid = GridResult(clean, metrics, on_target, " + ".join(sorted(sources)), {}, counts)
        for u, r in zip(seed_units, grid.rows(include)):
            info = u.info()
            raw_rows.append({**r, "seed": seed})
            row = {"cell": u.label, **info, "seed": seed}
            row.update({k: v for k, v in r.items() if k not in ("cell", "attack", "attacked", "eps_255")})
            row.setdefault("applies", all(m in fusion.modalities for m in info["attacked"]))
            if classification:  # one label per example: accuracy / recall, not pixel means
                for k in ("mAcc", "mIoU", "IoU_R", "per_class_IoU"):
                    row.pop(k, None)
            elif "mAcc" not in r:
                row.update({"mAcc": metrics[u.cell].macc(include), "mIoU": metrics[u.cell].miou(include)})
            rows.append(row)
    clean_summary = GridResult(clean, {}, {}, "", {}, {"_": CellCounts()} if classification else {}).clean_summary(include)
    if classification:
        clean_summary = {k: v for k, v in clean_summary.items() if k in ("accuracy", "per_class_recall")}
    description = {"model": describe_model(exp.model, fusion), "data": run["data"].description, "labels": " + ".join(sorted(sources)),
                   "toolkit": exp.toolkit, "steps": str(exp.steps), "seeds": ", ".join(map(str, exp.seeds))}
    if include is not None:
        description["classes in the means"] = ", ".join(map(str, include))
    entry = {
        "name": exp.name, "kind": "grid", "task": fusion.task, "title": exp.title or f"{exp.name}: {exp.model['name']} on {exp.data['name']}",
        "description": description, "metric": "accuracy" if classification else "mIoU", "clean": clean_summary,
        "modalities": list(fusion.modalities), "rows": rows, "raw_rows": raw_rows, "qualitative": qualitative, "transfer": None,
        "confusion": confusions, "seconds": round(run["seconds"], 1),
        "shards": {"done": len(shards), "total": len(shards), "records_computed": run["computed"], "records_reused": run["reused"]},
    }
    from .validity import annotate_rows, check_experiment

    checks = check_experiment(entry)
    entry["rows"] = annotate_rows(entry, checks)
    entry["checks"] = [c.to_dict() for c in checks]
    return entry


def describe_model(model: dict[str, Any], fusion: Any = None) -> str:
    source = model.get("source", "registry")
    if model.get("weights"):
        return f"{model['name']} ({model['weights']})"
    if getattr(fusion, "origin", None):  # a registry model that trains itself says on what
        return f"{model['name']} ({fusion.origin})"
    if source.startswith("synthetic"):
        return f"{model['name']} trained on SYNTHETIC data by this project ({source})"
    if source == "callable":
        return f"{model['name']} from {model['factory']}"
    return f"{model['name']} (randomly initialised: no weights given)"


def run_spec(spec: RunSpec, out: str | Path, *, progress: bool = True, only: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Run (or resume) every experiment of ``spec`` into the results folder ``out``; returns the summary on
    rank 0 (None on other ranks) after writing the reports. ``only``: names of experiments to run."""
    from .options import resolve_device

    out = Path(out)
    device = resolve_device(spec.device)
    rank, world, device = _setup_distributed(device)
    _warn_oversubscribed(torch.get_num_threads(), int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    experiments = [e for e in spec.experiments if only is None or e.name in only]
    models = _Models(spec, device, progress and rank == 0)
    _preflight(experiments, spec, models)  # before anything is written
    store = ResultsStore(out)
    if rank == 0:
        atomic_write_text(out / "spec.yaml", spec_to_yaml(spec))
    entries = []
    for exp in experiments:
        if exp.kind == "transfer":
            run = _run_transfer_experiment(exp, spec, store, rank=rank, world=world, device=device, progress=progress, models=models)
        else:
            run = _run_experiment(exp, spec, store, out, rank=rank, world=world, device=device, progress=progress, models=models)
        if rank == 0:
            # records other ranks computed, kept in rank 0's folder too (ranks on other nodes may write elsewhere)
            for (key, shard), (identity, payload) in (run["made"].items() if world > 1 else ()):
                if store.load((exp.name, key, shard), identity) is None:
                    store.save((exp.name, key, shard), identity, payload)
            entries.append(summarize_transfer(exp, run) if exp.kind == "transfer" else summarize(exp, run))
    invalid = [(str(p), r) for p, r in store.invalid]
    if world > 1:
        import torch.distributed as dist

        # records found unusable on every rank (each loads its own shards), not rank 0's alone
        parts: list[Any] = [None] * world if rank == 0 else None
        dist.gather_object(invalid, parts, dst=0)
        if rank == 0:
            invalid = list(dict.fromkeys(item for part in parts for item in part))
        dist.barrier()
    if rank != 0:
        return None
    if only is not None:
        entries = _with_earlier_entries(spec, out, entries)
    summary = {"name": spec.name, "package_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "spec_path": spec.source, "spec": spec_to_dict(spec), "world_size": world, "device": device,
               "invalid_records": [{"path": p, "reason": r} for p, r in invalid], "experiments": entries}
    write_summary(summary, out)
    return summary


def _with_earlier_entries(spec: RunSpec, out: Path, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``--only``: the experiments not run now keep their entries of the folder's previous summary when the
    spec still describes them as it did then (same experiment, run seed, amp, package version), so the
    reports still cover the whole spec; any other is left out (its records stay: a full run reuses them)."""
    import json

    try:
        previous = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return entries

    def normal(value: Any) -> Any:
        return json.loads(json.dumps(value, default=str))

    now = normal(spec_to_dict(spec))
    then = previous.get("spec") or {}
    if previous.get("package_version") != __version__ or any(then.get(k) != now.get(k) for k in ("seed", "amp")):
        return entries
    then_exps = {e.get("name"): e for e in then.get("experiments") or []}
    old = {e.get("name"): e for e in previous.get("experiments") or []}
    ran = {e["name"]: e for e in entries}
    out_entries = []
    for exp in now["experiments"]:
        name = exp["name"]
        if name in ran:
            out_entries.append(ran[name])
        elif name in old and then_exps.get(name) == exp:
            out_entries.append(old[name])
    return out_entries


def write_summary(summary: dict[str, Any], out: Path) -> dict[str, Path]:
    """``summary.json`` (what ``mmfusion-attacks report`` regenerates the reports from) and the reports."""
    import json

    from .html_report import write_reports

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str, allow_nan=True))
    return write_reports(summary, out)
