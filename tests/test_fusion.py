import pytest
import torch
from conftest import CLASSES, TinyFusionClassifier, TinyPackedSegmenter, make_batch
from torch import nn

from mmfusion_attacks import (
    FusionModel,
    LabelError,
    MissingModalityError,
    Modality,
    NonFiniteInputError,
    ShapeMismatchError,
    UnknownModalityError,
    ValueRangeError,
    unwrap_logits,
)


class Positional(nn.Module):
    def forward(self, a, b):
        return torch.stack([a.mean((1, 2, 3)), b.mean((1, 2, 3))], 1)


def test_named_positional_and_packed_styles_agree():
    batch = make_batch()
    net = TinyPackedSegmenter()
    packed = FusionModel(net, ["rgb", "ir"], task="segmentation", input_style="packed")
    custom = FusionModel(net, ["rgb", "ir"], task="segmentation", input_style=lambda m, x: m(torch.cat([x["rgb"], x["ir"]], 1)))
    assert torch.equal(packed(batch), custom(batch))
    pos = FusionModel(Positional(), ["rgb", "ir"], input_style="positional")
    out = pos(batch)
    assert torch.allclose(out[:, 1], batch["ir"].mean((1, 2, 3)))
    named = FusionModel(TinyFusionClassifier().eval(), ["rgb", "ir"])
    assert named(rgb=batch["rgb"], ir=batch["ir"]).shape == (3, CLASSES)


def test_arg_names_map_modalities_to_keywords():
    class Kw(nn.Module):
        def forward(self, image, thermal):
            return torch.cat([image.mean((2, 3)), thermal.mean((2, 3))], 1)

    fm = FusionModel(Kw(), ["rgb", "ir"], arg_names={"rgb": "image", "ir": "thermal"})
    assert fm(make_batch()).shape == (3, 4)


def test_output_unwrapping():
    t = torch.randn(2, 3)
    assert unwrap_logits(t) is t
    assert unwrap_logits({"out": t, "aux": t + 1}) is t
    assert unwrap_logits((t, None)) is t
    from transformers.modeling_outputs import SequenceClassifierOutput

    assert unwrap_logits(SequenceClassifierOutput(logits=t)) is t
    with pytest.raises(TypeError, match="output_key"):
        unwrap_logits({"a": t, "b": t})
    assert unwrap_logits({"a": t, "b": t + 1}, key="b") is not t


def test_normalisation_happens_inside_the_model():
    class Identity(nn.Module):
        def forward(self, rgb):
            return rgb.mean((2, 3))

    fm = FusionModel(Identity(), ["rgb"], normalize={"rgb": ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])})
    x = torch.full((1, 3, 2, 2), 0.75)
    assert torch.allclose(fm({"rgb": x}), torch.ones(1, 3))
    with pytest.raises(UnknownModalityError):
        FusionModel(Identity(), ["rgb"], normalize={"ir": (0, 1)})


def test_task_shape_is_checked():
    seg_as_cls = FusionModel(TinyPackedSegmenter(), ["rgb", "ir"], input_style="packed")
    with pytest.raises(ShapeMismatchError, match="classification model must return logits of shape \\(N, C\\)"):
        seg_as_cls(make_batch())
    wrong_classes = FusionModel(TinyPackedSegmenter(), ["rgb", "ir"], task="segmentation", input_style="packed", num_classes=9)
    with pytest.raises(ShapeMismatchError, match="num_classes=9"):
        wrong_classes(make_batch())


@pytest.fixture
def fm():
    return FusionModel(TinyFusionClassifier(), ["rgb", "ir"])


def test_bad_batches_raise_specific_errors(fm):
    b = make_batch()
    with pytest.raises(UnknownModalityError, match="'depth'"):
        fm.validate_inputs({**b, "depth": b["ir"]})
    with pytest.raises(MissingModalityError, match="'ir'"):
        fm.validate_inputs({"rgb": b["rgb"]})
    with pytest.raises(ShapeMismatchError, match="batch sizes differ.*'rgb': 3.*'ir': 2"):
        fm.validate_inputs({"rgb": b["rgb"], "ir": b["ir"][:2]})
    with pytest.raises(ShapeMismatchError, match="'ir': expected 1 channel"):
        fm.validate_inputs({"rgb": b["rgb"], "ir": b["rgb"]})
    with pytest.raises(NonFiniteInputError, match="'rgb'"):
        fm.validate_inputs({**b, "rgb": b["rgb"].clone().index_fill_(0, torch.tensor([1]), float("inf"))})
    with pytest.raises(ValueRangeError, match="'ir'"):
        fm.validate_inputs({**b, "ir": b["ir"] * 255})
    with pytest.raises(TypeError):
        fm.validate_inputs([b["rgb"], b["ir"]])


def test_label_checks(fm):
    logits = fm(make_batch())
    fm.validate_labels(torch.tensor([0, 1, 3]), logits)
    with pytest.raises(LabelError, match="outside \\[0, 4\\).*\\[4\\]"):
        fm.validate_labels(torch.tensor([0, 1, 4]), logits)
    with pytest.raises(LabelError, match="outside"):
        fm.validate_labels(torch.tensor([0, -1, 1]), logits)
    with pytest.raises(LabelError, match="shape \\(N,\\)"):
        fm.validate_labels(torch.zeros(3, 8, 8, dtype=torch.long), logits)
    with pytest.raises(LabelError, match="integer"):
        fm.validate_labels(torch.tensor([0.0, 1.0, 2.0]), logits)


def test_segmentation_labels_and_ignore_index():
    fm = FusionModel(TinyPackedSegmenter(), ["rgb", "ir"], task="segmentation", input_style="packed", ignore_index=255)
    logits = fm(make_batch())
    labels = torch.zeros(3, 8, 8, dtype=torch.long)
    labels[0, 0, 0] = 255
    fm.validate_labels(labels, logits)
    with pytest.raises(LabelError, match="\\(N, H, W\\)"):
        fm.validate_labels(torch.zeros(3, dtype=torch.long), logits)
    with pytest.raises(LabelError, match="\\(N, H, W\\)"):
        fm.validate_labels(torch.zeros(3, 4, 4, dtype=torch.long), logits)
    labels[1, 1, 1] = 7
    with pytest.raises(LabelError, match="\\[7\\]"):
        fm.validate_labels(labels, logits)


def test_construction_errors():
    with pytest.raises(ValueError, match="duplicate"):
        FusionModel(TinyFusionClassifier(), ["rgb", "rgb"])
    with pytest.raises(ValueError, match="packed"):
        FusionModel(TinyFusionClassifier(), ["rgb", "text"], input_style="packed")
    with pytest.raises(UnknownModalityError):
        FusionModel(TinyFusionClassifier(), ["rgb", "sonar"])
    with pytest.raises(ValueError, match="task"):
        FusionModel(TinyFusionClassifier(), ["rgb", "ir"], task="detection")


def test_predict_restores_mode():
    fm = FusionModel(TinyFusionClassifier(), ["rgb", "ir"]).train()
    pred = fm.predict(make_batch())
    assert pred.shape == (3,) and fm.training
    first = next(m for m in fm.model.modules() if m is not fm.model)
    first.eval()  # a training model with one module kept in eval (frozen batch norm): modes stay mixed
    modes = [m.training for m in fm.modules()]
    fm.predict(make_batch())
    assert [m.training for m in fm.modules()] == modes and not first.training


def test_text_modality_passes_through_a_custom_call():
    class CaptionLength(nn.Module):
        def forward(self, image, lengths):
            return torch.stack([image.mean((1, 2, 3)), lengths], 1)

    fm = FusionModel(
        CaptionLength(),
        ["image", Modality("caption", "text")],
        input_style=lambda m, x: m(x["image"], torch.tensor([float(len(t)) for t in x["caption"]])),
    )
    out = fm({"image": torch.rand(2, 3, 4, 4), "caption": ["a cat", "a big dog"]})
    assert out[:, 1].tolist() == [5.0, 9.0]


def test_amp_runs_the_model_in_bfloat16_and_returns_float32_logits(trained_segmenter):
    batch = make_batch(seed=3)
    reference = trained_segmenter(batch)
    seen = []
    handle = trained_segmenter.model.body[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        logits = trained_segmenter.use_amp()(batch)
    finally:
        trained_segmenter.use_amp(None)
        handle.remove()
    assert seen == [torch.bfloat16] and logits.dtype == torch.float32
    assert (logits.argmax(1) == reference.argmax(1)).float().mean() > 0.9
    assert trained_segmenter.amp_dtype is None and trained_segmenter(batch).dtype == torch.float32


def test_amp_attacks_keep_the_contract(trained_segmenter):
    import torchattacks
    from conftest import rule_labels
    from mmfusion_attacks.adapters.torchattacks import to_torchattacks

    from mmfusion_attacks import run_attack

    batch = make_batch(seed=4)
    labels = rule_labels(batch)
    trained_segmenter.use_amp()
    try:
        attack = torchattacks.PGD(to_torchattacks(trained_segmenter, "ir"), eps=16 / 255, alpha=4 / 255, steps=5)
        result = run_attack(attack, batch, labels)
    finally:
        trained_segmenter.use_amp(None)
    assert torch.equal(result.inputs["rgb"], batch["rgb"]) and result.inputs["ir"].dtype == torch.float32
    assert float(result.norms["ir"]["linf"].max()) <= 16 / 255 + 1e-6
    assert (result.adv_pred != result.clean_pred).float().mean() > 0.05  # bfloat16 gradients still move it


def test_amp_takes_only_half_precision_dtypes(classifier):
    with pytest.raises(ValueError, match="use_amp takes"):
        classifier.use_amp(torch.int8)


class AuxMain(nn.Module):
    """Returns (aux, main) like deep-supervision networks: the aux head is a constant guess."""

    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Linear(2, 3)

    def forward(self, rgb, ir):
        feats = torch.stack([rgb.mean((1, 2, 3)), ir.mean((1, 2, 3))], 1)
        main = self.main(feats)
        aux = torch.zeros_like(main)
        aux[:, 2] = 10.0
        return aux, main


def test_a_tuple_of_several_tensors_needs_a_selector_before_any_attack():
    import torchattacks

    from mmfusion_attacks import ModelOutputError, run_attack

    fusion = FusionModel(AuxMain(), ["rgb", "ir"], num_classes=3).eval()
    with pytest.raises(ModelOutputError, match=r"2 tensors .*output=1"):
        run_attack(torchattacks.PGD(fusion.surface("ir"), eps=8 / 255, steps=2), make_batch(), torch.zeros(3, dtype=torch.long))
    picked = FusionModel(AuxMain(), ["rgb", "ir"], num_classes=3, output=1).eval()
    x = make_batch()
    ref = picked.model(x["rgb"], x["ir"])[1]
    assert torch.equal(picked(x), ref)
    by_call = FusionModel(picked.model, ["rgb", "ir"], num_classes=3, output=lambda out: out[1])
    assert torch.equal(by_call(x), ref)
    with pytest.raises(ModelOutputError, match="item 5"):
        FusionModel(AuxMain(), ["rgb", "ir"], output=5)(x)
    with pytest.raises(ValueError, match="disagree"):
        FusionModel(AuxMain(), ["rgb", "ir"], output="a", output_key="b")
    assert unwrap_logits({"a": x["rgb"], "b": x["ir"]}, key="b") is x["ir"]
    with pytest.raises(ModelOutputError, match="no tensor under that key"):
        unwrap_logits({"a": x["rgb"]}, key="b")


@pytest.mark.parametrize("shape", [(2, 3, 0, 0), (2, 3, 0, 8), (2, 3, 8, 0)])
def test_empty_images_fail_validation(shape, fm):
    batch = make_batch()
    batch["rgb"] = torch.rand(*shape)
    with pytest.raises(ShapeMismatchError, match="'rgb': every sample is empty"):
        fm.validate_inputs(batch)


def test_a_model_that_edits_its_text_list_never_reaches_the_callers_list():
    class Editor(nn.Module):
        def forward(self, image, text):
            text.append("extra")  # in place, on the list it was given
            text[0] = text[0] + " mutated"
            return torch.stack([image.flatten(1).mean(1), torch.tensor([float(len(t)) for t in text[: len(image)]])], 1)

    fusion = FusionModel(Editor(), [Modality("image", "image", 1, valid_range=None), "text"], num_classes=2)
    batch = {"image": torch.zeros(2, 1, 2, 2), "text": ["first words", "second words"]}
    first = fusion(batch)
    second = fusion(batch)
    assert batch["text"] == ["first words", "second words"]
    assert torch.equal(first, second)
