"""Data parallelism over several processes with paddle.distributed's collective engine (fleet).

Launched with ``python -m paddle.distributed.launch ... main.py ...``, every process runs the same
trainer on its share of each global batch (dataset.TrainSampler): gradients are averaged over the
ranks in the backward pass, so all ranks hold the same weights after every step. On one process
everything here is the identity.
"""
from __future__ import annotations

import paddle

_FLEET_READY = False


def world_size() -> int:
    return paddle.distributed.get_world_size()


def rank() -> int:
    return paddle.distributed.get_rank()


def init_distributed() -> bool:
    """``fleet.init(is_collective=True)`` once per process under a multi-process launch.
    Returns whether this is a multi-process run."""
    global _FLEET_READY
    if world_size() <= 1:
        return False
    if not _FLEET_READY:
        from paddle.distributed import fleet
        fleet.init(is_collective=True)
        _FLEET_READY = True
    return True


def distribute(networks: dict, optimizers: dict) -> tuple[dict, dict]:
    """Every network through ``fleet.distributed_model`` (which broadcasts rank 0's weights and
    buffers, spectral-norm u/v included, so all ranks start identical) and every optimizer through
    ``fleet.distributed_optimizer``; unchanged on one process."""
    if not init_distributed():
        return networks, optimizers
    from paddle.distributed import fleet
    return ({name: fleet.distributed_model(net) for name, net in networks.items()},
            {name: fleet.distributed_optimizer(opt) for name, opt in optimizers.items()})


def unwrap(layer: paddle.nn.Layer) -> paddle.nn.Layer:
    """The bare network inside a data-parallel wrapper (itself on one process)."""
    return getattr(layer, '_layers', layer)


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on at least one rank (a 1-element all-reduce)."""
    if world_size() == 1:
        return flag
    votes = paddle.to_tensor([1.0 if flag else 0.0])
    paddle.distributed.all_reduce(votes)
    return bool(votes.item() > 0)


def ranks_agree(value: float) -> bool:
    """Whether every rank holds the same ``value`` (two 1-element all-reduces)."""
    if world_size() == 1:
        return True
    low, high = paddle.to_tensor([-float(value)]), paddle.to_tensor([float(value)])
    paddle.distributed.all_reduce(low, op=paddle.distributed.ReduceOp.MAX)
    paddle.distributed.all_reduce(high, op=paddle.distributed.ReduceOp.MAX)
    return -low.item() == high.item()


def mean_over_ranks(values: paddle.Tensor) -> paddle.Tensor:
    """The mean of ``values`` over the ranks (the loss of the global batch)."""
    if world_size() == 1:
        return values
    paddle.distributed.all_reduce(values)
    return values / world_size()


def barrier() -> None:
    if world_size() > 1:
        paddle.distributed.barrier()
