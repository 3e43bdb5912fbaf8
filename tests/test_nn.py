"""Sparse variational dropout layers, conversion, KL and masking."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_fed.nn import (
    Conv2dSVD,
    GradientMasker,
    LinearSVD,
    kl_approximation,
    kl_divergence,
    sparsity,
    variational,
)
from lightning_fed.nn.kl import kl_reference


def _set_log_alpha(layer, log_alpha: torch.Tensor) -> None:
    """Give ``layer`` the requested log_alpha by choosing log_sigma2 for its current theta."""
    with torch.no_grad():
        layer.log_sigma2.copy_(log_alpha + torch.log(layer.weight**2 + 1e-8))


@pytest.mark.parametrize("log_alpha", [-8.0, -3.0, -1.0, 0.0, 0.5, 2.0, 3.0, 7.5])
def test_kl_matches_formula(log_alpha):
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    sigmoid = 1 / (1 + math.exp(-(k2 + k3 * log_alpha)))
    expected = -(k1 * sigmoid - 0.5 * math.log(1 + math.exp(-log_alpha)) - k1)
    got = kl_approximation(torch.tensor([log_alpha], dtype=torch.float64)).item()
    assert got == pytest.approx(expected, rel=1e-12)
    assert kl_reference(log_alpha) == pytest.approx(expected, rel=1e-12)


def test_kl_decreases_with_log_alpha_and_is_finite_at_extremes():
    log_alpha = torch.linspace(-10, 10, 201)
    kl = kl_approximation(log_alpha)
    assert torch.all(kl[1:] < kl[:-1])
    assert torch.isfinite(kl_approximation(torch.tensor([-1e4, 1e4]))).all()


def test_layer_kl_sums_its_weights():
    layer = LinearSVD(5, 4)
    assert torch.allclose(layer.kl(), kl_approximation(layer.log_alpha).sum())
    model = nn.Sequential(layer, nn.ReLU(), Conv2dSVD(1, 2, 3))
    assert torch.allclose(kl_divergence(model), layer.kl() + model[2].kl())


# The local reparameterization trick samples each output as mean + sqrt(variance) * N(0, 1), one
# draw per example: over n examples the sample mean has standard error sqrt(variance / n) and the
# sample variance sqrt(2 / (n - 1)) * variance (a normal's). K = 6 standard errors: a correct
# layer fails an output with probability below 2e-9, so below 1e-7 for the 36 outputs checked.
K = 6.0


def _moments_agree(samples: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> bool:
    n = samples.shape[0]
    mean_ok = (samples.mean(0) - mean).abs() <= K * (variance / n).sqrt()
    variance_ok = (samples.var(0) - variance).abs() <= K * (2 / (n - 1)) ** 0.5 * variance
    return bool(mean_ok.all() and variance_ok.all())


def _linear_moments_hold(seed: int) -> bool:
    torch.manual_seed(seed)
    layer = LinearSVD(6, 3)
    with torch.no_grad():
        layer.log_sigma2.uniform_(-3, 0)
    x = torch.randn(1, 6)
    samples = layer(x.expand(20000, -1))
    mean = F.linear(x, layer.weight, layer.bias)[0]
    variance = F.linear(x * x, layer.log_sigma2.exp())[0]
    return _moments_agree(samples.detach(), mean.detach(), variance.detach())


def _conv_moments_hold(seed: int) -> bool:
    torch.manual_seed(seed)
    layer = Conv2dSVD(4, 4, 3, stride=2, padding=1, dilation=1, groups=2)
    with torch.no_grad():
        layer.log_sigma2.uniform_(-3, -1)
    x = torch.randn(1, 4, 5, 5)
    samples = layer(x.expand(8000, -1, -1, -1))
    mean = F.conv2d(x, layer.weight, layer.bias, stride=2, padding=1, groups=2)[0]
    variance = F.conv2d(x * x, layer.log_sigma2.exp(), None, stride=2, padding=1, groups=2)[0]
    return _moments_agree(samples.detach(), mean.detach(), variance.detach())


def test_local_reparameterization_mean_and_variance_linear():
    assert _linear_moments_hold(seed=0)


def test_local_reparameterization_mean_and_variance_conv_with_stride_and_groups():
    assert _conv_moments_hold(seed=0)


def test_the_moment_check_tells_a_wrong_variance():
    """The check can fail: a layer whose noise is 20 % too large is caught."""
    samples = torch.randn(20000, 3) * 1.2**0.5
    assert not _moments_agree(samples, torch.zeros(3), torch.ones(3))
    assert _moments_agree(samples, torch.zeros(3), torch.full((3,), 1.2))


@pytest.mark.slow
def test_local_reparameterization_moments_hold_for_every_seed_of_a_sweep():
    failed = [seed for seed in range(200) if not (_linear_moments_hold(seed) and _conv_moments_hold(seed))]
    assert failed == []


def test_bias_stays_out_of_the_variance():
    layer = LinearSVD(3, 2)
    with torch.no_grad():
        layer.log_sigma2.fill_(-30.0)  # variance ~ 0
        layer.bias.fill_(1e6)
    x = torch.randn(4, 3)
    assert torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-3)


def test_evaluation_is_deterministic_and_equals_masked_dense_op():
    torch.manual_seed(1)
    layer = Conv2dSVD(2, 3, 3, padding=1)
    log_alpha = torch.where(torch.rand_like(layer.weight) < 0.5, 5.0, -5.0)
    _set_log_alpha(layer, log_alpha)
    layer.eval()
    x = torch.randn(2, 2, 6, 6)
    out = layer(x)
    assert torch.equal(out, layer(x))
    masked = layer.weight * (layer.log_alpha < 3.0)
    assert torch.allclose(out, F.conv2d(x, masked, layer.bias, padding=1))
    assert 0 < int(layer.keep_mask().sum()) < layer.weight.numel()


def test_theta_gradients_masked_exactly_where_log_alpha_reaches_threshold():
    torch.manual_seed(2)
    model = nn.Sequential(LinearSVD(8, 6), nn.ReLU(), LinearSVD(6, 4))
    for layer in (model[0], model[2]):
        _set_log_alpha(layer, torch.empty_like(layer.weight).uniform_(-2, 8))
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))

    torch.manual_seed(3)
    F.cross_entropy(model(x), y).backward()
    unmasked = [model[0].weight.grad.clone(), model[2].weight.grad.clone()]
    model.zero_grad()

    masker = GradientMasker(model)
    masker.refresh()
    torch.manual_seed(3)
    F.cross_entropy(model(x), y).backward()
    for layer, reference in zip((model[0], model[2]), unmasked, strict=True):
        dropped = layer.log_alpha >= 3.0
        assert dropped.any() and (~dropped).any()
        assert torch.all(layer.weight.grad[dropped] == 0)
        assert torch.equal(layer.weight.grad[~dropped], reference[~dropped])
        assert layer.log_sigma2.grad[dropped].abs().sum() > 0  # local log_sigma2 unmasked


def test_masks_come_from_the_start_of_the_step():
    layer = LinearSVD(2, 1)
    _set_log_alpha(layer, torch.tensor([[-5.0, -5.0]]))
    masker = GradientMasker(layer)
    masker.refresh()
    _set_log_alpha(layer, torch.tensor([[5.0, 5.0]]))  # changes after the step began
    layer(torch.ones(1, 2)).sum().backward()
    assert torch.all(layer.weight.grad != 0)


def test_mask_log_sigma2_for_algorithm_1():
    layer = LinearSVD(2, 1)
    _set_log_alpha(layer, torch.tensor([[-5.0, 5.0]]))
    masker = GradientMasker(layer, mask_log_sigma2=True)
    masker.refresh()
    (layer(torch.ones(3, 2)).sum() + layer.kl()).backward()
    assert layer.log_sigma2.grad[0, 1] == 0 and layer.log_sigma2.grad[0, 0] != 0


def test_removed_hooks_let_gradients_flow_unmasked_and_a_second_remove_is_harmless():
    """remove() is idempotent: called again (by a user's teardown, say) it leaves the masker without hooks."""
    layer = LinearSVD(2, 1)
    _set_log_alpha(layer, torch.tensor([[-5.0, 5.0]]))
    masker = GradientMasker(layer)
    masker.refresh()
    masker.remove()
    masker.remove()
    layer.train()(torch.ones(3, 2)).sum().backward()
    assert torch.all(layer.weight.grad != 0)  # the pruned weight's gradient too: no hook is left


def test_variational_resnet18_with_tiny_sigma_matches_original():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    original = resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = original(x)
        converted = variational(original, init_log_sigma2=-40.0)
        assert type(converted.conv1) is Conv2dSVD and type(converted.fc) is LinearSVD
        assert converted.conv1.weight.shape == (64, 3, 7, 7)
        assert sparsity(converted)["total"].fraction == 1.0
        assert torch.allclose(converted(x), expected, atol=1e-5)


def test_variational_keeps_parent_arguments():
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=2, dilation=2, groups=4, bias=False)
    twin = variational(conv)
    assert isinstance(twin, Conv2dSVD) and isinstance(twin, nn.Conv2d)
    assert (twin.stride, twin.padding, twin.dilation, twin.groups) == ((2, 2), (2, 2), (2, 2), 4)
    assert twin.bias is None and torch.equal(twin.weight, conv.weight)


def test_sparsity_reports_layers_and_total():
    model = nn.Sequential(LinearSVD(4, 5), nn.ReLU(), LinearSVD(5, 2))
    _set_log_alpha(model[0], torch.full((5, 4), 6.0))
    report = sparsity(model)
    assert report["0"].kept == 0 and report["2"].kept == 10
    assert report["total"].kept == 10 and report["total"].total == 30


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "3"])
def test_non_finite_threshold_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"threshold must be a finite number, got"):
        LinearSVD(2, 2, threshold=bad)
    with pytest.raises(ValueError, match=r"threshold must be a finite number"):
        variational(nn.Linear(2, 2), threshold=bad)
