"""The CLIP-like contrastive study: zero-shot classification attacked white-, grey- and black-box on the
image, on the class prompts, and on both, as a spec for the harness. ``benchmarks/contrastive.py`` and
``mmfusion-attacks contrastive`` call :func:`main`; ``--print-spec`` prints the spec, and
``mmfusion-attacks run`` on it prints the same table.

Model: the project's CLIP-like model (frozen EfficientNet-Lite0 + MiniLM towers from PyPI packages, an
image head trained here on Fashion-MNIST with three classes held out; cached), zero-shot over the ten
classes (each example's text is the whole prompt set: :mod:`mmfusion_attacks.models.contrastive`; the
data, ``fashion-mnist-zero-shot``, serves it with every image). Real Fashion-MNIST when Debian's
``dataset-fashion-mnist`` is installed, else a SYNTHETIC stand-in (named in the spec's data entry and
said in the output).

Rows (attack x attacked modality x box): white box FGSM, PGD (torchattacks), DeepFool, JSMA (ART) on
the image; grey box PGD / FGSM crafted on a surrogate of the same architecture trained with another seed
and transferred (a transfer experiment); black box Square (scores) and HopSkipJump (decisions) on the
image; DeepWordBug on the prompts; and the worst case over {image, prompts} (PGD + DeepWordBug), which
answers the study's claim that an attacker must hit both modalities. DeepFool, JSMA and HopSkipJump run
on the first ``--slow-examples`` images (an experiment with ``limit``). Columns: clean and robust
accuracy, attack success rate (among examples right when clean), mean Linf on the image, words changed
in the prompts, queries.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from .options import checked_args, count, device_problem, number, out_dir_problem
from .spec import ExperimentSpec, RunSpec

__all__ = ["main", "build_parser", "option_problems", "build_spec", "summary_table", "BOX"]

BOX = {"FGSM": "white", "PGD": "white", "DEEPFOOL": "white", "JSMA": "white", "SQUARE": "black", "HOPSKIPJUMP": "black", "DEEPWORDBUG": "black"}
GREY = "grey (transfer from a surrogate, seed +1)"
WORST = "white (image) / black (prompts)"


def _image(name: str, toolkit: str, steps: int, amount: float) -> dict[str, Any]:
    """A combo of one image attack, named as the table's row ("PGD on image")."""
    return {"name": f"{name.upper()} on image",
            "steps": [{"kind": "attack", "name": name, "attacked": ["image"], "amount": amount, "toolkit": toolkit, "steps": steps}]}


def data_source() -> str:
    """``"debian"`` when the real Fashion-MNIST is installed, else ``"synthetic"`` (with a warning saying
    how to install it): the spec names the images it runs on."""
    from ..data.fashion_mnist import INSTALL_HINT, SyntheticDataWarning, debian_available

    if debian_available():
        return "debian"
    warnings.warn(f"Fashion-MNIST is not installed (`{INSTALL_HINT}`): the study runs on a SYNTHETIC stand-in "
                  "(procedural silhouettes, not real data)", SyntheticDataWarning, stacklevel=2)
    return "synthetic"


def build_spec(args: argparse.Namespace, source: str | None = None) -> RunSpec:
    """The preset's options as a spec: the white / black box, text and worst-case rows on every example,
    DeepFool / JSMA / HopSkipJump on the first ``--slow-examples``, the grey box as a transfer from the
    surrogate. ``source``: the Fashion-MNIST images (default: :func:`data_source`)."""
    from ..models.contrastive import DEFAULT_TEMPLATE

    eps = args.eps_255 / 255
    data = {"name": "fashion-mnist-zero-shot", "split": "test", "size": args.examples, "seed": args.seed,
            "source": source or data_source(), "template": DEFAULT_TEMPLATE}

    def clip_like(seed: int) -> dict[str, Any]:
        return {"name": "clip-like", "source": "registry", "options": {"classes": "all", "seed": seed}, "seed": seed}

    model = clip_like(args.seed)
    common = {"data": data, "model": model, "batch_size": args.examples, "steps": args.steps, "sanity": None}
    main_rows = ExperimentSpec(
        name="zero-shot", title="CLIP-like zero-shot: white / black box on the image, DeepWordBug on the prompts, worst case",
        combos=[_image("fgsm", "torchattacks", 1, eps), _image("pgd", "torchattacks", args.steps, eps),
                _image("square", "art", args.square_queries, eps),
                {"name": "DEEPWORDBUG on prompts", "steps": [{"kind": "text-attack", "name": "deepwordbug", "attacked": ["prompts"],
                                                              "amount": float(args.queries)}]}],
        worst_case=[{"group": "worst case", "plan": [{"modality": "image", "attack": "pgd", "budget": eps, "steps": args.steps},
                                                     {"modality": "prompts", "attack": "deepwordbug", "budget": float(args.queries)}]}],
        **common)
    slow = [_image("deepfool", "art", args.deepfool_iter, eps)]
    if not args.no_jsma:
        slow.append(_image("jsma", "art", 1, 1.0))
    slow.append(_image("hopskipjump", "art", args.hsj_iter, eps))
    slow_rows = ExperimentSpec(name="zero-shot-slow", title=f"CLIP-like zero-shot: DeepFool, JSMA, HopSkipJump (first {args.slow_examples})",
                               combos=slow, limit=args.slow_examples, **common)
    surrogate = clip_like(args.seed + 1)
    grey = ExperimentSpec(
        name="grey-box", title="CLIP-like zero-shot: FGSM / PGD crafted on a surrogate (seed +1), transferred",
        transfer={"sources": {"surrogate FGSM": surrogate, "surrogate PGD": surrogate}, "targets": {"clip-like": model},
                  "attack": {"surrogate FGSM": "fgsm", "surrogate PGD": "pgd"}, "eps_255": float(args.eps_255), "attacked": ["image"],
                  "metric": "accuracy", "steps": args.steps, "toolkit": "torchattacks"},
        **common)
    return RunSpec(name="contrastive", experiments=[main_rows, slow_rows, grey], seed=args.seed, device=args.device, table="contrastive")


def _grid_rows(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    clean = entry["clean"]["accuracy"]
    out = []
    for r in entry["raw_rows"]:
        cell = r["cell"]
        if cell.startswith("worst case: "):
            attack, attacked, box = "PGD + DEEPWORDBUG (worst case)", cell[len("worst case: "):], WORST
        else:
            attack, attacked = cell.split(" on ")
            box = BOX.get(attack, "white")
        out.append({"attack": attack, "attacked": attacked, "box": box, "examples": r["rows"], "clean_accuracy": clean,
                    "robust_accuracy": r["accuracy"], "success_rate": r.get("success_rate"), "image_linf_mean": r.get("image_linf_mean", 0.0),
                    "words_changed": r.get("words_changed_per_example", 0.0), "queries": r.get("queries_per_example", 0.0)})
    return out


def _transfer_rows(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    t = entry["transfer"]
    out = []
    for target in t["targets"]:
        clean_counts = entry["confusion"][f"clean {target}"]
        n = sum(map(sum, clean_counts)) // max(1, t.get("eval_repeats", 1))
        for source in t["sources"]:
            attack = t["attack"] if isinstance(t["attack"], str) else t["attack"][source]
            out.append({"attack": attack.upper(), "attacked": "+".join(t["attacked"]), "box": GREY, "examples": n,
                        "clean_accuracy": entry["clean"][target], "robust_accuracy": t["values"][f"{source} -> {target}"],
                        "success_rate": None, "image_linf_mean": None, "words_changed": 0.0, "queries": 0.0})
    return out


def summary_table(summary: Mapping[str, Any]) -> str:
    """The study's table from a run's summary: one row per attack and attacked modality (grid rows, the
    slow rows on their first examples, then the grey box)."""
    specs = {e["name"]: e for e in summary["spec"]["experiments"]}
    entries = summary["experiments"]
    rows: list[dict[str, Any]] = []
    for e in entries:
        rows += _transfer_rows(e) if e["kind"] == "transfer" else _grid_rows(e)
    first = entries[0]
    data = specs[first["name"]]["data"]
    classes = (specs[first["name"]]["model"].get("options") or {}).get("classes", "all")
    over = "ten Fashion-MNIST classes" if classes == "all" else f"the Fashion-MNIST classes {classes}"
    lines = [f"data: {first['description']['data']}", f"zero-shot over {over}, prompts {data.get('template', 'a photo of a {}.')!r}"]
    if data.get("source") == "synthetic":
        lines.append("note: SYNTHETIC Fashion-MNIST stand-in (procedural silhouettes, not real data); "
                     "`apt-get install dataset-fashion-mnist` for the real images")
    lines.append(f"{'attack':32s} {'attacked':14s} {'box':42s} {'n':>4s} {'clean':>6s} {'robust':>7s} {'success':>8s} {'Linf':>7s} "
                 f"{'words':>6s} {'queries':>8s}")
    for r in rows:
        success = "-" if r["success_rate"] is None else f"{r['success_rate']:.3f}"
        linf = "-" if r["image_linf_mean"] is None else f"{r['image_linf_mean']:.4f}"
        lines.append(f"{r['attack']:32s} {r['attacked']:14s} {r['box']:42s} {r['examples']:4d} {r['clean_accuracy']:6.3f} "
                     f"{r['robust_accuracy']:7.3f} {success:>8s} {linf:>7s} {r['words_changed']:6.2f} {r['queries']:8.1f}")
    return "\n".join(lines)


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
    p.add_argument("--out", default="runs/contrastive", help="results folder; re-running resumes it")
    p.add_argument("--print-spec", action="store_true", help="print the spec as YAML (for mmfusion-attacks run) and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def option_problems(args: argparse.Namespace) -> list[str]:
    """What argparse's per-value checks cannot see (device, output folder, text resources), before any work."""
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


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> dict[str, Any] | None:
    from .engine import run_spec
    from .spec import spec_to_yaml
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
