"""Performance side by side: what the adapters and the harness cost next to the model's own work, as
ratios measured in one run (variants interleaved, repeated; min / median / max of each ratio), never a
single absolute time.

    python benchmarks/perf.py                 # every measurement, CPU
    python benchmarks/perf.py --quick         # small sizes, under 3 minutes on 2 CPU cores
    python benchmarks/perf.py --device cuda   # on a GPU (MF-test-set study grid timing when --mf-root is given)
    python benchmarks/perf.py --only P1 P4

P1  adapter overhead: torchattacks PGD-10 through the fusion adapter (``run_attack``) vs the same
    torchattacks PGD on a hand-wired single-input module computing the same function (MFNet and an smp
    two-stream U-Net). Target: median <= 1.03x. Also printed: the same with the clean logits given (the
    harness's path), the floor of any scored result (the hand-wired attack plus one forward of its
    result, over the hand-wired attack) and like for like (run_attack over that).
P2  ART path: ART PGD through the project's estimator vs the torchattacks path. Target: <= 1.25x.
P3  text attacks: DeepWordBug on an image+text model with the held image's features cached vs
    recomputed (target >= 3x, identical results), and per query on the fusion model vs a text-only
    model of the same text tower (target <= 1.3x).
P4  harness: the marginal cost of one PGD step inside the grid runner (a cell of 20 steps minus a cell
    of 10, over 10) vs a bare forward + backward. Target: <= 1.10x. Also printed: torchattacks' own step
    on the hand-wired module (the toolkit's share) and the grid's step over it (this project's share).
P5  scaling: wall time per image at 1x, 4x, 16x images (ratio of ratios within 10%) and peak RSS
    (fresh process per size) flat in the number of images; torchrun with one process per core vs one
    process (the run never slower, speed-up printed, identical results; the wall time with interpreter
    start-up printed too); the worst case over {rgb, ir} vs its three subset attacks run separately
    (no more), also skipping examples a smaller subset broke.

Exit status 1 when a target is missed beyond the measured spread (even the best repeat misses it).
Every variant pair is also checked for equal results (the maximum difference is printed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Ratio:
    """One measured ratio (variant / baseline) over repeats, with its target."""

    name: str
    values: list[float]
    target: float | None = None
    better: str = "lower"  # "lower": ratio <= target; "higher": ratio >= target
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stats(self) -> tuple[float, float, float]:
        return min(self.values), statistics.median(self.values), max(self.values)

    @property
    def missed(self) -> bool:
        """Missed beyond the spread: even the best repeat is on the wrong side of the target."""
        if self.target is None:
            return False
        lo, _, hi = self.stats
        return lo > self.target if self.better == "lower" else hi < self.target

    def line(self) -> str:
        lo, med, hi = self.stats
        goal = "" if self.target is None else f"{'<=' if self.better == 'lower' else '>='} {self.target:g}"
        verdict = "" if self.target is None else ("MISSED" if self.missed else ("ok" if (med <= self.target if self.better == "lower" else med >= self.target) else "within spread"))
        return f"{self.name:<58} {lo:7.3f} {med:7.3f} {hi:7.3f}  {goal:>8}  {verdict:<13} {self.note}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int, device: torch.device, inner: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each variant, the variants interleaved (order rotated every repeat) so slow
    phases of a noisy machine hit all of them; one warm-up call each first."""
    names = list(variants)
    for n in names:
        variants[n]()
    _sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            _sync(device)
            t = time.perf_counter()
            for _ in range(inner):
                variants[n]()
            _sync(device)
            times[n].append((time.perf_counter() - t) / inner)
    return times


def ratios(times: dict[str, list[float]], variant: str, baseline: str) -> list[float]:
    return [v / b for v, b in zip(times[variant], times[baseline])]


# ----------------------------------------------------------------------------------------------- P1, P2


class _PackedSingleInput(torch.nn.Module):
    """A packed-input network (MFNet) with RGB held: forward(ir) = net(cat(rgb, ir)). Hand-wired."""

    def __init__(self, net: torch.nn.Module, rgb: torch.Tensor) -> None:
        super().__init__()
        self.net, self.rgb = net, rgb

    def forward(self, ir: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.rgb, ir], 1))


class _NamedSingleInput(torch.nn.Module):
    """A two-input network with RGB held: forward(ir) = net(rgb=rgb, ir=ir). Hand-wired."""

    def __init__(self, net: torch.nn.Module, rgb: torch.Tensor) -> None:
        super().__init__()
        self.net, self.rgb = net, rgb

    def forward(self, ir: torch.Tensor) -> torch.Tensor:
        return self.net(rgb=self.rgb, ir=ir)


def _hand_wired(fusion, rgb: torch.Tensor) -> torch.nn.Module:
    """The fusion model's network as a frozen single-input module of the thermal image, RGB held."""
    wired_cls = _PackedSingleInput if fusion.input_style == "packed" else _NamedSingleInput
    wired = wired_cls(fusion.model, rgb).eval()
    for p in wired.parameters():
        p.requires_grad_(False)
    return wired


def _segmentation_setup(arch: str, args: argparse.Namespace, device: torch.device):
    from mmfusion_attacks.models import create_model

    torch.manual_seed(0)
    fusion = create_model(arch, num_classes=9).to(device).eval()
    h, w = args.size
    batch = {"rgb": torch.rand(args.batch, 3, h, w, device=device), "ir": torch.rand(args.batch, 1, h, w, device=device)}
    with torch.no_grad():
        labels = fusion(batch).argmax(1)
    return fusion, batch, labels


def measure_adapters(args: argparse.Namespace, device: torch.device) -> list[Ratio]:
    out = []
    for arch in args.p1_models:
        out += _adapter_ratios(arch, args, device)
    return out


def _adapter_ratios(arch: str, args: argparse.Namespace, device: torch.device) -> list[Ratio]:
    import torchattacks
    from art.attacks.evasion import ProjectedGradientDescent
    from mmfusion_attacks.adapters.art import to_art
    from mmfusion_attacks.adapters.torchattacks import to_torchattacks

    from mmfusion_attacks import clean_forward, run_attack
    from mmfusion_attacks.metrics import predicted_classes

    eps, alpha = 8 / 255, 2 / 255
    fusion, batch, labels = _segmentation_setup(arch, args, device)
    wired = _hand_wired(fusion, batch["rgb"])
    ta_wired = torchattacks.PGD(wired, eps=eps, alpha=alpha, steps=args.steps, random_start=False)
    ta_fusion = torchattacks.PGD(to_torchattacks(fusion, "ir"), eps=eps, alpha=alpha, steps=args.steps, random_start=False)
    art = ProjectedGradientDescent(to_art(fusion, "ir"), eps=eps, eps_step=alpha, max_iter=args.steps, verbose=False)
    clean_logits = clean_forward(fusion, batch)
    results: dict[str, torch.Tensor] = {}

    def keep(name, fn):
        def run():
            results[name] = fn()
        return run

    def wired_scored():
        """What run_attack returns, by hand: the attack, then the predictions on its result (the clean ones
        come from the attack's first query in both)."""
        adv = ta_wired(batch["ir"], labels)
        with torch.no_grad():
            predicted_classes(wired(adv))
        return adv

    times = interleaved({
        "hand-wired": keep("hand-wired", lambda: ta_wired(batch["ir"], labels)),
        "hand-wired+scored": keep("hand-wired+scored", wired_scored),
        "run_attack": keep("run_attack", lambda: run_attack(ta_fusion, batch, labels).inputs["ir"]),
        "run_attack+clean": keep("run_attack+clean", lambda: run_attack(ta_fusion, batch, labels, clean_logits=clean_logits).inputs["ir"]),
        "art": keep("art", lambda: run_attack(art, batch, labels).inputs["ir"]),
    }, args.repeats, device)
    diff = {k: float((v.float() - results["hand-wired"].float()).abs().max()) for k, v in results.items()}
    return [
        Ratio(f"P1 {arch}: torchattacks PGD-{args.steps} via run_attack / hand-wired", ratios(times, "run_attack", "hand-wired"),
              1.03, note=f"max |diff| {diff['run_attack']:.1e}"),
        Ratio(f"P1 {arch}: ... with the clean logits given (the harness path)", ratios(times, "run_attack+clean", "hand-wired"),
              1.03, note=f"max |diff| {diff['run_attack+clean']:.1e}"),
        Ratio(f"P1 {arch}: hand-wired + the forward of its result / hand-wired", ratios(times, "hand-wired+scored", "hand-wired"),
              None, note="the floor of a scored result (success needs the adversarial predictions)"),
        Ratio(f"P1 {arch}: run_attack / hand-wired + the forward of its result", ratios(times, "run_attack", "hand-wired+scored"),
              None, note="like for like: what run_attack returns, by hand"),
        Ratio(f"P2 {arch}: ART PGD via run_attack / torchattacks via run_attack", ratios(times, "art", "run_attack"), 1.25,
              note=f"max |diff| {diff['art']:.1e}"),
    ]


# ----------------------------------------------------------------------------------------------- P4


def measure_harness(args: argparse.Namespace, device: torch.device) -> list[Ratio]:
    """The marginal cost of one PGD step in the grid runner (a cell of 2S steps minus a cell of S steps,
    over S) vs a bare forward + backward; the fixed per-cell cost (the final forward and the metrics; the
    clean forward is shared by every cell of a batch) is printed in units of forward + backward."""
    from mmfusion_attacks.harness.grid import Cell, GridSpec, run_grid

    fusion, batch, labels = _segmentation_setup(args.p1_models[0], args, device)
    steps = args.steps
    short = GridSpec(attacks=(), combos=[Cell("pgd", 8.0, ("ir",))], steps=steps)
    long = GridSpec(attacks=(), combos=[Cell("pgd", 8.0, ("ir",))], steps=2 * steps)

    def bare():
        x = batch["ir"].clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(fusion({"rgb": batch["rgb"], "ir": x}), labels)
        torch.autograd.grad(loss, x)

    import torchattacks

    wired = _hand_wired(fusion, batch["rgb"])
    ta_short, ta_long = (torchattacks.PGD(wired, eps=8 / 255, alpha=2 / 255, steps=k, random_start=False) for k in (steps, 2 * steps))
    times = interleaved({"bare": bare, "short": lambda: run_grid(fusion, [(batch, labels)], short, progress=False),
                         "long": lambda: run_grid(fusion, [(batch, labels)], long, progress=False),
                         "ta_short": lambda: ta_short(batch["ir"], labels), "ta_long": lambda: ta_long(batch["ir"], labels)},
                        args.repeats, device)

    def step(short_name: str, long_name: str) -> list[float]:
        return [(b - a) / steps for a, b in zip(times[short_name], times[long_name])]

    grid_step, ta_step = step("short", "long"), step("ta_short", "ta_long")
    fixed = [(g1 - steps * d) / b for g1, d, b in zip(times["short"], grid_step, times["bare"])]
    return [Ratio(f"P4 {args.p1_models[0]}: one PGD step in the grid runner / bare forward + backward",
                  [g / b for g, b in zip(grid_step, times["bare"])], 1.10,
                  note=f"(cell of {2 * steps} steps - cell of {steps}) / {steps}; fixed per cell: {statistics.median(fixed):.2f} "
                       "forward+backward (final forward, metrics; the clean forward is shared by the batch's cells)"),
            Ratio("P4 ... torchattacks' own PGD step on the hand-wired module / bare forward + backward",
                  [t / b for t, b in zip(ta_step, times["bare"])], None, note="the toolkit's share of the step"),
            Ratio("P4 ... one PGD step in the grid runner / torchattacks' own step on the hand-wired module",
                  [g / t for g, t in zip(grid_step, ta_step)], None, note="this project's share: pairing check, context rows, unpacking")]


# ----------------------------------------------------------------------------------------------- P5

_CHILD = r"""
import json, resource, sys, time, torch
from mmfusion_attacks.harness.grid import Cell, GridSpec, run_grid
from mmfusion_attacks.data import create_dataset
from mmfusion_attacks.models import create_model
n, batch_size, h, w, steps, device = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
torch.manual_seed(0)
fusion = create_model("tiny-rgbt-segmenter", num_classes=9).to(device).eval()
def batches(data, n):
    for s in range(0, n, batch_size):
        items = [data[i] for i in range(s, min(s + batch_size, n))]
        yield {m: torch.stack([it[m] for it in items]).to(device) for m in ("rgb", "ir")}, torch.stack([it["labels"] for it in items]).long().to(device)
spec = GridSpec(attacks=(), combos=[Cell("pgd", 8.0, ("rgb", "ir"))], steps=steps)
warm = create_dataset("synthetic-rgbt", split="test", size=batch_size, height=h, width=w, seed=1)
run_grid(fusion, batches(warm, batch_size), spec, progress=False)  # warm-up on other scenes: every timed scene is new
data = create_dataset("synthetic-rgbt", split="test", size=n, height=h, width=w, seed=0)
t = time.perf_counter()
run_grid(fusion, batches(data, n), spec, progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def measure_scaling(args: argparse.Namespace, device: torch.device) -> list[Ratio]:
    """Each size in a fresh process (peak RSS is per process), sizes interleaved over repeats."""
    sizes = [args.p5_images * k for k in (1, 4, 16)]
    h, w = args.p5_size
    per_image: dict[int, list[float]] = {n: [] for n in sizes}
    rss: dict[int, list[float]] = {n: [] for n in sizes}
    for r in range(args.p5_repeats):
        for n in sizes[r % 3:] + sizes[: r % 3]:
            proc = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(args.batch), str(h), str(w), "2", str(device)],
                                  capture_output=True, text=True, check=True, cwd=ROOT)
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            per_image[n].append(result["seconds"] / n)
            rss[n].append(result["maxrss_kb"] / 1024)
    base = sizes[0]
    out = []
    for n in sizes[1:]:
        out.append(Ratio(f"P5 time per image at {n // base}x images / at 1x ({base} images)",
                         [a / b for a, b in zip(per_image[n], per_image[base])], 1.10,
                         note=f"linear within 10%; per image {statistics.median(per_image[n]) * 1e3:.1f} ms"))
        out.append(Ratio(f"P5 peak RSS at {n // base}x images / at 1x", [a / b for a, b in zip(rss[n], rss[base])], 1.10,
                         note=f"flat; {statistics.median(rss[n]):.0f} MiB vs {statistics.median(rss[base]):.0f} MiB"))
    return out


# ----------------------------------------------------------------------------------------------- P3


def measure_text(args: argparse.Namespace, device: torch.device) -> list[Ratio]:
    """DeepWordBug on an early-fusion image+text model: held-image features cached vs recomputed (same
    adversarial texts required), and time per query on the fusion model vs a text-only model of the
    same text tower (MiniLM)."""
    import textattack
    from mmfusion_attacks.adapters.textattack import FusionModelWrapper

    from mmfusion_attacks import run_attack
    from mmfusion_attacks.data import create_dataset
    from mmfusion_attacks.harness.vl import measure_feature_cache
    from mmfusion_attacks.models import create_model
    from mmfusion_attacks.models.vl_training import SYNTHETIC_CONFIGS
    from mmfusion_attacks.text.recipes import build_text_attack

    torch.manual_seed(0)
    config = {k: v for k, v in SYNTHETIC_CONFIGS["vl-early-fusion"].items() if k != "backbone_kwargs"}
    fusion = create_model("vl-early-fusion", **config).to(device).eval()
    text_only = create_model("vl-language", **SYNTHETIC_CONFIGS["vl-language"]).to(device).eval()
    data = create_dataset("synthetic-xray-reports", split="val", size=args.p3_examples, image_size=args.p3_image_size, seed=0)
    batch, labels = data.tensors()
    speedups, identical = [], True
    per_query: list[float] = []
    for _ in range(args.p3_repeats):
        m = measure_feature_cache(fusion, batch, labels, seed=0)
        speedups.append(m["speedup"])
        identical &= bool(m["identical"])
        times = {}
        for name, model, inputs in (("fusion", fusion, batch), ("text", text_only, {"text": batch["text"]})):
            textattack.shared.utils.set_seed(0)
            attack = build_text_attack("deepwordbug", FusionModelWrapper(model, cache_features=True, long_text="skip"))
            t = time.perf_counter()
            res = run_attack(attack, inputs, labels)
            times[name] = (time.perf_counter() - t) / max(int(res.extras["queries"].sum()), 1)
        per_query.append(times["fusion"] / times["text"])
    return [
        Ratio("P3 text attack: held-image features recomputed / cached", speedups, 3.0, better="higher",
              note=f"identical results: {identical}; early fusion at {args.p3_image_size} px, {args.p3_examples} examples"),
        Ratio("P3 DeepWordBug time per query: fusion (cached) / text-only model", per_query, 1.3),
    ]


# ----------------------------------------------------------------------------------------------- P5 (processes, subsets)

_SPEC = """
name: perf
device: cpu
experiments:
  - name: scenes
    model: {{name: tiny-rgbt-segmenter, source: registry, num_classes: 9}}
    data: {{name: synthetic-rgbt, split: test, size: {n}, height: {h}, width: {w}}}
    batch_size: 4
    shard_size: 4
    labels: pseudo
    attacks: [pgd]
    eps_255: [8]
    subsets: [rgb, ir]
    steps: 5
    sanity: false
    qualitative: 0
"""


def measure_processes(args: argparse.Namespace, device: torch.device) -> list[Ratio]:
    """One process vs ``torchrun --nproc_per_node=N`` (N = cores, each rank its share of the threads) on
    the same spec, a fresh results folder each run; results must be identical."""
    import os
    import tempfile

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(2, cores)
    h, w = args.p5_size
    values, work, same = [], [], True
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "perf.yaml"
        spec.write_text(_SPEC.format(n=args.p5_procs_images, h=h, w=w))
        for r in range(args.p5_repeats):
            times = {}
            for procs in ((1, n) if r % 2 == 0 else (n, 1)):
                out = Path(tmp) / f"run{r}-{procs}"
                env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // procs))}
                cmd = ([sys.executable, "-m", "mmfusion_attacks", "run", str(spec), "--out", str(out), "--quiet"] if procs == 1 else
                       [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "mmfusion_attacks",
                        "run", str(spec), "--out", str(out), "--quiet"])
                t = time.perf_counter()
                subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
                times[procs] = time.perf_counter() - t
            a = json.loads((Path(tmp) / f"run{r}-1" / "summary.json").read_text())
            b = json.loads((Path(tmp) / f"run{r}-{n}" / "summary.json").read_text())
            same &= [e["confusion"] for e in a["experiments"]] == [e["confusion"] for e in b["experiments"]]
            values.append(times[n] / times[1])
            work.append(sum(e["seconds"] for e in b["experiments"]) / max(sum(e["seconds"] for e in a["experiments"]), 1e-9))
    return [Ratio(f"P5 torchrun {n} processes / 1 process (the run: data, model, cells, reduce)", work, 1.0,
                  note=f"speed-up {1 / statistics.median(work):.2f}x on {cores} cores; identical results: {same}"),
            Ratio(f"P5 torchrun {n} processes / 1 process (wall time incl. interpreter start-up)", values, None,
                  note=f"speed-up {1 / statistics.median(values):.2f}x (each process imports torch: a fixed cost)")]


def measure_worst_case(args: argparse.Namespace, device: torch.device) -> list[Ratio]:
    """The worst case over the subsets of {rgb, ir} vs its 3 subset attacks run separately, and the same
    skipping the examples a smaller subset broke (the defences study's scene classifier, trained here in
    seconds on SYNTHETIC scenes: thermal alone breaks about half of them)."""
    from mmfusion_attacks.data import create_dataset
    from mmfusion_attacks.harness.defences import train_fusion
    from mmfusion_attacks.harness.grid import GridSpec, JointCell, run_grid, worst_case_cells
    from mmfusion_attacks.joint import ModalityAttack, worst_case_over_subsets

    x, y = create_dataset("synthetic-rgbt-scenes", split="train", size=300).tensors()
    fusion = train_fusion(x, y, adversarial=None, eps=0.0, epochs=6, pgd_steps=1, seed=0, device=device)
    n = 8 * args.batch
    batch, labels = create_dataset("synthetic-rgbt-scenes", split="test", size=n).tensors()
    batch, labels = {k: v.to(device) for k, v in batch.items()}, labels.to(device)
    start = {"random_start": False}  # examples independent of the batch they run in: skipping changes no result
    plan = (ModalityAttack("rgb", "pgd", 16 / 255, steps=5, options=start), ModalityAttack("ir", "pgd", 16 / 255, steps=5, options=start))
    worst = GridSpec(attacks=(), combos=worst_case_cells("worst case", plan))
    skipping = GridSpec(attacks=(), combos=worst_case_cells("worst case", plan, skip_broken=True))
    separate = GridSpec(attacks=(), combos=[JointCell(f"on {'+'.join(sub)}", tuple(e for e in plan if e.modality in sub))
                                            for sub in (("rgb",), ("ir",), ("rgb", "ir"))])
    results = {}

    def run(name, spec):
        def go():
            results[name] = run_grid(fusion, [(batch, labels)], spec, progress=False).rows()
        return go

    times = interleaved({"separate": run("separate", separate), "worst": run("worst", worst), "skip": run("skip", skipping)},
                        args.repeats, device)
    same = [r["success_rate"] for r in results["worst"]] == [r["success_rate"] for r in results["skip"]]
    report = worst_case_over_subsets(fusion, plan, batch, labels, skip_broken=True)
    skipped = sum(1 for s in report.subsets for a in report.own[s].extras["succeeded_at"] if a == "skipped")
    return [Ratio("P5 worst case over {rgb, ir} / its 3 subset attacks run separately", ratios(times, "worst", "separate"), 1.0,
                  note=f"tiny RGB-T scene classifier, {n} examples"),
            Ratio("P5 ... skipping examples a smaller subset broke / separately", ratios(times, "skip", "separate"), 1.0,
                  note=f"{skipped} of {n} examples skipped by rgb+ir; same success rates as without skipping: {same}")]


# ----------------------------------------------------------------------------------------------- GPU: the MFNet study grid


def measure_mf_grid(args: argparse.Namespace, device: torch.device) -> list[Ratio]:
    """The MFNet study's grid (FGSM and PGD-10 at 10/20/40 on RGB, IR, RGB+IR: 18 cells) over the MF test
    set (``--mf-root``, ``--mf-weights``), its wall time and its ratio to the forward + backward passes
    it needs (1 per FGSM cell, 10 per PGD cell, per batch) timed bare on the same device. With
    ``--compile`` the same grid runs again with the network ``torch.compile``d (compile time excluded:
    one warm-up batch first), and the compiled / eager wall-time ratio and the largest mIoU difference
    between the two runs are printed."""
    from torch.utils.data import DataLoader

    from mmfusion_attacks.data import create_dataset
    from mmfusion_attacks.harness.grid import GridSpec, run_grid
    from mmfusion_attacks.models import create_model

    if not args.mf_root or not args.mf_weights:
        print("GPU grid: skipped (give --mf-root MF/ --mf-weights final.pth; the MF dataset and the official MFNet checkpoint)")
        return []
    fusion = create_model("mfnet", num_classes=9, weights=args.mf_weights).to(device).eval()
    if args.amp:
        fusion = fusion.use_amp()
    data = create_dataset("mf", root=args.mf_root, split="test", size=tuple(args.mf_size) if args.mf_size else None, limit=args.mf_limit)
    loader = DataLoader(data, batch_size=args.mf_batch, shuffle=False, num_workers=2, pin_memory=device.type == "cuda")
    batches = [({"rgb": it["rgb"].to(device, non_blocking=True), "ir": it["ir"].to(device, non_blocking=True)}, it["labels"].to(device))
               for it in loader]
    spec = GridSpec(attacks=("fgsm", "pgd"), eps_255=(10, 20, 40), subsets=(("rgb",), ("ir",), ("rgb", "ir")), steps=10)
    passes = sum(1 if c.attack == "fgsm" else 10 for c in spec.cells())
    inputs, labels = batches[0]

    def bare():
        x = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        loss = torch.nn.functional.cross_entropy(fusion(x), labels)
        torch.autograd.grad(loss, list(x.values()))

    order = {c: i for i, c in enumerate(spec.cells())}

    def seed_for(cell, batch: int) -> int:  # as the harness seeds: the random starts do not depend on the run
        return order[cell] * 100_003 + batch

    def timed_grid():
        _sync(device)
        t = time.perf_counter()
        result = run_grid(fusion, batches, spec, progress=False, seed_for=seed_for)
        _sync(device)
        return time.perf_counter() - t, result

    fb = interleaved({"bare": bare}, 5, device)["bare"]
    wall, eager = timed_grid()
    ideal = statistics.median(fb) * passes * len(batches)
    frames = f"{len(data)} MF test frames" + (f" at {args.mf_size[0]}x{args.mf_size[1]}" if args.mf_size else "")
    print(f"GPU grid: {frames}, {len(spec.cells())} cells, batch {args.mf_batch}: {wall:.1f} s wall "
          f"(target < 60 s on one H100-class GPU for the 393 frames at 480x640), {ideal:.1f} s of bare forward + backward")
    out = [Ratio("GPU MFNet study grid / its bare forward + backward passes", [wall / ideal], None, note=f"{wall:.1f} s wall, {frames}")]
    if args.compile:
        network = fusion.model
        t = time.perf_counter()
        fusion.model = torch.compile(network)
        try:
            run_grid(fusion, batches[:1], spec, progress=False, seed_for=seed_for)  # compiles (forward, backward; each batch shape)
            warm = time.perf_counter() - t
            compiled_wall, compiled = timed_grid()
        finally:
            fusion.model = network
        diff = max(abs(compiled.cells[c].miou() - eager.cells[c].miou()) for c in eager.cells)
        out.append(Ratio("GPU MFNet study grid: torch.compile / eager", [compiled_wall / wall], None,
                         note=f"{compiled_wall:.1f} s wall after {warm:.0f} s compiling; max |mIoU diff| {diff:.1e}"))
    return out


def measure_compile(args: argparse.Namespace, device: torch.device) -> list[Ratio]:
    """``torch.compile`` on the P1 networks: a forward + backward of the compiled network vs the eager one
    (interleaved; the compile time printed apart), and PGD-10 via ``run_attack`` on the fusion model whose
    network is compiled vs eager (same adversarial examples up to the compiled kernels' rounding)."""
    return [r for arch in args.p1_models for r in _compile_ratios(arch, args, device)]


def _compile_ratios(arch: str, args: argparse.Namespace, device: torch.device) -> list[Ratio]:
    import torchattacks
    from mmfusion_attacks.adapters.torchattacks import to_torchattacks

    from mmfusion_attacks import run_attack

    fusion, batch, labels = _segmentation_setup(arch, args, device)
    network = fusion.model

    def fwd_bwd():
        x = {k: v.clone().requires_grad_(True) for k, v in batch.items()}
        torch.autograd.grad(torch.nn.functional.cross_entropy(fusion(x), labels), list(x.values()))

    def pgd():
        atk = torchattacks.PGD(to_torchattacks(fusion, "ir"), eps=8 / 255, alpha=2 / 255, steps=args.steps, random_start=False)
        return run_attack(atk, batch, labels)

    compiled = torch.compile(network)
    t = time.perf_counter()
    fusion.model = compiled
    try:
        pgd()  # compiles the forward and the backward
    finally:
        fusion.model = network
    warm = time.perf_counter() - t
    results = {}

    def variant(name, model, fn):
        def run():
            fusion.model = model
            try:
                results[name] = fn()
            finally:
                fusion.model = network
        return run

    times = interleaved({"eager": variant("eager", network, fwd_bwd), "compiled": variant("compiled", compiled, fwd_bwd),
                         "pgd eager": variant("pgd eager", network, pgd), "pgd compiled": variant("pgd compiled", compiled, pgd)},
                        args.repeats, device)
    diff = float((results["pgd compiled"].inputs["ir"] - results["pgd eager"].inputs["ir"]).abs().max())
    return [
        Ratio(f"compile {arch}: forward + backward, torch.compile / eager", ratios(times, "compiled", "eager"), None,
              note=f"{warm:.0f} s to compile (not in the ratio)"),
        Ratio(f"compile {arch}: PGD-{args.steps} via run_attack, torch.compile / eager", ratios(times, "pgd compiled", "pgd eager"), None,
              note=f"max |adversarial diff| {diff:.1e} (budget {8 / 255:.1e}; sign steps flip where a gradient is near 0)"),
    ]


MEASUREMENTS = {"P1": measure_adapters, "P3": measure_text, "P4": measure_harness, "P5": measure_scaling, "P5-procs": measure_processes,
                "P5-subsets": measure_worst_case, "GPU": measure_mf_grid, "compile": measure_compile}
#: run only when named in --only: compiling costs about a minute per network on 2 CPU cores
OPT_IN = ("compile",)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (under 3 minutes on 2 CPU cores)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", nargs="+", choices=sorted(MEASUREMENTS), default=None, help="P1 also measures P2")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--json", default=None, help="write the ratios here")
    p.add_argument("--mf-root", default=None, help="the MF dataset (the GPU grid measurement runs when given)")
    p.add_argument("--mf-weights", default=None, help="the official MFNet checkpoint (final.pth)")
    p.add_argument("--mf-batch", type=int, default=16)
    p.add_argument("--mf-limit", type=int, default=None, help="the first N MF test frames only (a quick check of the command)")
    p.add_argument("--mf-size", type=int, nargs=2, default=None, metavar=("H", "W"), help="resize the MF frames (default: 480x640 as shipped)")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast for the GPU grid")
    p.add_argument("--compile", action="store_true", help="the GPU grid also with the network torch.compile'd")
    return p


def configure(args: argparse.Namespace) -> argparse.Namespace:
    quick = args.quick
    args.repeats = args.repeats or (5 if quick else 9)
    args.batch = 4 if quick else 8
    args.size = (64, 96) if quick else (96, 128)
    args.steps = 10
    args.p1_models = ["mfnet"] if quick else ["mfnet", "smp-twostream-unet"]
    args.p5_images = 4 if quick else 8
    args.p5_size = (48, 64) if quick else (96, 128)
    args.p5_repeats = 2 if quick else 5
    args.p3_examples = 3 if quick else 6
    args.p3_image_size = 224  # the image tower must dominate, as in the study (at 96 px: 1.3-1.7x)
    args.p3_repeats = 2 if quick else 3
    args.p5_procs_images = 16 if quick else 64
    return args


def main(argv: list[str] | None = None) -> int:
    args = configure(build_parser().parse_args(argv))
    device = torch.device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, repeats {args.repeats}; ratios: variant / baseline "
          "(min / median / max over repeats, variants interleaved)")
    print(f"{'measurement':<58} {'min':>7} {'median':>7} {'max':>7}  {'target':>8}  {'verdict':<13} note")
    results: list[Ratio] = []
    for name in args.only or [m for m in MEASUREMENTS if m not in OPT_IN]:
        for ratio in MEASUREMENTS[name](args, device):
            print(ratio.line(), flush=True)
            results.append(ratio)
    if args.json:
        Path(args.json).write_text(json.dumps([{"name": r.name, "values": r.values, "target": r.target, "missed": r.missed, "note": r.note}
                                               for r in results], indent=1))
    missed = [r.name for r in results if r.missed]
    if missed:
        print(f"\n{len(missed)} target(s) missed beyond the measured spread: " + "; ".join(missed))
        return 1
    print("\nevery target met within the measured spread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
