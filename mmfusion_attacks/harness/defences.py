"""Defences under per-modality attacks. ``benchmarks/defences.py`` and ``mmfusion-attacks defences`` call
:func:`main`.

1. **Adversarial training per modality** (the contrastive study's claim that multimodal training
   relieves attacks, tested): one fusion classifier trained normally, one adversarially on thermal
   only, one on RGB only and one on both — all through ART's ``AdversarialTrainerMadryPGD`` on the
   fusion estimators (each row paired with its own example's frozen modality) — then robust accuracy
   under PGD on every attacked subset.
2. **A preprocessing defence on one modality** (inside the fusion model, active in training and at
   test time): median smoothing of the thermal camera, attacked plainly (PGD crafted on the same
   network without the defence, transferred) and through the defence with BPDA (its identity
   gradient); a randomised one (Gaussian noise on thermal) attacked with plain PGD (one draw per
   step) and with EOT-PGD, both scored over several draws.

With no arguments it runs on the embedded SYNTHETIC default (RGB-T scene classification generated
here; about 5 minutes on 2 CPU cores). Everything is a preset over :func:`run_grid` / :func:`run_transfer`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import SCENE_CLASSES, create_dataset
from ..fusion import FusionModel
from ..models import create_model
from .grid import GridSpec, run_grid, run_transfer
from .report import save_rows

__all__ = ["main", "train_fusion", "SUBSETS"]

SUBSETS: tuple[tuple[str, ...], ...] = (("rgb",), ("ir",), ("rgb", "ir"))


def train_fusion(
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
    *,
    adversarial: tuple[str, ...] | None,
    eps: float,
    epochs: int,
    pgd_steps: int,
    seed: int,
    device: str = "cpu",
    defences: dict[str, Any] | None = None,
) -> FusionModel:
    """A tiny RGB-T classifier trained through the ART fusion estimator: normally (``est.fit``) or
    adversarially on ``adversarial`` modalities (``AdversarialTrainerMadryPGD``), with optional
    per-modality ``defences`` inside the model."""
    from art.defences.trainer import AdversarialTrainerMadryPGD

    from ..adapters.art import to_art

    torch.manual_seed(seed)
    np.random.seed(seed)
    fusion = create_model("tiny-rgbt-classifier", num_classes=len(SCENE_CLASSES), defences=defences).to(device)
    attacked = adversarial or ("rgb", "ir")
    optimizer = torch.optim.Adam(fusion.parameters(), lr=2e-3)
    est = to_art(fusion, list(attacked), context=batch, radius=eps, optimizer=optimizer)
    x = est.x_for(batch)
    if adversarial is None:
        est.fit(x, labels.numpy(), batch_size=32, nb_epochs=epochs)
    else:
        trainer = AdversarialTrainerMadryPGD(
            est, nb_epochs=epochs, batch_size=32, eps=eps, eps_step=2.5 * eps / pgd_steps, max_iter=pgd_steps, num_random_init=1
        )
        trainer.fit(x, np.eye(len(SCENE_CLASSES), dtype=np.float32)[labels.numpy()])
    est.clear_context()
    return fusion.eval()


def _batches(batch: dict[str, torch.Tensor], labels: torch.Tensor, size: int) -> list:
    n = len(labels)
    return [({k: v[i : i + size] for k, v in batch.items()}, labels[i : i + size]) for i in range(0, n, size)]


def _undefended(model: FusionModel) -> FusionModel:
    """The same network without its defences: what a plain attacker crafts on."""
    return FusionModel(model.model, ["rgb", "ir"], num_classes=model.num_classes).eval()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from art.defences.preprocessor import GaussianAugmentation, SpatialSmoothing

    t0 = time.time()
    train_set = create_dataset("synthetic-rgbt-scenes", split="train", size=args.train_size)
    test_set = create_dataset("synthetic-rgbt-scenes", split="test", size=args.test_size)
    x_train, y_train = train_set.tensors()
    x_test, y_test = test_set.tensors()
    batches = _batches(x_test, y_test, args.batch_size)
    eps = args.eps_255 / 255
    spec = GridSpec(attacks=("pgd",), eps_255=(args.eps_255,), subsets=SUBSETS, toolkit=args.toolkit, steps=args.steps)

    regimes: dict[str, tuple[str, ...] | None] = {"normal": None, "adv-IR": ("ir",), "adv-RGB": ("rgb",), "adv-RGB+IR": ("rgb", "ir")}
    models, training_rows, timings = {}, [], {}
    for name, adv in regimes.items():
        t = time.time()
        epochs = args.epochs if adv is None else args.adv_epochs
        models[name] = train_fusion(x_train, y_train, adversarial=adv, eps=eps, epochs=epochs, pgd_steps=args.train_steps, seed=args.seed, device=args.device)
        timings[f"train {name}"] = time.time() - t
        t = time.time()
        grid = run_grid(models[name], batches, spec, progress=False)
        timings[f"attack {name}"] = time.time() - t
        row = {"model": name, "clean": grid.clean_summary()["accuracy"]}
        for r in grid.rows():
            row[r["attacked"]] = r["accuracy"]
        training_rows.append(row)

    t = time.time()
    smooth = {"ir": SpatialSmoothing(window_size=3, channels_first=True, apply_fit=True)}
    noise = {"ir": GaussianAugmentation(sigma=args.noise, augmentation=False, apply_fit=True, apply_predict=True)}
    smoothed = train_fusion(x_train, y_train, adversarial=None, eps=eps, epochs=args.epochs, pgd_steps=1, seed=args.seed, device=args.device, defences=smooth)
    noisy = train_fusion(x_train, y_train, adversarial=None, eps=eps, epochs=args.epochs, pgd_steps=1, seed=args.seed, device=args.device, defences=noise)
    timings["train defended"] = time.time() - t
    t = time.time()
    defence_rows = []
    for attacked in (("ir",), ("rgb", "ir")):
        label = "+".join(a.upper() for a in attacked)
        common = {"eps_255": args.eps_255, "attacked": attacked, "toolkit": "torchattacks", "steps": args.steps, "progress": False}
        det = run_transfer({"plain": _undefended(smoothed), "bpda": smoothed}, {"smoothed": smoothed}, batches, attack="pgd", metric="accuracy", **common)
        defence_rows.append({"defence": "median 3x3 on IR", "attacked": label, "clean": float((smoothed.predict(x_test) == y_test).float().mean()),
                             "plain PGD (transfer)": det[("plain", "smoothed")], "BPDA PGD": det[("bpda", "smoothed")]})
        rand = run_transfer({"pgd": noisy, "eot": noisy}, {"noisy": noisy}, batches, attack={"pgd": "pgd", "eot": "eotpgd"},
                            attack_kwargs={"eotpgd": {"eot_iter": args.eot_samples}}, eval_repeats=args.eval_repeats, metric="accuracy", **common)
        torch.manual_seed(args.seed)
        clean_noisy = float(np.mean([float((noisy.predict(x_test) == y_test).float().mean()) for _ in range(args.eval_repeats)]))
        defence_rows.append({"defence": f"Gaussian noise sigma {args.noise:g} on IR", "attacked": label, "clean": clean_noisy,
                             "plain PGD": rand[("pgd", "noisy")], "EOT-PGD": rand[("eot", "noisy")]})
    timings["attack defended"] = time.time() - t
    timings["total"] = time.time() - t0
    return {
        "meta": {
            "data": "SYNTHETIC RGB-T scene classification (car / person / cone), generated by mmfusion_attacks",
            "train_size": args.train_size, "test_size": args.test_size, "eps_255": args.eps_255, "steps": args.steps,
            "train_pgd_steps": args.train_steps, "epochs": args.epochs, "adv_epochs": args.adv_epochs, "toolkit": args.toolkit,
            "seed": args.seed, "noise_sigma": args.noise, "eot_samples": args.eot_samples, "eval_repeats": args.eval_repeats,
        },
        "training": training_rows,
        "defences": defence_rows,
        "seconds": timings,
    }


def format_tables(result: dict[str, Any]) -> str:
    lines = [f"data: {result['meta']['data']}",
             f"robust accuracy under PGD-{result['meta']['steps']} at eps {result['meta']['eps_255']:g}/255 on each attacked subset",
             f"{'model':<12} {'clean':>6} {'RGB':>6} {'IR':>6} {'RGB+IR':>7}"]
    for r in result["training"]:
        lines.append(f"{r['model']:<12} {r['clean']:6.3f} {r['RGB']:6.3f} {r['IR']:6.3f} {r['RGB+IR']:7.3f}")
    lines.append("")
    lines.append("defences on one modality, active in training and test (accuracy)")
    for r in result["defences"]:
        cells = ", ".join(f"{k} {v:.3f}" for k, v in r.items() if isinstance(v, float))
        lines.append(f"{r['defence']:<28} attacked {r['attacked']:<7} {cells}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train-size", type=int, default=600)
    p.add_argument("--test-size", type=int, default=300)
    p.add_argument("--epochs", type=int, default=12, help="epochs of normal training")
    p.add_argument("--adv-epochs", type=int, default=15, help="epochs of adversarial training")
    p.add_argument("--train-steps", type=int, default=3, help="PGD steps inside adversarial training")
    p.add_argument("--eps-255", type=float, default=8.0)
    p.add_argument("--steps", type=int, default=10, help="PGD steps of the evaluation attacks")
    p.add_argument("--noise", type=float, default=0.05, help="sigma of the randomised defence")
    p.add_argument("--eot-samples", type=int, default=8)
    p.add_argument("--eval-repeats", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=60)
    p.add_argument("--toolkit", choices=["torchattacks", "art"], default="torchattacks")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/defences")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    save_rows(result["training"], out, "adversarial_training", extra={"meta": result["meta"]})
    save_rows(result["defences"], out, "defences", extra={"meta": result["meta"]})
    print(format_tables(result))
    print(f"\nwrote {out}/results.json, adversarial_training.csv/json, defences.csv/json ({result['seconds']['total']:.0f} s)")
    return result
