"""Which dtype the training step computes in: bf16 autocast or fp32, and what "auto" picks.

Whether bf16 pays on a CPU depends on the CPU, not only on its flags. On a 2-core AMD EPYC
with AVX512-BF16 the cnn_bn step ran 2.05x faster in bf16; on a 2-core Intel Xeon with
AVX512-BF16 and no AMX it ran at about 0.86x its fp32 speed (benchmarks/RESULTS.md, the
experiments log). So on such CPUs "auto" times both on the run's own model and batch size,
and keeps fp32 unless bf16 is clearly faster.
"""

from __future__ import annotations

import contextlib
import copy
import time

import torch
from torch import nn

from models.losses import LossFn

RESOLVED = ("bf16", "fp32")
# bf16 must beat fp32 by this much to be picked: fp32 is exact, and timings jitter.
BF16_MIN_SPEEDUP = 1.1
# Steps untimed (oneDNN picks and caches its kernels on the first ones), then timed, per round.
PROBE_WARMUP_STEPS = 2
PROBE_STEPS = 3
PROBE_ROUNDS = 2
PROBE_STEPS_ALL = 2 * (PROBE_WARMUP_STEPS + PROBE_ROUNDS * PROBE_STEPS)
# A shorter run stays fp32 untimed: timing would cost over 5% of its steps, for a choice that
# matters little in a run that short (tests, smoke runs, --dry-run).
MIN_RUN_STEPS = 20 * PROBE_STEPS_ALL
# What auto resolved to per (architecture, batch size, device, threads): a study's worker trains
# trial after trial in one process, and a trial like one before it is not timed again.
_resolved: dict[tuple[str, int, str, int], str] = {}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for a resolved precision ("bf16"); anything else runs as it is."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_precision(
    name: str,
    device: torch.device,
    model: nn.Module,
    loss_fn: LossFn,
    batch_size: int,
    run_steps: int,
) -> str:
    """The precision a run of run_steps optimizer steps computes in: an explicit one as given;
    for "auto", bf16 on CUDA, fp32 where the CPU has no bf16 kernels (oneDNN would emulate them,
    slowly) or the run is too short to pay for timing both, and elsewhere whichever
    `step_rates` measures faster on this model, fp32 unless bf16 wins clearly."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported() or run_steps < MIN_RUN_STEPS:
        return "fp32"
    key = (str(model), batch_size, str(device), torch.get_num_threads())
    if key not in _resolved:
        rates = step_rates(model, loss_fn, batch_size, device)
        _resolved[key] = "bf16" if rates["bf16"] >= BF16_MIN_SPEEDUP * rates["fp32"] else "fp32"
    return _resolved[key]


def step_rates(
    model: nn.Module, loss_fn: LossFn, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Images/s of a forward and backward pass in each precision, on a copy of the model and
    random images, so the run's weights, BatchNorm statistics and random streams are untouched.
    The rounds alternate between the precisions and each keeps its best, so a moment of load
    on the machine does not decide. The optimizer step is left out: it is fp32 in both."""
    best = dict.fromkeys(RESOLVED, 0.0)
    for precision in RESOLVED:
        step_rate(model, loss_fn, batch_size, device, precision, PROBE_WARMUP_STEPS)
    for _ in range(PROBE_ROUNDS):
        for precision in RESOLVED:
            rate = step_rate(model, loss_fn, batch_size, device, precision, PROBE_STEPS)
            best[precision] = max(best[precision], rate)
    return best


def step_rate(
    model: nn.Module,
    loss_fn: LossFn,
    batch_size: int,
    device: torch.device,
    precision: str,
    steps: int = PROBE_STEPS,
) -> float:
    """Images/s of `steps` forward and backward passes of a copy of the model in `precision`."""
    twin = copy.deepcopy(model).train()
    with torch.random.fork_rng(devices=[]):
        x = torch.randn(batch_size, 1, 28, 28, device=device)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch_size,), device=device)
        t0 = time.perf_counter()
        for _ in range(steps):
            with autocast(device, precision):
                loss = loss_fn(twin(x), y)
            loss.backward()
            twin.zero_grad(set_to_none=True)
        return steps * batch_size / (time.perf_counter() - t0)
