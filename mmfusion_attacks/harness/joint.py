"""Joint attacks and the worst case over modality subsets on the embedded defaults, a preset over
:func:`~mmfusion_attacks.harness.grid.run_grid`. ``benchmarks/joint.py`` and ``mmfusion-attacks joint``
call :func:`main`.

Two model families, every non-empty subset of their modalities attacked with the same per-modality
budgets (:func:`~mmfusion_attacks.harness.grid.worst_case_cells`), plus an alternating image <-> text
attack:

1. **image + text** (the chest X-ray study's models: vision-only, language-only, early and late fusion,
   trained on the SYNTHETIC x-ray reports and cached): PGD on the frontal view, PGD on the lateral view
   (the two views share one gradient-joint attack when both are attacked), DeepWordBug on the report;
2. **RGB + thermal** (the tiny RGB-T scene classifier of the defences benchmark, trained here on the
   SYNTHETIC scenes): PGD on RGB, PGD on thermal;
3. **image + text + audio** (the study's proposal of a third modality: a late-fusion classifier of a
   photo, an operator's note and a spectrogram, trained here in seconds on the SYNTHETIC tri-modal
   default): PGD on the image, DeepWordBug on the note, PGD on the spectrogram;
4. **RGB + thermal segmentation** (the main job's MFNet on SYNTHETIC street scenes, cached): PGD on RGB,
   PGD on thermal; an image counts as fooled from ``--seg-fraction`` of its pixels wrong, and a set
   takes per image the most fooled of its own run and its subsets' (pixel accuracy and mIoU reported).

Rows: model x attacked subset; columns: clean accuracy, robust accuracy, attack success rate (on the
examples right when clean), the optimiser's own success rate, rows a subset broke that the subset's own
run missed, queries and mean perturbation per modality. A superset is never reported weaker than its
subsets (per example, the best of its own run and its subsets').
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data import create_dataset
from ..joint import ModalityAttack
from .grid import GridSpec, JointCell, run_grid, worst_case_cells
from .options import checked_args, count, device_problem, number, out_dir_problem
from .report import save_run

__all__ = ["main", "build_parser", "option_problems", "vl_plan", "rgbt_plan"]

VL_MODELS = {"vision": "vl-vision", "language": "vl-language", "early fusion": "vl-early-fusion", "late fusion": "vl-late-fusion"}


def vl_plan(eps: float, steps: int, queries: int, recipe: str = "deepwordbug") -> tuple[ModalityAttack, ...]:
    return (
        ModalityAttack("frontal", "pgd", eps, steps=steps),
        ModalityAttack("lateral", "pgd", eps, steps=steps),
        ModalityAttack("text", recipe, queries or None),
    )


def rgbt_plan(eps: float, steps: int) -> tuple[ModalityAttack, ...]:
    return (ModalityAttack("rgb", "pgd", eps, steps=steps), ModalityAttack("ir", "pgd", eps, steps=steps))


def trimodal_plan(args: argparse.Namespace) -> tuple[ModalityAttack, ...]:
    return (
        ModalityAttack("image", "pgd", args.tri_image_eps, steps=args.steps),
        ModalityAttack("text", "deepwordbug", args.queries or None),
        ModalityAttack("audio", "pgd", args.tri_audio_eps, steps=args.steps),
    )


def _rows(model: str, family: str, grid: Any) -> list[dict[str, Any]]:
    clean = grid.clean_summary()["accuracy"]
    out = []
    for r in grid.rows():
        row = {"family": family, "model": model, "cell": r["cell"], "applies": r.get("applies", True), "clean_accuracy": clean,
               "robust_accuracy": r["accuracy"], "success_rate": r.get("success_rate", 0.0),
               "weaker_than_a_subset": r.get("weaker_than_a_subset", 0), "queries_per_example": r.get("queries_per_example", 0.0),
               "flags": r.get("flags", [])}
        for k, v in r.items():
            if k.endswith("_linf_mean") or k in ("fraction_words_changed", "mIoU", "IoU_R"):
                row[k] = v
        out.append(row)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..models.vl_training import vl_synthetic_default
    from .defences import train_fusion

    t0 = time.time()
    timings: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    # 1. image + text
    test = create_dataset("synthetic-xray-reports", split="test", size=args.vl_examples, image_size=args.image_size)
    batch, labels = test.tensors()
    plan = vl_plan(args.vl_eps, args.steps, args.queries)
    cells = worst_case_cells("worst case", plan) + [
        JointCell(f"alternating x{args.rounds}", plan, orchestration="alternating", rounds=args.rounds, order=("frontal", "lateral", "text"))
    ]
    spec = GridSpec(attacks=(), combos=cells)
    for label, arch in VL_MODELS.items():
        t = time.time()
        fusion = vl_synthetic_default(arch, image_size=args.image_size, seed=args.seed, device=args.device, progress=not args.quiet)
        timings[f"load {label}"] = time.time() - t
        t = time.time()
        grid = run_grid(fusion, [(batch, labels)], spec, progress=False)
        timings[f"attack {label}"] = time.time() - t
        rows += _rows(label, "image+text", grid)
    # 2. RGB + thermal
    t = time.time()
    train_set = create_dataset("synthetic-rgbt-scenes", split="train", size=args.rgbt_train)
    x_train, y_train = train_set.tensors()
    rgbt = train_fusion(x_train, y_train, adversarial=None, eps=args.rgbt_eps_255 / 255, epochs=args.rgbt_epochs, pgd_steps=1,
                        seed=args.seed, device=args.device)
    timings["train RGB-T"] = time.time() - t
    x_test, y_test = create_dataset("synthetic-rgbt-scenes", split="test", size=args.rgbt_examples).tensors()
    t = time.time()
    grid = run_grid(rgbt, [(x_test, y_test)], GridSpec(attacks=(), combos=worst_case_cells("worst case", rgbt_plan(args.rgbt_eps_255 / 255, args.steps))),
                    progress=False)
    timings["attack RGB-T"] = time.time() - t
    rows += _rows("tiny RGB-T classifier", "rgb+thermal", grid)
    # 3. image + text + audio
    from ..models import create_model
    from ..models.trimodal import train_trimodal

    t = time.time()
    x_tri, y_tri = create_dataset("synthetic-trimodal", split="train", size=args.tri_train, seed=args.seed).tensors()
    tri = train_trimodal(create_model("trimodal-fusion").to(args.device), x_tri, y_tri, seed=args.seed)
    timings["train tri-modal"] = time.time() - t
    x_tri, y_tri = create_dataset("synthetic-trimodal", split="test", size=args.tri_examples, seed=args.seed).tensors()
    t = time.time()
    grid = run_grid(tri, [(x_tri, y_tri)], GridSpec(attacks=(), combos=worst_case_cells("worst case", trimodal_plan(args))), progress=False)
    timings["attack tri-modal"] = time.time() - t
    rows += _rows("late-fusion classifier", "image+text+audio", grid)
    # 4. RGB + thermal segmentation
    from ..zoo import synthetic_default

    t = time.time()
    mfnet = synthetic_default("mfnet", device=args.device, progress=not args.quiet)
    timings["load MFNet"] = time.time() - t
    from .rgbt import SYNTHETIC_SIZE

    scenes = create_dataset("synthetic-rgbt", split="test", size=args.seg_examples, height=SYNTHETIC_SIZE[0], width=SYNTHETIC_SIZE[1],
                            seed=args.seed)
    items = [scenes[i] for i in range(len(scenes))]
    x_seg = {m: torch.stack([it[m] for it in items]) for m in ("rgb", "ir")}
    y_seg = torch.stack([it["labels"] for it in items]).long()
    t = time.time()
    seg_plan = rgbt_plan(args.rgbt_eps_255 / 255, args.steps)
    seg_cells = worst_case_cells("worst case", seg_plan, success_fraction=args.seg_fraction)
    grid = run_grid(mfnet, [(x_seg, y_seg)], GridSpec(attacks=(), combos=seg_cells), progress=False)
    timings["attack MFNet"] = time.time() - t
    for r in _rows("MFNet (segmentation)", "rgb+thermal segmentation", grid):
        r["success_rate"] = None
        rows.append(r)
    timings["total"] = time.time() - t0
    return {
        "meta": {
            "data": "SYNTHETIC chest x-ray + report cases, SYNTHETIC RGB-T scenes and SYNTHETIC tri-modal objects, generated by mmfusion_attacks",
            "vl_examples": args.vl_examples, "image_size": args.image_size, "vl_eps": args.vl_eps, "queries": args.queries,
            "rounds": args.rounds, "rgbt_examples": args.rgbt_examples, "rgbt_eps_255": args.rgbt_eps_255, "steps": args.steps,
            "seg_examples": args.seg_examples, "seg_fraction": args.seg_fraction, "tri_examples": args.tri_examples, "tri_image_eps": args.tri_image_eps, "tri_audio_eps": args.tri_audio_eps,
            "seed": args.seed, "labels": "ground truth",
        },
        "rows": rows,
        "seconds": timings,
    }


def format_table(result: dict[str, Any]) -> str:
    lines = []
    for family in dict.fromkeys(r["family"] for r in result["rows"]):
        seg = any(r["success_rate"] is None for r in result["rows"] if r["family"] == family)
        what = "pixel accuracy / mIoU" if seg else "robust accuracy / success rate"
        lines.append(f"\n{family} (clean accuracy, then {what} per attacked subset; * = a subset "
                     "broke rows the subset's own run missed; ~ = the model reads only part of the subset; = : none of it)")
        models = list(dict.fromkeys(r["model"] for r in result["rows"] if r["family"] == family))
        cells = list(dict.fromkeys(r["cell"] for r in result["rows"] if r["family"] == family))
        width = max(len(c) for c in cells) + 2
        lines.append(" " * width + " | ".join(f"{m:>17s}" for m in models))
        by = {(r["model"], r["cell"]): r for r in result["rows"] if r["family"] == family}
        lines.append(f"{'clean':{width}s}" + " | ".join(f"{by[(m, cells[0])]['clean_accuracy']:17.3f}" for m in models))
        for c in cells:
            parts = []
            for m in models:
                r = by[(m, c)]
                mark = "*" if r["weaker_than_a_subset"] else " "
                part = any(f.startswith("reads only") for f in r["flags"])
                second = r["mIoU"] if r["success_rate"] is None else r["success_rate"]
                parts.append(f"{'=' if not r['applies'] else ('~' if part else ' ')}{r['robust_accuracy']:6.3f} / {second:5.3f}{mark}  ")
            lines.append(f"{c:{width}s}" + " | ".join(parts))
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(r["family"] for r in result["rows"]))
    cols = min(2, len(families))
    nrows = -(-len(families) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols, 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(families):]:
        ax.set_visible(False)
    for ax, family in zip(axes.flat, families):
        rows = [r for r in result["rows"] if r["family"] == family and r["cell"].startswith("worst case")]
        cells = list(dict.fromkeys(r["cell"][len("worst case: "):] for r in rows))
        for model in dict.fromkeys(r["model"] for r in rows):
            ys = [next(r["robust_accuracy"] for r in rows if r["model"] == model and r["cell"].endswith(": " + c)) for c in cells]
            ax.plot(range(len(cells)), ys, marker="o", label=model)
        ax.set_xticks(range(len(cells)), cells, rotation=30, ha="right")
        ax.set_ylabel("pixel accuracy" if "segmentation" in family else "robust accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(f"{family}: worst case per attacked subset")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--vl-examples", type=count(1, 1_000_000), default=12, help="SYNTHETIC x-ray + report test cases")
    p.add_argument("--image-size", type=count(8), default=48, help="side of the views (the cached models were trained at 48)")
    p.add_argument("--vl-eps", type=number(0, 1, unit="image values are in [0, 1]"), default=0.01, help="PGD eps on each view")
    p.add_argument("--queries", type=count(0), default=50, help="DeepWordBug query budget per example (0: none)")
    p.add_argument("--rounds", type=count(1), default=2, help="rounds of the alternating image <-> text attack")
    p.add_argument("--rgbt-examples", type=count(1, 1_000_000), default=150)
    p.add_argument("--rgbt-train", type=count(8, 1_000_000), default=600)
    p.add_argument("--rgbt-epochs", type=count(1), default=12)
    p.add_argument("--rgbt-eps-255", type=number(0, 255, unit="on the 0-255 scale"), default=8.0)
    p.add_argument("--tri-examples", type=count(1, 1_000_000), default=100, help="SYNTHETIC tri-modal test examples")
    p.add_argument("--tri-train", type=count(8, 1_000_000), default=800)
    p.add_argument("--tri-image-eps", type=number(0, 1, unit="image values are in [0, 1]"), default=0.05)
    p.add_argument("--tri-audio-eps", type=number(0, 1, unit="spectrogram values are in [0, 1]"), default=0.05)
    p.add_argument("--seg-examples", type=count(1, 1_000_000), default=16, help="SYNTHETIC RGB-T street scenes (MFNet)")
    p.add_argument("--seg-fraction", type=number(0, 1), default=0.5, help="fraction of an image's pixels that must be wrong")
    p.add_argument("--steps", type=count(1), default=10, help="PGD steps")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", default="runs/joint")
    return p


def option_problems(args: argparse.Namespace) -> list[str]:
    """What argparse's per-value checks cannot see (device, output folder, resources), before any work."""
    from ..errors import MissingResourceError
    from ..text.recipes import check_text_attack_resources

    problems = [m for m in (device_problem(args.device, allow_auto=True), out_dir_problem(args.out)) if m]
    if not problems:
        try:
            check_text_attack_resources("deepwordbug")
        except MissingResourceError as exc:
            problems.append(f"the report attack (DeepWordBug): {exc}")
    return problems


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> dict[str, Any]:
    args = checked_args(build_parser(prog), argv, option_problems)
    result = run(args)
    save_run(result, args.out, "joint", plot=plot, table=format_table)
    return result
