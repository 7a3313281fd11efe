"""The end-to-end demo (the README's main job until the RGB-T benchmark lands).

Trains a tiny two-stream RGB-T segmenter on SYNTHETIC scenes for a few seconds, then attacks RGB only,
thermal only and both with FGSM and PGD at several eps through a stock toolkit, and prints mIoU,
mAcc and IoU_R (adversarial mIoU / clean mIoU) per attacked modality.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data import create_dataset
from .fusion import FusionModel
from .metrics import SegmentationMetrics
from .models import create_model
from .recipes import make_attack
from .runner import run_attack

__all__ = ["train_demo_model", "run_demo", "format_table"]

SUBSETS: tuple[tuple[str, ...], ...] = (("rgb",), ("ir",), ("rgb", "ir"))


def _batches(dataset, batch_size: int, device: torch.device):
    for item in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        yield {"rgb": item["rgb"].to(device), "ir": item["ir"].to(device)}, item["labels"].to(device)


def train_demo_model(*, steps: int = 300, n_train: int = 256, batch_size: int = 16, device: str = "cpu", seed: int = 0) -> FusionModel:
    """A tiny two-stream segmenter fitted to the synthetic scenes (seconds on CPU)."""
    torch.manual_seed(seed)
    dev = torch.device(device)
    fusion = create_model("tiny-rgbt-segmenter", num_classes=9).to(dev)
    data = create_dataset("synthetic-rgbt", split="train", size=n_train, seed=seed)
    cache = [(b, y) for b, y in _batches(data, batch_size, dev)]
    opt = torch.optim.Adam(fusion.parameters(), lr=0.01)
    fusion.train()
    for step in tqdm(range(steps), desc="training demo model", leave=False, disable=None):
        batch, labels = cache[step % len(cache)]
        loss = torch.nn.functional.cross_entropy(fusion(batch), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return fusion.eval()


def run_demo(
    *,
    toolkit: str = "torchattacks",
    attacks: Sequence[str] = ("fgsm", "pgd"),
    eps_255: Sequence[float] = (4, 8, 16),
    pgd_steps: int = 10,
    n_eval: int = 32,
    batch_size: int = 16,
    train_steps: int = 300,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Run the demo grid; returns {"clean": {...}, "rows": [...], "meta": {...}}."""
    start = time.time()
    fusion = train_demo_model(steps=train_steps, device=device, seed=seed)
    dev = torch.device(device)
    test = create_dataset("synthetic-rgbt", split="test", size=n_eval, seed=seed)
    clean = SegmentationMetrics(9, device=dev)
    for batch, labels in _batches(test, batch_size, dev):
        clean.update(fusion.predict(batch), labels)
    rows = []
    grid = [(a, e, s) for a in attacks for e in eps_255 for s in SUBSETS]
    for attack_name, eps, subset in tqdm(grid, desc=f"attacking ({toolkit})", leave=False, disable=None):
        attack = make_attack(attack_name, fusion, subset, toolkit=toolkit, eps=eps / 255, steps=pgd_steps)
        adv = SegmentationMetrics(9, device=dev)
        for batch, labels in _batches(test, batch_size, dev):
            adv.update(run_attack(attack, batch, labels).adv_pred, labels)
        rows.append(
            {
                "attack": attack_name.upper(),
                "eps_255": eps,
                "attacked": "+".join(m.upper() for m in subset),
                "mAcc": adv.macc(),
                "mIoU": adv.miou(),
                "IoU_R": adv.miou() / clean.miou(),
            }
        )
    return {
        "clean": {"mAcc": clean.macc(), "mIoU": clean.miou(), "pixel_accuracy": clean.pixel_accuracy()},
        "rows": rows,
        "meta": {
            "data": "SYNTHETIC RGB-T scenes (embedded default, not real data)",
            "model": f"tiny-rgbt-segmenter, trained {train_steps} steps on synthetic scenes",
            "toolkit": toolkit,
            "labels": "ground truth (synthetic)",
            "n_eval": n_eval,
            "pgd_steps": pgd_steps,
            "seconds": round(time.time() - start, 1),
        },
    }


def format_table(result: dict[str, Any]) -> str:
    """The MFNet-study layout: rows = attacked modality, columns = attack x eps x (mAcc, mIoU, IoU_R)."""
    meta, clean, rows = result["meta"], result["clean"], result["rows"]
    lines = [
        f"mmfusion-attacks demo -- {meta['data']}",
        f"model: {meta['model']}; toolkit: {meta['toolkit']}; labels: {meta['labels']}; {meta['n_eval']} test scenes",
        f"clean: mAcc {clean['mAcc']:.3f}  mIoU {clean['mIoU']:.3f}  (classes absent from labels and predictions are left out)",
        "",
    ]
    cols = sorted({(r["attack"], r["eps_255"]) for r in rows})
    width = 20
    top = f"{'':<9}" + "".join(f"| {a} eps {e:g}/255".ljust(width) for a, e in cols)
    sub = f"{'attacked':<9}" + "".join("| mAcc  mIoU  IoU_R ".ljust(width) for _ in cols)
    lines += [top, sub, "-" * len(sub)]
    for subset in dict.fromkeys(r["attacked"] for r in rows):
        cells = []
        for a, e in cols:
            r = next(r for r in rows if r["attacked"] == subset and r["attack"] == a and r["eps_255"] == e)
            cells.append(f"| {r['mAcc']:.3f} {r['mIoU']:.3f} {r['IoU_R']:.3f}".ljust(width))
        lines.append(f"{subset:<9}" + "".join(cells))
    lines += ["", f"({meta['seconds']} s; PGD {meta['pgd_steps']} steps)"]
    return "\n".join(lines)


def save(result: dict[str, Any], out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    (out / "demo.txt").write_text(format_table(result) + "\n")
    return out
