"""Property-based: for any channel counts, sizes and attacked subsets, packing round-trips exactly and
the surface computes what the full model computes."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mmfusion_attacks import FusionModel, Modality


class SumOfMeans(nn.Module):
    def forward(self, **inputs):
        return torch.stack([v.flatten(1).mean(1) * (i + 1) for i, v in enumerate(inputs.values())], 1)


@settings(max_examples=40, deadline=None)
@given(
    channels=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    size=st.integers(1, 6),
    n=st.integers(1, 4),
    mask=st.integers(1, 15),
    seed=st.integers(0, 2**16),
)
def test_pack_unpack_and_forward(channels, size, n, mask, seed):
    mods = [Modality(f"m{i}", "image", c) for i, c in enumerate(channels)]
    fm = FusionModel(SumOfMeans(), mods)
    g = torch.Generator().manual_seed(seed)
    batch = {m.name: torch.rand(n, m.channels, size, size, generator=g) for m in mods}
    attacked = [m.name for i, m in enumerate(mods) if mask >> i & 1] or [mods[0].name]
    s = fm.surface(attacked)
    with s.bound(batch) as x:
        assert x.shape == (n, sum(batch[a].shape[1] for a in s.attacked), size, size)
        parts = s.unpack(x)
        assert all(torch.equal(parts[a], batch[a]) for a in s.attacked)
        assert torch.allclose(s(x), fm(batch))
        eps = s.per_element({a: float(i + 1) for i, a in enumerate(s.attacked)})
        assert eps.shape == (x.shape[1], 1, 1)
