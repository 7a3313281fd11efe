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


def test_the_gpu_grid_command_runs_on_an_mf_fixture(perf, tmp_path, monkeypatch, capsys):
    """The MF-test-set grid measurement (``--only GPU``) end to end on CPU: a small fixture in the public
    MF layout, a checkpoint of the official format, two frames resized; ``--compile`` swaps the network
    for its compiled module for one run and puts the eager one back (``torch.compile`` stood in for by a
    wrapper here: compiling costs a minute on CPU)."""
    from data.test_mf_dataset import make_mf_fixture

    from mmfusion_attacks.models import create_model

    root = make_mf_fixture(tmp_path / "MF", size=(48, 64))
    torch.manual_seed(0)
    weights = tmp_path / "final.pth"
    torch.save(create_model("mfnet", num_classes=9).model.state_dict(), weights)
    compiled = []

    class Wrapped(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, *a, **k):
            compiled.append(1)
            return self.net(*a, **k)

    monkeypatch.setattr(torch, "compile", Wrapped)
    args = perf.configure(perf.build_parser().parse_args(
        ["--only", "GPU", "--mf-root", str(root), "--mf-weights", str(weights), "--mf-limit", "2", "--mf-size", "32", "48",
         "--mf-batch", "2", "--compile"]))
    ratios = perf.measure_mf_grid(args, torch.device("cpu"))
    out = capsys.readouterr().out
    assert "2 MF test frames at 32x48, 18 cells" in out
    assert [r.name for r in ratios] == ["GPU MFNet study grid / its bare forward + backward passes", "GPU MFNet study grid: torch.compile / eager"]
    assert all(v > 0 for r in ratios for v in r.values)
    assert compiled and "max |mIoU diff| 0.0e+00" in ratios[1].note  # the same network: the same grid


def test_the_gpu_grid_says_what_it_needs(perf, capsys):
    assert perf.measure_mf_grid(perf.configure(perf.build_parser().parse_args(["--only", "GPU"])), torch.device("cpu")) == []
    assert "--mf-root" in capsys.readouterr().out


def test_the_compile_measurement_compares_the_same_attack_with_and_without_compiling(perf, monkeypatch):
    """``--only compile``'s bookkeeping (``torch.compile`` stood in for by the identity: the network under
    both variants is then the same, so the attacks must agree exactly and the eager network is put back)."""
    monkeypatch.setattr(torch, "compile", lambda net: net)
    args = perf.configure(perf.build_parser().parse_args(["--quick", "--only", "compile", "--repeats", "1"]))
    args.batch, args.size = 2, (32, 32)
    ratios = perf.measure_compile(args, torch.device("cpu"))
    assert [r.name.split(":")[0] for r in ratios] == ["compile mfnet", "compile mfnet"]
    assert "max |adversarial diff| 0.0e+00" in ratios[1].note
    assert "compile" in perf.OPT_IN  # a plain run leaves it out
