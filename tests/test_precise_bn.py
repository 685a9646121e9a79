"""epam_model.precise_bn on a real pose stream: the re-estimated statistics are the plain average of
the batches' own, eval mode then reproduces train mode on the batch it was estimated from, and the
model is left as it was in every other way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from epam_model.epamnet import build_model
from epam_model.precise_bn import recompute_bn_stats
from epam_model.xshiftnet import set_residual_init


def forward(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return model(batch)


@pytest.fixture()
def model() -> nn.Module:
    torch.manual_seed(0)
    net = build_model("pose", 4, dropout=0.0)
    set_residual_init(net, zero=False)  # every BN layer on the path, as in a run from scratch
    return net


def batches(count: int, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(6, 17, 4, 32, 32, generator=generator) ** 4 for _ in range(count)]


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def batch_statistics(model: nn.Module, batch: torch.Tensor) -> dict[nn.Module, tuple]:
    """Each BN layer's input mean and unbiased variance per channel on one batch, in train mode
    (what the layer normalises that batch with), read with hooks, not with precise_bn."""
    seen: dict[nn.Module, tuple] = {}

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].transpose(0, 1).flatten(1).double()
        seen[layer] = (x.mean(1), x.var(1, unbiased=True))

    handles = [layer.register_forward_pre_hook(hook) for layer in bn_layers(model)]
    model.train()
    with torch.no_grad():
        model(batch)
    for handle in handles:
        handle.remove()
    return seen


def test_the_statistics_are_the_average_of_the_batches(model) -> None:
    data = batches(3)
    per_batch = [batch_statistics(model, batch) for batch in data]
    assert recompute_bn_stats(model, data, forward, limit=10) == 3
    for layer in bn_layers(model):
        mean = torch.stack([stats[layer][0] for stats in per_batch]).mean(0)
        var = torch.stack([stats[layer][1] for stats in per_batch]).mean(0)
        torch.testing.assert_close(layer.running_mean.double(), mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.running_var.double(), var, rtol=1e-3, atol=1e-5)


def test_eval_mode_then_matches_train_mode_where_running_averages_do_not(model) -> None:
    """Weights moved away from the ones the running averages were gathered with (as SGD moves them
    early in a run): eval mode is wrong until the statistics are re-estimated."""
    batch = batches(1)[0]
    recompute_bn_stats(model, [batch], forward, limit=1)
    with torch.no_grad():
        for layer in bn_layers(model):
            layer.weight.mul_(1.5)
        model.stem.conv.weight.mul_(3.0)
        model.train()
        reference = model(batch)
        model.eval()
        stale = (model(batch) - reference).abs().max().item()
        recompute_bn_stats(model, [batch], forward, limit=1)
        model.eval()
        fresh = (model(batch) - reference).abs().max().item()
    scale = reference.abs().max().item()
    # Not exact: the running variance is the unbiased one, train mode divides by the biased one
    # (measured 3.5 % of the largest logit here, through some 70 BN layers).
    assert fresh < 0.1 * scale, (fresh, scale)
    assert stale > 100 * scale, (stale, scale)


def test_limit_mode_and_momentum_are_respected(model) -> None:
    data = iter(batches(5))
    model.eval()
    assert recompute_bn_stats(model, data, forward, limit=2) == 2
    assert len(list(data)) == 3  # the rest of the batches were not read
    assert not model.training
    assert all(layer.momentum == 0.1 for layer in bn_layers(model))


def test_nothing_changes_without_batches_or_when_a_batch_fails(model) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recompute_bn_stats(model, [], forward, limit=5) == 0
    assert recompute_bn_stats(model, batches(2), forward, limit=0) == 0

    def failing() -> Iterator[torch.Tensor]:
        yield batches(1)[0]
        raise OSError("a shard went away")

    with pytest.raises(OSError, match="went away"):
        recompute_bn_stats(model, failing(), forward, limit=5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_residual_init_zero_or_one() -> None:
    torch.manual_seed(0)
    net = build_model("pose", 4)
    scales = [m.bn3.weight for m in net.modules() if hasattr(m, "bn3")]
    assert scales and all(not s.any() for s in scales)  # the authors' init
    set_residual_init(net, zero=False)
    assert all(bool((s == 1).all()) for s in scales)
    set_residual_init(net, zero=True)
    assert all(not s.any() for s in scales)
