"""benchmarks/perf.py's bookkeeping (no timing is asserted): the miss rule, interleaving, and that each
hand-wired baseline computes exactly the function the fusion model computes (a ratio of two different
functions would mean nothing)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

PERF = Path(__file__).resolve().parents[1] / "benchmarks" / "perf.py"


@pytest.fixture(scope="module")
def perf():
    spec = importlib.util.spec_from_file_location("perf_script", PERF)
    module = importlib.util.module_from_spec(spec)
    sys.modules["perf_script"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("perf_script", None)


def test_a_target_is_missed_only_beyond_the_spread(perf):
    assert not perf.Ratio("a", [0.9, 1.05, 1.2], 1.03).missed  # the best repeat meets it
    assert perf.Ratio("a", [1.04, 1.05, 1.2], 1.03).missed
    assert not perf.Ratio("b", [2.0, 3.5], 3.0, better="higher").missed
    assert perf.Ratio("b", [2.0, 2.9], 3.0, better="higher").missed
    assert not perf.Ratio("c", [5.0], None).missed
    assert "MISSED" in perf.Ratio("a", [1.5], 1.03).line()


def test_interleaving_rotates_the_order(perf):
    calls = []
    perf.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b"), "c": lambda: calls.append("c")}, 3, torch.device("cpu"))
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


@pytest.mark.parametrize("arch", ["mfnet", "smp-twostream-unet"])
def test_hand_wired_baselines_compute_the_fusion_models_function(perf, arch):
    args = perf.configure(perf.build_parser().parse_args(["--quick"]))
    args.batch, args.size = 2, (32, 32)
    fusion, batch, _ = perf._segmentation_setup(arch, args, torch.device("cpu"))
    wired_cls = perf._PackedSingleInput if fusion.input_style == "packed" else perf._NamedSingleInput
    wired = wired_cls(fusion.model, batch["rgb"]).eval()
    with torch.no_grad():
        assert torch.allclose(wired(batch["ir"]), fusion(batch), atol=1e-6, rtol=0)
