"""The embedded default models: registered architectures trained by this project on the SYNTHETIC
RGB-T scenes, cached after the first run (no download; delete the cache folder to retrain).

Cache folder: ``$MMFUSION_CACHE``, else ``$XDG_CACHE_HOME/mmfusion_attacks``, else ``~/.cache/mmfusion_attacks``.
Caches are written atomically; an unusable one (truncated, empty, weights that do not fit) is deleted
with a :class:`~mmfusion_attacks.cache_files.CacheFileWarning` naming it and trained again (see
:mod:`mmfusion_attacks.cache_files` for why that is not an error).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .cache_files import atomic_save, load_or_discard, load_state_cache
from .data import create_dataset
from .fusion import FusionModel
from .models import create_model

__all__ = ["cache_dir", "synthetic_default", "DATA_VERSION"]

#: bump when the synthetic generator or the recipe changes, so stale caches are not reused (3: the initial
#: weights are drawn from ``seed``; before, from the caller's random state, so one cache name held
#: whichever model a machine trained first)
DATA_VERSION = 3


def cache_dir() -> Path:
    root = os.environ.get("MMFUSION_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmfusion_attacks"
    return Path(root)


def _class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """1/sqrt(frequency), normalised to mean 1 over present classes (the background dominates street
    scenes). Classes absent from the data get weight 1: a weight of 0 would leave their logits
    untrained and the model would predict them spuriously."""
    counts = Counter(labels.flatten().tolist())
    freq = torch.tensor([counts.get(c, 0) for c in range(num_classes)], dtype=torch.float32)
    present = freq > 0
    weights = torch.where(present, 1 / freq.clamp_min(1).sqrt(), torch.zeros_like(freq))
    weights = weights / weights[present].mean()
    return torch.where(present, weights, torch.ones_like(weights))


def synthetic_default(
    arch: str = "mfnet",
    *,
    steps: int = 400,
    batch_size: int = 8,
    size: tuple[int, int] = (96, 128),
    n_train: int = 256,
    lr: float = 1e-2,
    seed: int = 0,
    device: str | torch.device = "cpu",
    cache: bool = True,
    progress: bool = True,
) -> FusionModel:
    """``arch`` trained on SYNTHETIC scenes (cached); returned in eval mode on ``device``. An unusable
    cache file is deleted with a warning naming it, and the model is trained again."""
    h, w = size
    name = f"{arch}-synthetic-v{DATA_VERSION}-{h}x{w}-steps{steps}-bs{batch_size}-n{n_train}-lr{lr:g}-seed{seed}.pt"
    path = cache_dir() / name
    with torch.random.fork_rng(devices=[]):  # the initial weights from `seed`; the caller's random state left alone
        torch.manual_seed(seed)
        fusion = create_model(arch, num_classes=9)
    if cache and load_or_discard(path, lambda p: load_state_cache(fusion.model, p)) is not None:
        return fusion.to(device).eval()
    torch.manual_seed(seed)
    data = create_dataset("synthetic-rgbt", split="train", size=n_train, height=h, width=w, seed=seed)
    items = [data[i] for i in range(len(data))]
    rgb = torch.stack([i["rgb"] for i in items])
    ir = torch.stack([i["ir"] for i in items])
    labels = torch.stack([i["labels"] for i in items])
    fusion = fusion.to(device).train()
    loss_fn = torch.nn.CrossEntropyLoss(weight=_class_weights(labels, 9).to(device))
    opt = torch.optim.Adam(fusion.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc=f"training {arch} on synthetic scenes (cached after)", disable=None if progress else True):
        idx = torch.randint(0, len(items), (batch_size,), generator=g)
        batch = {"rgb": rgb[idx].to(device), "ir": ir[idx].to(device)}
        loss = loss_fn(fusion(batch), labels[idx].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    fusion.eval()
    if cache:
        atomic_save(fusion.model.state_dict(), path)
    return fusion
