"""The RGB-T segmentation benchmark as a spec for the harness: the MFNet adversarial study's grid plus
the segmentation-robustness analyses (least-likely targets, transfer across models and scales,
multiscale, randomised input transforms vs EOT). ``benchmarks/rgbt_segmentation.py`` and
``mmfusion-attacks rgbt`` call :func:`main`; ``--print-spec`` prints the spec, and
``mmfusion-attacks run`` on it prints the same table.

Each analysis is one experiment of the spec (:func:`build_spec`):

- ``grid``: attacks x budgets x attacked subsets (the study's table; ``--exclude-unlabeled`` leaves
  class 0 out of the means; qualitative panels of the last attack at the largest budget);
- ``least-likely``: the same grid with FGSM II / iterative FGSM II (targeted at each pixel's
  least-likely class; the rows carry the fraction of pixels on target);
- ``transfer``: adversarials crafted on each model and scored on each: the model at 100%, 75% and
  50% input scale, its multiscale ensemble and the ``--transfer-models``;
- ``defence``: random resize + pad (Xie et al.) against PGD crafted on the base model and EOT-PGD
  through the defence, the defended model scored over 4 draws.

With no arguments it runs on the embedded SYNTHETIC default (scenes generated here, MFNet trained
on them and cached); ``--data-root`` points it at the real MF dataset, ``--images`` at single RGB-T
PNG frames (pseudo-labels), ``--weights`` at a checkpoint. The results folder (``--out``) holds the
harness report (report.html / .md, results.csv / .json, summary.json: tables, curves, qualitative
panels, transfer matrices); re-running resumes it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data import MF_CLASSES, MF_SPLITS, create_dataset
from ..models import MODELS, create_model
from .engine import run_spec
from .options import count, device_problem, duplicates, number, out_dir_problem, resolve_device
from .report import format_matrix, format_study_table
from .spec import ExperimentSpec, RunSpec, spec_to_yaml
from .tables import console_text

__all__ = ["main", "build_parser", "build_spec", "summary_table", "option_problems", "model_problems", "load_frames", "read_frame",
           "parse_subsets", "ANALYSES"]

SYNTHETIC_SIZE = (96, 128)
#: the analyses, in the order they run and print (each is one experiment of the spec, named so)
ANALYSES = ("grid", "least-likely", "transfer", "defence")
_OBJECTS = list(range(1, len(MF_CLASSES)))  # every class but 0 'unlabeled' (--exclude-unlabeled)


def parse_subsets(specs: Sequence[str]) -> list[tuple[str, ...]]:
    """``["rgb", "ir", "rgb+ir"]`` -> ``[("rgb",), ("ir",), ("rgb", "ir")]``."""
    return [tuple(part for part in spec.lower().split("+") if part) for spec in specs]


def read_frame(path: str | Path) -> np.ndarray:
    """One RGB-T PNG frame as an HxWx4 uint8 array, checked as the MF loader checks its images: four
    channels, uint8, and a fourth channel that is not an opaque alpha (255 at every pixel: an ordinary
    picture's alpha, which would silently be read as thermal). Errors name the file."""
    try:
        with Image.open(path) as image:
            array = np.array(image)
    except (OSError, SyntaxError, ValueError) as exc:  # missing, not an image, truncated
        raise ValueError(f"RGB-T frame {path} cannot be read ({exc})") from None
    if array.ndim != 3 or array.shape[2] != 4 or array.dtype != np.uint8:
        raise ValueError(f"{path}: expected an HxWx4 RGB-thermal PNG (uint8), got shape {array.shape} {array.dtype}")
    if int(array[..., 3].min()) == 255:
        raise ValueError(
            f"{path}: channel 3, read as thermal, is 255 at every pixel: that is the alpha channel of an opaque RGBA "
            "picture, not a thermal image (RGB-T frames store thermal in the fourth channel, as the MF dataset does)"
        )
    return array


def load_frames(paths: Sequence[str | Path], size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """RGB-T PNG frames (HxWx4 uint8, RGB then thermal, as in the MF dataset) -> a named batch."""
    tensors = []
    for p in paths:
        array = read_frame(p)
        x = torch.from_numpy(array).permute(2, 0, 1).float() / 255
        if size:
            x = torch.nn.functional.interpolate(x[None], size=size, mode="bilinear", antialias=True)[0].clamp(0, 1)
        tensors.append(x)
    sizes = {tuple(t.shape[1:]) for t in tensors}
    if len(sizes) > 1:
        raise ValueError(f"RGB-T frames {list(map(str, paths))} differ in size ({sorted(sizes)}); pass size= (--size H W)")
    x = torch.stack(tensors)
    return {"rgb": x[:, :3], "ir": x[:, 3:]}




# --- the spec -----------------------------------------------------------------------------------------


def _path(p: str | Path) -> str:
    """Absolute, so the printed spec runs from any folder and reads back equal."""
    return str(Path(p).expanduser().resolve())


def _size(args: argparse.Namespace) -> list[int]:
    return list(args.size) if args.size else list(SYNTHETIC_SIZE)


def _model_entry(args: argparse.Namespace, arch: str, weights: str | None) -> dict[str, Any]:
    """A registry model with its checkpoint (the MF classes), else the embedded default: ``arch`` trained
    on the synthetic scenes (only on the synthetic data: option_problems refuses it on real data)."""
    if weights:
        return {"name": arch, "source": "registry", "weights": _path(weights), "num_classes": len(MF_CLASSES)}
    return {"name": arch, "source": "synthetic-rgbt", "train_steps": args.train_steps, "size": _size(args)}


def _data_entry(args: argparse.Namespace) -> dict[str, Any]:
    if args.images:
        data: dict[str, Any] = {"name": "rgbt-frames", "paths": [_path(p) for p in args.images]}
        if args.size:
            data["size"] = list(args.size)
        return data
    if args.data_root:
        data = {"name": "mf", "root": _path(args.data_root), "split": args.split}
        if args.size:
            data["size"] = list(args.size)
        if args.limit:
            data["limit"] = args.limit
        return data
    h, w = _size(args)
    return {"name": "synthetic-rgbt", "split": "test", "size": args.limit or 32, "height": h, "width": w, "seed": args.seed}


def _wrapped(entry: Mapping[str, Any], *wrap: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "wrap": [dict(w) for w in wrap]}


def build_spec(args: argparse.Namespace) -> RunSpec:
    """The benchmark's options as a spec (top-level ``table: rgbt``): one experiment per chosen analysis."""
    chosen = list(ANALYSES) if "all" in args.analyses else [a for a in ANALYSES if a in args.analyses]
    base = _model_entry(args, args.model, args.weights)
    subsets = ["+".join(s) for s in parse_subsets(args.modalities)]
    attacked = list(parse_subsets([args.transfer_modality])[0])
    common = {"model": base, "data": _data_entry(args), "batch_size": args.batch_size, "toolkit": args.toolkit, "steps": args.steps,
              "labels": "pseudo" if args.images or args.labels == "pseudo" else "auto", "sanity": None, "qualitative": 0,
              "limit": args.limit if args.images else None}
    eps = [float(e) for e in args.eps]
    mult = 16 if args.model == "mfnet" else 32
    experiments = []
    for name in chosen:
        if name == "grid":
            experiments.append(ExperimentSpec(
                name="grid", title="the MFNet study's grid", **{**common, "qualitative": args.qualitative},
                attacks=[a.lower() for a in args.attacks], eps_255=eps, subsets=subsets,
                include_classes=None if args.include_unlabeled else list(_OBJECTS)))
        elif name == "least-likely":
            experiments.append(ExperimentSpec(
                name="least-likely", title="least-likely targeted attacks (FGSM II, iterative FGSM II)", **common,
                attacks=["fgsm2", "ifgsm2"], eps_255=eps, subsets=subsets))
        elif name == "transfer":
            models = {
                f"{args.model}@100%": base,
                f"{args.model}@75%": _wrapped(base, {"kind": "at-scale", "scale": 0.75, "multiple": mult}),
                f"{args.model}@50%": _wrapped(base, {"kind": "at-scale", "scale": 0.5, "multiple": mult}),
                f"{args.model}-multiscale": _wrapped(base, {"kind": "multiscale", "scales": [0.5, 0.75, 1.0], "multiple": mult}),
            }
            for extra in args.transfer_models:
                arch, _, weights = extra.partition("=")
                models[arch] = _model_entry(args, arch, weights or (args.weights if arch == args.model else None))
            experiments.append(ExperimentSpec(
                name="transfer", title="transfer across models and input scales", **common,
                transfer={"sources": models, "attack": args.transfer_attack.lower(), "eps_255": float(args.transfer_eps),
                          "attacked": attacked}))
        elif name == "defence":
            defended = _wrapped(base, {"kind": "random-resize-pad", "low": 1 - args.defence_range, "high": 1 + args.defence_range,
                                       "multiple": mult})
            plain, eot = "PGD on the base model", "EOT-PGD through the defence"
            experiments.append(ExperimentSpec(
                name="defence", title="randomised input transforms vs EOT", **common,
                transfer={"sources": {plain: base, eot: defended}, "targets": {"base model": base, "defended model": defended},
                          "attack": {plain: "pgd", eot: "eotpgd"}, "eps_255": float(args.defence_eps), "attacked": attacked,
                          "attack_kwargs": {"eotpgd": {"eot_iter": args.eot_iter}}, "eval_repeats": 4, "metric": "iou_ratio",
                          "toolkit": "torchattacks"}))
    return RunSpec(name="rgbt_segmentation", experiments=experiments, seed=args.seed, device=args.device, amp=args.amp, table="rgbt")


# --- the table, from the summary only -----------------------------------------------------------------


def _spec_of(summary: Mapping[str, Any], name: str) -> dict[str, Any]:
    return next((e for e in (summary.get("spec") or {}).get("experiments") or [] if e.get("name") == name), {})


def _grid_table(summary: Mapping[str, Any], exp: Mapping[str, Any]) -> str:
    spec, d = _spec_of(summary, exp["name"]), exp.get("description") or {}
    include = spec.get("include_classes")
    header = [
        "mmfusion-attacks RGB-T segmentation benchmark: " + (spec.get("title") or exp["name"]),
        f"data: {d.get('data')}; labels: {d.get('labels')}",
        f"model: {d.get('model')}; toolkit: {d.get('toolkit')}; PGD steps {d.get('steps')}"
        + ("; bfloat16 autocast" if (summary.get("spec") or {}).get("amp") else "")
        + ("; mIoU/mAcc include class 0 'unlabeled'" if not include else f"; mIoU/mAcc over classes {', '.join(map(str, include))} "
           "(class 0 'unlabeled' excluded: --exclude-unlabeled)"),
    ]
    return format_study_table(exp["raw_rows"], exp["clean"], header)


def _least_likely_table(exp: Mapping[str, Any]) -> str:
    lines = ["least-likely targeted attacks (FGSM II, iterative FGSM II): fraction of pixels on their least-likely class"]
    lines += [f"  {r['attack']:<7} eps {r['eps_255']:>4g}/255 on {r['attacked']:<7} target rate {r['target_rate']:.3f}  IoU_R {r['IoU_R']:.3f}"
              for r in exp["raw_rows"] if "target_rate" in r]
    lines.append("  (clean: 0 pixels are on their least-likely class by definition)")
    return "\n".join(lines)


def _matrix(exp: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    tr = exp["transfer"]
    return {(s, t): tr["values"][f"{s} -> {t}"] for s in tr["sources"] for t in tr["targets"] if f"{s} -> {t}" in tr["values"]}


def _transfer_table(summary: Mapping[str, Any], exp: Mapping[str, Any]) -> str:
    tr, spec = exp["transfer"], (_spec_of(summary, exp["name"]).get("transfer") or {})
    attacked = "+".join(tr["attacked"]).upper()
    models = [*spec.get("sources", {}).values(), *spec.get("targets", {}).values()]
    rrp = next((w for m in models for w in m.get("wrap") or () if w.get("kind") == "random-resize-pad"), None)
    if rrp is not None and isinstance(tr["attack"], Mapping):  # the defence
        steps = spec.get("steps", _spec_of(summary, exp["name"]).get("steps", 10))
        eot = ((spec.get("attack_kwargs") or {}).get("eotpgd") or {}).get("eot_iter", 8)
        title = (f"randomised input transforms (resize x[{rrp.get('low', 0.8):g}, {rrp.get('high', 1.2):g}] + random pad) vs EOT: "
                 f"IoU ratio, PGD eps {tr['eps_255']:g}/255 on {attacked}, {steps} steps, EOT {eot} samples/step")
    else:
        attack = tr["attack"].upper() if isinstance(tr["attack"], str) else ", ".join(f"{a.upper()} from {s}" for s, a in tr["attack"].items())
        title = (f"transfer matrix: IoU ratio (adv mIoU / clean mIoU) of {attack} eps {tr['eps_255']:g}/255 on "
                 f"{attacked}; diagonal = white box")
    return format_matrix(_matrix(exp), title)


def summary_table(summary: Mapping[str, Any]) -> str:
    """The benchmark's tables (the study's grid, least-likely target rates, transfer matrices), computed
    only from a run's summary: ``mmfusion-attacks run`` on the ``--print-spec`` output prints the same."""
    parts = []
    for exp in summary.get("experiments") or []:
        if exp.get("kind") == "transfer":
            parts.append(_transfer_table(summary, exp))
        elif exp.get("raw_rows") and all("target_rate" in r for r in exp["raw_rows"]):
            parts.append(_least_likely_table(exp))
        else:
            parts.append(_grid_table(summary, exp))
    return "\n\n".join(parts)


_EPS_255 = number(0, 255, unit="on the 0-255 scale")


def build_parser(prog: str | None = "rgbt_segmentation") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mfnet", help="registered model name (mfnet, rtfnet-50, smp-twostream-unet, ...)")
    p.add_argument("--weights", default=None, help="checkpoint for --model (e.g. the official MFNet final.pth)")
    p.add_argument("--data-root", default=None, help="MF dataset folder (images/, labels/, split files)")
    p.add_argument("--images", nargs="+", default=None, help="RGB-T PNG frames (HxWx4) to attack with pseudo-labels")
    p.add_argument("--split", default="test", choices=MF_SPLITS, help="MF split")
    p.add_argument("--size", type=count(1), nargs=2, default=None, metavar=("H", "W"), help="resize inputs")
    p.add_argument("--labels", choices=["auto", "pseudo"], default="auto", help="pseudo: score against clean predictions")
    p.add_argument("--attacks", nargs="+", default=["fgsm", "pgd"])
    p.add_argument("--eps", nargs="+", type=_EPS_255, default=[10, 20, 40], help="Linf budgets on the 0-255 scale")
    p.add_argument("--modalities", nargs="+", default=["rgb", "ir", "rgb+ir"], help="attacked subsets")
    p.add_argument("--toolkit", choices=["torchattacks", "art"], default="torchattacks")
    p.add_argument("--steps", type=count(1), default=10, help="iterations of iterative attacks")
    p.add_argument("--batch-size", type=count(1), default=8)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--amp", action="store_true", help="run the models under bfloat16 autocast (inputs and perturbations stay float32)")
    p.add_argument("--limit", type=count(1), default=None, help="number of frames (synthetic default: 32)")
    p.add_argument("--out", default="runs/rgbt_segmentation", help="results folder; re-running resumes it")
    p.add_argument("--analyses", nargs="+", choices=[*ANALYSES, "all"], default=["all"])
    p.add_argument("--exclude-unlabeled", dest="include_unlabeled", action="store_false", help="leave class 0 out of the means")
    p.add_argument("--qualitative", type=count(0), default=2, help="number of images to save qualitative PNGs for")
    p.add_argument("--transfer-models", nargs="*", default=["tiny-rgbt-segmenter"], help="extra models, NAME or NAME=WEIGHTS")
    p.add_argument("--transfer-attack", default="fgsm")
    p.add_argument("--transfer-eps", type=_EPS_255, default=8)
    p.add_argument("--transfer-modality", default="rgb+ir")
    p.add_argument("--defence-eps", type=_EPS_255, default=8)
    p.add_argument("--defence-range", type=number(0, 1, low_open=False, high_open=True), default=0.2,
                   help="random resize factor in [1-r, 1+r] (nearest, as Xie et al.)")
    p.add_argument("--eot-iter", type=count(1), default=8)
    p.add_argument("--train-steps", type=count(1), default=400, help="training steps of the synthetic default models")
    p.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    p.add_argument("--print-spec", action="store_true", help="print the spec as YAML (for mmfusion-attacks run) and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _subset_problem(spec: str, option: str) -> str | None:
    parts = spec.lower().split("+")
    if not all(parts) or not set(parts) <= {"rgb", "ir"} or len(set(parts)) != len(parts):
        return f"argument {option}: {spec!r} is not a subset of the modalities rgb, ir (rgb, ir or rgb+ir)"
    return None


def _frames_real(args: argparse.Namespace) -> bool:
    return bool(args.images or args.data_root)


def option_problems(args: argparse.Namespace) -> list[str]:
    """Everything wrong with the parsed options that argparse's per-value checks cannot see (files,
    frames, model and recipe names, devices, cells that would be run twice), as messages naming the
    option; run before any data is made or model built. ``--images`` frames are decoded here (a few ms
    each) so a bad frame is refused before the model trains or loads, not in the middle of the grid."""
    from ..recipes import list_recipes

    problems: list[str] = []
    if args.images and args.data_root:
        problems.append("arguments --images / --data-root: give one of them (frames without ground truth, or the MF dataset)")
    if args.data_root and not Path(args.data_root).is_dir():
        problems.append(f"argument --data-root: no folder at {args.data_root}")
    for path in args.images or ():
        try:
            read_frame(path)
        except ValueError as exc:
            problems.append(f"argument --images: {exc}")
    if args.images and not args.size and not problems:
        sizes = set()
        for path in args.images:
            with Image.open(path) as image:
                sizes.add(image.size)
        if len(sizes) > 1:
            problems.append(f"argument --images: the frames differ in size ({sorted(f'{w}x{h}' for w, h in sizes)}); pass --size H W")
    models = [(args.model, args.weights, "--model")]
    chosen = set(ANALYSES) if "all" in args.analyses else set(args.analyses)
    if "transfer" in chosen:
        models += [(arch, weights or None, "--transfer-models") for arch, _, weights in (m.partition("=") for m in args.transfer_models)]
    for arch, weights, option in models:
        if arch not in MODELS:
            problems.append(f"argument {option}: unknown model {arch!r}; registered: {', '.join(MODELS.names())}")
        if weights and not Path(weights).is_file():
            problems.append(f"argument {'--weights' if option == '--model' else option}: no weights file at {weights}")
        if not weights and _frames_real(args):
            problems.append(f"argument {'--weights' if option == '--model' else option}: weights are needed for '{arch}' on real data "
                            "(the embedded default is trained on synthetic scenes)" + ("" if option == "--model" else "; give NAME=WEIGHTS"))
    recipes = set(list_recipes())
    needed = [(a, args.toolkit, "--attacks") for a in args.attacks]
    if "least-likely" in chosen:
        needed += [(a, args.toolkit, "--toolkit") for a in ("fgsm2", "ifgsm2")]
    if "transfer" in chosen:
        needed.append((args.transfer_attack, args.toolkit, "--transfer-attack"))
    for name, toolkit, option in needed:
        if (name.lower(), toolkit) not in recipes:
            problems.append(f"argument {option}: no attack recipe {name!r} for toolkit {toolkit!r}; available: "
                            f"{sorted(n for n, t in recipes if t == toolkit)}")
    problems += [m for m in (_subset_problem(s, "--modalities") for s in args.modalities) if m]
    problems += [m for m in (_subset_problem(args.transfer_modality, "--transfer-modality"),) if m]
    problems += [m for m in (
        duplicates(args.analyses, "--analyses", what="analysis"),
        duplicates(args.attacks, "--attacks", key=str.lower, what="attack"),
        duplicates(args.eps, "--eps", key=lambda e: f"{e:g}/255", what="budget"),
        duplicates(args.modalities, "--modalities", key=lambda s: "+".join(sorted(s.lower().split("+"))), what="subset"),
        device_problem(args.device, allow_auto=True),
        out_dir_problem(args.out),
    ) if m]
    return problems


def model_problems(args: argparse.Namespace, size: tuple[int, int]) -> list[str]:
    """Each model the run will use, built untrained and run once on a zero batch of the input ``size``:
    it must be a segmentation model whose logits have the input's size (MFNet needs multiples of 16,
    RTFNet of 32, or the labels would not line up). Run on ``args.device``; measured on 2 busy CPU
    cores: 0.1 s for the default (MFNet and the tiny transfer model at 96x128), 2.6 s at MF's 480x640,
    17 s for RTFNet-152 at 480x640 (one forward: a PGD step on one batch costs more)."""
    problems = []
    chosen = set(ANALYSES) if "all" in args.analyses else set(args.analyses)
    archs = [args.model] + ([m.partition("=")[0] for m in args.transfer_models] if "transfer" in chosen else [])
    h, w = size
    for arch in dict.fromkeys(archs):
        try:
            fusion = create_model(arch, num_classes=len(MF_CLASSES)).to(args.device).eval()
        except Exception as exc:  # noqa: BLE001 -- any failure to build is reported with the option
            problems.append(f"argument --model/--transfer-models: '{arch}' cannot be built ({type(exc).__name__}: {exc})")
            continue
        if fusion.task != "segmentation":
            problems.append(f"argument --model/--transfer-models: '{arch}' is a {fusion.task} model; this benchmark segments")
            continue
        try:
            with torch.no_grad():
                logits = fusion({"rgb": torch.zeros(1, 3, h, w, device=args.device), "ir": torch.zeros(1, 1, h, w, device=args.device)})
        except Exception as exc:  # noqa: BLE001
            problems.append(f"argument --size: '{arch}' cannot take {h}x{w} inputs ({type(exc).__name__}: {str(exc)[:200]})")
            continue
        if tuple(logits.shape[-2:]) != (h, w):
            problems.append(f"argument --size: '{arch}' turns {h}x{w} inputs into {logits.shape[-2]}x{logits.shape[-1]} logits, "
                            "which do not line up with the labels; pick a size the network divides evenly (e.g. multiples of 32)")
    return problems


def _input_size(args: argparse.Namespace) -> tuple[tuple[int, int] | None, list[str]]:
    """The models' input size (H, W) for :func:`model_problems`, or the problems finding it. An MF
    dataset is opened (and its frames checked, as the run does) here, before any model loads or trains."""
    if args.data_root:
        try:
            dataset = create_dataset("mf", root=args.data_root, split=args.split, size=tuple(args.size) if args.size else None,
                                     limit=args.limit)
        except (ValueError, OSError) as exc:
            return None, [f"argument --data-root: {exc}"]
        try:
            return dataset.frame_size(), []
        except ValueError as exc:
            return None, [f"argument --size: {exc}"]
    if args.size:
        return tuple(args.size), []
    if args.images:
        with Image.open(args.images[0]) as image:
            w, h = image.size
        return (h, w), []
    return SYNTHETIC_SIZE, []


def _refuse(parser: argparse.ArgumentParser, problems: list[str]) -> None:
    if problems:
        parser.error(problems[0] if len(problems) == 1 else "\n  " + "\n  ".join(problems))


def main(argv: Sequence[str] | None = None, *, prog: str | None = "rgbt_segmentation") -> dict[str, Any] | None:
    """Check the options (all before any work), build the spec; ``--print-spec`` prints it, else it runs
    (resuming ``--out``) and the harness's console text (with this benchmark's table) is printed.
    Returns the run's summary (None with ``--print-spec``)."""
    parser = build_parser(prog)
    args = parser.parse_args(None if argv is None else list(argv))
    _refuse(parser, option_problems(args))
    size, problems = _input_size(args)
    checking = argparse.Namespace(**{**vars(args), "device": resolve_device(args.device)})
    _refuse(parser, problems or model_problems(checking, size))
    spec = build_spec(args)
    if args.print_spec:
        print(spec_to_yaml(spec), end="")
        return None
    summary = run_spec(spec, args.out, progress=not args.quiet)
    if summary is not None:  # None: a rank other than 0 of a distributed run
        print(console_text(summary, args.out))
    return summary
