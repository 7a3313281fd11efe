"""The RGB-T segmentation benchmark: the MFNet adversarial study's grid plus the segmentation-robustness
analyses (least-likely targets, transfer across models and scales, multiscale, randomised input
transforms vs EOT). ``benchmarks/rgbt_segmentation.py`` and ``mmfusion-attacks rgbt`` call :func:`main`.

With no arguments it runs on the embedded SYNTHETIC default (scenes generated here, MFNet trained
on them and cached); ``--data-root`` points it at the real MF dataset, ``--images`` at single RGB-T
PNG frames (pseudo-labels), ``--weights`` at a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ..data import MF_CLASSES, MF_SPLITS, create_dataset
from ..fusion import FusionModel
from ..models import MODELS, create_model
from ..models.wrappers import at_scale, multiscale, random_resize_pad
from ..zoo import synthetic_default
from .grid import GridSpec, run_grid, run_transfer
from .options import count, device_problem, duplicates, number, out_dir_problem, resolve_device
from .report import format_matrix, format_study_table, plot_curves, save_qualitative, save_rows

__all__ = ["main", "build_parser", "option_problems", "model_problems", "load_frames", "read_frame", "parse_subsets"]

SYNTHETIC_SIZE = (96, 128)


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


class _Data:
    """Re-iterable stream of (inputs, labels or None) batches; never materialises the dataset."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        size = tuple(args.size) if args.size else None
        if args.images:
            self.kind, self.description = "frames", f"{len(args.images)} RGB-T frame(s) without ground truth"
            self.frames = args.images
            self.size = size
        elif args.data_root:
            self.dataset = create_dataset("mf", root=args.data_root, split=args.split, size=size, limit=args.limit)
            self.kind, self.description = "mf", f"MF dataset '{args.split}' split, {len(self.dataset)} frames"
        else:
            h, w = size or SYNTHETIC_SIZE
            self.dataset = create_dataset("synthetic-rgbt", split="test", size=args.limit or 32, height=h, width=w, seed=args.seed)
            self.kind = "synthetic"
            self.description = f"SYNTHETIC RGB-T scenes (embedded default, not real data), {len(self.dataset)} test scenes"

    def __len__(self) -> int:
        n = len(self.frames) if self.kind == "frames" else len(self.dataset)
        return -(-n // self.args.batch_size)

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor | None]]:
        pseudo = self.args.labels == "pseudo"
        if self.kind == "frames":
            for start in range(0, len(self.frames), self.args.batch_size):
                yield load_frames(self.frames[start : start + self.args.batch_size], self.size), None
            return
        for item in DataLoader(self.dataset, batch_size=self.args.batch_size, shuffle=False):
            yield {"rgb": item["rgb"], "ir": item["ir"]}, (None if pseudo else item["labels"])


def _model(args: argparse.Namespace, data: _Data, arch: str | None = None, weights: str | None = None) -> FusionModel:
    arch = arch or args.model
    weights = weights if arch != args.model else (weights or args.weights)
    if weights:
        fusion = create_model(arch, num_classes=9, weights=weights).to(args.device).eval()
    elif data.kind != "synthetic":
        raise SystemExit(f"error: --weights is needed for '{arch}' on real data (the embedded default is trained on synthetic scenes)")
    else:
        fusion = synthetic_default(
            arch, steps=args.train_steps, size=tuple(args.size) if args.size else SYNTHETIC_SIZE, device=args.device, seed=args.seed
        )
    return fusion.use_amp() if args.amp else fusion


def _header(args: argparse.Namespace, data: _Data, labels_source: str, what: str) -> list[str]:
    return [
        f"mmfusion-attacks RGB-T segmentation benchmark: {what}",
        f"data: {data.description}; labels: {labels_source}",
        f"model: {args.model}" + (f" ({args.weights})" if args.weights else " (trained on the synthetic scenes by this project)")
        + f"; toolkit: {args.toolkit}; PGD steps {args.steps}" + ("; bfloat16 autocast" if args.amp else "") + "; mIoU/mAcc include class 0 'unlabeled'"
        + ("" if args.include_unlabeled else " -- no: excluded (--exclude-unlabeled)"),
    ]


def _grid(args, fusion, data, out: Path) -> dict[str, Any]:
    spec = GridSpec(attacks=args.attacks, eps_255=args.eps, subsets=parse_subsets(args.modalities), toolkit=args.toolkit, steps=args.steps)
    qual_cells = [c for c in spec.cells() if c.attack == spec.attacks[-1] and c.eps_255 == max(spec.eps_255)]
    saved = []

    def qualitative(index, inputs, labels, clean_pred, results):
        for i in range(min(args.qualitative - len(saved) // max(len(qual_cells), 1), inputs["rgb"].shape[0])):
            for cell in qual_cells:
                name = f"qualitative/img{index * args.batch_size + i:03d}_{cell.attack}_{cell.label.lower()}_eps{cell.eps_255:g}.png"
                caption = f"{cell.attack.upper()} eps {cell.eps_255:g}/255 on {cell.label} -- {data.description}"
                saved.append(save_qualitative(out / name, inputs["rgb"][i], inputs["ir"][i], clean_pred[i], results[cell].adv_pred[i], caption))

    result = run_grid(fusion, data, spec, on_batch=qualitative if args.qualitative else None, total=len(data))
    include = None if args.include_unlabeled else list(range(1, len(MF_CLASSES)))
    rows, clean = result.rows(include), result.clean_summary(include)
    table = format_study_table(rows, clean, _header(args, data, result.labels_source, "the MFNet study's grid"))
    save_rows(rows, out, "grid", {"clean": clean, "labels": result.labels_source, "data": data.description, "classes": MF_CLASSES})
    (out / "grid.txt").write_text(table + "\n")
    plot_curves(rows, out / "figure1.png", title=f"{args.model} -- {data.description}")
    return {"table": table, "rows": rows, "clean": clean, "qualitative": [str(p) for p in saved]}


def _least_likely(args, fusion, data, out: Path) -> dict[str, Any]:
    spec = GridSpec(attacks=("fgsm2", "ifgsm2"), eps_255=args.eps, subsets=parse_subsets(args.modalities), toolkit=args.toolkit, steps=args.steps)
    result = run_grid(fusion, data, spec, total=len(data))
    rows = result.rows()
    save_rows(rows, out, "least_likely", {"clean": result.clean_summary(), "labels": result.labels_source})
    lines = ["least-likely targeted attacks (FGSM II, iterative FGSM II): fraction of pixels on their least-likely class"]
    lines += [f"  {r['attack']:<7} eps {r['eps_255']:>4g}/255 on {r['attacked']:<7} target rate {r['target_rate']:.3f}  IoU_R {r['IoU_R']:.3f}" for r in rows]
    lines.append("  (clean: 0 pixels are on their least-likely class by definition)")
    return {"table": "\n".join(lines), "rows": rows}


def _transfer(args, fusion, data, out: Path) -> dict[str, Any]:
    mult = 16 if args.model == "mfnet" else 32
    models = {
        f"{args.model}@100%": fusion,
        f"{args.model}@75%": at_scale(fusion, 0.75, mult),
        f"{args.model}@50%": at_scale(fusion, 0.5, mult),
        f"{args.model}-multiscale": multiscale(fusion, (0.5, 0.75, 1.0), mult),
    }
    for spec in args.transfer_models:
        arch, _, weights = spec.partition("=")
        models[arch] = _model(args, data, arch, weights or None)
    eps = args.transfer_eps
    values = run_transfer(models, models, data, attack=args.transfer_attack, eps_255=eps, attacked=parse_subsets([args.transfer_modality])[0],
                          toolkit=args.toolkit, steps=args.steps, total=len(data))
    title = (f"transfer matrix: IoU ratio (adv mIoU / clean mIoU) of {args.transfer_attack.upper()} eps {eps:g}/255 on "
             f"{args.transfer_modality.upper()}; diagonal = white box")
    text = format_matrix(values, title)
    (out / "transfer.txt").write_text(text + "\n")
    (out / "transfer.json").write_text(json.dumps([{"crafted_on": s, "evaluated_on": t, "IoU_R": v} for (s, t), v in values.items()], indent=2))
    return {"table": text, "values": {f"{s} -> {t}": v for (s, t), v in values.items()}}


def _defence(args, fusion, data, out: Path) -> dict[str, Any]:
    """Randomised resize+pad (Xie et al.) against PGD that ignores it (crafted on the base model, as in
    Xie et al. and Arnab et al.) and EOT-PGD through it; the defended model is scored over 4 draws."""
    mult = 16 if args.model == "mfnet" else 32
    defended = random_resize_pad(fusion, 1 - args.defence_range, 1 + args.defence_range, mult)
    torch.manual_seed(args.seed)
    sources = {"PGD on the base model": fusion, "EOT-PGD through the defence": defended}
    attacks = {"PGD on the base model": "pgd", "EOT-PGD through the defence": "eotpgd"}
    values = run_transfer(
        sources, {"base model": fusion, "defended model": defended}, data, attack=attacks, eps_255=args.defence_eps,
        attacked=parse_subsets([args.transfer_modality])[0], steps=args.steps, attack_kwargs={"eotpgd": {"eot_iter": args.eot_iter}},
        eval_repeats=4, total=len(data),
    )
    rows = [{"crafted": s, "evaluated_on": t, "IoU_R": v} for (s, t), v in values.items()]
    title = (f"randomised input transforms (resize x[{1 - args.defence_range:g}, {1 + args.defence_range:g}] + random pad) vs EOT: "
             f"IoU ratio, PGD eps {args.defence_eps:g}/255 on {args.transfer_modality.upper()}, {args.steps} steps, "
             f"EOT {args.eot_iter} samples/step")
    save_rows(rows, out, "defence")
    return {"table": format_matrix(values, title), "rows": rows}


ANALYSES = {"grid": _grid, "least-likely": _least_likely, "transfer": _transfer, "defence": _defence}


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
    p.add_argument("--out", default="runs/rgbt_segmentation")
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


def _input_size(args: argparse.Namespace, data: _Data) -> tuple[int, int]:
    if args.size:
        return tuple(args.size)
    if data.kind == "frames":
        w, h = Image.open(args.images[0]).size
        return h, w
    if data.kind == "mf":
        return data.dataset.frame_size()
    return SYNTHETIC_SIZE


def _size_problem(args: argparse.Namespace, data: _Data) -> tuple[tuple[int, int] | None, list[str]]:
    try:
        return _input_size(args, data), []
    except ValueError as exc:
        return None, [f"argument --size: {exc}"]


def _refuse(parser: argparse.ArgumentParser, problems: list[str]) -> None:
    if problems:
        parser.error(problems[0] if len(problems) == 1 else "\n  " + "\n  ".join(problems))


def main(argv: Sequence[str] | None = None, *, prog: str | None = "rgbt_segmentation") -> dict[str, Any]:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    _refuse(parser, option_problems(args))
    args.device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    start = time.time()
    data = _Data(args)  # the MF loader checks its files here
    size, problems = _size_problem(args, data)
    _refuse(parser, problems or model_problems(args, size))
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fusion = _model(args, data)
    chosen = list(ANALYSES) if "all" in args.analyses else args.analyses
    report: dict[str, Any] = {}
    for name in chosen:
        report[name] = ANALYSES[name](args, fusion, data, out)
        print(report[name]["table"], end="\n\n", flush=True)
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "table"} for k, v in report.items()}
    summary["meta"] = {"data": data.description, "model": args.model, "weights": args.weights, "seconds": round(time.time() - start, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"wrote {out}/ (grid.txt/csv/json, figure1.png, qualitative/, ...) in {summary['meta']['seconds']} s")
    return report


