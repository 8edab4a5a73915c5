"""The precision setting: which dtype the training step computes in, and what auto picks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from experiments import precision
from experiments.callbacks import Callback
from experiments.config import Config
from experiments.engine import train
from experiments.precision import autocast, resolve_precision

CPU = torch.device("cpu")

TINY = nn.Sequential(
    nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)
)


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)]
)
def test_the_training_step_computes_in_the_chosen_dtype(precision, dtype):
    conv = nn.Conv2d(1, 4, 3)
    with autocast(CPU, precision):
        out = conv(torch.randn(2, 1, 8, 8))
    assert out.dtype == dtype
    assert conv.weight.dtype == torch.float32  # autocast keeps the master weights in fp32


def resolve(name, device=CPU, run_steps=10_000):
    return resolve_precision(name, device, TINY, nn.CrossEntropyLoss(), 8, run_steps)


@pytest.mark.parametrize(
    ("rates", "auto"),
    [
        ({"bf16": 2000.0, "fp32": 1000.0}, "bf16"),
        ({"bf16": 1050.0, "fp32": 1000.0}, "fp32"),  # not clearly faster: fp32 is exact
        ({"bf16": 800.0, "fp32": 1000.0}, "fp32"),
    ],
)
def test_auto_on_a_cpu_with_bf16_kernels_keeps_what_it_times_faster(monkeypatch, rates, auto):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(precision, "_resolved", {})
    monkeypatch.setattr(precision, "step_rates", lambda *args: rates)
    assert resolve("auto") == auto


def test_auto_leaves_a_run_too_short_to_pay_for_the_timing_in_fp32_untimed(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(precision, "_resolved", {})
    monkeypatch.setattr(precision, "step_rates", lambda *args: {"bf16": 2000.0, "fp32": 1000.0})
    assert resolve("auto", run_steps=precision.MIN_RUN_STEPS - 1) == "fp32"
    assert resolve("auto", run_steps=precision.MIN_RUN_STEPS) == "bf16"


def test_auto_times_each_architecture_and_batch_size_once_per_process(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(precision, "_resolved", {})
    timed = []
    monkeypatch.setattr(
        precision, "step_rates", lambda *args: timed.append(args[2]) or {"bf16": 1, "fp32": 2}
    )
    loss = nn.CrossEntropyLoss()
    wider = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.LazyLinear(10))
    for model, batch_size in [(TINY, 8), (TINY, 8), (TINY, 16), (wider, 8), (TINY, 8)]:
        assert resolve_precision("auto", CPU, model, loss, batch_size, 10_000) == "fp32"
    assert timed == [8, 16, 8]


def test_auto_without_bf16_kernels_is_fp32_untimed_and_cuda_is_bf16(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    monkeypatch.setattr(precision, "step_rates", lambda *args: pytest.fail("timed"))
    assert resolve("auto") == "fp32"
    assert resolve("auto", torch.device("cuda"), run_steps=1) == "bf16"  # whatever the CPU says
    assert [resolve(p) for p in ("bf16", "fp32")] == ["bf16", "fp32"]


def test_timing_both_precisions_leaves_the_model_and_the_random_stream_alone():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10))
    model(torch.zeros(1, 1, 28, 28))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    rates = precision.step_rates(model, nn.CrossEntropyLoss(), 8, CPU)
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert set(rates) == {"bf16", "fp32"} and all(r > 0 for r in rates.values())


class Record(Callback):
    """The resolved precision each run starts with, and each checkpoint as it is written."""

    def __init__(self) -> None:
        self.precisions: list[str] = []
        self.checkpoints: list[dict] = []

    def on_start(self, dataset_md5, extra_params):
        self.precisions.append(extra_params["precision"])

    def on_checkpoint(self, path):
        self.checkpoints.append(torch.load(path, weights_only=False))


def test_a_resumed_auto_run_keeps_the_precision_its_checkpoint_resolved_to():
    cfg = Config(model="tutorial_cnn", width=4, train_subset=256, val_size=256, epochs=1)
    record = Record()
    train(cfg, [record], test=False)
    state = record.checkpoints[-1]
    assert state["precision"] == record.precisions[0] in {"bf16", "fp32"}
    # Whatever auto would measure now, the second part computes as the first part did.
    state["precision"] = {"bf16": "fp32", "fp32": "bf16"}[state["precision"]]
    train(dataclasses.replace(cfg, epochs=2), [record], resume=state, test=False)
    assert record.precisions[1] == state["precision"]
