import pytest
import torch

from mmfusion_attacks import (
    InputError,
    Modality,
    NonFiniteInputError,
    ShapeMismatchError,
    ThreatModel,
    UnknownModalityError,
    ValueRangeError,
    get_modality,
    list_modalities,
    register_modality,
)
from mmfusion_attacks.modality import normalize_norm


def test_presets_cover_the_common_sensors():
    assert {"rgb", "ir", "depth", "image", "text", "audio"} <= set(list_modalities())
    rgb = get_modality("rgb")
    assert rgb.channels == 3 and rgb.valid_range == (0.0, 1.0) and rgb.threat.norm == "inf"
    assert get_modality("text").threat is None


def test_unknown_preset_names_the_modality():
    with pytest.raises(UnknownModalityError, match="'lidar'"):
        get_modality("lidar")


def test_register_and_replace():
    lidar = register_modality(Modality("lidar-test", "image", 2, valid_range=(0, 80), threat=ThreatModel("2", 0.5)))
    assert get_modality("lidar-test") is lidar
    with pytest.raises(ValueError, match="already registered"):
        register_modality(lidar)
    tighter = lidar.replace(eps=0.1)
    assert tighter.threat == ThreatModel("2", 0.1) and lidar.threat.eps == 0.5


@pytest.mark.parametrize("spelling,expected", [("linf", "inf"), (float("inf"), "inf"), ("L2", "2"), (2, "2"), ("inf", "inf")])
def test_norm_spellings(spelling, expected):
    assert normalize_norm(spelling) == expected


def test_threat_model_rejects_negative_eps():
    with pytest.raises(ValueError):
        ThreatModel("inf", -1)


def test_image_validation_errors_name_the_modality():
    ir = get_modality("ir")
    with pytest.raises(ShapeMismatchError, match="'ir'.*1 channel"):
        ir.validate(torch.rand(2, 3, 4, 4))
    with pytest.raises(ShapeMismatchError, match="'ir'.*\\(N, C, H, W\\)"):
        ir.validate(torch.rand(2, 4, 4))
    with pytest.raises(NonFiniteInputError, match="'ir'.*NaN"):
        ir.validate(torch.full((1, 1, 2, 2), float("nan")))
    with pytest.raises(ValueRangeError, match="'ir'.*outside the valid range"):
        ir.validate(torch.full((1, 1, 2, 2), 2.0))
    with pytest.raises(ShapeMismatchError, match="floating-point"):
        ir.validate(torch.ones(1, 1, 2, 2, dtype=torch.uint8))


def test_text_and_tensor_validation():
    text = get_modality("text")
    assert text.validate(["a chest x-ray", "no finding"]) == 2
    with pytest.raises(InputError, match="'text'.*item 1 is empty"):
        text.validate(["ok", "   "])
    with pytest.raises(ShapeMismatchError, match="list of strings"):
        text.validate("not a list")
    audio = get_modality("audio")
    assert audio.validate(torch.zeros(3, 100)) == 3
    with pytest.raises(ShapeMismatchError, match="'audio'.*per-sample shape"):
        audio.validate(torch.zeros(3, 1, 100))
