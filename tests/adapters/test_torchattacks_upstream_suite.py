"""torchattacks' own test (``code_coverage/test_atks.py`` at v3.5.1) with a bound batch and a frozen modality.

Upstream runs every attack in ``torchattacks.__all__`` except the wrappers, with its defaults, on 5
images and passes when clean accuracy >= robust accuracy (an exception fails), with a second,
targeted-random pass where the attack supports it. Its model and data (robustbench's CIFAR-10
``Standard``, CIFAR-10) are downloads, so here the same body runs on a small network trained on 5 smooth
synthetic 3x32x32 images of one scene family (close enough that most attacks fool it, so AutoAttack and
Square take subsets); the network fuses a second camera, ``aux``, which is frozen. Ours is a
``to_torchattacks`` surface bound as a user binds it (``with surface.bound(batch) as x: atk(x, labels)``,
no pairing chosen); the control is library-free: a module holding the 5 ``aux`` rows and pairing by
position. Ours must pass wherever the control passes, and never pair a row with another example's
``aux``.

The probe network records, per row it sees, the example its ``aux`` came from (a code patch it ignores)
and the example the attacked row came from: the same code patch where it is still readable (bounded
attacks move it by at most eps; the network ignores it, so gradients never do), else the row's position
in a query of the batch's size (torchattacks derives every such query row by row from its input, in
order), else unknown (counted).
"""

from __future__ import annotations

import math

import pytest
import torch
import torchattacks
from mmfusion_attacks.adapters.torchattacks import to_torchattacks
from torch import nn

from mmfusion_attacks import FusionModel, Modality

N, SIZE, CLASSES, PATCH = 5, 32, 10, 4
LEVELS = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])
ATTACKS = [name for name in torchattacks.__all__ if name not in torchattacks.__wrapper__]
#: with a frozen modality in a batch of 5 these fail for the control too: batches of heavy noise copies
#: (PGDRS, PGDRSL2) and single rows moved far among 5 similar images (JSMA, SparseFool, Pixle) have no
#: order to go by and no example by a wide margin (run_attack runs them one example at a time)
FAIL_ANYWAY = {"PGDRS", "PGDRSL2", "JSMA", "SparseFool", "Pixle"}
#: issue 13: with CIFAR-10 their queries landed 1.05x to 32x outside the threat model's radius and failed
FAR_QUERIES = {"GN", "DIFGSM", "TIFGSM", "NIFGSM", "SINIFGSM", "VMIFGSM", "VNIFGSM", "EADL1", "EADEN", "PIFGSM", "PIFGSMPP", "PGDL2", "FAB"}


def clean_accuracy(model, x, y, batch_size=100, device=None):
    """robustbench.utils.clean_accuracy (robustbench 1.1), verbatim."""
    if device is None:
        device = x.device
    acc = 0.0
    n_batches = math.ceil(x.shape[0] / batch_size)
    with torch.no_grad():
        for counter in range(n_batches):
            x_curr = x[counter * batch_size : (counter + 1) * batch_size].to(device)
            y_curr = y[counter * batch_size : (counter + 1) * batch_size].to(device)
            output = model(x_curr)
            acc += (output.max(1)[1] == y_curr).float().sum()
    return acc.item() / x.shape[0]


def _fast(name: str, atk):
    """Fewer queries where the defaults take seconds on CPU (upstream likewise passes max_batch_size to SPSA)."""
    if name == "Square":
        atk.n_queries = 100
    if name in ("EADL1", "EADEN"):
        atk.binary_search_steps, atk.max_iterations = 3, 30
    if name == "AutoAttack":
        for sub in atk._autoattack.attacks:
            for attr, value in (("steps", 10), ("n_queries", 100), ("n_restarts", 1)):
                if hasattr(sub, attr):
                    setattr(sub, attr, value)
    return atk


@torch.no_grad()
def upstream_body(atk_class: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[bool, str]:
    """The body of upstream's ``test_atks_on_cifar10`` (printing aside): whether it would pass, and the
    error upstream's ``except`` turns into a failure (kept, so a failing cell says why)."""
    clean_acc = clean_accuracy(model, images, labels)
    try:
        kargs = {}
        if atk_class in ["SPSA"]:
            kargs["max_batch_size"] = 5
        atk = _fast(atk_class, getattr(torchattacks, atk_class)(model, **kargs))
        with torch.enable_grad():
            adv_images = atk(images, labels)
        robust_acc = clean_accuracy(model, adv_images, labels)
        if "targeted" in atk.supported_mode:
            atk.set_mode_targeted_random(quiet=True)
            with torch.enable_grad():
                adv_images = atk(images, labels)
            robust_acc = clean_accuracy(model, adv_images, labels)
    except Exception as exc:  # upstream counts any error as a failure; we keep what it was
        return False, f"{type(exc).__name__}: {exc}"
    return clean_acc >= robust_acc, ""


def _write_code(x: torch.Tensor) -> torch.Tensor:
    """Example k's code patch: LEVELS[k] on its left half, 1 - LEVELS[k] on its right (so a scaled or
    blurred patch no longer reads as any code)."""
    x[:, :, :PATCH, : PATCH // 2] = LEVELS.view(-1, 1, 1, 1)
    x[:, :, :PATCH, PATCH // 2 : PATCH] = 1 - LEVELS.view(-1, 1, 1, 1)
    return x


def _code(t: torch.Tensor) -> torch.Tensor:
    """The example each row's code patch names, or -1 where the patch no longer reads as one code."""
    left, right = t.detach()[:, :, :PATCH, : PATCH // 2].flatten(1), t.detach()[:, :, :PATCH, PATCH // 2 : PATCH].flatten(1)
    level = (left.mean(1, keepdim=True) - LEVELS).abs().argmin(1)
    value = LEVELS[level][:, None]
    clean = ((left - value).abs().amax(1) <= 0.04) & ((right - (1 - value)).abs().amax(1) <= 0.04)
    return torch.where(clean, level, -1)


class Probe(nn.Module):
    """``image`` fused with ``aux``; ignores the code patch and records (row's example, aux's example)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, CLASSES),
        )  # fmt: skip
        mask = torch.ones(1, 1, SIZE, SIZE)
        mask[..., :PATCH, :PATCH] = 0
        self.register_buffer("mask", mask)
        self.seen: list[tuple[int, int]] = []

    def forward(self, image: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        rows = min(len(image), len(aux))
        source = _code(image[:rows])
        if len(image) == N:
            source = torch.where(source >= 0, source, torch.arange(rows))
        self.seen += list(zip(source.tolist(), _code(aux[:rows]).tolist()))
        return self.body(0.5 * image * self.mask + 0.5 * aux * self.mask)

    def mispaired(self) -> tuple[int, int, int]:
        """(rows paired with another example's aux, rows whose own example is known, rows seen)."""
        known = [(a, b) for a, b in self.seen if a >= 0]
        return sum(a != b for a, b in known), len(known), len(self.seen)


class Control(nn.Module):
    """Library-free: the frozen ``aux`` of the bound batch held in a plain module, row i with row i (a
    query of another size cannot be paired that way: an error, where broadcasting would silently give
    one row every example's ``aux``)."""

    def __init__(self, net: nn.Module, aux: torch.Tensor) -> None:
        super().__init__()
        self.net, self.aux = net, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) != len(self.aux):
            raise RuntimeError(f"a query of {len(x)} rows cannot be paired by position with {len(self.aux)} held rows")
        return self.net(x, self.aux)


def _images(seed: int) -> torch.Tensor:
    """Smooth random colour fields (CIFAR-like low frequencies) with each example's code patch."""
    g = torch.Generator().manual_seed(seed)
    low = 0.3 + 0.4 * torch.rand(1, 3, 4, 4, generator=g) + 0.2 * torch.rand(N, 3, 4, 4, generator=g)
    low = nn.functional.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return _write_code((low + 0.05 * torch.randn(N, 3, SIZE, SIZE, generator=g)).clamp(0, 1))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = Probe()
    images, aux, labels = _images(0), _images(1), torch.arange(N)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(images, aux), labels).backward()
        opt.step()
    net.eval()
    assert bool((net(images, aux).argmax(1) == labels).all())  # upstream's 5 images are all classified right too
    return net, images, aux, labels


def _seed() -> None:
    """Every generator the attacks draw from (OnePixel's differential evolution uses numpy's global one):
    the result must not depend on what ran before in the same process."""
    import random

    import numpy as np

    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


@pytest.mark.parametrize("atk_class", ATTACKS)
def test_atks_with_a_frozen_modality(atk_class, setup):
    net, images, aux, labels = setup
    _seed()
    control, control_error = upstream_body(atk_class, Control(net, aux), images, labels)

    fusion = FusionModel(net, [Modality("image", "image", 3), Modality("aux", "image", 3)], num_classes=CLASSES)
    surface = to_torchattacks(fusion, "image")
    net.seen.clear()
    _seed()
    with surface.bound({"image": images, "aux": aux}) as x:
        ours, error = upstream_body(atk_class, surface, x, labels)
    bad, known, seen = net.mispaired()
    assert bad == 0, f"{atk_class}: {bad} of {known} rows met another example's aux"
    assert seen - known <= seen // 100  # OnePixel's pixel lands in the code patch of a few of its 1220 rows
    assert ours or not control, f"{atk_class}: the control passes, ours does not ({error})"
    assert ours or atk_class not in FAR_QUERIES, error
    assert ours is (atk_class not in FAIL_ANYWAY), (error, control_error)
