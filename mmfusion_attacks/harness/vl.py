"""The medical vision-language robustness study (chest X-ray + report), a thin preset over the harness:
:func:`build_spec` turns the options into a :class:`~.spec.RunSpec`, :func:`~.engine.run_spec` runs it
(resumable records, reports, validity checks) and :func:`summary_table` prints the study's table from
the run's summary alone. ``benchmarks/vl_fusion.py`` and ``mmfusion-attacks vl`` call :func:`main`;
``--print-spec`` prints the spec as YAML, and ``mmfusion-attacks run`` on that file reproduces the table.

Rows (cells): no attack; FGSM on both image views at each eps; WordNet synonym substitution of 20% /
40% of the eligible words; deletion of 50% of the words; image + text combinations (FGSM, then the
text perturbation, on the same examples); all at once; and TextAttack recipes (DeepWordBug, PWWS) with
their success rate and queries per example, on the first ``--recipe-examples`` test examples. Columns:
the vision-only, language-only, early-fusion and late-fusion models (one experiment per model, plus
one per model for the recipe rows, with ``limit``). A model that does not read the perturbed modality
is scored on inputs it reads unchanged (marked ``=``). ``--speed`` (off by default) also times a text
attack with the held images' tower features cached vs recomputed in every query (identical results
required) and prints that line after the table: a timing, not a result, so it is not in the spec.

With no arguments: the embedded SYNTHETIC default (x-ray-like images and generated reports, made by
this project; models trained here and cached). ``--data DIR`` runs on a real Indiana University chest
X-ray folder (``indiana_reports.csv``, ``indiana_projections.csv``, images), training on its train split
(the ``callable`` model source :func:`iu_trained_model`).
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
from .engine import run_spec
from .grid import ComboCell, Step
from .options import checked_args, count, device_problem, duplicates, number, out_dir_problem
from .spec import ExperimentSpec, RunSpec, spec_to_yaml
from .tables import console_text

__all__ = ["main", "build_parser", "build_spec", "option_problems", "summary_table", "format_table", "study_cells", "iu_trained_model",
           "measure_feature_cache", "measure_speed", "format_speed", "MODELS", "IMAGES", "IU_FACTORY"]

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
        return Step("text-augment", name, ("text",), fraction, toolkit=toolkit, seed=seed)

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
    cells += [ComboCell(name, (Step("text-attack", name, ("text",), query_budget, toolkit=toolkit),)) for name in recipes]
    return cells


#: the factory of the ``callable`` model source that trains on an IU folder (``--data DIR``)
IU_FACTORY = "mmfusion_attacks.harness.vl:iu_trained_model"
RECIPE_SUFFIX = "-recipes"


def _combo(cell: ComboCell, toolkit: str) -> dict[str, Any]:
    """A grid cell as a spec ``combos`` entry; a step's ``toolkit`` / ``steps`` / ``seed`` are written
    when they differ from what the engine takes without them (the experiment's toolkit and steps, seed 0)."""
    default_steps = ExperimentSpec.__dataclass_fields__["steps"].default
    steps = []
    for s in cell.steps_:
        step = {"kind": s.kind, "name": s.name, "attacked": list(s.attacked), "amount": float(s.amount)}
        step.update({k: v for k, v, d in (("toolkit", s.toolkit, toolkit), ("steps", s.steps, default_steps), ("seed", s.seed, 0)) if v != d})
        steps.append(step)
    return {"name": cell.label, "steps": steps}


def _model_entry(arch: str, args: argparse.Namespace) -> dict[str, Any]:
    if args.data is None:
        return {"name": arch, "source": "synthetic-vl", "image_size": args.image_size}
    options = {"arch": arch, "data": str(Path(args.data).expanduser().resolve()), "image_size": args.image_size, "seed": args.seed,
               "hash_images": bool(args.hash_images), "device": args.device}
    return {"name": arch, "source": "callable", "factory": IU_FACTORY, "options": options}


def _data_entry(args: argparse.Namespace) -> dict[str, Any]:
    if args.data is None:
        return {"name": "synthetic-xray-reports", "split": "test", "size": args.test_size, "image_size": args.image_size, "seed": args.seed}
    return {"name": "iu-xray", "root": str(Path(args.data).expanduser().resolve()), "split": "test", "image_size": args.image_size,
            "limit": args.test_size}


def build_spec(args: argparse.Namespace) -> RunSpec:
    """The study as a :class:`RunSpec` (``table: vl``): per model (:data:`MODELS`), one experiment with the
    study's cells (:func:`study_cells`) on the test data, and, when there are recipes, one experiment
    ``<model>-recipes`` with the TextAttack recipe cells on the first ``--recipe-examples`` examples."""
    cells = study_cells(fgsm_eps=args.fgsm_eps, synonym=args.synonym, deletion=args.deletion, combo_eps=args.combo_eps, recipes=(),
                        toolkit=args.toolkit, seed=args.seed)
    recipe_cells = study_cells(fgsm_eps=(), synonym=(), deletion=(), recipes=args.recipes, query_budget=args.query_budget,
                               toolkit=args.toolkit, seed=args.seed)
    data = _data_entry(args)
    what = "SYNTHETIC chest x-ray-like images + generated reports" if args.data is None else f"IU chest X-rays + reports ({args.data})"
    experiments = []
    for label, arch in MODELS.items():
        common = {"model": _model_entry(arch, args), "data": dict(data), "batch_size": args.batch_size, "toolkit": args.toolkit,
                  "sanity": None}
        experiments.append(ExperimentSpec(name=arch, title=f"{label} model ({arch}): the study's cells, {what}",
                                          combos=[_combo(c, args.toolkit) for c in cells], **common))
        if recipe_cells:
            # TextAttack recipes query the model hundreds of times per example: they run on the first
            # --recipe-examples test examples (the table says how many), with --query-budget per example
            experiments.append(ExperimentSpec(name=arch + RECIPE_SUFFIX, limit=args.recipe_examples,
                                              title=f"{label} model ({arch}): TextAttack recipes on the first {args.recipe_examples} examples",
                                              combos=[_combo(c, args.toolkit) for c in recipe_cells], **common))
    return RunSpec(name="vl_fusion: image+text robustness" + (" (SYNTHETIC data)" if args.data is None else ""), experiments=experiments,
                   seed=args.seed, device=args.device, table="vl")


# -- models trained on an IU folder (the ``callable`` source of --data) ---------------------------------


def iu_trained_model(arch: str, data: str, image_size: int = 48, seed: int = 0, hash_images: bool = False,
                     device: str = "cpu") -> FusionModel:
    """``arch`` (one of :data:`MODELS`' values) trained on the train split of the Indiana University chest
    X-ray folder ``data`` at ``image_size`` px, with the embedded default's network and recipe, cached by
    the training data's content (``hash_images``: the images' bytes, else their sizes and modification
    times), never by its path. The ``callable`` model source of ``--data`` (``factory:`` :data:`IU_FACTORY`)."""
    from ..models.vl_training import VL_ARCHS

    if arch not in VL_ARCHS:
        raise ValueError(f"arch must be one of {VL_ARCHS}, got {arch!r}")
    from .options import resolve_device

    train_set = create_dataset("iu-xray", root=data, split="train", image_size=image_size)
    fingerprint = train_set.fingerprint(image_contents=hash_images)
    return _train_on(arch, train_set, fingerprint, seed=seed, device=resolve_device(device))


def _train_on(arch: str, train_set: Any, fingerprint: str, *, seed: int = 0, device: str = "cpu", progress: bool = False) -> FusionModel:
    """A model trained on a real dataset's train split with the embedded default's network and recipe,
    cached by the data's ``fingerprint`` (labels, reports, images), the network, the recipe and the seed:
    relabelled or edited data is trained on afresh, never served the models of the old data. An unusable
    cache file is deleted with a warning naming it and the model trained again (as the defaults do)."""
    from ..cache_files import load_or_discard, load_state_cache
    from ..models import create_model
    from ..models.vl_training import (
        SYNTHETIC_CONFIGS,
        SYNTHETIC_RECIPES,
        data_cache_name,
        rebuilt_prefixes,
        save_state,
        train_classifier,
    )
    from ..zoo import cache_dir

    path = cache_dir() / data_cache_name(arch, "iu-xray", fingerprint, seed)
    torch.manual_seed(seed)  # the initial weights do not depend on which models were built before
    fusion = create_model(arch, **SYNTHETIC_CONFIGS[arch])
    skip = rebuilt_prefixes(SYNTHETIC_CONFIGS[arch], fusion)
    if load_or_discard(path, lambda p: load_state_cache(fusion.model, p, skip=skip)) is not None:
        return fusion.to(device).eval()
    batch, labels = train_set.tensors()
    batch = {k: v for k, v in batch.items() if k in fusion.modalities}
    fusion = train_classifier(fusion.to(device), batch, labels, seed=seed, device=device, progress=progress,
                              **SYNTHETIC_RECIPES[arch].kwargs())
    save_state(fusion, path, skip)
    return fusion.eval()


# -- the table, from a run's summary -------------------------------------------------------------------


def summary_table(summary: dict[str, Any]) -> str:
    """The study's table (rows: cells, columns: models) from a run's summary alone (``summary.json`` or
    :func:`~.engine.run_spec`'s return): each experiment's clean accuracy, rows and data description;
    a model's column is named by its registered name (:data:`MODELS`), a ``limit`` experiment's rows are
    the recipe rows (their clean accuracy on those examples in the lines below the table)."""
    spec_entries = {e["name"]: e for e in (summary.get("spec") or {}).get("experiments", [])}
    labels = {arch: label for label, arch in MODELS.items()}
    clean: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    data, n_test = "", 0
    for exp in summary["experiments"]:
        entry = spec_entries.get(exp["name"], {})
        arch = (entry.get("model") or {}).get("name", exp["name"])
        label = labels.get(arch, arch)
        accuracy = exp["clean"]["accuracy"]
        if not entry.get("limit"):
            n = sum(sum(r) for r in exp["confusion"]["clean"])  # one label per example
            clean[label] = accuracy
            data, n_test = data or _data_text(entry.get("data") or {}, exp["description"]["data"], n), n_test or n
            rows.append({"model": label, "cell": "no attack", "accuracy": accuracy, "applies": True, "rows": n})
            rows += [{"model": label, **r} for r in exp["rows"]]
        else:
            rows += [{"model": label, **r, "clean_accuracy_on_rows": accuracy} for r in exp["rows"]]
    return format_table({"meta": {"data": data, "test_size": n_test}, "clean": clean, "rows": rows})


def _data_text(data: dict[str, Any], description: str, n: int) -> str:
    if data.get("name") == "iu-xray" and data.get("root"):
        return f"Indiana University chest X-rays + reports from {data['root']} ({data.get('split', 'all')} split, {n} examples)"
    return description


def format_table(result: dict[str, Any]) -> str:
    """``result``: ``meta`` (``data``, ``test_size``), ``clean`` (model -> accuracy: the columns) and
    ``rows`` (``model``, ``cell``, ``accuracy``, ``applies``, ``rows``; text attacks also
    ``success_rate``, ``queries_per_example``, ``words_changed_per_example``, ``clean_accuracy_on_rows``)."""
    models = list(result["clean"])
    cells = list(dict.fromkeys(r["cell"] for r in result["rows"]))
    index = {(r["model"], r["cell"]): r for r in result["rows"]}
    width = max((len(c) for c in cells), default=0) + 2
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
    return "\n".join(lines)


# -- the held-image feature cache's speed (--speed: a timing, not part of the spec) ----------------------


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


def measure_speed(args: argparse.Namespace) -> dict[str, Any]:
    """Cached vs recomputed held-image features on a model whose image tower dominates the cost: early
    fusion at ``--speed-image-size`` px (random weights: speed does not depend on training)."""
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


def format_speed(s: dict[str, Any]) -> str:
    """The line ``--speed`` prints after the table."""
    return (f"held-image feature cache ({s['model']}, {s['image_size']} px, {s['examples']} examples, {s['queries']} queries): "
            f"cached {s['cached_s']:.1f} s vs recomputed {s['uncached_s']:.1f} s = {s['speedup']:.1f}x, identical results: {s['identical']}")


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
    p.add_argument("--speed", action="store_true",
                   help="also time a text attack with the held images' features cached vs recomputed (printed after the table; "
                        "a timing, not part of the spec)")
    p.add_argument("--skip-speed", action="store_true", help="no timing (the default; kept for old command lines)")
    p.add_argument("--speed-examples", type=count(1, _SYNTHETIC_MAX), default=6, help="with --speed: examples timed")
    p.add_argument("--speed-image-size", type=count(1), default=224, help="with --speed: side of the timed model's views")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", default="runs/vl_fusion", help="results folder (re-running resumes: finished cells are reused)")
    p.add_argument("--print-spec", action="store_true",
                   help="print the study's spec as YAML and exit (`mmfusion-attacks run FILE` on it reproduces the table)")
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
    if args.speed and args.skip_speed:
        problems.append("argument --skip-speed: not with --speed (one asks for the timing, the other skips it)")
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


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> dict[str, Any] | None:
    """Check the options (all problems at once, before any work), build the spec and print it
    (``--print-spec``: nothing is run; returns None) or run it into ``--out`` (resuming), print every
    experiment's table, the study's table and, with ``--speed``, the feature-cache timing; returns the
    run's summary."""
    args = checked_args(build_parser(prog), argv, option_problems)
    spec = build_spec(args)
    if args.print_spec:
        print(spec_to_yaml(spec), end="")
        return None
    summary = run_spec(spec, args.out, progress=not args.quiet)
    if summary is None:  # a rank other than 0 of a distributed run
        return None
    print(console_text(summary, args.out), flush=True)
    if args.speed and not args.skip_speed:
        print("\n" + format_speed(measure_speed(args)))
    return summary
