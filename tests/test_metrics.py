"""metrics: the class ids every result is scored from."""

from __future__ import annotations

import pytest
import torch

from mmfusion_attacks.metrics import predicted_classes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(7, 5), (4, 9, 6, 8), (3, 4, 2, 5, 5)])
def test_predicted_classes_equal_argmax_ties_and_infinities_included(dtype, shape):
    g = torch.Generator().manual_seed(0)
    # few distinct values: many rows have tied maxima, where argmax returns the first
    logits = torch.randint(0, 3, shape, generator=g).to(dtype)
    logits.view(-1)[:: 11] = -torch.inf
    logits.view(-1)[5 :: 17] = torch.inf
    assert torch.equal(predicted_classes(logits), logits.argmax(1))
    if logits.ndim == 4:  # a segmenter's channels-last output
        cl = logits.contiguous(memory_format=torch.channels_last)
        assert torch.equal(predicted_classes(cl), logits.argmax(1))
    noncontiguous = logits.transpose(0, -1).contiguous().transpose(0, -1)
    assert torch.equal(predicted_classes(noncontiguous), logits.argmax(1))

