"""A small tri-modal (image + text + audio spectrogram) late-fusion classifier for the SYNTHETIC tri-modal
default (:mod:`mmfusion_attacks.data.synthetic_trimodal`), trained here in seconds: the model the joint
benchmark attacks on every subset of three modalities.

Towers: a small CNN on the 28x28 image, a hashed bag-of-words embedding on the note (tokenised inside, so
TextAttack's edits reach it), a small CNN on the spectrogram; each tower ends in class scores and the
fusion adds them (late fusion). It exposes ``towers`` / ``encode`` / ``fuse``, so a text attack encodes
each held image and spectrogram once.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn
from torch.nn import functional as F

from ..fusion import FusionModel
from ..modality import Modality
from . import register_model

__all__ = ["TrimodalNet", "trimodal_fusion", "train_trimodal", "SPECTROGRAM"]

#: the spectrogram modality: (1, 16, 32) in [0, 1], its own threat model (Linf 0.05)
SPECTROGRAM = Modality("audio", "image", 1, valid_range=(0.0, 1.0), description="spectrogram (1, frequency, time)").replace(eps=0.05)
_IMAGE = Modality("image", "image", 1, valid_range=(0.0, 1.0), description="28x28 grayscale photo")
_BUCKETS = 1024


def _words(text: str) -> list[int]:
    return [zlib.crc32(w.lower().encode()) % _BUCKETS for w in text.split()] or [0]


class TrimodalNet(nn.Module):
    towers = ("image", "text", "audio")
    max_text_tokens = 64

    def __init__(self, num_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        self.image_net = nn.Sequential(nn.Conv2d(1, width, 5, stride=2), nn.ReLU(), nn.Conv2d(width, width, 3, stride=2), nn.ReLU(),
                                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
        self.text_net = nn.EmbeddingBag(_BUCKETS, num_classes, mode="sum")
        self.audio_net = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d((16, 1)), nn.Flatten(),
                                       nn.Linear(16 * width, num_classes))

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def encode(self, name: str, value):
        if name == "image":
            return self.image_net(value)
        if name == "audio":
            return self.audio_net(value)
        ids = [torch.tensor(_words(t)) for t in value]
        offsets = torch.tensor([0, *torch.tensor([len(i) for i in ids]).cumsum(0)[:-1].tolist()])
        device = self.text_net.weight.device
        return self.text_net(torch.cat(ids).to(device), offsets.to(device))

    def fuse(self, features):
        return features["image"] + features["text"] + features["audio"]

    def forward(self, image, text, audio):
        return self.fuse({"image": self.encode("image", image), "text": self.encode("text", text), "audio": self.encode("audio", audio)})


@register_model("trimodal-fusion")
def trimodal_fusion(num_classes: int = 4, width: int = 16, **kwargs) -> FusionModel:
    """An untrained :class:`TrimodalNet` as a FusionModel (``train_trimodal`` trains it)."""
    return FusionModel(TrimodalNet(num_classes, width), [_IMAGE, "text", SPECTROGRAM], num_classes=num_classes, **kwargs).eval()


def train_trimodal(fusion: FusionModel, batch: dict, labels: torch.Tensor, *, epochs: int = 30, lr: float = 0.01, seed: int = 0,
                   batch_size: int = 64) -> FusionModel:
    """Seeded full-batch-shuffled Adam training of the three towers at once (seconds on a CPU)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(fusion.parameters(), lr=lr)
    fusion.train()
    n = len(labels)
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            part = {"image": batch["image"][idx], "audio": batch["audio"][idx], "text": [batch["text"][i] for i in idx.tolist()]}
            loss = F.cross_entropy(fusion(part), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return fusion.eval()
