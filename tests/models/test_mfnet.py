"""MFNet: the official checkpoint loads unchanged and reproduces the published argmax counts exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmfusion_attacks.models import create_model
from mmfusion_attacks.models.mfnet import MFNet

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mfnet-official"
WEIGHTS = SHARED / "final.pth"

# Argmax pixel counts per class with the official model, from the README next to the checkpoint.
EXPECTED_COUNTS = {
    "01477D.png": [260143, 27031, 16184, 1710, 2132, 0, 0, 0, 0],
    "01234N.png": [300176, 521, 4026, 3, 2474, 0, 0, 0, 0],
}


def _official_state_dict() -> dict[str, torch.Tensor]:
    if not WEIGHTS.is_file():
        pytest.skip(f"official MFNet checkpoint not found at {WEIGHTS}")
    return torch.load(WEIGHTS, map_location="cpu", weights_only=True)


def _frame(name: str) -> dict[str, torch.Tensor]:
    from PIL import Image

    pixels = np.array(Image.open(SHARED / name))  # a writable copy
    assert pixels.shape == (480, 640, 4) and pixels.dtype == np.uint8
    x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    return {"rgb": x[:, :3], "ir": x[:, 3:]}


def test_state_dict_matches_official_keys_and_shapes() -> None:
    official = _official_state_dict()
    # The checkpoint predates BatchNorm's num_batches_tracked; load_state_dict fills it in (metadata v1).
    fresh = {k: v for k, v in MFNet(9).state_dict().items() if not k.endswith("num_batches_tracked")}
    assert list(fresh) == list(official)
    assert {k: tuple(v.shape) for k, v in fresh.items()} == {k: tuple(v.shape) for k, v in official.items()}


def test_official_weights_reproduce_published_counts() -> None:
    _official_state_dict()
    model = create_model("mfnet", weights=str(WEIGHTS))
    assert not model.training and model.names == ["rgb", "ir"]
    for name, expected in EXPECTED_COUNTS.items():
        with torch.no_grad():
            logits = model(_frame(name))
        assert logits.shape == (1, 9, 480, 640)
        counts = torch.bincount(logits.argmax(1).flatten(), minlength=9).tolist()
        assert counts == expected, name


def test_missing_weights_names_the_official_repository(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="haqishen/MFNet-pytorch"):
        create_model("mfnet", weights=str(tmp_path / "absent.pth"))


def test_random_init_forward_shape() -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        out = MFNet(9).eval()(torch.rand(1, 4, 64, 80))
    assert out.shape == (1, 9, 64, 80)
