"""Sparse variational recurrent layers: the LSTM against torch's, one weight draw a mini-batch
shared by every time step, masked weights exactly zero in evaluation, KL, gradients."""

import math

import pytest
import torch
from torch import nn

from lightning_fed.nn import LSTM, EmbeddingSVD, LinearSVD, kl_approximation, kl_divergence, variational


def _lstm(layers: int = 2, double: bool = False) -> LSTM:
    torch.manual_seed(0)
    lstm = LSTM(input_size=3, hidden_size=4, num_layers=layers)
    return lstm.double() if double else lstm


def _torch_twin(lstm: LSTM) -> nn.LSTM:
    twin = nn.LSTM(lstm.input_size, lstm.hidden_size, lstm.num_layers, batch_first=True)
    with torch.no_grad():
        for layer in range(lstm.num_layers):
            getattr(twin, f"weight_ih_l{layer}").copy_(lstm.ih[layer].weight)
            getattr(twin, f"bias_ih_l{layer}").copy_(lstm.ih[layer].bias)
            getattr(twin, f"weight_hh_l{layer}").copy_(lstm.hh[layer].weight)
            getattr(twin, f"bias_hh_l{layer}").zero_()  # ours has one bias a gate: ih's
    return twin


def test_the_plain_lstm_computes_what_torch_s_does():
    lstm, x = _lstm(), torch.randn(5, 7, 3, generator=torch.Generator().manual_seed(1))
    h0 = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(2))
    ours, (h, c) = lstm(x, (h0, h0.flip(0)))
    theirs, (th, tc) = _torch_twin(lstm)(x, (h0, h0.flip(0)))
    # float32, 7 steps of the same arithmetic in another order: a few ulps of values below 1
    for a, b in ((ours, theirs), (h, th), (c, tc)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_variational_makes_every_matrix_and_the_embedding_sparse_variational():
    model = variational(nn.Sequential(nn.Embedding(10, 3), LSTM(3, 4, num_layers=2)))
    kinds = {name: type(module).__name__ for name, module in model.named_modules() if name}
    assert kinds["0"] == "EmbeddingSVD"
    assert [kinds[f"1.{part}.{layer}"] for part in ("ih", "hh") for layer in (0, 1)] == ["LinearSVD"] * 4
    layers = [model[0], *model[1].ih, *model[1].hh]
    expected = sum(kl_approximation(layer.log_alpha).sum() for layer in layers)
    torch.testing.assert_close(kl_divergence(model), expected, rtol=1e-6, atol=0)  # summed in another order


def test_one_draw_of_each_matrix_serves_every_sequence_and_time_step_of_a_mini_batch():
    """The training forward equals the plain recurrence run with theta + sigma * eps, eps drawn
    once a matrix in the layers' order (ih then hh, layer by layer)."""
    lstm = variational(_lstm(), init_log_sigma2=-2.0).train()
    x = torch.randn(5, 7, 3, generator=torch.Generator().manual_seed(1))
    plain = _lstm()
    torch.manual_seed(3)
    out, _ = lstm(x)
    torch.manual_seed(3)
    with torch.no_grad():
        for layer in range(2):
            for part in ("ih", "hh"):
                noisy, clean = getattr(lstm, part)[layer], getattr(plain, part)[layer]
                clean.weight.copy_(
                    noisy.weight + torch.exp(0.5 * noisy.log_sigma2) * torch.randn_like(noisy.weight)
                )
            plain.ih[layer].bias.copy_(lstm.ih[layer].bias)
    assert torch.equal(out, plain(x)[0])
    assert not torch.equal(out, lstm.eval()(x)[0])  # the noise did something


def test_evaluation_uses_the_masked_weights_and_a_pruned_weight_is_exactly_zero():
    lstm = variational(_lstm(layers=1))
    with torch.no_grad():  # log_alpha = -10 everywhere, then 10 (pruned) in the first half of each matrix
        for layer in (lstm.ih[0], lstm.hh[0]):
            layer.log_sigma2.copy_(2 * layer.weight.abs().log() - 10.0)
            layer.log_sigma2[: layer.weight.shape[0] // 2] += 20.0
    lstm.eval()
    plain = _lstm(layers=1)
    with torch.no_grad():
        for noisy, clean in ((lstm.ih[0], plain.ih[0]), (lstm.hh[0], plain.hh[0])):
            keep = noisy.keep_mask()
            assert keep[: keep.shape[0] // 2].sum() == 0 and keep[keep.shape[0] // 2 :].all()
            clean.weight.copy_(noisy.weight * keep)
            assert (noisy.sampled_weight()[~keep] == 0).all()
    x = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(lstm(x)[0], plain(x)[0])


def test_the_embedding_draws_one_table_a_mini_batch_and_masks_rows_in_evaluation():
    table = EmbeddingSVD(6, 4, init_log_sigma2=-1.0).train()
    tokens = torch.tensor([[2, 5, 2], [5, 2, 2]])
    vectors = table(tokens)
    assert torch.equal(vectors[0, 0], vectors[0, 2]) and torch.equal(vectors[0, 0], vectors[1, 1])
    assert not torch.equal(vectors[0, 0], table.weight[2])  # noisy
    with torch.no_grad():
        table.log_sigma2[5] = 10.0 + 2 * table.weight[5].abs().log()  # row 5 pruned
    table.eval()
    assert torch.equal(table(tokens)[0, 1], torch.zeros(4)) and torch.equal(
        table(tokens)[0, 0], table.weight[2]
    )


def test_gradients_of_the_variational_lstm_match_finite_differences():
    lstm = variational(_lstm(double=True), init_log_sigma2=-3.0).train()
    x = torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    weights = [lstm.ih[0].weight, lstm.hh[1].log_sigma2]

    def loss(*tensors):  # the same noise at every call: a deterministic function of the weights
        with torch.no_grad():
            for parameter, value in zip(weights, tensors, strict=True):
                parameter.copy_(value)
        torch.manual_seed(6)
        return lstm(x)[0].square().sum()

    def analytic(*tensors):
        loss(*tensors)
        torch.manual_seed(6)
        lstm.zero_grad()
        lstm(x)[0].square().sum().backward()
        return [parameter.grad.clone() for parameter in weights]

    start = [w.detach().clone() for w in weights]
    grads = analytic(*start)
    for k, (w, g) in enumerate(zip(start, grads, strict=True)):
        for index in [(0, 0), (5, 1), (11, 2)]:
            step = torch.zeros_like(w)
            step[index] = 1e-6
            plus = [s + step if j == k else s for j, s in enumerate(start)]
            minus = [s - step if j == k else s for j, s in enumerate(start)]
            numeric = (loss(*plus) - loss(*minus)) / 2e-6
            assert numeric.item() == pytest.approx(g[index].item(), rel=1e-5, abs=1e-8)


def test_bad_sizes_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^LSTM sizes must be >= 1, got input_size=3, hidden_size=0"):
        LSTM(3, 0)


def test_linear_svd_s_sampled_weight_is_theta_plus_sigma_eps_in_training():
    layer = LinearSVD(3, 2, init_log_sigma2=math.log(4.0)).train()
    torch.manual_seed(7)
    drawn = layer.sampled_weight()
    torch.manual_seed(7)
    torch.testing.assert_close(drawn, layer.weight + 2.0 * torch.randn_like(layer.weight))  # sigma = 2


def test_the_federation_sees_the_recurrent_layers_as_it_sees_the_others():
    """The sharing plan masks each matrix and the embedding by its own M(alpha), log_sigma2 stays
    local, and the gradient masker zeroes the gradients of pruned recurrent weights."""
    from lightning_fed.federation.sharing import SharingPlan
    from lightning_fed.nn import GradientMasker

    model = variational(nn.Sequential(nn.Embedding(10, 3), LSTM(3, 4)))
    plan = SharingPlan(model)
    assert [(t.name, t.mask_of) for t in plan.shared] == [
        ("0.weight", "0"),
        ("1.ih.0.weight", "1.ih.0"),
        ("1.ih.0.bias", None),
        ("1.hh.0.weight", "1.hh.0"),
    ]
    assert plan.local_parameters == ["0.log_sigma2", "1.ih.0.log_sigma2", "1.hh.0.log_sigma2"]
    hh = model[1].hh[0]
    with torch.no_grad():
        hh.log_sigma2.copy_(2 * hh.weight.abs().log() - 10.0)
        hh.log_sigma2[:8] += 20.0  # the first 8 rows pruned
    masker = GradientMasker(model)
    model[1](model[0](torch.tensor([[1, 2, 3]])))[0].sum().backward()
    assert (hh.weight.grad[:8] == 0).all() and (hh.weight.grad[8:] != 0).any()
    masker.remove()


def test_noise_per_sequence_gives_each_sequence_its_own_draw_shared_by_its_time_steps():
    """noise="sequence" equals running each sequence alone, one draw each, in the order of the batch."""
    torch.manual_seed(0)
    lstm = variational(LSTM(3, 4, num_layers=2, noise="sequence"), init_log_sigma2=-2.0).train()
    x = torch.randn(3, 5, 3, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(8)
    out, (h, c) = lstm(x)
    torch.manual_seed(8)
    alone = [lstm(x[b : b + 1]) for b in range(3)]
    assert torch.equal(out, torch.cat([o for o, _ in alone]))
    assert torch.equal(h, torch.cat([s[0] for _, s in alone], 1)) and torch.equal(
        c, torch.cat([s[1] for _, s in alone], 1)
    )
    torch.manual_seed(8)
    lstm.noise = "batch"
    assert not torch.equal(out, lstm(x)[0])  # one draw for all three is another computation
    with pytest.raises(ValueError, match=r"^noise must be one of batch, sequence, got 'step'$"):
        LSTM(3, 4, noise="step")
