"""Image + text classifiers (vl-vision, vl-language, vl-early-fusion, vl-late-fusion) and their training loop.

Tiny configurations (a narrow one-block SE-ResNet on 32x32 views, a 2-layer random BERT with MiniLM's
tokeniser); the real packaged MiniLM is loaded in one test only. No network: HF_HUB_OFFLINE is set
before transformers is imported and sockets refuse to connect.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import socket  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from mmfusion_attacks import FusionModel  # noqa: E402
from mmfusion_attacks.models import create_model  # noqa: E402
from mmfusion_attacks.models import vl_training as T  # noqa: E402
from mmfusion_attacks.models.vl import LateFusionClassifier, TextTower  # noqa: E402
from mmfusion_attacks.models.weights import WeightsMismatchError  # noqa: E402

ARCHS = ("vl-vision", "vl-language", "vl-early-fusion", "vl-late-fusion")
TINY_IMAGE = {"backbone": "seresnet18", "backbone_kwargs": {"channels": (8, 8, 16, 16), "stem_width": 8, "layers": (1, 1, 1, 1)}}
TINY_TEXT = {"encoder": "tiny-random", "max_text_tokens": 24}
SIZE = 32
NORMAL = ["the lungs are clear", "no acute disease", "heart size is normal", "normal chest"]
ABNORMAL = ["there is a large right pleural effusion", "cardiomegaly", "focal opacity in the left lower lobe", "a nodule"]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on a shared machine OpenMP threads that wait on each
    other can make a step 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(arch: str, **kwargs) -> FusionModel:
    torch.manual_seed(0)
    config = {**({} if arch == "vl-language" else TINY_IMAGE), **({} if arch == "vl-vision" else TINY_TEXT), **kwargs}
    return create_model(arch, **config)


def stand_in(n: int = 8, size: int = SIZE, seed: int = 0) -> tuple[dict, torch.Tensor]:
    """Separable stand-in data: abnormal cases have a bright square on both views and an abnormal report."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    views = {}
    for view in ("frontal", "lateral"):
        x = 0.3 * torch.rand(n, 1, size, size, generator=g)
        x[labels == 1, :, size // 4 : size // 2, size // 4 : size // 2] += 0.6
        views[view] = x.clamp(0, 1)
    text = [(ABNORMAL if y else NORMAL)[i % 4] for i, y in enumerate(labels.tolist())]
    return {**views, "text": text}, labels


def inputs_for(fusion: FusionModel, batch: dict) -> dict:
    return {k: batch[k] for k in fusion.names}


# ---------------------------------------------------------------------------------------------- networks
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_is_fuse_of_encode_bit_identical(arch):
    fusion = tiny(arch)
    net = fusion.model
    batch = inputs_for(fusion, stand_in(5)[0])
    assert tuple(net.towers) == tuple(fusion.names)
    with torch.no_grad():
        features = {n: net.encode(n, batch[n]) for n in net.towers}
        fused = net.fuse(features)
        direct = net(**batch)
        wrapped = fusion(batch)
    assert all(f.ndim == 2 and f.shape[0] == 5 for f in features.values())
    assert fused.shape == (5, 2)
    assert torch.equal(direct, fused) and torch.equal(wrapped, fused)
    # a cached tower (the fixed image while the text is attacked) gives the same logits
    if "text" in net.towers and len(net.towers) > 1:
        with torch.no_grad():
            again = net.fuse({**features, "text": net.encode("text", list(batch["text"]))})
        assert torch.equal(again, fused)


@pytest.mark.parametrize(
    ("arch", "names"),
    [("vl-vision", ["frontal", "lateral"]), ("vl-language", ["text"]),
     ("vl-early-fusion", ["frontal", "lateral", "text"]), ("vl-late-fusion", ["frontal", "lateral", "text"])],
)
def test_fusion_wrapping_and_predict(arch, names):
    fusion = tiny(arch)
    assert isinstance(fusion, FusionModel) and not fusion.training
    assert fusion.names == names and fusion.task == "classification" and fusion.num_classes == 2
    batch, labels = stand_in(4)
    sub = inputs_for(fusion, batch)
    fusion.validate_inputs(sub)
    assert fusion(sub).shape == (4, 2)
    pred = fusion.predict(sub)
    assert pred.shape == (4,) and pred.dtype == torch.long
    assert T.accuracy(fusion, sub, labels, batch_size=3) in {0.0, 0.25, 0.5, 0.75, 1.0}


def test_single_view_and_unshared_backbones():
    one = tiny("vl-vision", views=("frontal",))
    assert one.names == ["frontal"]
    assert one(frontal=torch.rand(2, 1, SIZE, SIZE)).shape == (2, 2)
    two = tiny("vl-early-fusion", shared_backbone=False)
    assert set(two.model.backbones) == {"frontal", "lateral"}
    batch = inputs_for(two, stand_in(3)[0])
    with torch.no_grad():
        assert torch.equal(two(batch), two.model.fuse({n: two.model.encode(n, batch[n]) for n in two.model.towers}))


def test_protocol_errors():
    fusion = tiny("vl-early-fusion")
    net = fusion.model
    x = torch.rand(2, 1, SIZE, SIZE)
    with pytest.raises(TypeError, match="takes"):
        net(frontal=x, lateral=x)
    with pytest.raises(KeyError, match="unknown tower"):
        net.encode("rgb", x)
    with pytest.raises(KeyError, match="missing"):
        net.fuse({"frontal": net.encode("frontal", x)})
    with pytest.raises(TypeError, match="list of strings"):
        net.encode("text", "one string, not a list")
    with pytest.raises(TypeError, match="no text tower"):
        tiny("vl-vision").model.count_tokens(["a"])
    with pytest.raises(ValueError, match="max_text_tokens"):
        tiny("vl-language", max_text_tokens=10_000)


@pytest.mark.parametrize("arch", ["vl-vision", "vl-early-fusion", "vl-late-fusion"])
def test_gradients_reach_both_views(arch):
    fusion = tiny(arch)
    batch, labels = stand_in(4)
    images = {v: batch[v].clone().requires_grad_(True) for v in ("frontal", "lateral")}
    inputs = {**inputs_for(fusion, batch), **images}
    torch.nn.functional.cross_entropy(fusion(inputs), labels).backward()
    for view, x in images.items():
        assert x.grad is not None and x.grad.abs().sum() > 0, view


def test_late_fusion_branches():
    fusion = tiny("vl-late-fusion")
    net = fusion.model
    assert isinstance(net, LateFusionClassifier)
    batch = inputs_for(fusion, stand_in(3)[0])
    with torch.no_grad():
        feats = {n: net.encode(n, batch[n]) for n in net.towers}
        branches = net.branch_logits(feats)
        assert branches["image"].shape == branches["text"].shape == (3, 2)
        assert torch.equal(net.head(torch.cat([branches["image"], branches["text"]], 1)), fusion(batch))


# ---------------------------------------------------------------------------------------------- text
def test_tokens_counted_and_truncated():
    net = tiny("vl-language").model
    assert net.max_text_tokens == 24
    long = " ".join(["effusion"] * 60)
    counts = net.count_tokens(["normal chest", long])
    assert counts[0] == 4  # [CLS] normal chest [SEP]
    assert counts[1] > net.max_text_tokens
    enc = net.tokenize(["normal chest", long])
    assert enc["input_ids"].shape == (2, net.max_text_tokens)
    assert net(text=["normal chest", long]).shape == (2, 2)
    assert tiny("vl-vision").model.max_text_tokens is None


def test_tokenised_inputs_follow_device_and_dtype():
    fusion = tiny("vl-early-fusion").double()
    batch = stand_in(2)[0]
    enc = fusion.model.tokenize(batch["text"])
    assert enc["input_ids"].dtype == torch.long and enc["input_ids"].device == fusion.device
    out = fusion(inputs_for(fusion, batch))  # float32 images are cast to the model's float64
    assert out.dtype == torch.float64
    tower = TextTower("tiny-random", max_text_tokens=8).to("meta")
    assert all(v.device.type == "meta" for v in tower.tokenize(["normal chest"]).values())
    if torch.cuda.is_available():
        gpu = tiny("vl-language").to("cuda")
        assert gpu.model.tokenize(["a"])["input_ids"].device.type == "cuda"
        assert gpu({"text": ["normal chest"]}).device.type == "cuda"


def test_frozen_text_tower_stays_in_eval_mode():
    fusion = tiny("vl-early-fusion", freeze_text=True)
    fusion.train()
    assert fusion.model.backbone.training and not fusion.model.text_tower.training
    assert not any(p.requires_grad for p in fusion.model.text_tower.parameters())
    assert fusion.model.frozen_towers == ("text",)
    assert fusion.model.text_tower.set_frozen(False).training is False  # unfrozen: next train() applies
    fusion.train()
    assert fusion.model.text_tower.training and fusion.model.frozen_towers == ()


def test_packaged_minilm_offline():
    """The one test that loads the real pretrained all-MiniLM-L6-v2 (from the PyPI package, offline)."""
    fusion = create_model("vl-language", max_text_tokens=32)
    tower = fusion.model.text_tower
    assert tower.source == "all-MiniLM-L6-v2" and tower.out_features == 384
    assert getattr(tower.model, "pooler", None) is None  # [CLS] pooling: the unused pooler is dropped
    counts = fusion.model.count_tokens(["No acute cardiopulmonary disease.", "effusion " * 40])
    assert counts[0] < 32 < counts[1]
    with torch.no_grad():
        logits = fusion({"text": ["No acute cardiopulmonary disease.", "There is a small right pleural effusion."]})
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


# ---------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("arch", ["vl-vision", "vl-late-fusion"])
def test_weights_round_trip(arch, tmp_path):
    fusion = tiny(arch)
    with torch.no_grad():
        for p in fusion.parameters():
            p.add_(0.01)
    path = tmp_path / "w.pt"
    torch.save(fusion.model.state_dict(), path)
    torch.manual_seed(123)  # a different initialisation, overwritten by the weights
    config = {**({} if arch == "vl-language" else TINY_IMAGE), **({} if arch == "vl-vision" else TINY_TEXT)}
    loaded = create_model(arch, weights=str(path), **config)
    batch = inputs_for(fusion, stand_in(3)[0])
    with torch.no_grad():
        assert torch.equal(loaded(batch), fusion.eval()(batch))
    with pytest.raises(WeightsMismatchError):
        create_model("vl-vision", weights=str(path), backbone="seresnet18", backbone_kwargs={"channels": (8, 8, 16, 32), "stem_width": 8})


# ---------------------------------------------------------------------------------------------- training
def _train(arch: str, seed: int = 0, **kwargs):
    fusion = tiny(arch)
    batch, labels = stand_in(12)
    history: list[float] = []
    options = {"epochs": 3, "batch_size": 4, "lr": 3e-3, "seed": seed, "progress": False, "history": history, **kwargs}
    T.train_classifier(fusion, inputs_for(fusion, batch), labels, **options)
    return fusion, history


def test_training_is_seeded_and_reduces_loss():
    a, hist_a = _train("vl-early-fusion")
    b, hist_b = _train("vl-early-fusion")
    c, _ = _train("vl-early-fusion", seed=1)
    assert not a.training and hist_a == hist_b and len(hist_a) == 3
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert hist_a[-1] < hist_a[0]


def test_training_leaves_global_rng_alone():
    fusion = tiny("vl-vision")
    batch, labels = stand_in(4)
    state = torch.get_rng_state()
    T.train_classifier(fusion, inputs_for(fusion, batch), labels, epochs=1, batch_size=2, progress=False)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(("arch", "options"), [("vl-language", {"optimizer": "adamw", "lr": 1e-2}),
                                               ("vl-late-fusion", {"loss": "bce", "lr": 1e-2})])
def test_training_fits_separable_stand_in(arch, options):
    fusion, history = _train(arch, epochs=6, **options)
    batch, labels = stand_in(12)
    assert history[-1] < history[0]
    assert T.accuracy(fusion, inputs_for(fusion, batch), labels) >= 0.75


def test_training_caches_frozen_text_tower():
    fusion = tiny("vl-late-fusion", freeze_text=True)
    before = {k: v.clone() for k, v in fusion.model.text_tower.state_dict().items()}
    batch, labels = stand_in(12)
    inputs = inputs_for(fusion, batch)
    features = T.tower_features(fusion, "text", inputs["text"], batch_size=5)
    assert features.shape == (12, fusion.model.text_tower.out_features)
    history: list[float] = []
    T.train_classifier(fusion, inputs, labels, epochs=2, batch_size=4, lr=1e-2, progress=False, history=history,
                       features={"text": features})
    assert all(torch.equal(v, fusion.model.text_tower.state_dict()[k]) for k, v in before.items())
    assert not fusion.training and len(history) == 2
    with pytest.raises(ValueError, match="frozen"):
        T.train_classifier(fusion, inputs, labels, epochs=1, features={"frontal": features}, progress=False)
    with pytest.raises(ValueError, match="text modalities only"):
        T.tower_features(fusion, "frontal", inputs["frontal"])


def test_training_ignores_modalities_the_model_does_not_take():
    fusion = tiny("vl-vision")
    batch, labels = stand_in(6)  # frontal, lateral and text: a dataset's tensors()
    T.train_classifier(fusion, batch, labels, epochs=1, batch_size=3, progress=False)
    assert not fusion.training


def test_training_validates_and_restores_mode():
    fusion = tiny("vl-language")
    batch, labels = stand_in(4)
    inputs = inputs_for(fusion, batch)
    with pytest.raises(ValueError, match="optimizer"):
        T.train_classifier(fusion, inputs, labels, optimizer="sgd")
    with pytest.raises(ValueError, match="labels"):
        T.train_classifier(fusion, inputs, labels.float())
    with pytest.raises(ValueError, match="lr"):
        T.train_classifier(fusion, inputs, labels, lr=float("inf"))
    fusion.train()
    with torch.no_grad():
        fusion.model.head.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="loss"):
        T.train_classifier(fusion, inputs, labels, epochs=1, progress=False)
    assert fusion.training  # the mode it had before the failed run


def test_param_lrs_and_bn_recalibration():
    fusion = tiny("vl-early-fusion", freeze_text=True)
    batch, labels = stand_in(10)
    inputs = inputs_for(fusion, batch)
    with pytest.raises(ValueError, match="match no trainable"):
        T.train_classifier(fusion, inputs, labels, param_lrs={"nothing": 1.0}, progress=False)
    head = fusion.model.head.weight.detach().clone()
    backbone = fusion.model.backbone.net.conv1.weight.detach().clone()
    T.train_classifier(fusion, inputs, labels, epochs=1, batch_size=4, lr=1e-12, param_lrs={"head": 1e-2}, progress=False)
    assert not torch.allclose(fusion.model.head.weight, head, atol=1e-4)
    assert torch.allclose(fusion.model.backbone.net.conv1.weight, backbone, atol=1e-9)
    norms = [m for m in fusion.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.1 for m in norms)
    # one pass over 10 cases in batches 4, 4, 2, each through the shared backbone once per view
    assert all(int(m.num_batches_tracked) == 6 for m in norms)


def test_recipes_documented():
    assert set(T.STUDY_RECIPES) == set(T.SYNTHETIC_RECIPES) == set(T.SYNTHETIC_CONFIGS) == set(ARCHS)
    assert T.STUDY_RECIPES["vl-late-fusion"].loss == "bce" and T.STUDY_RECIPES["vl-late-fusion"].lr == 1e-5
    assert T.STUDY_RECIPES["vl-language"].optimizer == "adamw"
    assert T.SYNTHETIC_RECIPES["vl-early-fusion"].kwargs()["param_lrs"] == {"head": 3e-2}
    for arch, recipe in T.SYNTHETIC_RECIPES.items():
        assert recipe.note, arch


def test_synthetic_default_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("MMFUSION_CACHE", str(tmp_path))
    monkeypatch.setitem(T.SYNTHETIC_CONFIGS, "vl-early-fusion", {**TINY_IMAGE, **TINY_TEXT, "freeze_text": True})
    monkeypatch.setitem(T.SYNTHETIC_RECIPES, "vl-early-fusion", T.Recipe("adam", 1e-3, 1, 4, "ce", "tiny"))
    first = T.vl_synthetic_default("vl-early-fusion", n_train=6, image_size=SIZE, progress=False)
    files = list(tmp_path.glob("vl-early-fusion-synthetic-xray-v*.pt"))
    assert len(files) == 1 and f"{SIZE}px-n6-seed0" in files[0].name
    again = T.vl_synthetic_default("vl-early-fusion", n_train=6, image_size=SIZE, progress=False)
    batch = inputs_for(first, stand_in(2)[0])
    with torch.no_grad():
        assert torch.equal(first(batch), again(batch))
    with pytest.raises(ValueError, match="arch"):
        T.vl_synthetic_default("mfnet")


def test_partial_state_round_trip(tmp_path):
    """The cache of a default with the packaged frozen encoder holds only the trained weights."""
    fusion = tiny("vl-late-fusion", freeze_text=True)
    path = tmp_path / "s.pt"
    T.save_state(fusion, path, ("text_tower.model.",))
    saved = torch.load(path, weights_only=True)
    assert saved and not any(k.startswith("text_tower.model.") for k in saved)
    fresh = tiny("vl-late-fusion", freeze_text=True)  # same seed: the same (random) encoder
    with torch.no_grad():
        for p in fresh.model.head.parameters():
            p.zero_()
    T.load_state(fresh, path, ("text_tower.model.",))
    batch = inputs_for(fusion, stand_in(2)[0])
    with torch.no_grad():
        assert torch.equal(fresh(batch), fusion(batch))
    with pytest.raises(RuntimeError, match="do not fit"):
        T.load_state(fresh, path, ())
