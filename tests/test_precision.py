"""The precision setting: which dtype the training step computes in, and what auto picks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from experiments.engine import autocast, resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)]
)
def test_the_training_step_computes_in_the_chosen_dtype(precision, dtype):
    conv = nn.Conv2d(1, 4, 3)
    with autocast(CPU, precision):
        out = conv(torch.randn(2, 1, 8, 8))
    assert out.dtype == dtype
    assert conv.weight.dtype == torch.float32  # autocast keeps the master weights in fp32


@pytest.mark.parametrize(("has_bf16_kernels", "auto"), [(True, "bf16"), (False, "fp32")])
def test_auto_follows_the_cpu_and_explicit_choices_are_kept(monkeypatch, has_bf16_kernels, auto):
    # Both answers of oneDNN's capability query, whatever this machine's CPU would say.
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: has_bf16_kernels)
    assert resolve_precision("auto", CPU) == auto
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"  # whatever the CPU says
    assert [resolve_precision(p, CPU) for p in ("bf16", "fp32")] == ["bf16", "fp32"]
