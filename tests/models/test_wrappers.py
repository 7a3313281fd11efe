import pytest
import torch
from conftest import make_batch
from mmfusion_attacks.adapters.torchattacks import to_torchattacks

from mmfusion_attacks import run_attack
from mmfusion_attacks.models import create_model
from mmfusion_attacks.models.wrappers import at_scale, multiscale, random_resize_pad
from mmfusion_attacks.recipes import make_attack


@pytest.fixture
def base():
    torch.manual_seed(0)
    return create_model("tiny-rgbt-segmenter", num_classes=9)


def test_fixed_scale_and_multiscale(base):
    b = make_batch(n=2, size=32)
    assert torch.allclose(at_scale(base, 1.0, size_multiple=2)(b), base(b))
    half = at_scale(base, 0.5, size_multiple=2)
    small = {k: torch.nn.functional.interpolate(v, size=(16, 16), mode="bilinear", align_corners=False) for k, v in b.items()}
    expected = torch.nn.functional.interpolate(base(small), size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(half(b), expected, atol=1e-6)
    ms = multiscale(base, (0.5, 1.0), size_multiple=2)
    assert torch.allclose(ms(b), (half(b) + base(b)) / 2, atol=1e-6)
    assert ms.names == base.names and ms.task == "segmentation"


def test_random_resize_pad_is_random_and_shape_preserving(base):
    b = make_batch(n=2, size=32)
    defended = random_resize_pad(base, 0.8, 1.2, size_multiple=2)
    torch.manual_seed(0)
    first = defended(b)
    second = defended(b)
    assert first.shape == (2, 9, 32, 32) and not torch.allclose(first, second)
    with pytest.raises(ValueError):
        random_resize_pad(base, 1.2, 0.8)


def test_eot_through_the_defence_keeps_the_contract(base):
    b = make_batch(n=2, size=32)
    defended = random_resize_pad(base, 0.9, 1.1, size_multiple=2)
    atk = make_attack("eotpgd", defended, "ir", eps=8 / 255, steps=2, eot_iter=2)
    result = run_attack(atk, b)
    assert torch.equal(result.inputs["rgb"], b["rgb"])
    assert float(result.norms["ir"]["linf"].max()) <= 8 / 255 + 1e-6
    # torchattacks sees the defended surface, not the base model
    assert to_torchattacks(defended, "ir").fusion is defended
