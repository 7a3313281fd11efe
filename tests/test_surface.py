import pytest
import torch
from conftest import TinyFusionClassifier, make_batch
from torch import nn

from mmfusion_attacks import (
    AttackSurface,
    EmptySubsetError,
    FusionModel,
    Modality,
    RowAlignmentError,
    UnknownModalityError,
    UnsupportedAttackError,
)


@pytest.fixture
def fm():
    return FusionModel(TinyFusionClassifier().eval(), ["rgb", "ir"])


def test_channel_packing_round_trip(fm):
    batch = make_batch()
    s = fm.surface(["ir", "rgb"])  # order follows the model's modalities
    assert s.attacked == ("rgb", "ir") and s.frozen == ()
    x = s.bind(batch)
    assert x.shape == (3, 4, 8, 8)
    assert x.data_ptr() != batch["rgb"].data_ptr()
    parts = s.unpack(x)
    assert torch.equal(parts["rgb"], batch["rgb"]) and torch.equal(parts["ir"], batch["ir"])
    assert s.per_element({"rgb": 1.0, "ir": 2.0}).flatten().tolist() == [1, 1, 1, 2]


def test_flat_packing_for_mixed_shapes():
    class ImageAudio(nn.Module):
        def forward(self, image, audio):
            return torch.stack([image.mean((1, 2, 3)), audio.mean(1)], 1)

    fm = FusionModel(ImageAudio(), ["image", "audio"])
    batch = {"image": torch.rand(2, 3, 4, 4), "audio": torch.rand(2, 10) * 2 - 1}
    s = fm.surface(["image", "audio"])
    x = s.bind(batch)
    assert x.shape == (2, 48 + 10) and s.packing.layout == "flat"
    assert torch.equal(s.unpack(x)["audio"], batch["audio"])
    lo, hi = s.bounds()
    assert lo.flatten()[:48].eq(0).all() and lo.flatten()[48:].eq(-1).all() and hi.eq(1).all()
    assert torch.allclose(s(x), fm(batch))


def test_surface_output_matches_the_full_model(fm):
    batch = make_batch()
    s = fm.surface("ir")
    with s.bound(batch) as x:
        assert x.shape == (3, 1, 8, 8)
        assert torch.equal(s(x), fm(batch))


def test_gradient_reaches_only_the_attacked_modality(fm):
    batch = make_batch()
    s = fm.surface("ir")
    with s.bound(batch) as x:
        x.requires_grad_(True)
        s(x).sum().backward()
    assert x.grad is not None and x.grad.shape == batch["ir"].shape
    assert batch["rgb"].grad is None


def test_rows_are_paired_by_content_in_any_order_and_subset(fm):
    batch = make_batch(n=5)
    s = fm.surface("ir")
    perm = torch.tensor([3, 0, 4, 1])
    with s.bound(batch) as x:
        assert torch.equal(s(x[perm]), fm({k: v[perm] for k, v in batch.items()}))
        nudged = (x[perm] + 4 / 255).clamp(0, 1)  # within ir's threat model (8/255): still paired
        assert torch.equal(s.pair(nudged), perm)
        with pytest.raises(RowAlignmentError, match="not within the pairing radius"):
            s((x[:2] + 0.3).clamp(0, 1))  # no example is that close: an error, never a guess


def test_one_example_pairs_everything_only_when_asked(fm):
    one = {k: v[:1] for k, v in make_batch().items()}
    s = fm.surface("ir")
    with s.bound(one, pairing="broadcast"):  # one sample: every query row is that sample
        expanded = s(torch.rand(5, 1, 8, 8))
        assert torch.allclose(expanded[:1], fm({"rgb": one["rgb"], "ir": torch.rand(1, 1, 8, 8)}), atol=1) and expanded.shape == (5, 4)
    with s.bound(one):
        with pytest.raises(RowAlignmentError):
            s(torch.rand(5, 1, 8, 8))


def test_unbound_surface_refuses(fm):
    s = fm.surface("rgb")
    with pytest.raises(RuntimeError, match="bind"):
        s(torch.rand(1, 3, 8, 8))


def test_subset_errors(fm):
    with pytest.raises(EmptySubsetError):
        fm.surface([])
    with pytest.raises(UnknownModalityError, match="'depth'"):
        fm.surface("depth")
    fm_text = FusionModel(TinyFusionClassifier(), ["rgb", Modality("caption", "text")], input_style=lambda m, x: None)
    with pytest.raises(UnsupportedAttackError, match="'caption' is text"):
        AttackSurface(fm_text, "caption")


def test_bound_restores_model_state(fm):
    fm.train()
    with fm.surface("rgb").bound(make_batch()):
        assert not fm.training
        assert not any(p.requires_grad for p in fm.parameters())
    assert fm.training and all(p.requires_grad for p in fm.parameters())
