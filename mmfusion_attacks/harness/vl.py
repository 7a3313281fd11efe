"""The medical vision-language robustness study (chest X-ray + report), a preset over :func:`run_grid`.
``benchmarks/vl_fusion.py`` and ``mmfusion-attacks vl`` call :func:`main`.

Rows (cells): no attack; FGSM on both image views at each eps; WordNet synonym substitution of 20% /
40% of the eligible words; deletion of 50% of the words; image + text combinations (FGSM, then the
text perturbation, on the same examples); all at once; and TextAttack recipes (DeepWordBug, PWWS) with
their success rate and queries per example. Columns: the vision-only, language-only, early-fusion and
late-fusion models. A model that does not read the perturbed modality is scored on inputs it reads
unchanged (marked ``=``). Also measured: the speed of a text attack with the held images' tower
features cached vs recomputed in every query (identical results required).

With no arguments: the embedded SYNTHETIC default (x-ray-like images and generated reports, made by
this project; models trained here and cached). ``--data DIR`` runs on a real Indiana University chest
X-ray folder (``indiana_reports.csv``, ``indiana_projections.csv``, images), training on its train split.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data import create_dataset
from ..fusion import FusionModel
from .grid import ComboCell, GridSpec, Step, run_grid
from .options import checked_args, count, device_problem, duplicates, number, out_dir_problem
from .report import save_run

__all__ = ["main", "build_parser", "option_problems", "study_cells", "MODELS", "IMAGES", "measure_feature_cache"]

MODELS = {"vision": "vl-vision", "language": "vl-language", "early fusion": "vl-early-fusion", "late fusion": "vl-late-fusion"}
IMAGES = ("frontal", "lateral")


def study_cells(
    *,
    fgsm_eps: Sequence[float] = (0.01, 0.05, 0.1, 0.2),
    synonym: Sequence[float] = (0.2, 0.4),
    deletion: Sequence[float] = (0.5,),
    combo_eps: float = 0.05,
    recipes: Sequence[str] = ("deepwordbug", "pwws"),
    query_budget: int = 0,
    toolkit: str = "torchattacks",
    views: Sequence[str] = IMAGES,
    seed: int = 0,
) -> list[ComboCell]:
    """The study's rows as grid cells (each alone, image + text combinations, all at once, recipes)."""
    views = tuple(views)

    def fgsm(eps: float) -> Step:
        return Step("attack", "fgsm", views, eps, toolkit=toolkit)

    def aug(name: str, fraction: float) -> Step:
        return Step("text-augment", name, ("text",), fraction, seed=seed)

    cells = [ComboCell(f"FGSM {e:g}", (fgsm(e),)) for e in fgsm_eps]
    cells += [ComboCell(f"SYN {p:.0%}", (aug("synonym", p),)) for p in synonym]
    cells += [ComboCell(f"DEL {p:.0%}", (aug("deletion", p),)) for p in deletion]
    for p in synonym:
        cells.append(ComboCell(f"FGSM {combo_eps:g} + SYN {p:.0%}", (fgsm(combo_eps), aug("synonym", p))))
    for p in deletion:
        cells.append(ComboCell(f"FGSM {combo_eps:g} + DEL {p:.0%}", (fgsm(combo_eps), aug("deletion", p))))
    if synonym and deletion:
        cells.append(ComboCell(f"SYN {synonym[0]:.0%} + DEL {deletion[0]:.0%}", (aug("synonym", synonym[0]), aug("deletion", deletion[0]))))
        cells.append(ComboCell(
            f"ALL: FGSM {combo_eps:g} + SYN {synonym[0]:.0%} + DEL {deletion[0]:.0%}",
            (fgsm(combo_eps), aug("synonym", synonym[0]), aug("deletion", deletion[0])),
        ))
    cells += [ComboCell(name, (Step("text-attack", name, ("text",), query_budget),)) for name in recipes]
    return cells


def _batches(batch: dict[str, Any], labels: torch.Tensor, size: int):
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"batch size must be a positive int, got {size!r}")
    n = len(labels)
    for start in range(0, n, size):
        yield {k: v[start : start + size] for k, v in batch.items()}, labels[start : start + size]


def _models(args: argparse.Namespace, train_set: Any) -> dict[str, FusionModel]:
    from ..models.vl_training import vl_synthetic_default

    out = {}
    if args.data is not None:
        # what the models are keyed by: the training data's content, not its path (set on args for the meta)
        args.train_fingerprint = train_set.fingerprint(image_contents=args.hash_images)
    for label, arch in MODELS.items():
        if args.data is None:
            out[label] = vl_synthetic_default(arch, image_size=args.image_size, seed=args.seed, device=args.device, progress=not args.quiet)
        else:
            out[label] = _train_on(arch, train_set, args, args.train_fingerprint)
    return out


def _train_on(arch: str, train_set: Any, args: argparse.Namespace, fingerprint: str) -> FusionModel:
    """A model trained on a real dataset's train split with the embedded default's network and recipe,
    cached by the data's ``fingerprint`` (labels, reports, images), the network, the recipe and the seed:
    relabelled or edited data is trained on afresh, never served the models of the old data."""
    from ..models import create_model
    from ..models.vl_training import (
        SYNTHETIC_CONFIGS,
        SYNTHETIC_RECIPES,
        data_cache_name,
        load_state,
        rebuilt_prefixes,
        save_state,
        train_classifier,
    )
    from ..zoo import cache_dir

    path = cache_dir() / data_cache_name(arch, "iu-xray", fingerprint, args.seed)
    torch.manual_seed(args.seed)  # the initial weights do not depend on which models were built before
    fusion = create_model(arch, **SYNTHETIC_CONFIGS[arch])
    skip = rebuilt_prefixes(SYNTHETIC_CONFIGS[arch], fusion)
    if path.is_file():
        load_state(fusion, path, skip)
        return fusion.to(args.device).eval()
    batch, labels = train_set.tensors()
    batch = {k: v for k, v in batch.items() if k in fusion.modalities}
    fusion = train_classifier(fusion.to(args.device), batch, labels, seed=args.seed, device=args.device,
                              progress=not args.quiet, **SYNTHETIC_RECIPES[arch].kwargs())
    save_state(fusion, path, skip)
    return fusion.eval()


def measure_feature_cache(fusion: FusionModel, batch: dict[str, Any], labels: torch.Tensor, *, recipe: str = "deepwordbug", seed: int = 0) -> dict[str, Any]:
    """Time one TextAttack recipe on ``batch`` with the held images' tower features cached and recomputed
    in every query; both runs must give identical adversarial texts, queries and predictions."""
    import textattack

    from ..adapters.textattack import FusionModelWrapper
    from ..runner import run_attack
    from ..text.recipes import build_text_attack

    out: dict[str, Any] = {}
    results = {}
    for cached in (True, False):
        textattack.shared.utils.set_seed(seed)
        wrapper = FusionModelWrapper(fusion, cache_features=cached, long_text="skip")
        attack = build_text_attack(recipe, wrapper)
        start = time.perf_counter()
        res = run_attack(attack, batch, labels)
        out["cached_s" if cached else "uncached_s"] = time.perf_counter() - start
        results[cached] = (res.inputs["text"], res.extras["queries"].tolist(), res.adv_pred.tolist())
        out["queries"] = int(res.extras["queries"].sum())
    out["identical"] = results[True] == results[False]
    out["speedup"] = out["uncached_s"] / max(out["cached_s"], 1e-9)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if args.data is None:
        test = create_dataset("synthetic-xray-reports", split="test", size=args.test_size, image_size=args.image_size, seed=args.seed)
        train = None
        data_label = "SYNTHETIC chest x-ray-like images + generated reports (mmfusion_attacks 'synthetic-xray-reports'), not real data"
    else:
        train = create_dataset("iu-xray", root=args.data, split="train", image_size=args.image_size)
        test = create_dataset("iu-xray", root=args.data, split="test", image_size=args.image_size, limit=args.test_size)
        data_label = f"Indiana University chest X-rays + reports from {args.data} (test split, {len(test)} examples)"
    models = _models(args, train)
    timings["training"] = time.perf_counter() - t0
    batch, labels = test.tensors()
    cells = study_cells(
        fgsm_eps=args.fgsm_eps, synonym=args.synonym, deletion=args.deletion, combo_eps=args.combo_eps,
        recipes=(), toolkit=args.toolkit, seed=args.seed,
    )
    recipe_cells = study_cells(fgsm_eps=(), synonym=(), deletion=(), recipes=args.recipes, query_budget=args.query_budget, seed=args.seed)
    if args.recipe_examples < 1:  # a negative count would slice off the end: labels[:-1] is all but the last
        raise ValueError(f"--recipe-examples must be a positive int, got {args.recipe_examples}")
    n_recipe = min(args.recipe_examples, len(labels))
    rows: list[dict[str, Any]] = []
    clean: dict[str, float] = {}
    for label, fusion in models.items():
        t = time.perf_counter()
        grid = run_grid(fusion, _batches(batch, labels, args.batch_size), GridSpec(attacks=(), combos=cells, toolkit=args.toolkit),
                        progress=not args.quiet)
        clean[label] = grid.clean_summary()["accuracy"]
        rows.append({"model": label, "cell": "no attack", "accuracy": clean[label], "applies": True, "rows": len(labels)})
        rows += [{"model": label, **r} for r in grid.rows()]
        if recipe_cells and n_recipe:
            # TextAttack recipes query the model hundreds of times per example: they run on the first
            # --recipe-examples test examples (their rows say how many), with --query-budget per example
            head = {k: v[:n_recipe] for k, v in batch.items()}
            sub = run_grid(fusion, _batches(head, labels[:n_recipe], args.batch_size), GridSpec(attacks=(), combos=recipe_cells),
                           progress=not args.quiet)
            rows += [{"model": label, **r, "clean_accuracy_on_rows": sub.clean_summary()["accuracy"]} for r in sub.rows()]
        timings[f"grid {label}"] = time.perf_counter() - t
    speed = None
    if not args.skip_speed:
        t = time.perf_counter()
        speed = _speed(args)
        timings["speed"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return {
        "meta": {
            "data": data_label,
            "synthetic": args.data is None,
            "models": MODELS,
            "test_size": len(labels),
            "image_size": args.image_size,
            "toolkit": args.toolkit,
            "seed": args.seed,
            "fgsm_eps": list(args.fgsm_eps),
            "combo_eps": args.combo_eps,
            "train_fingerprint": getattr(args, "train_fingerprint", None),
        },
        "clean": clean,
        "rows": rows,
        "speed": speed,
        "seconds": timings,
    }


def _speed(args: argparse.Namespace) -> dict[str, Any]:
    """Cached vs recomputed held-image features on a model whose image tower dominates the cost: early
    fusion at 224 px (random weights: speed does not depend on training)."""
    torch.manual_seed(args.seed)
    fusion = _speed_model(args).to(args.device).eval()
    data = create_dataset("synthetic-xray-reports", split="val", size=args.speed_examples, image_size=args.speed_image_size, seed=args.seed)
    batch, labels = data.tensors()
    out = measure_feature_cache(fusion, batch, labels, seed=args.seed)
    out.update({"model": "vl-early-fusion (seresnet18 at full width, MiniLM)", "image_size": args.speed_image_size, "examples": len(labels)})
    return out


def _speed_model(args: argparse.Namespace) -> FusionModel:
    from ..models import create_model
    from ..models.vl_training import SYNTHETIC_CONFIGS

    config = {k: v for k, v in SYNTHETIC_CONFIGS["vl-early-fusion"].items() if k != "backbone_kwargs"}
    return create_model("vl-early-fusion", **config)


def format_table(result: dict[str, Any]) -> str:
    models = list(result["clean"])
    cells = list(dict.fromkeys(r["cell"] for r in result["rows"]))
    index = {(r["model"], r["cell"]): r for r in result["rows"]}
    width = max(len(c) for c in cells) + 2
    lines = [f"data: {result['meta']['data']}", "accuracy (= : the model does not read the perturbed modality)", ""]
    lines.append("".ljust(width) + "".join(f"{m:>14}" for m in models))
    n_test = result["meta"]["test_size"]
    partial = {r["cell"]: r["rows"] for r in result["rows"] if r.get("rows", n_test) != n_test}
    for cell in cells:
        line = (cell + ("*" if cell in partial else "")).ljust(width)
        for m in models:
            r = index.get((m, cell))
            if r is None:
                line += f"{'-':>14}"
            else:
                mark = "" if r.get("applies", True) else "="
                line += f"{mark + format(r['accuracy'], '.3f'):>14}"
        lines.append(line)
    if partial:
        lines.append(f"* on the first {min(partial.values())} test examples only (TextAttack recipes); clean accuracy there in the lines below")
    recipe_rows = [r for r in result["rows"] if r.get("queries_per_example")]
    if recipe_rows:
        lines += ["", "text attacks: success rate (of rows right when clean) / queries per example / words changed per example"]
        for r in recipe_rows:
            clean = f"  (clean {r['clean_accuracy_on_rows']:.3f} on {r['rows']})" if "clean_accuracy_on_rows" in r else ""
            lines.append(
                f"  {r['model']:<13} {r['cell']:<14} success {r['success_rate']:.3f}  queries {r['queries_per_example']:.1f}  "
                f"words {r['words_changed_per_example']:.2f}{clean}"
            )
    if result.get("speed"):
        s = result["speed"]
        lines += ["", f"held-image feature cache ({s['model']}, {s['image_size']} px, {s['examples']} examples, {s['queries']} queries): "
                  f"cached {s['cached_s']:.1f} s vs recomputed {s['uncached_s']:.1f} s = {s['speedup']:.1f}x, identical results: {s['identical']}"]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(result["clean"])
    cells = list(dict.fromkeys(r["cell"] for r in result["rows"]))
    index = {(r["model"], r["cell"]): r["accuracy"] for r in result["rows"]}
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(cells)), 4.5))
    w = 0.8 / len(models)
    for j, m in enumerate(models):
        ax.bar([i + j * w for i in range(len(cells))], [index.get((m, c), float("nan")) for c in cells], w, label=m)
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(cells))])
    ax.set_xticklabels(cells, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(("SYNTHETIC data: " if result["meta"]["synthetic"] else "") + "image+text robustness per model", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


#: the synthetic default's splits hold at most this many items (SyntheticXrayReports' ``size``)
_SYNTHETIC_MAX = 1_000_000
_EPS = number(0, 1, unit="image values are in [0, 1]")
_FRACTION = number(0, 1, unit="a fraction of the words")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=None, help="an Indiana University chest X-ray folder (default: the SYNTHETIC embedded data)")
    p.add_argument("--hash-images", action="store_true",
                   help="with --data: key the trained models by the images' bytes (reads every image) instead of their sizes and modification times")
    p.add_argument("--test-size", type=count(1), default=120, help="test examples (synthetic: at most 1,000,000)")
    p.add_argument("--image-size", type=count(1), default=48, help="side of the square views (the cached defaults were tuned at 48)")
    p.add_argument("--fgsm-eps", nargs="+", type=_EPS, default=[0.01, 0.05, 0.1, 0.2])
    p.add_argument("--synonym", nargs="+", type=_FRACTION, default=[0.2, 0.4], help="fractions of eligible words swapped")
    p.add_argument("--deletion", nargs="+", type=_FRACTION, default=[0.5], help="fractions of words deleted")
    p.add_argument("--combo-eps", type=_EPS, default=0.05, help="FGSM eps inside the image + text combinations")
    p.add_argument("--recipes", nargs="*", default=["deepwordbug", "pwws"], help="TextAttack recipes (offline ones; none: no recipe rows)")
    p.add_argument("--query-budget", type=count(0), default=120, help="per-example query budget of the recipes (0: none)")
    p.add_argument("--recipe-examples", type=count(1), default=8, help="test examples the TextAttack recipes run on (the first ones)")
    p.add_argument("--toolkit", choices=["torchattacks", "art"], default="torchattacks")
    p.add_argument("--batch-size", type=count(1), default=40)
    p.add_argument("--skip-speed", action="store_true", help="skip the cached vs recomputed feature timing")
    p.add_argument("--speed-examples", type=count(1, _SYNTHETIC_MAX), default=6)
    p.add_argument("--speed-image-size", type=count(1), default=224)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", default="runs/vl_fusion")
    return p


def option_problems(args: argparse.Namespace, *, resources: bool = True) -> list[str]:
    """Everything wrong with the parsed options that argparse's per-value checks cannot see (files,
    devices, recipe names, rows that would come out twice, then the offline text resources), as
    messages naming the option; run before any work (no data is read, no model built). The resource
    checks (loading WordNet takes seconds) run only when everything else is right (or not at all with
    ``resources=False``), so a typo is reported at once."""
    from ..text.recipes import get_text_attack

    problems = []
    if args.data is not None and not Path(args.data).is_dir():
        problems.append(f"argument --data: no folder at {args.data} (an Indiana University chest X-ray folder: indiana_reports.csv, "
                        "indiana_projections.csv, images/)")
    if args.data is None and args.test_size > _SYNTHETIC_MAX:
        problems.append(f"argument --test-size: the synthetic test split holds at most {_SYNTHETIC_MAX:,} examples, got {args.test_size}")
    if args.hash_images and args.data is None:
        problems.append("argument --hash-images: only with --data (the synthetic default is generated, not read)")
    problems += [m for m in (device_problem(args.device, allow_auto=True), out_dir_problem(args.out)) if m]
    problems += [m for m in (
        duplicates(args.fgsm_eps, "--fgsm-eps", key=lambda e: f"FGSM {e:g}", what="row"),
        duplicates(args.synonym, "--synonym", key=lambda p: f"SYN {p:.0%}", what="row"),
        duplicates(args.deletion, "--deletion", key=lambda p: f"DEL {p:.0%}", what="row"),
        duplicates(args.recipes, "--recipes", key=lambda r: r.strip().lower(), what="recipe"),
    ) if m]
    for name in dict.fromkeys(args.recipes):
        try:
            get_text_attack(name)
        except KeyError as exc:
            problems.append(f"argument --recipes: {exc.args[0]}")
    if problems or not resources:
        return problems
    return _resource_problems(args)


def _resource_problems(args: argparse.Namespace) -> list[str]:
    """The offline text resources the text rows need (each recipe's; stopwords; WordNet for the
    synonyms and PWWS), checked without downloading; WordNet is loaded here once (seconds), which the
    synonym rows would do anyway."""
    from ..errors import MissingResourceError
    from ..text.recipes import check_text_attack_resources
    from ..text.resources import require_stopwords, require_wordnet

    problems = []
    for name in dict.fromkeys(r.strip().lower() for r in args.recipes):
        try:
            check_text_attack_resources(name)
        except MissingResourceError as exc:
            problems.append(f"argument --recipes: {exc}")
    try:
        if args.synonym or args.deletion:
            require_stopwords()
        if args.synonym:
            require_wordnet()
    except MissingResourceError as exc:
        problems.append(f"arguments --synonym / --deletion: {exc}")
    return problems


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> dict[str, Any]:
    args = checked_args(build_parser(prog), argv, option_problems)
    result = run(args)
    save_run(result, args.out, "vl_fusion", plot=plot, table=format_table, extra_keys=("speed",))
    return result
