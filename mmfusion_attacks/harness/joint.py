"""Joint attacks and the worst case over modality subsets on the embedded defaults: a thin preset that
builds one harness spec (:func:`build_spec`) and runs it with :func:`~mmfusion_attacks.harness.engine.run_spec`.
``benchmarks/joint.py`` and ``mmfusion-attacks joint`` call :func:`main`; ``--print-spec`` prints the
spec as YAML, and ``mmfusion-attacks run`` on that file reproduces the preset's table exactly.

Four model families, one experiment per model, every non-empty subset of their modalities attacked with
the same per-modality budgets (``worst_case``), plus an alternating image <-> text attack:

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

The preset table (:func:`summary_table`, also printed by ``mmfusion-attacks run`` on the spec): per family,
models as columns, the clean accuracy, then per attacked subset the robust accuracy and the attack
success rate (segmentation: pixel accuracy and mIoU). A superset is never reported weaker than its
subsets (per example, the best of its own run and its subsets'); ``*`` marks a row a subset broke that
the subset's own run missed. The harness report (report.md / .html, results.csv / .json) has the rest:
queries, perturbation per modality, validity checks, qualitative examples.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from .options import checked_args, count, device_problem, number, out_dir_problem
from .spec import ExperimentSpec, RunSpec, spec_to_yaml

__all__ = ["main", "build_parser", "option_problems", "build_spec", "summary_table", "EXPERIMENTS", "synthetic_mfnet"]

#: experiment name -> (family, the model's column in the table), in table order
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "vl-vision": ("image+text", "vision"),
    "vl-language": ("image+text", "language"),
    "vl-early-fusion": ("image+text", "early fusion"),
    "vl-late-fusion": ("image+text", "late fusion"),
    "rgbt-classifier": ("rgb+thermal", "tiny RGB-T classifier"),
    "trimodal": ("image+text+audio", "late-fusion classifier"),
    "mfnet-segmentation": ("rgb+thermal segmentation", "MFNet (segmentation)"),
}
VL_ARCHS = ("vl-vision", "vl-language", "vl-early-fusion", "vl-late-fusion")
SEG_SIZE = (96, 128)
GROUP = "worst case"


def synthetic_mfnet(seed: int = 0) -> Any:
    """The main job's cached MFNet on SYNTHETIC scenes (trained with ``seed``): the model a ``callable``
    source names when the preset's ``--seed`` is not the seed MFNet was trained with."""
    from ..zoo import synthetic_default

    return synthetic_default("mfnet", size=SEG_SIZE, seed=seed, progress=False)


def _pgd(modality: str, eps: float, steps: int) -> dict[str, Any]:
    return {"modality": modality, "attack": "pgd", "budget": eps, "steps": steps}


def _text(queries: int) -> dict[str, Any]:
    return {"modality": "text", "attack": "deepwordbug", "budget": queries or None}


def build_spec(args: argparse.Namespace) -> RunSpec:
    """The preset's options as one spec (top-level ``table: joint``): an experiment per model."""
    worst = {"group": GROUP}
    experiments = []
    vl_plan = [_pgd("frontal", args.vl_eps, args.steps), _pgd("lateral", args.vl_eps, args.steps), _text(args.queries)]
    vl_data = {"name": "synthetic-xray-reports", "split": "test", "size": args.vl_examples, "image_size": args.image_size, "seed": 0}
    for arch in VL_ARCHS:
        experiments.append(ExperimentSpec(
            name=arch, title=_title(arch), model={"name": arch, "source": "synthetic-vl", "image_size": args.image_size}, data=dict(vl_data),
            steps=args.steps, sanity=None, worst_case=[{**worst, "plan": [dict(p) for p in vl_plan]}],
            joint=[{"name": f"alternating x{args.rounds}", "plan": [dict(p) for p in vl_plan], "orchestration": "alternating",
                    "rounds": args.rounds, "order": ["frontal", "lateral", "text"]}]))
    eps = args.rgbt_eps_255 / 255
    experiments.append(ExperimentSpec(
        name="rgbt-classifier", title=_title("rgbt-classifier"),
        model={"name": "tiny-rgbt-classifier", "source": "synthetic-rgbt-classifier", "train_size": args.rgbt_train, "epochs": args.rgbt_epochs,
               "eps_255": float(args.rgbt_eps_255), "seed": args.seed},
        data={"name": "synthetic-rgbt-scenes", "split": "test", "size": args.rgbt_examples, "seed": 0}, batch_size=32,
        steps=args.steps, sanity=None, worst_case=[{**worst, "plan": [_pgd("rgb", eps, args.steps), _pgd("ir", eps, args.steps)]}]))
    experiments.append(ExperimentSpec(
        name="trimodal", title=_title("trimodal"), model={"name": "trimodal-fusion", "source": "synthetic-trimodal", "train_size": args.tri_train},
        data={"name": "synthetic-trimodal", "split": "test", "size": args.tri_examples, "seed": args.seed}, batch_size=32, steps=args.steps,
        sanity=None, worst_case=[{**worst, "plan": [_pgd("image", args.tri_image_eps, args.steps), _text(args.queries),
                                                    _pgd("audio", args.tri_audio_eps, args.steps)]}]))
    # MFNet is the main job's cached default, trained with seed 0 whatever --seed is (the synthetic-rgbt
    # source trains with the spec's seed, so another seed names it through a callable source)
    mfnet = {"name": "mfnet", "source": "synthetic-rgbt"} if args.seed == 0 else \
        {"name": "mfnet", "source": "callable", "factory": f"{__name__}:synthetic_mfnet", "options": {"seed": 0}}
    experiments.append(ExperimentSpec(
        name="mfnet-segmentation", title=_title("mfnet-segmentation"), model=mfnet,
        data={"name": "synthetic-rgbt", "split": "test", "size": args.seg_examples, "height": SEG_SIZE[0], "width": SEG_SIZE[1],
              "seed": args.seed}, batch_size=8, steps=args.steps, sanity=None,
        worst_case=[{**worst, "plan": [_pgd("rgb", eps, args.steps), _pgd("ir", eps, args.steps)], "success_fraction": args.seg_fraction}]))
    return RunSpec(name="joint", experiments=experiments, seed=args.seed, device=args.device, table="joint")


def _title(name: str) -> str:
    family, model = EXPERIMENTS[name]
    return f"joint attacks, {family}: {model}"


def summary_table(summary: Mapping[str, Any]) -> str:
    """The preset's table from a run's summary alone: per family (models as columns) the clean accuracy,
    then per attacked subset robust accuracy / success rate (segmentation: pixel accuracy / mIoU)."""
    entries = [e for e in summary["experiments"] if e.get("kind", "grid") == "grid"]
    families: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for e in entries:
        family, model = EXPERIMENTS.get(e["name"], (e.get("title") or e["name"], e["name"]))
        families.setdefault(family, []).append((model, e))
    lines = []
    for family, members in families.items():
        seg = any(e.get("task") == "segmentation" for _, e in members)
        what = "pixel accuracy / mIoU" if seg else "robust accuracy / success rate"
        lines.append(f"\n{family} (clean accuracy, then {what} per attacked subset; * = a subset "
                     "broke rows the subset's own run missed; ~ = the model reads only part of the subset; = : none of it)")
        models = [m for m, _ in members]
        rows = [r for _, e in members for r in e["rows"]]
        # the worst cases over subsets first, then the joint (alternating) attacks, as the preset always showed them
        cells = list(dict.fromkeys([r["cell"] for r in rows if r.get("kind") == "worst-case"] + [r["cell"] for r in rows]))
        width = max(len(c) for c in cells) + 2
        lines.append(" " * width + " | ".join(f"{m:>17s}" for m in models))
        lines.append(f"{'clean':{width}s}" + " | ".join(f"{e['clean']['accuracy']:17.3f}" for _, e in members))
        by = {(m, r["cell"]): r for m, e in members for r in e["rows"]}
        for c in cells:
            parts = []
            for m, e in members:
                r = by.get((m, c))
                if r is None:
                    parts.append(f"{'-':>17s}")
                    continue
                mark = "*" if r.get("weaker_than_a_subset") else " "
                part = any(str(f).startswith("reads only") for f in r.get("flags") or [])
                second = r["mIoU"] if e.get("task") == "segmentation" else r.get("success_rate", 0.0)
                parts.append(f"{'=' if not r.get('applies', True) else ('~' if part else ' ')}{r['accuracy']:6.3f} / {second:5.3f}{mark}  ")
            lines.append(f"{c:{width}s}" + " | ".join(parts))
    return "\n".join(lines)


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
    p.add_argument("--out", default="runs/joint", help="results folder (re-running with the same options resumes)")
    p.add_argument("--print-spec", action="store_true", help="print the run's spec as YAML (for mmfusion-attacks run) and stop")
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


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> dict[str, Any] | None:
    """Run the preset (resuming from ``--out``) and print its tables; ``--print-spec``: print the spec only."""
    from .engine import run_spec
    from .tables import console_text

    args = checked_args(build_parser(prog), argv, option_problems)
    spec = build_spec(args)
    if args.print_spec:
        print(spec_to_yaml(spec), end="")
        return None
    summary = run_spec(spec, args.out, progress=not args.quiet)
    if summary is not None:
        print(console_text(summary, args.out))
    return summary
