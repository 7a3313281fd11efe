import pytest
import torch

from mmfusion_attacks.models import create_model


@pytest.mark.parametrize("name", ["smp-early-unet", "smp-twostream-unet"])
def test_smp_fusion_models(name, monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("tried to download"))
    fusion = create_model(name, num_classes=5)
    assert not fusion.training
    batch = {"rgb": torch.rand(2, 3, 64, 64), "ir": torch.rand(2, 1, 64, 64)}
    out = fusion(batch)
    assert out.shape == (2, 5, 64, 64)
    # both sensors matter
    assert not torch.allclose(out, fusion({**batch, "ir": torch.zeros_like(batch["ir"])}))
    assert not torch.allclose(out, fusion({**batch, "rgb": torch.zeros_like(batch["rgb"])}))
