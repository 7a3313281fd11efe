"""Cache files of the trained defaults: atomic writes, and every unusable cache named (and re-trained)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

from mmfusion_attacks import cache_files as C
from mmfusion_attacks.models import WeightsError
from mmfusion_attacks.models import vl_training as T


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _corrupt(kind: str, path) -> None:
    if kind == "truncated":
        _truncate(path)
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "text":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n")
    elif kind == "not-a-state-dict":
        C.atomic_save([1, 2, 3], path)
    elif kind == "wrong-keys":
        C.atomic_save({"other.weight": torch.zeros(2)}, path)
    elif kind == "wrong-shape":
        state = _net().state_dict()
        state["0.weight"] = torch.zeros(5, 3)
        C.atomic_save(state, path)
    elif kind == "nan":
        state = _net().state_dict()
        state["2.bias"] = torch.full((2,), float("nan"))
        C.atomic_save(state, path)


KINDS = {
    "truncated": "truncated or corrupt",
    "zero-bytes": "empty",
    "garbage": "not a torch checkpoint",
    "text": "LFS pointer",
    "not-a-state-dict": "not a state_dict",
    "wrong-keys": "do not fit",
    "wrong-shape": "shape mismatch",
    "nan": "NaN",
}


# ---------------------------------------------------------------------------------------------- the helper
def test_atomic_save_round_trip_leaves_no_temp(tmp_path):
    net = _net()
    path = C.atomic_save(net.state_dict(), tmp_path / "sub" / "m.pt")
    assert sorted(os.listdir(tmp_path / "sub")) == ["m.pt"]
    fresh = _net(seed=1)
    assert C.load_state_cache(fresh, path) is fresh and _states_equal(fresh, net)


@pytest.mark.parametrize("kind", list(KINDS))
def test_unusable_cache_names_file_problem_and_remedy(tmp_path, kind):
    path = tmp_path / "m.pt"
    C.atomic_save(_net().state_dict(), path)
    _corrupt(kind, path)
    net = _net(seed=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(C.CacheFileError) as info:
        C.load_state_cache(net, path)
    message = str(info.value)
    assert str(path) in message and KINDS[kind] in message and "delete the file" in message, message
    assert isinstance(info.value, (WeightsError, RuntimeError)) and info.value.path == path
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # refused: the model is untouched


def test_load_cache_missing_file(tmp_path):
    with pytest.raises(C.CacheFileError, match="does not exist"):
        C.load_cache(tmp_path / "absent.pt")


def test_interrupted_save_keeps_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    C.atomic_save({"w": torch.ones(3)}, path)
    real_save = torch.save

    def dies_half_way(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        C.atomic_save({"w": torch.zeros(3)}, path)
    with pytest.raises(KeyboardInterrupt):
        C.atomic_save({"w": torch.zeros(3)}, tmp_path / "new.pt")
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]  # no temp file, no partial new.pt
    assert torch.equal(C.load_cache(path)["w"], torch.ones(3))


def test_sigkill_during_save_never_leaves_a_partial_final_file(tmp_path):
    """A writer killed outright cannot clean up, but the final name is either absent or complete."""
    script = textwrap.dedent(f"""
        import os, signal, torch
        from mmfusion_attacks.cache_files import atomic_save
        def killed(obj, fh, *a, **k):
            fh.write(b"PK\\x03\\x04" + b"x" * 4096); fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = killed
        atomic_save({{"w": torch.ones(3)}}, {str(tmp_path / "m.pt")!r})
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not (tmp_path / "m.pt").exists()
    assert all(name.startswith(".m.pt.") and name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_load_or_discard_deletes_and_warns(tmp_path):
    path = tmp_path / "m.pt"
    assert C.load_or_discard(path, C.load_cache) is None  # no file: nothing to say
    path.write_bytes(b"")
    with pytest.warns(C.CacheFileWarning, match="m.pt") as record:
        assert C.load_or_discard(path, C.load_cache) is None
    assert "empty" in str(record[0].message) and not path.exists()
    C.atomic_save({"w": torch.ones(1)}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(C.load_or_discard(path, C.load_cache)["w"], torch.ones(1))


# ---------------------------------------------------------------------------------------------- real callers
def test_zoo_default_retrains_a_truncated_cache(tmp_path, monkeypatch):
    from mmfusion_attacks import zoo

    monkeypatch.setenv("MMFUSION_CACHE", str(tmp_path))
    kwargs = dict(steps=2, batch_size=2, size=(16, 16), n_train=4, progress=False)
    first = zoo.synthetic_default("tiny-rgbt-segmenter", **kwargs)
    (path,) = tmp_path.glob("tiny-rgbt-segmenter-synthetic-*.pt")
    for kind in ("truncated", "zero-bytes", "garbage", "wrong-keys"):
        _corrupt(kind, path)
        with pytest.warns(C.CacheFileWarning, match=path.name):
            again = zoo.synthetic_default("tiny-rgbt-segmenter", **kwargs)
        assert C.load_state_cache(again.model, path) is again.model  # re-written, complete
        assert sorted(os.listdir(tmp_path)) == [path.name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached = zoo.synthetic_default("tiny-rgbt-segmenter", **kwargs)
    assert _states_equal(cached.model, again.model) and first.model.state_dict().keys() == cached.model.state_dict().keys()


def test_vl_state_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMFUSION_CACHE", str(tmp_path))
    tiny_image = {"backbone": "seresnet18", "backbone_kwargs": {"channels": (8, 8, 16, 16), "stem_width": 8, "layers": (1, 1, 1, 1)}}
    monkeypatch.setitem(T.SYNTHETIC_CONFIGS, "vl-vision", tiny_image)
    monkeypatch.setitem(T.SYNTHETIC_RECIPES, "vl-vision", T.Recipe("adam", 1e-3, 1, 4, "ce", "tiny"))
    first = T.vl_synthetic_default("vl-vision", n_train=4, image_size=32, progress=False)
    (path,) = tmp_path.glob("vl-vision-synthetic-xray-*.pt")
    _truncate(path)
    with pytest.raises(RuntimeError, match="truncated") as info:  # the public loader raises, naming the file
        T.load_state(first, path)
    assert isinstance(info.value, C.CacheFileError) and str(path) in str(info.value)
    with pytest.warns(C.CacheFileWarning, match=path.name):  # the default deletes it and trains again
        again = T.vl_synthetic_default("vl-vision", n_train=4, image_size=32, progress=False)
    T.load_state(again, path)
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_clip_like_cached_heads(tmp_path):
    from mmfusion_attacks.models.clip_like import CLIPLikeEncoder, load_cached_heads

    heads = ("image_projection.", "text_projection.", "logit_scale")
    torch.manual_seed(0)
    enc = CLIPLikeEncoder(text_encoder="tiny-random", pretrained_image=False, input_size=32)
    path = C.atomic_save({"weights": {k: v for k, v in enc.state_dict().items() if k.startswith(heads)}, "report": '{"a": 1}'},
                         tmp_path / "clip.pt")
    fresh = CLIPLikeEncoder(text_encoder="tiny-random", pretrained_image=False, input_size=32)
    assert load_cached_heads(fresh, path, heads).report == {"a": 1}
    assert torch.equal(fresh.image_projection.weight, enc.image_projection.weight)
    for bad, match in [({"weights": {}}, "not {'weights'"), ({"weights": {}, "report": "{}"}, "do not fit"),
                       ({"weights": {"logit_scale": torch.zeros(())}, "report": "[]"}, "not a JSON object")]:
        C.atomic_save(bad, path)
        with pytest.raises(C.CacheFileError, match=match):
            load_cached_heads(fresh, path, heads)
    _truncate(path)
    with pytest.raises(C.CacheFileError, match="clip.pt"):
        load_cached_heads(fresh, path, heads)


def test_zoo_default_depends_on_its_seed_not_on_the_callers_random_state():
    """The same seed trains the same model whatever random state the caller left: one cache name, one model
    (the initial weights came from the caller's generator, so each machine cached its own "seed 0")."""
    from mmfusion_attacks import zoo

    kwargs = dict(steps=2, batch_size=2, size=(16, 16), n_train=4, progress=False, cache=False)
    torch.manual_seed(1)
    a = zoo.synthetic_default("tiny-rgbt-segmenter", **kwargs)
    torch.manual_seed(2)
    b = zoo.synthetic_default("tiny-rgbt-segmenter", **kwargs)
    assert _states_equal(a.model, b.model)
