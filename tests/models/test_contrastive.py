"""Contrastive models as FusionModels: zero-shot classification and caption retrieval on a tiny random
CLIPModel (offline), a user's own dual encoder, and the CLIP-like model's towers (random text tower)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmfusion_attacks import run_attack
from mmfusion_attacks.errors import InputError, RowAlignmentError, ShapeMismatchError, TextInputError
from mmfusion_attacks.models import create_model
from mmfusion_attacks.models.contrastive import (
    PROMPT_SEPARATOR,
    CaptionMatcher,
    DualEncoder,
    ZeroShotClassifier,
    caption_matching_model,
    clip_encoder,
    dual_encoder,
    from_clip,
    retrieval_recall,
    tiny_clip,
    zero_shot_model,
)
from mmfusion_attacks.recipes import make_attack

CLASSES = ("t-shirt", "trouser", "sneaker", "bag")


@pytest.fixture(scope="module")
def clip():
    return tiny_clip(image_size=32, context=48, seed=0)


@pytest.fixture(scope="module")
def fusion(clip):
    model, tok = clip
    return from_clip(model, tok, CLASSES)


@pytest.fixture(scope="module")
def images():
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------------------------------------- zero-shot
def test_zero_shot_logits_are_scaled_cosines(fusion, clip, images):
    model, tok = clip
    batch = fusion.model.batch(images)
    assert batch["prompts"][0] == PROMPT_SEPARATOR.join(f"a photo of a {c}." for c in CLASSES)
    logits = fusion(batch)
    assert logits.shape == (6, len(CLASSES))
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=(images - mean) / std)
        txt = model.get_text_features(**tok([f"a photo of a {c}." for c in CLASSES], padding=True, return_tensors="pt"))
        want = model.logit_scale.exp() * nn.functional.normalize(img, dim=-1) @ nn.functional.normalize(txt, dim=-1).T
    assert torch.allclose(logits.detach(), want, atol=1e-5)
    # the tower protocol: held image features reused by the text adapter equal the full forward
    assert fusion.towers == ("image", "prompts")
    feats = {n: fusion.encode(n, batch[n]) for n in fusion.towers}
    assert torch.equal(fusion.fuse(feats), logits)


def test_prompts_are_per_example_and_change_the_logits(fusion, images):
    batch = fusion.model.batch(images[:2])
    swapped = dict(batch, prompts=[batch["prompts"][0], batch["prompts"][1].replace("sneaker", "sandal")])
    a, b = fusion(batch), fusion(swapped)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1, 2], b[1, 2]) and torch.equal(a[1, :2], b[1, :2])


@pytest.mark.parametrize("toolkit", ["torchattacks", "art"])
def test_image_attack_changes_predictions_prompts_identical(fusion, images, toolkit):
    batch = fusion.model.batch(images)
    clean = fusion.predict(batch)
    atk = make_attack("pgd", fusion, "image", toolkit=toolkit, eps=16 / 255, steps=10)
    result = run_attack(atk, batch, clean)
    assert result.inputs["prompts"] == batch["prompts"]
    assert not torch.equal(result.inputs["image"], batch["image"])
    assert result.norms["image"]["linf"].max() <= 16 / 255 + 1e-6
    assert bool(result.success.any())
    assert not torch.equal(fusion.predict(result.inputs), clean)


def test_text_attack_changes_only_the_prompts(fusion, images):
    ta = pytest.importorskip("mmfusion_attacks.adapters.textattack")
    from mmfusion_attacks.text.recipes import build_text_attack

    batch = fusion.model.batch(images[:3])
    clean = fusion.predict(batch)
    wrapper = ta.FusionModelWrapper(fusion)
    assert wrapper.uses_towers  # each held image encoded once
    attack = build_text_attack("deepwordbug", wrapper, query_budget=60)
    result = run_attack(attack, batch, clean)
    assert torch.equal(result.inputs["image"], batch["image"])
    changed = [i for i in range(3) if result.inputs["prompts"][i] != batch["prompts"][i]]
    assert changed and bool(result.success.any())
    for i in changed:  # still one prompt per class
        assert len(result.inputs["prompts"][i].split(PROMPT_SEPARATOR.strip())) == len(CLASSES)
    assert torch.equal(fusion.predict(result.inputs) != clean, result.success)


# ---------------------------------------------------------------------------------------------- errors before work
def test_wrong_image_size_raises_before_work(fusion):
    batch = fusion.model.batch(torch.rand(2, 3, 48, 48))
    atk = make_attack("pgd", fusion, "image", eps=8 / 255, steps=2)
    with pytest.raises(ShapeMismatchError, match=r"modality 'image'.*\(3, 32, 32\)"):
        run_attack(atk, batch, torch.tensor([0, 1]))
    with pytest.raises(ShapeMismatchError, match=r"modality 'image'.*32x32"):
        fusion(batch)  # the unvalidated forward too: before the vision tower runs


def test_too_long_prompts_raise_naming_the_row(fusion, images):
    net = fusion.model
    batch = net.batch(images[:3])
    long = batch["prompts"][2].replace("a photo of a bag.", "a photo of a bag " + "with a very long strap " * 3 + ".")
    bad = dict(batch, prompts=[*batch["prompts"][:2], long])
    assert net.count_tokens(bad["prompts"])[2] > net.max_text_tokens == 48
    with pytest.raises(TextInputError, match=r"modality 'prompts': row 2, the prompt of class 'bag'.*text_config.max_position_embeddings"):
        fusion(bad)
    atk = make_attack("pgd", fusion, "image", eps=8 / 255, steps=2)
    with pytest.raises(TextInputError, match="row 2"):
        run_attack(atk, bad, torch.tensor([0, 1, 2]))
    ta = pytest.importorskip("mmfusion_attacks.adapters.textattack")
    from mmfusion_attacks.text.recipes import build_text_attack

    wrapper = ta.FusionModelWrapper(fusion)
    attack = build_text_attack("deepwordbug", wrapper, query_budget=5)
    calls = wrapper.calls
    with pytest.raises(TextInputError, match=r"rows \[2\]"):
        run_attack(attack, bad, torch.tensor([0, 1, 2]))
    assert wrapper.calls == calls  # refused before any query
    model, tok = tiny_clip(context=32)
    with pytest.raises(TextInputError, match=r"^the prompt of class 'ankle boot' .* 33 tokens, more than the model's text context of 32"):
        from_clip(model, tok, ["bag", "ankle boot"], template="a low resolution photo of a {}")


def test_prompt_sets_of_the_wrong_size_are_refused(fusion, images):
    batch = fusion.model.batch(images[:2])
    bad = dict(batch, prompts=[batch["prompts"][0], "a photo of a bag."])
    with pytest.raises(TextInputError, match=r"row 1 holds 1 prompt\(s\), the classifier has 4 classes"):
        fusion(bad)
    with pytest.raises(ValueError, match="must not contain"):
        ZeroShotClassifier(fusion.model.encoder, ["a|b", "c"])
    with pytest.raises(ValueError, match="two distinct"):
        ZeroShotClassifier(fusion.model.encoder, ["bag", "bag"])


def test_registered_tiny_clip_and_processor_tokenizer(clip):
    fusion = create_model("clip-tiny", class_names=("cat", "dog", "car"))
    assert fusion.num_classes == 3 and fusion.model.prompts[1] == "a photo of a dog."

    class Processor:  # a CLIPProcessor-like object: its tokenizer is used
        def __init__(self, tokenizer):
            self.tokenizer = tokenizer

    model, tok = clip
    enc = clip_encoder(model, Processor(tok))
    assert enc.tokenizer is tok and enc.image_size == (32, 32) and enc.max_text_tokens == 48
    with pytest.raises(TypeError, match="CLIPModel"):
        clip_encoder(nn.Linear(2, 2), tok)


# ---------------------------------------------------------------------------------------------- own dual encoder
class WordBag(nn.Module):
    """A text tower over hashed words (tokenises inside), with count_tokens / max_text_tokens."""

    max_text_tokens = 12

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.emb = nn.EmbeddingBag(97, dim)

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]

    def forward(self, texts):
        ids = [torch.tensor([sum(map(ord, w)) % 97 for w in t.split()] or [0]) for t in texts]
        offsets = torch.tensor([0, *torch.tensor([len(i) for i in ids]).cumsum(0)[:-1].tolist()])
        return self.emb(torch.cat(ids), offsets)


def own_encoder(seed: int = 0) -> DualEncoder:
    torch.manual_seed(seed)
    image = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    return dual_encoder(image, WordBag(), nn.Linear(32, 8), nn.Linear(16, 8), temperature=0.05, image_size=16, channels=1)


def test_own_dual_encoder_zero_shot():
    enc = own_encoder()
    fusion = zero_shot_model(enc, ["bag", "boot", "coat"], template="{} photo")
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    batch = fusion.model.batch(x)
    logits = fusion(batch)
    assert logits.shape == (4, 3) and float(logits.detach().abs().max()) <= 1 / 0.05 + 1e-4
    result = run_attack(make_attack("pgd", fusion, "image", eps=0.2, steps=10), batch, fusion.predict(batch))
    assert result.inputs["prompts"] == batch["prompts"] and bool(result.success.any())
    with pytest.raises(TextInputError, match="more than the model's text context of 12"):
        fusion(dict(batch, prompts=["bag photo | boot photo | " + "coat " * 13] * 4))
    with pytest.raises(ShapeMismatchError, match="1 channel"):
        fusion(fusion.model.batch(torch.rand(4, 3, 16, 16)))


# ---------------------------------------------------------------------------------------------- retrieval
CAPTIONS = ["a red bag", "a blue boot", "a green coat", "a white shirt", "a black sneaker"]


def test_caption_matcher_scores_the_right_caption():
    enc = own_encoder(1)
    x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    fusion = caption_matching_model(enc, x, CAPTIONS)
    batch = {"image": x, "caption": list(CAPTIONS)}
    logits = fusion(batch)
    with torch.no_grad():
        want = enc.scale() * enc.image_features(x) @ enc.text_features(CAPTIONS).T
    assert torch.allclose(logits.detach(), want, atol=1e-5)
    top1 = float((logits.argmax(1) == torch.arange(5)).float().mean())
    assert retrieval_recall(fusion, x, CAPTIONS, k=(1, 5)) == {"R@1": pytest.approx(top1), "R@5": 1.0}
    # an attacked caption (image held) replaces only its own column
    edited = ["a red bag", "a blue boot with laces", *CAPTIONS[2:]]
    got = fusion({"image": x, "caption": edited})
    assert torch.equal(got[0], logits[0]) and torch.equal(got[1, [0, 2, 3, 4]], logits[1, [0, 2, 3, 4]])
    assert not torch.equal(got[1, 1], logits[1, 1])
    assert retrieval_recall(enc, x, edited, 1, reference=CAPTIONS)["R@1"] == pytest.approx(
        float((got.argmax(1) == torch.arange(5)).float().mean()))
    # an attacked image (caption held) is found by its caption; neither held: refused
    moved = x.clone()
    moved[0] += 0.01
    assert fusion({"image": moved, "caption": list(CAPTIONS)}).shape == (5, 5)
    with pytest.raises(RowAlignmentError, match="row 0: neither its image nor its caption"):
        fusion({"image": moved, "caption": ["a pink bag", *CAPTIONS[1:]]})


def test_retrieval_under_image_and_caption_attacks(clip):
    model, tok = clip
    enc = clip_encoder(model, tok)
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    fusion = caption_matching_model(enc, x, CAPTIONS)
    batch, labels = {"image": x, "caption": list(CAPTIONS)}, torch.arange(5)
    before = retrieval_recall(enc, x, CAPTIONS, k=(1, 5))
    result = run_attack(make_attack("pgd", fusion, "image", eps=16 / 255, steps=10), batch, labels)
    assert result.inputs["caption"] == CAPTIONS
    after = retrieval_recall(enc, result.inputs["image"], CAPTIONS, k=(1, 5))
    assert after["R@1"] < before["R@1"] or before["R@1"] == 0
    assert after["R@1"] == pytest.approx(1 - float(result.success.float().mean()))
    ta = pytest.importorskip("mmfusion_attacks.adapters.textattack")
    from mmfusion_attacks.text.recipes import build_text_attack

    attack = build_text_attack("deepwordbug", ta.FusionModelWrapper(fusion), query_budget=40)
    texts = run_attack(attack, batch, labels)
    assert torch.equal(texts.inputs["image"], x)
    adv = texts.inputs["caption"]
    attacked = retrieval_recall(enc, x, adv, 1, reference=CAPTIONS)["R@1"]
    assert attacked == pytest.approx(1 - float(texts.success.float().mean()))


def test_matcher_and_recall_errors():
    enc = own_encoder()
    x = torch.rand(3, 1, 16, 16)
    with pytest.raises(ShapeMismatchError, match="gallery"):
        CaptionMatcher(enc, x, ["a", "b"])
    with pytest.raises(TextInputError, match="gallery caption 1"):
        CaptionMatcher(enc, x, ["a", "word " * 13, "c"])
    # one image under two captions (COCO style): its row's own score would land in both columns
    with pytest.raises(InputError, match="gallery images 0 and 1 are identical, with different captions"):
        CaptionMatcher(enc, torch.stack([x[0], x[0], x[2]]), ["a red bag", "a small leather bag", "a blue boot"])
    CaptionMatcher(enc, torch.stack([x[0], x[0], x[2]]), ["a red bag", "a red bag", "a blue boot"])  # a repeated pair is harmless
    with pytest.raises(ShapeMismatchError, match="as many images as captions"):
        retrieval_recall(enc, x, ["a", "b"])
    with pytest.raises(ValueError, match="direction"):
        retrieval_recall(enc, x, ["a", "b", "c"], direction="sideways")
    assert set(retrieval_recall(enc, x, ["a", "b", "c"], k=2, direction="text-to-image")) == {"R@2"}


# ---------------------------------------------------------------------------------------------- CLIP-like
def test_efficientnet_lite0_package_weights_fit_timm():
    from mmfusion_attacks.models.clip_like import EfficientNetLite0, efficientnet_lite0_weights

    tower = EfficientNetLite0(32)
    weights = efficientnet_lite0_weights()
    assert torch.equal(tower.net.conv_stem.weight, weights["_conv_stem.weight"])
    assert torch.equal(tower.net.conv_head.weight, weights["_conv_head.weight"])
    tower.train()
    assert not tower.training and not any(p.requires_grad for p in tower.parameters())
    assert tower(torch.rand(2, 1, 28, 28)).shape == (2, 1280)


def test_clip_like_training_on_features_is_seeded_and_learns():
    from mmfusion_attacks.models.clip_like import train_clip_like

    def encoder():
        torch.manual_seed(0)
        return dual_encoder(nn.Identity(), nn.Identity(), nn.Linear(6, 4), None, temperature=0.07, learn_temperature=True)

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    centres = torch.randn(3, 6, generator=g)
    feats = centres[labels] + 0.1 * torch.randn(60, 6, generator=g)
    captions = torch.randn(3, 2, 4, generator=g)
    a, b = encoder(), encoder()
    hist = train_clip_like(a, feats, labels, captions, epochs=15, batch_size=16, seed=3)
    train_clip_like(b, feats, labels, captions, epochs=15, batch_size=16, seed=3)
    assert hist[-1] < hist[0]
    assert torch.equal(a.image_projection.weight, b.image_projection.weight)


def test_clip_like_zero_shot_wiring_with_random_towers():
    from mmfusion_attacks.models.clip_like import CLIPLikeEncoder, clip_like

    torch.manual_seed(0)
    enc = CLIPLikeEncoder(text_encoder="tiny-random", pretrained_image=False, input_size=32).eval()
    fusion = create_model("clip-like", classes="held-out", encoder=enc)
    assert fusion.model.class_names == ("trouser", "sneaker", "shirt")
    assert clip_like(classes=["bag", "coat"], encoder=enc).model.prompts == ("a photo of a bag.", "a photo of a coat.")
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    batch = fusion.model.batch(x)
    result = run_attack(make_attack("fgsm", fusion, "image", eps=8 / 255), batch, fusion.predict(batch))
    assert result.inputs["prompts"] == batch["prompts"] and result.norms["image"]["linf"].max() <= 8 / 255 + 1e-6
    with pytest.raises(ShapeMismatchError, match=r"modality 'image'.*\(1, 28, 28\)"):
        run_attack(make_attack("fgsm", fusion, "image", eps=8 / 255), fusion.model.batch(torch.rand(2, 1, 32, 32)), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="classes must be"):
        clip_like(classes="unseen", encoder=enc)
