"""The spec harness end to end on tiny models: bad specs refused with lines, kill-and-resume, corrupted
records, 2-process gloo == 1 process, the gradient-masking and non-monotone flags, report regeneration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmfusion_attacks.harness.spec import SpecError, load_spec, spec_to_yaml

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "mfnet-official"

SPEC = """\
name: tiny
device: cpu
experiments:
  - name: scenes
    model: {{name: tiny, source: callable, factory: "spec_models:tiny_scene_classifier", options: {{quantise: {quantise}}}}}
    data: {{name: synthetic-rgbt-scenes, split: test, size: {size}, height: 16, width: 16}}
    batch_size: 4
    shard_size: 4
    attacks: [fgsm, pgd]
    eps_255: [4, 16]
    subsets: [rgb, ir, rgb+ir]
    steps: 3
    worst_case:
      - group: worst case
        plan: [{{modality: rgb, attack: pgd, budget: 0.03, steps: 2}}, {{modality: ir, attack: pgd, budget: 0.03, steps: 2}}]
    sanity: {{attack: bim, steps: 10}}
"""


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    env.update(extra)
    return env


def _spec(tmp_path: Path, name: str = "spec.yaml", quantise: bool = False, size: int = 16) -> Path:
    path = tmp_path / name
    path.write_text(SPEC.format(quantise=str(quantise).lower(), size=size))
    return path


def _cli(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmfusion_attacks", *args], env=env or _env(), capture_output=True, text=True, **kw)


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _numbers(summary: dict) -> list:
    return [(e["name"], e["confusion"], [{k: v for k, v in r.items() if k not in ("seconds",)} for r in e["rows"]]) for e in summary["experiments"]]


def test_bad_spec_lists_every_problem_with_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("""\
name: bad
experiments:
  - name: a
    model: {name: no-such-net}
    data: {name: synthetic-rgbt, root: /no/such/folder}
    attacks: [fgsm, nosuchattack]
    eps_255: [4, -1]
    subsets: [rgb]
    steps: ten
    colour: blue
""")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    text = str(info.value)
    for needle in ("line 4: experiments[0].model.name: unknown model 'no-such-net'",
                   "line 5: experiments[0].data.root: no file or folder at /no/such/folder",
                   "line 6: experiments[0].attacks[1]: no attack recipe 'nosuchattack'",
                   "line 9: experiments[0].steps: must be an integer, got str 'ten'",
                   "line 10: experiments[0].colour: unknown field"):
        assert needle in text, text
    path.write_text(path.read_text().replace("steps: ten\n", "").replace("    colour: blue\n", "")
                    .replace("no-such-net", "tiny-rgbt-segmenter").replace("root: /no/such/folder", "split: test")
                    .replace(", nosuchattack", ""))
    with pytest.raises(SpecError, match=r"line 7: experiments\[0\]\.eps_255\[1\]: must be >= 0"):
        load_spec(path)


def test_cli_refuses_a_bad_spec_before_work(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("experiments:\n  - name: a\n    model: {name: mfnet}\n    data: {name: nope}\n")
    proc = _cli("run", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "line 4: experiments[0].data.name: unknown dataset 'nope'" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_print_spec_round_trips(tmp_path):
    spec = load_spec(_spec(tmp_path))
    again = tmp_path / "again.yaml"
    again.write_text(spec_to_yaml(spec))
    assert spec_to_yaml(load_spec(again)) == spec_to_yaml(spec)


@pytest.mark.slow
def test_kill_and_resume_gives_identical_results_and_recomputes_nothing_finished(tmp_path):
    spec = _spec(tmp_path)
    full = tmp_path / "full"
    calls_full = tmp_path / "calls_full"
    assert _cli("run", str(spec), "--out", str(full), "--quiet", env=_env(MMF_TEST_CALLS=str(calls_full))).returncode == 0
    # killed mid-grid: SIGKILL once some records exist
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "mmfusion_attacks", "run", str(spec), "--out", str(out), "--quiet"],
                            env=_env(MMF_TEST_SLEEP="0.01"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "records").glob("*/*/*.json"))) < 12:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p: p.stat().st_mtime_ns for p in (out / "records").glob("*/*/*.json")}
    assert 12 <= len(before) and not (out / "summary.json").exists()
    calls_resume = tmp_path / "calls_resume"
    done = _cli("run", str(spec), "--out", str(out), "--quiet", env=_env(MMF_TEST_CALLS=str(calls_resume)))
    assert done.returncode == 0, done.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before  # no finished record rewritten
    resumed = _summary(out)
    assert _numbers(resumed) == _numbers(_summary(full))
    shards = resumed["experiments"][0]["shards"]
    assert shards["records_reused"] >= len(before) - 8  # (a worst-case group is redone as a whole)
    assert 0 < calls_resume.stat().st_size < calls_full.stat().st_size
    # a finished run calls the model once per experiment (the behaviour probe); a corrupted record is redone
    calls_again = tmp_path / "calls_again"
    victim = sorted(before)[0]
    victim.write_text(victim.read_text()[:-20])
    again = _cli("run", str(spec), "--out", str(out), "--quiet", env=_env(MMF_TEST_CALLS=str(calls_again)))
    assert again.returncode == 0, again.stderr
    summary = _summary(out)
    assert summary["invalid_records"] and "unreadable" in summary["invalid_records"][0]["reason"]
    assert summary["experiments"][0]["shards"]["records_computed"] >= 1
    assert _numbers(summary) == _numbers(_summary(full))
    calls_none = tmp_path / "calls_none"
    assert _cli("run", str(spec), "--out", str(out), "--quiet", env=_env(MMF_TEST_CALLS=str(calls_none))).returncode == 0
    assert calls_none.stat().st_size == len(summary["experiments"])  # one forward of the first batch each: no attack
    # the reports come back from the store without attacking
    (out / "report.html").unlink()
    assert _cli("report", str(out)).returncode == 0 and (out / "report.html").is_file()


@pytest.mark.slow
def test_two_gloo_processes_equal_one(tmp_path):
    spec = _spec(tmp_path, size=12)
    one = tmp_path / "one"
    assert _cli("run", str(spec), "--out", str(one), "--quiet").returncode == 0
    two = tmp_path / "two"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mmfusion_attacks", "run",
                           str(spec), "--out", str(two), "--quiet"], env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _summary(one), _summary(two)
    assert b["world_size"] == 2
    assert _numbers(a) == _numbers(b)


@pytest.mark.slow
@pytest.mark.parametrize("quantise", [False, True])
def test_gradient_masking_is_flagged_only_on_the_masking_model(tmp_path, quantise):
    out = tmp_path / "out"
    proc = _cli("run", str(_spec(tmp_path, quantise=quantise, size=12)), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    exp = _summary(out)["experiments"][0]
    failed = {c["name"] for c in exp["checks"] if not c["ok"]}
    sanity = next(r for r in exp["rows"] if r["kind"] == "sanity")
    assert ("unbounded-sanity" in failed) == quantise, (failed, sanity)
    assert ("unbounded-sanity" in sanity["checks"]) == quantise


@pytest.mark.skipif(not (SHARED / "final.pth").is_file(), reason="needs ../shared/data/mfnet-official (CI has it)")
@pytest.mark.slow
def test_official_mfnet_rgb_ir_row_is_flagged_non_monotone(tmp_path):
    frames = sorted(str(p) for p in SHARED.glob("*.png"))
    path = tmp_path / "mfnet.yaml"
    path.write_text(f"""\
name: official MFNet
device: cpu
experiments:
  - name: mfnet-official
    model: {{name: mfnet, weights: {SHARED / 'final.pth'}, num_classes: 9}}
    data: {{name: rgbt-frames, paths: {json.dumps(frames)}}}
    batch_size: 2
    attacks: [fgsm]
    eps_255: [10, 20, 40]
    subsets: [rgb+ir]
    sanity: false
""")
    out = tmp_path / "out"
    proc = _cli("run", str(path), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    exp = _summary(out)["experiments"][0]
    miou = [r["mIoU"] for r in exp["rows"]]
    assert miou[0] < miou[1] < miou[2], miou
    monotone = [c for c in exp["checks"] if c["name"] == "monotone-eps"]
    assert monotone and not monotone[0]["ok"] and "Remedy" not in monotone[0]["message"]
    assert "object classes" in monotone[0]["remedy"] or "class" in monotone[0]["remedy"]
    assert all("monotone-eps" in r["checks"] for r in exp["rows"])
