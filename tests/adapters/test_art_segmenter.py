"""PyTorchSegmenter as a plain ART estimator (no fusion wrapper): the part that could go upstream."""

import numpy as np
import pytest
import torch
from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent, SquareAttack
from conftest import CLASSES, TinyPackedSegmenter, make_batch, rule_labels
from mmfusion_attacks.adapters.art import PyTorchSegmenter
from torch import nn


@pytest.fixture
def est(trained_segmenter):
    return PyTorchSegmenter(trained_segmenter.model, input_shape=(4, 8, 8), nb_classes=CLASSES, clip_values=(0.0, 1.0), device_type="cpu")


@pytest.fixture
def data():
    b = make_batch(n=4, seed=7)
    return torch.cat([b["rgb"], b["ir"]], 1).numpy(), rule_labels(b).numpy()


def test_predict_and_losses(est, data):
    x, y = data
    logits = est.predict(x, batch_size=3)
    assert logits.shape == (4, CLASSES, 8, 8) and logits.dtype == np.float32
    loss = est.compute_loss(x, y)
    assert loss.shape == (4,) and np.all(loss >= 0)
    assert est.compute_loss(x, y, reduction="mean") == pytest.approx(loss.mean(), rel=1e-5)
    one_hot = np.eye(CLASSES, dtype=np.float32)[y].transpose(0, 3, 1, 2)
    np.testing.assert_allclose(est.compute_loss(x, one_hot), loss, rtol=1e-6)


def test_loss_gradient_numpy_and_torch(est, data):
    x, y = data
    g = est.loss_gradient(x, y)
    assert isinstance(g, np.ndarray) and g.shape == x.shape and np.abs(g).sum() > 0
    gt = est.loss_gradient(torch.from_numpy(x), torch.from_numpy(y))
    assert isinstance(gt, torch.Tensor) and gt.device == est.device
    np.testing.assert_allclose(gt.numpy(), g, rtol=1e-5, atol=1e-8)


def test_ignore_index_removes_pixels_from_the_loss(trained_segmenter, data):
    x, y = data
    est = PyTorchSegmenter(trained_segmenter.model, (4, 8, 8), CLASSES, ignore_index=255, clip_values=(0.0, 1.0), device_type="cpu")
    y_ign = y.copy()
    y_ign[:, :, :4] = 255
    g = est.loss_gradient(x, y_ign)
    assert np.isfinite(g).all()
    assert not np.allclose(est.compute_loss(x, y_ign), est.compute_loss(x, y))


def test_art_attacks_raise_the_segmentation_loss(est, data):
    x, y = data
    clean = est.compute_loss(x, y)
    for attack in (
        FastGradientMethod(est, eps=8 / 255),
        ProjectedGradientDescent(est, eps=8 / 255, eps_step=2 / 255, max_iter=5, verbose=False),
    ):
        adv = attack.generate(x, y)
        assert np.abs(adv - x).max() <= 8 / 255 + 1e-6
        assert est.compute_loss(adv, y).mean() > clean.mean()


def test_square_with_segmentation_loss_and_criterion(est, data):
    x, y = data
    np.random.seed(0)
    attack = SquareAttack(est, eps=16 / 255, max_iter=30, loss=est.margin_loss, adv_criterion=est.adv_criterion, verbose=False)
    adv = attack.generate(x, y)
    assert np.abs(adv - x).max() <= 16 / 255 + 1e-6
    assert est.margin_loss(adv, y).mean() < est.margin_loss(x, y).mean()
    crit = est.adv_criterion(est.predict(x), y)
    assert crit.shape == (4,) and crit.dtype == bool


def test_fit_lowers_the_loss(data):
    x, y = data
    torch.manual_seed(0)
    net = TinyPackedSegmenter()
    est = PyTorchSegmenter(net, (4, 8, 8), CLASSES, optimizer=torch.optim.Adam(net.parameters(), lr=0.05), device_type="cpu")
    before = est.compute_loss(x, y).mean()
    est.fit(x, y, batch_size=2, nb_epochs=20)
    assert est.compute_loss(x, y).mean() < before
    with pytest.raises(ValueError, match="optimizer"):
        PyTorchSegmenter(net, (4, 8, 8), CLASSES, device_type="cpu").fit(x, y)


def test_activations_and_errors(est, data):
    x, _ = data
    act = est.get_activations(x, "body.0", batch_size=2)
    assert act.shape == (4, 8, 8, 8)
    with pytest.raises(ValueError, match="unknown layer"):
        est.get_activations(x, "nope")
    with pytest.raises(ValueError, match="\\(N, H, W\\)"):
        est.loss_gradient(x, np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="\\(N, C, H, W\\)"):
        PyTorchSegmenter(nn.Flatten(), (4, 8, 8), CLASSES, device_type="cpu").predict(x)
