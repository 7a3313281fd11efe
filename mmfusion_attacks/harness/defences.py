"""Defences under per-modality attacks, as a spec for the harness. ``benchmarks/defences.py`` and
``mmfusion-attacks defences`` call :func:`main`; ``--print-spec`` prints the spec, and
``mmfusion-attacks run`` on it prints the same table.

1. **Adversarial training per modality** (the contrastive study's claim that multimodal training
   relieves attacks, tested): one fusion classifier trained normally, one adversarially on thermal
   only, one on RGB only and one on both — all through ART's ``AdversarialTrainerMadryPGD`` on the
   fusion estimators (each row paired with its own example's frozen modality) — then robust accuracy
   under PGD on every attacked subset: one grid experiment per training regime (model source
   ``synthetic-rgbt-classifier``).
2. **A preprocessing defence on one modality** (inside the fusion model, active in training and at
   test time): median smoothing of the thermal camera, attacked plainly (PGD crafted on the same
   network without the defence, transferred) and through the defence with BPDA (its identity
   gradient); a randomised one (Gaussian noise on thermal) attacked with plain PGD (one draw per
   step) and with EOT-PGD, both scored over several draws: transfer experiments, one per defence
   and attacked subset.

With no arguments it runs on the embedded SYNTHETIC default (RGB-T scene classification generated
here; about 5 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..data import SCENE_CLASSES
from ..fusion import FusionModel
from ..models import create_model
from .options import checked_args, count, device_problem, number, out_dir_problem
from .spec import ExperimentSpec, RunSpec

__all__ = ["main", "train_fusion", "build_spec", "summary_table", "build_parser", "option_problems", "SUBSETS", "REGIMES"]

SUBSETS: tuple[tuple[str, ...], ...] = (("rgb",), ("ir",), ("rgb", "ir"))
#: adversarial-training regimes: experiment name -> the modalities trained adversarially (None: normal training)
REGIMES: dict[str, tuple[str, ...] | None] = {"normal": None, "adv-IR": ("ir",), "adv-RGB": ("rgb",), "adv-RGB+IR": ("rgb", "ir")}
_DEFENCE_ATTACKED: tuple[tuple[str, ...], ...] = (("ir",), ("rgb", "ir"))


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


def _label(attacked: Sequence[str]) -> str:
    return "+".join(m.upper() for m in attacked)


def build_spec(args: argparse.Namespace) -> RunSpec:
    """The preset's options as a spec: one grid experiment per training regime (PGD on every attacked
    subset), one transfer experiment per defence and attacked subset."""
    data = {"name": "synthetic-rgbt-scenes", "split": "test", "size": args.test_size, "seed": 0}

    def classifier(**extra: Any) -> dict[str, Any]:
        return {"name": "tiny-rgbt-classifier", "source": "synthetic-rgbt-classifier", "train_size": args.train_size,
                "epochs": args.epochs, "eps_255": float(args.eps_255), "seed": args.seed, **extra}

    common = {"data": data, "batch_size": args.batch_size, "steps": args.steps}
    experiments = []
    for name, adversarial in REGIMES.items():
        model = classifier() if adversarial is None else classifier(epochs=args.adv_epochs, adversarial=list(adversarial),
                                                                     pgd_steps=args.train_steps)
        experiments.append(ExperimentSpec(
            name=name, title=f"{name}: robust accuracy of the {'normally' if adversarial is None else 'adversarially'} trained classifier"
            + (f" (adversarial training on {_label(adversarial)})" if adversarial else ""),
            model=model, toolkit=args.toolkit, attacks=["pgd"], eps_255=[float(args.eps_255)],
            subsets=["+".join(s) for s in SUBSETS], sanity=None, **common))
    smoothed = classifier(defences={"ir": {"median": 3}})
    noisy = classifier(defences={"ir": {"gaussian": float(args.noise)}})
    transfer = {"eps_255": float(args.eps_255), "toolkit": "torchattacks", "steps": args.steps, "metric": "accuracy"}
    for attacked in _DEFENCE_ATTACKED:
        label = _label(attacked)
        experiments.append(ExperimentSpec(
            name=f"median-{label}", title=f"median 3x3 on IR, {label} attacked: plain PGD (transferred) and BPDA PGD",
            model=smoothed, transfer={**transfer, "attacked": list(attacked), "attack": "pgd",
                                      "sources": {"plain": {**smoothed, "wrap": [{"kind": "undefended"}]}, "bpda": smoothed},
                                      "targets": {"smoothed": smoothed}}, **common))
        experiments.append(ExperimentSpec(
            name=f"noise-{label}", title=f"Gaussian noise on IR, {label} attacked: plain PGD and EOT-PGD",
            model=noisy, transfer={**transfer, "attacked": list(attacked), "attack": {"pgd": "pgd", "eot": "eotpgd"},
                                   "attack_kwargs": {"eotpgd": {"eot_iter": args.eot_samples}}, "eval_repeats": args.eval_repeats,
                                   "sources": {"pgd": noisy, "eot": noisy}, "targets": {"noisy": noisy}}, **common))
    return RunSpec(name="defences", experiments=experiments, seed=args.seed, device=args.device, table="defences")


def _defence_text(model: Mapping[str, Any]) -> str:
    (modality, d), = (model.get("defences") or {"?": {"?": 0}}).items()
    (kind, value), = d.items()
    if kind == "median":
        return f"median {value}x{value} on {modality.upper()}"
    return f"Gaussian noise sigma {value:g} on {modality.upper()}"


def _target_entry(specs: Mapping[str, Any], entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """The model entry of a transfer experiment's (first) target, from the summary's spec."""
    return specs[entry["name"]]["transfer"]["targets"][entry["transfer"]["targets"][0]]


def summary_table(summary: Mapping[str, Any]) -> str:
    """The preset's tables from a run's summary: robust accuracy per training regime and attacked
    subset, then each defence's clean and attacked accuracy."""
    specs = {e["name"]: e for e in summary["spec"]["experiments"]}
    grids = [e for e in summary["experiments"] if e["kind"] == "grid"]
    transfers = [e for e in summary["experiments"] if e["kind"] == "transfer"]
    lines = []
    if grids:
        first = grids[0]
        eps = first["raw_rows"][0]["eps_255"] if first["raw_rows"] else float("nan")
        lines += [f"data: {first['description']['data']}",
                  f"robust accuracy under PGD-{first['description']['steps']} at eps {eps:g}/255 on each attacked subset",
                  f"{'model':<12} {'clean':>6} {'RGB':>6} {'IR':>6} {'RGB+IR':>7}"]
        for e in grids:
            acc = {r["attacked"]: r["accuracy"] for r in e["raw_rows"]}
            cells = " ".join(f"{acc.get(k, float('nan')):{w}.3f}" for k, w in (("RGB", 6), ("IR", 6), ("RGB+IR", 7)))
            lines.append(f"{e['name']:<12} {e['clean']['accuracy']:6.3f} {cells}")
    if transfers:
        lines += ["", "defences on one modality, active in training and test (accuracy)"]
        names = {"plain": "plain PGD (transfer)", "bpda": "BPDA PGD", "pgd": "plain PGD", "eot": "EOT-PGD"}
        width = max(28, *(len(_defence_text(_target_entry(specs, e))) for e in transfers))
        for attacked in dict.fromkeys(_label(e["transfer"]["attacked"]) for e in transfers):
            for e in (t for t in transfers if _label(t["transfer"]["attacked"]) == attacked):
                target = e["transfer"]["targets"][0]
                cells = [f"clean {e['clean'][target]:.3f}"]
                cells += [f"{names.get(s, s)} {e['transfer']['values'][f'{s} -> {target}']:.3f}" for s in e["transfer"]["sources"]]
                lines.append(f"{_defence_text(_target_entry(specs, e)):<{width}} attacked {attacked:<7} {', '.join(cells)}")
    return "\n".join(lines)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train-size", type=count(1), default=600)
    p.add_argument("--test-size", type=count(1), default=300)
    p.add_argument("--epochs", type=count(1), default=12, help="epochs of normal training")
    p.add_argument("--adv-epochs", type=count(1), default=15, help="epochs of adversarial training")
    p.add_argument("--train-steps", type=count(1), default=3, help="PGD steps inside adversarial training")
    p.add_argument("--eps-255", type=number(0, 255, unit="/255"), default=8.0)
    p.add_argument("--steps", type=count(1), default=10, help="PGD steps of the evaluation attacks")
    p.add_argument("--noise", type=number(0, 10), default=0.05, help="sigma of the randomised defence")
    p.add_argument("--eot-samples", type=count(1), default=8)
    p.add_argument("--eval-repeats", type=count(1), default=4)
    p.add_argument("--batch-size", type=count(1), default=60)
    p.add_argument("--toolkit", choices=["torchattacks", "art"], default="torchattacks")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    p.add_argument("--out", default="runs/defences", help="results folder; re-running resumes it")
    p.add_argument("--print-spec", action="store_true", help="print the spec as YAML (for mmfusion-attacks run) and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def option_problems(args: argparse.Namespace) -> list[str]:
    """What argparse's per-value checks cannot see (device, output folder), before any work."""
    return [m for m in (device_problem(args.device, allow_auto=True), out_dir_problem(args.out)) if m]


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
