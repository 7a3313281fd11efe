"""RTFNet: the module tree matches the public code's checkpoints, weights load strictly, nothing downloads."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.hub
import torchvision.models._api as tv_api

from mmfusion_attacks import FusionModel
from mmfusion_attacks.models import create_model
from mmfusion_attacks.models.rtfnet import RTFNet

EXPECTED_50 = Path(__file__).with_name("rtfnet50_state_dict.txt")


def _no_network(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("RTFNet construction must not touch the network")


@contextmanager
def offline() -> Iterator[None]:
    """Every route a torchvision / torch.hub download would take raises."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.hub, "load_state_dict_from_url", _no_network)
        mp.setattr(torch.hub, "download_url_to_file", _no_network)
        mp.setattr(tv_api, "load_state_dict_from_url", _no_network)
        mp.setattr(socket.socket, "connect", _no_network)
        yield


@pytest.fixture(scope="module")
def rtfnet50() -> FusionModel:
    with offline():
        return create_model("rtfnet-50")


@pytest.fixture(scope="module")
def source18() -> RTFNet:
    """An RTFNet-18 with non-default BN statistics, so a load that skipped buffers would show."""
    torch.manual_seed(1)
    net = RTFNet(9, 18)
    with torch.no_grad():
        net.train()(torch.rand(2, 4, 32, 32))
    return net.eval()


def _batch(seed: int = 0, h: int = 32, w: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.rand(1, 3, h, w, generator=g), "ir": torch.rand(1, 1, h, w, generator=g)}


def test_rtfnet50_state_dict_matches_public_layout(rtfnet50: FusionModel) -> None:
    lines = [ln.rstrip("\n") for ln in EXPECTED_50.read_text().splitlines()]
    expected = dict(ln.split("\t") for ln in lines if ln and not ln.startswith("#"))
    got = {k: ",".join(map(str, v.shape)) for k, v in rtfnet50.model.state_dict().items()}
    assert sorted(set(expected) - set(got)) == [], "missing entries"
    assert sorted(set(got) - set(expected)) == [], "unexpected entries"
    assert {k for k in got if got[k] != expected[k]} == set()
    assert len(lines) - 1 == len(got)  # one header line, no duplicate names


def test_construction_never_touches_network(rtfnet50: FusionModel) -> None:
    assert isinstance(rtfnet50, FusionModel) and not rtfnet50.training
    assert rtfnet50.task == "segmentation" and rtfnet50.names == ["rgb", "ir"] and rtfnet50.num_classes == 9
    with offline(), pytest.raises(AssertionError, match="network"):
        tv_api.load_state_dict_from_url("https://example.invalid/w.pth")  # the guard is live


def test_rtfnet18_forward_shape() -> None:
    torch.manual_seed(0)
    net = RTFNet(9, 18).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 4, 64, 96))
    assert out.shape == (1, 9, 64, 96) and torch.isfinite(out).all()


def test_gradients_reach_both_modalities() -> None:
    """Attacks need input gradients through the packed tensor (and the public in-place ops)."""
    torch.manual_seed(0)
    fusion = create_model("rtfnet-18")
    batch = {k: v.requires_grad_() for k, v in _batch().items()}
    fusion(batch).sum().backward()
    for name, x in batch.items():
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, name


def test_unsupported_depth() -> None:
    with pytest.raises(ValueError, match="num_resnet_layers"):
        RTFNet(9, 26)


@pytest.mark.parametrize("wrap", ["plain", "module-prefix", "state_dict-key", "model-key"])
def test_weights_load_strict_and_reproduce_outputs(source18: RTFNet, tmp_path: Path, wrap: str) -> None:
    state: Any = source18.state_dict()
    if wrap == "module-prefix":
        state = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "state_dict-key":
        state = {"state_dict": state, "epoch": 3}
    elif wrap == "model-key":
        state = {"model": state}
    path = tmp_path / "final.pth"
    torch.save(state, path)

    torch.manual_seed(123)  # a different random init, overwritten by the load
    loaded = create_model("rtfnet-18", weights=str(path))
    assert not loaded.training
    got = loaded.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in source18.state_dict().items())
    batch = _batch()
    with torch.no_grad():
        expected = source18(torch.cat([batch["rgb"], batch["ir"]], 1))
        assert torch.equal(loaded(batch), expected)


def test_mismatched_checkpoint_fails_strict(source18: RTFNet, tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(source18.state_dict(), path)
    with pytest.raises(RuntimeError, match="state_dict"):
        create_model("rtfnet-34", weights=path)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="yuxiangsun/RTFNet"):
        create_model("rtfnet-18", weights=str(tmp_path / "nope.pth"))
