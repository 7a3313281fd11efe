"""Reports: the MFNet study's table layout, CSV / JSON, a Figure-1-style plot, qualitative PNGs."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["MF_PALETTE", "colorize", "format_study_table", "save_rows", "save_run", "plot_curves", "save_qualitative", "format_matrix"]

#: MF dataset colours (MFNet-pytorch util.get_palette): unlabeled, car, person, bike, curve, car_stop,
#: guardrail, color_cone, bump.
MF_PALETTE = np.array(
    [[0, 0, 0], [64, 0, 128], [64, 64, 0], [0, 128, 192], [0, 0, 192], [128, 128, 0], [64, 64, 128], [192, 128, 128], [192, 64, 0]],
    dtype=np.uint8,
)


def colorize(labels: torch.Tensor, palette: np.ndarray = MF_PALETTE) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3)`` uint8 colours."""
    ids = labels.detach().cpu().numpy().astype(np.int64) % len(palette)
    return palette[ids]


def format_study_table(rows: Sequence[Mapping[str, Any]], clean: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """Rows: attacked modality; columns: attack x eps x (mAcc, mIoU, IoU_R)."""
    cols = sorted({(r["attack"], r["eps_255"]) for r in rows}, key=lambda c: (c[0], c[1]))
    width = 20
    lines = list(header)
    lines.append(f"clean: mAcc {clean['mAcc']:.3f}  mIoU {clean['mIoU']:.3f}")
    lines.append("")
    lines.append(f"{'attacked':<9}" + "".join(f"| {a} eps {e:g}/255".ljust(width) for a, e in cols))
    lines.append(f"{'':<9}" + "".join("| mAcc  mIoU  IoU_R ".ljust(width) for _ in cols))
    lines.append("-" * len(lines[-1]))
    index = {(r["attacked"], r["attack"], r["eps_255"]): r for r in rows}
    for subset in dict.fromkeys(r["attacked"] for r in rows):
        cells = []
        for a, e in cols:
            r = index.get((subset, a, e))
            cells.append((f"| {r['mAcc']:.3f} {r['mIoU']:.3f} {r['IoU_R']:.3f}" if r else "| -").ljust(width))
        lines.append(f"{subset:<9}" + "".join(cells))
    return "\n".join(lines)


def format_matrix(values: Mapping[tuple[str, str], float], title: str) -> str:
    """A transfer matrix: rows = model the attack was crafted on, columns = model evaluated."""
    sources = list(dict.fromkeys(s for s, _ in values))
    targets = list(dict.fromkeys(t for _, t in values))
    w = max(10, *(len(t) + 2 for t in targets))
    corner = "crafted on \\ evaluated on"
    lines = [title, f"{corner:<28}" + "".join(t.rjust(w) for t in targets)]
    for s in sources:
        lines.append(f"{s:<28}" + "".join(f"{values[(s, t)]:.3f}".rjust(w) for t in targets))
    return "\n".join(lines)


def save_run(result: Mapping[str, Any], out: str | Path, stem: str, *, plot: Any, table: Any, extra_keys: Sequence[str] = ()) -> Path:
    """A preset's outputs: ``results.json`` (everything), ``<stem>.csv`` / ``.json`` (rows, meta and
    ``extra_keys``), ``<stem>.png`` (``plot(result, path)``); prints ``table(result)`` and what was written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    save_rows(result["rows"], out, stem, extra={"meta": result["meta"], **{k: result[k] for k in extra_keys}})
    plot(result, out / f"{stem}.png")
    print(table(result))
    print(f"\nwrote {out}/results.json, {stem}.csv/json, {stem}.png ({result['seconds']['total']:.0f} s)")
    return out


def save_rows(rows: Sequence[Mapping[str, Any]], out: Path, stem: str, extra: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / f"{stem}.json", out / f"{stem}.csv"
    json_path.write_text(json.dumps({**(extra or {}), "rows": list(rows)}, indent=2))
    flat = [{k: v for k, v in r.items() if not isinstance(v, list)} for r in rows]
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in flat for k in r)))
        writer.writeheader()
        writer.writerows(flat)
    return json_path, csv_path


def plot_curves(rows: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> Path:
    """IoU_R, mIoU and mAcc against eps; one line per attacked modality; one column per attack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    metrics = ("IoU_R", "mIoU", "mAcc")
    fig, axes = plt.subplots(len(metrics), len(attacks), figsize=(4 * len(attacks), 8), squeeze=False, sharex=True)
    for j, attack in enumerate(attacks):
        for i, metric in enumerate(metrics):
            ax = axes[i][j]
            for subset in dict.fromkeys(r["attacked"] for r in rows):
                pts = sorted((r["eps_255"], r[metric]) for r in rows if r["attack"] == attack and r["attacked"] == subset)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=subset)
            ax.set_ylim(0, 1.05)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(attack)
            if j == 0:
                ax.set_ylabel(metric)
            if i == len(metrics) - 1:
                ax.set_xlabel("eps (0-255 scale)")
    axes[0][0].legend(title="attacked")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_qualitative(
    path: Path, rgb: torch.Tensor, ir: torch.Tensor, clean_pred: torch.Tensor, adv_pred: torch.Tensor, caption: str
) -> Path:
    """One PNG: input RGB, thermal, clean prediction, adversarial prediction (MF palette)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (rgb.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy(), "RGB", None),
        (ir.detach().cpu()[0].numpy(), "thermal", "inferno"),
        (colorize(clean_pred), "clean prediction", None),
        (colorize(adv_pred), "adversarial prediction", None),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for ax, (img, name, cmap) in zip(axes, panels):
        ax.imshow(img, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None)
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(caption, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
