"""Precise BatchNorm statistics: re-estimate every BN layer's running mean and variance with the
current weights before a validation, instead of trusting the running averages of training.

Why: the running averages (momentum 0.1) mix statistics of many past weight states. While the
weights change fast, as they do early in a run from scratch, they describe none of them, and a
network whose train-mode predictions are already right predicts one class for every clip in eval
mode: measured on the synthetic 4-class pose set (docs/training.md), val top-1 0.25 with the running
averages and 0.70-0.80 with statistics re-estimated on the same weights. Picking best.pt on such
validations picks noise. PySlowFast's Kinetics configs do the same (`BN.USE_PRECISE_STATS`, 200
batches), as does MMAction2's precise-BN SlowFast config (docs/training.md has the links);
`torch.optim.swa_utils.update_bn` is the same algorithm for models that take one tensor.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["recompute_bn_stats"]


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_bn_stats(
    model: nn.Module,
    batches: Iterable[Any],
    forward: Callable[[nn.Module, Any], Any],
    *,
    limit: int,
) -> int:
    """Replace the running statistics of every BN layer of `model` by their plain average over the
    first `limit` batches of `batches`, forwarded in train mode by `forward(model, batch)`.

    Weights and buffers other than the BN statistics are not touched; the model's train/eval mode
    and each layer's momentum are restored. Under torch.distributed every process averages the
    statistics of its own batches, then the processes average theirs (as PySlowFast does), so all
    ranks leave with the same buffers. Give the plain module, not its DistributedDataParallel
    wrapper, whose forward would broadcast rank 0's buffers over the others'. Returns the batches
    used (0 leaves the statistics as they were, as does an error raised by `batches` or `forward`).
    """
    layers = _bn_layers(model)
    if not layers or limit < 1:
        return 0
    saved = [[buffer.clone() for buffer in _stats_buffers(layer)] for layer in layers]
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # None: a cumulative (equal-weight) average over the batches
    model.train()
    used = 0
    try:
        for batch in itertools.islice(batches, limit):  # no batch read beyond the limit
            forward(model, batch)
            used += 1
    except BaseException:
        _restore(layers, saved)  # a failed pass leaves the model as it found it
        raise
    finally:
        model.train(was_training)
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if used == 0:
        _restore(layers, saved)
    _average_across_ranks(layers)
    return used


def _stats_buffers(layer: nn.modules.batchnorm._BatchNorm) -> list[torch.Tensor]:
    return [layer.running_mean, layer.running_var, layer.num_batches_tracked]


def _restore(layers: list[nn.modules.batchnorm._BatchNorm], saved: list[list[Any]]) -> None:
    """Put back the statistics of before (no batch came, or one failed), not the reset ones."""
    for layer, stats in zip(layers, saved):
        for buffer, value in zip(_stats_buffers(layer), stats):
            buffer.copy_(value)


def _average_across_ranks(layers: list[nn.modules.batchnorm._BatchNorm]) -> None:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for layer in layers:
        for buffer in (layer.running_mean, layer.running_var):
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(dist.get_world_size())
