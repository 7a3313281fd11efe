"""The pairing rules (mmfusion_attacks/pairing.py): beyond the radius only by a wide margin, refusal near
several examples, and row order only where content agrees with it."""

import pytest
import torch
from conftest import TinyFusionClassifier, make_batch
from mmfusion_attacks.adapters.torchattacks import to_torchattacks

from mmfusion_attacks import AttackSurface, FusionModel, RowAlignmentError
from mmfusion_attacks.pairing import MARGIN, REACH

EPS = 8 / 255  # every preset's threat model: the pairing radius


@pytest.fixture
def fm():
    return FusionModel(TinyFusionClassifier().eval(), ["rgb", "ir"], num_classes=4)


def moved(x: torch.Tensor, radii: float, seed: int = 0) -> torch.Tensor:
    """Every element moved by +-radii x the radius (as a saturated PGD step does), kept in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, x.shape, generator=g) * 2 - 1
    return (x + radii * EPS * sign).clamp(0, 1)


def test_rows_beyond_the_radius_pair_by_a_wide_margin(fm):
    batch = make_batch(n=6)
    s = fm.surface("rgb")
    perm = torch.tensor([4, 1, 5, 0])
    with s.bound(batch) as x:
        far = moved(x[perm], 2)  # twice the radius: refused before, though no other example is near
        assert float((far - x[perm]).abs().max()) > EPS
        assert torch.equal(s.pair(far), perm)
        assert torch.equal(s(far), fm({"rgb": far, "ir": batch["ir"][perm]}))


def test_the_margin_guarantee_and_its_limit(fm):
    """Paired when MARGIN times nearer one example than any other: a row moved less than 1 / (MARGIN + 1)
    of the way to another example is its own; halfway is refused; 9/10 of the way it is indistinguishable
    from the other example's own row moved 1/10 (the documented limit of any content rule)."""
    batch = make_batch(n=2)
    s = fm.surface("rgb")
    with s.bound(batch) as x:
        a, b = x[:1], x[1:]
        assert int(s.pair(a + 0.15 * (b - a))) == 0
        for t in (0.25, 0.5, 0.75):
            with pytest.raises(RowAlignmentError, match=f"{MARGIN:g} times nearer than any other"):
                s.pair(a + t * (b - a))
        assert int(s.pair(a + 0.9 * (b - a))) == 1


def test_near_duplicate_examples_refuse_beyond_the_radius(fm):
    frames = make_batch(n=4)
    frames["rgb"] = (frames["rgb"][:1] + 0.01 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    s = fm.surface("rgb")
    with s.bound(frames) as x:
        assert torch.equal(s.pair(x.flip(0)), torch.arange(4).flip(0))  # clean: exact
        with pytest.raises(RowAlignmentError, match="not within the pairing radius"):
            s(moved(x, 2))  # as near the neighbouring frames as their own: refused, never guessed


def test_one_bound_example_pairs_only_within_reach(fm):
    one = {k: v[:1] for k, v in make_batch().items()}
    s = fm.surface("ir")
    with s.bound(one) as x:
        assert int(s.pair(moved(x, 3))) == 0
        with pytest.raises(RowAlignmentError, match=f"within {REACH:g} radii"):
            s(torch.rand(1, 1, 8, 8))  # no perturbation of it under any budget near its threat model


def test_torchattacks_surfaces_pair_a_full_batch_in_order_however_far(fm):
    batch = make_batch(n=5)
    s = to_torchattacks(fm, "rgb")
    assert s.pairing == "position"
    with s.bound(batch) as x:  # no pairing chosen
        resized = torch.nn.functional.interpolate(torch.nn.functional.interpolate(x, size=7), size=8)
        for query in (x / 16, resized, torch.roll(x, 1, dims=3)):  # SINIFGSM, DIFGSM-like, a shift
            assert torch.equal(s.pair(query), torch.arange(5))
        assert torch.equal(s.pair(moved(x[[3, 1]], 0.5)), torch.tensor([3, 1]))  # a subset: by content
        with pytest.raises(RowAlignmentError, match="not within the pairing radius"):
            s.pair(x[[3, 1]] / 16)  # a subset has no order to go by


def test_a_shuffled_full_batch_is_never_paired_by_position(fm):
    batch = make_batch(n=6)
    s = AttackSurface(fm, "rgb", pairing="position")
    perm = torch.tensor([2, 0, 1, 5, 3, 4])
    with s.bound(batch) as x:
        assert torch.equal(s.pair(x[perm]), perm)  # exact rows: by content
        assert torch.equal(s.pair((x[perm] + EPS / 2).clamp(0, 1)), perm)  # within the radius: by content
        mixed = x[perm].clone()
        mixed[3:] = mixed[3:] / 16  # far rows in a query that exact rows show to be shuffled
        with pytest.raises(RowAlignmentError, match="not in the bound order"):
            s.pair(mixed)
        with pytest.raises(RowAlignmentError, match="not in the bound order"):
            s.pair(moved(x[perm], 2))  # every row far, each much nearer another position's example


def test_a_scaled_copy_next_to_a_dark_example_is_refused(fm):
    """SINIFGSM's x / 16 of a bright image lies far nearer a dark (night) example than its own: content
    would pair it with the dark one, and position must not hide that the query disagrees with content."""
    batch = make_batch(n=4)
    batch["rgb"][0] = 0.02 + 0.01 * batch["rgb"][0]  # a night frame
    s = AttackSurface(fm, "rgb", pairing="position")
    with s.bound(batch) as x:
        assert torch.equal(s.pair(x / 2), torch.arange(4))  # nothing contradicts the order
        with pytest.raises(RowAlignmentError, match=f"{MARGIN:g} times nearer to example 0"):
            s.pair(x / 16)


def test_a_drivers_fallback_example_serves_the_next_query_only(fm):
    """ART's universal loop: the query right after the inner attacker (its output, possibly far) is paired
    with that attacker's example; a later query of another example that content finds ambiguous (two
    near-duplicate frames with different thermal images) must raise, not meet the earlier example."""
    frames = make_batch(n=2)
    frames["rgb"][1] = (frames["rgb"][0] + 0.2 * EPS).clamp(0, 1)  # within the radius of each other
    s = fm.surface("rgb")
    with s.bound(frames) as x:
        s.context.fallback = 0
        assert int(s.pair(x[1:])) == 1  # exact: content decides (and the fallback is used up)
        s.context.fallback = 0
        assert int(s.pair(x[1:] + 0.5 * EPS)) == 0  # ambiguous: the fallback's query
        with pytest.raises(RowAlignmentError, match="several bound examples"):
            s.pair(x[1:] + 0.5 * EPS)  # the next query: no fallback any more
