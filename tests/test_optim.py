"""models/optim.py: the lr schedules' shapes, weight decay only on weights, every optimizer steps.

Schedules are read step by step from a real optimizer; the expected lrs are written from the
formulas, not from the code under test.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from helpers import real_batch_losses, stuck_after_one_step
from torch import nn

from experiments.callbacks import Callback
from experiments.checkpoint import load_checkpoint, restore_model
from experiments.config import ConfigError, load_config, validate
from experiments.engine import build_training, train
from models import MODELS, build_model, head
from models.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_schedule, param_groups

LR = 0.1


def lrs(name: str, total: int, warmup: int, optimizer: str = "sgd", steps: int = 0) -> list:
    """The lr of every param group before each of `steps` (default total) scheduler steps."""
    opt = build_optimizer(build_model("mlp", width=8), optimizer, LR, weight_decay=5e-4)
    sched = build_schedule(opt, name, total, warmup)
    out = []
    for _ in range(steps or total):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()  # no gradients: nothing moves, but the scheduler sees a real step first
        sched.step()
    assert all(len(set(step)) == 1 for step in out), "the groups left the schedule together"
    return [step[0] for step in out]


def test_warmup_rises_linearly_then_cosine_falls_to_zero():
    got = lrs("cosine", total=110, warmup=10, steps=111)
    assert got[:10] == pytest.approx([LR * (k + 1) / 10 for k in range(10)])
    # Step k of the 100 after warmup: LR * (1 + cos(pi * k / 100)) / 2.
    assert got[10] == pytest.approx(LR)
    assert got[35] == pytest.approx(LR * (1 + math.cos(math.pi / 4)) / 2)
    assert got[60] == pytest.approx(LR / 2)
    assert got[85] == pytest.approx(LR * (1 + math.cos(3 * math.pi / 4)) / 2)
    assert got[110] == pytest.approx(0.0, abs=1e-12)  # and it stays there past the end
    assert max(got) == pytest.approx(LR)


def test_constant_after_warmup_and_cosine_without_warmup():
    got = lrs("none", total=50, warmup=5)
    assert got[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert got[5:] == pytest.approx([LR] * 45)
    cosine = lrs("cosine", total=40, warmup=0)
    assert cosine[0] == pytest.approx(LR)  # no warmup: the first step is at the peak
    assert cosine[20] == pytest.approx(LR / 2)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adagrad"])
def test_one_cycle_peaks_when_warmup_ends_and_anneals_to_nearly_zero(optimizer):
    # adagrad has no momentum to cycle, sgd and adam do: the lr shape is the same for all.
    got = lrs("onecycle", total=100, warmup=20, optimizer=optimizer)
    start = LR / 25  # OneCycleLR's div_factor
    assert got[0] == pytest.approx(start)
    # Cosine from start to LR over steps 0..19, peaking at the last warmup step.
    assert got[19] == pytest.approx(LR)
    assert max(got) == pytest.approx(LR) and got.index(max(got)) == 19
    assert got[10] == pytest.approx(start + (LR - start) * (1 - math.cos(math.pi * 10 / 19)) / 2)
    # Then cosine down over steps 19..99 to start / 1e4 (final_div_factor).
    assert got[99] == pytest.approx(start / 1e4)
    assert got[59] == pytest.approx(
        start / 1e4 + (LR - start / 1e4) * (1 + math.cos(math.pi / 2)) / 2
    )
    assert all(a < b for a, b in itertools.pairwise(got[:20]))
    assert all(a > b for a, b in itertools.pairwise(got[19:]))


@pytest.mark.parametrize("total, warmup", [(1, 0), (2, 0), (2, 1), (2, 5), (3, 0), (3, 3)])
def test_one_cycle_over_a_run_of_a_few_steps_rises_then_falls(total, warmup):
    # OneCycleLR divides by each phase's length: a phase of no steps used to divide by zero.
    got = lrs("onecycle", total=total, warmup=warmup)
    assert len(got) == total and all(0 < lr <= LR for lr in got)
    assert got[0] == pytest.approx(LR / 25)


def test_training_places_the_peak_at_warmup_epochs():
    """build_training turns warmup_epochs into steps: the lr peaks after 0.5 epochs of 10 steps."""
    cfg = load_config(overrides={"model": "mlp", "width": 8, "epochs": 2, "warmup_epochs": 0.5})
    assert cfg.schedule == "onecycle" and cfg.lr == LR
    _, opt, sched = build_training(cfg, torch.device("cpu"), steps_per_epoch=10)
    got = []
    for _ in range(20):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert got.index(max(got)) == 4 and max(got) == pytest.approx(LR)


def test_unknown_names_say_what_is_allowed():
    assert set(SCHEDULES) == {"none", "cosine", "onecycle"}
    with pytest.raises(ValueError, match="unknown schedule 'step'; allowed: none, cosine"):
        build_schedule(build_optimizer(nn.Linear(2, 2), "sgd", LR), "step", 10, 0)
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; allowed: sgd, adam"):
        build_optimizer(nn.Linear(2, 2), "lion", LR)


# --- weight decay: weights only ----------------------------------------------------------------


def weight_names(model: nn.Module) -> set[str]:
    """The conv kernels and linear weight matrices, found by module type."""
    return {
        f"{name}.weight"
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    }


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_only_conv_and_linear_weights_are_decayed(model_name):
    model = build_model(model_name, width=4)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = param_groups(model, 0.01)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)
    assert {names[id(p)] for p in decay["params"]} == weight_names(model)
    assert {names[id(p)] for p in no_decay["params"]} == set(names.values()) - weight_names(model)
    # Every norm's scale and shift, and every bias, is among those left alone.
    spared = {names[id(p)] for p in no_decay["params"]}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            assert {f"{name}.weight", f"{name}.bias"} <= spared
        if getattr(m, "bias", None) is not None:
            assert f"{name}.bias" in spared


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_decay_moves_weights_and_never_norms_or_biases(name):
    """With zero gradients only weight decay can move a parameter."""
    torch.manual_seed(0)
    model = build_model("cnn_bn", width=4)
    with torch.no_grad():  # BatchNorm starts at scale 1, shift 0: make both worth decaying
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, name, lr=0.01, weight_decay=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        if n in weight_names(model):
            # Moved, and every entry towards zero (some optimizers overshoot it).
            assert not torch.equal(p, before[n]), n
            assert ((p - before[n]) * before[n] <= 0).all(), n
        else:
            assert torch.equal(p, before[n]), n


def test_adamw_decay_is_decoupled_and_adam_decay_is_l2():
    torch.manual_seed(0)
    layer = nn.Linear(8, 8, bias=False)
    w = layer.weight.detach().clone()
    for name, decoupled in [("adamw", True), ("adam", False)]:
        layer.weight.data.copy_(w)
        opt = build_optimizer(layer, name, lr=0.01, weight_decay=0.1)
        layer.weight.grad = torch.zeros_like(w)
        opt.step()
        # Decoupled: w * (1 - lr * wd), and no Adam step from a zero gradient. L2: the decay is
        # a gradient, which Adam normalizes to a step of about lr on every entry.
        shrunk = w * (1 - 0.01 * 0.1)
        assert torch.allclose(layer.weight, shrunk, atol=1e-7) == decoupled, name


def test_sgd_gets_the_configured_momentum_and_nesterov():
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, "sgd", LR, momentum=0.8, nesterov=True)
    assert opt.defaults["momentum"] == 0.8 and opt.defaults["nesterov"] is True
    # Nesterov needs momentum; torch refuses the pair, so none is asked for without it.
    assert build_optimizer(model, "sgd", LR, momentum=0.0).defaults["nesterov"] is False


# --- every optimizer steps ----------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_steps_on_a_made_up_batch(name):
    assert stuck_after_one_step(name, "cross_entropy", lr=0.01, weight_decay=5e-4) == []


# Learning rates at which each optimizer fits one batch in ten steps (radam's first steps are
# unadapted and small, so it needs a large one).
FIT_LR = {
    "sgd": 0.1,
    "adam": 3e-3,
    "adamw": 3e-3,
    "rmsprop": 3e-4,
    "nadam": 3e-3,
    "radam": 0.2,
    "adagrad": 1e-2,
    "adadelta": 1.0,
    "adamax": 5e-3,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_fits_a_real_batch(name):
    losses = real_batch_losses(name, "cross_entropy", FIT_LR[name], weight_decay=5e-4)
    assert losses[-1] < 0.8 * losses[0], losses


# --- what the config sets stays set: momentum, betas, eps, the head's lr -----------------------


def stepped(steps: int = 12, **overrides) -> list[list[dict]]:
    """Each param group's settings (not its params) before each of `steps` scheduler steps of
    an mlp that build_training made from the defaults plus overrides (10 steps an epoch)."""
    cfg = load_config(overrides={"model": "mlp", "width": 8, "epochs": 2, **overrides})
    _, opt, sched = build_training(cfg, torch.device("cpu"), steps_per_epoch=10)
    out = []
    for _ in range(steps):
        out.append([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_the_optimizers_momentum_is_the_configs_under_every_schedule(schedule, optimizer):
    for groups in stepped(optimizer=optimizer, schedule=schedule, momentum=0.77):
        assert [g["momentum"] for g in groups] == [0.77, 0.77]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "nadam", "radam", "adamax"])
def test_the_adam_familys_betas_and_eps_are_the_configs_under_every_schedule(schedule, optimizer):
    settings = {"beta1": 0.8, "beta2": 0.95, "eps": 1e-6}
    for groups in stepped(optimizer=optimizer, schedule=schedule, **settings):
        assert [(g["betas"], g["eps"]) for g in groups] == [((0.8, 0.95), 1e-6)] * 2


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_head_runs_at_head_lr_scale_of_the_body_under_every_schedule(schedule):
    for groups in stepped(steps=20, schedule=schedule, head_lr_scale=0.1):
        body, body_norms, head_weights, head_biases = (g["lr"] for g in groups)
        assert body == body_norms and head_weights == head_biases
        assert head_weights == pytest.approx(0.1 * body, rel=1e-9)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_head_groups_hold_the_head_and_keep_decay_off_its_bias(model_name):
    model = build_model(model_name, width=4)
    groups = param_groups(model, 0.01, head_lr=0.5)
    assert [(g["weight_decay"], g.get("lr")) for g in groups] == [
        (0.01, None),
        (0.0, None),
        (0.01, 0.5),
        (0.0, 0.5),
    ]
    layer = head(model)
    assert groups[2]["params"] == [layer.weight] and groups[3]["params"] == [layer.bias]
    in_head = {id(layer.weight), id(layer.bias)}
    body = [p for g in groups[:2] for p in g["params"]]
    assert not in_head & {id(p) for p in body}
    assert len(body) + 2 == len(list(model.parameters()))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"head_lr_scale": 0.0}, "head_lr_scale: must be > 0"),
        ({"head_lr_scale": -1.0}, "head_lr_scale: must be > 0"),
        ({"beta1": 1.0}, r"beta1: must be in \[0, 1\)"),
        ({"beta2": -0.1}, r"beta2: must be in \[0, 1\)"),
        ({"eps": 0.0}, "eps: must be > 0"),
    ],
)
def test_bad_optimizer_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(load_config(overrides=overrides))


class KeepCheckpoints(Callback):
    """Reads each epoch's last.pt before the run's folder is gone."""

    def __init__(self) -> None:
        self.by_epoch: dict[int, dict] = {}

    def on_checkpoint(self, path: Path) -> None:
        if path.name == "last.pt":
            state = load_checkpoint(path)
            self.by_epoch[state["epoch"]] = state


def test_head_lr_scale_and_the_learned_temperature_survive_a_resume():
    """resnet (whose head ends in a LearnedTemperature) for 2 epochs with head_lr_scale 0.1, and
    again resumed from its epoch-1 checkpoint: the same optimizer groups and the same weights."""
    cfg = load_config(
        overrides={
            "model": "resnet",
            "width": 4,
            "head_lr_scale": 0.1,
            "epochs": 2,
            "train_subset": 256,
            "val_size": 500,
            "batch_size": 64,
            "augment": False,
            "threads": 1,
        }
    )
    whole, resumed = KeepCheckpoints(), KeepCheckpoints()
    train(cfg, [whole], test=False)
    train(cfg, [resumed], resume=whole.by_epoch[1], test=False)
    for state in whole.by_epoch[1], whole.by_epoch[2], resumed.by_epoch[2]:
        lrs = [g["lr"] for g in state["optimizer"]["param_groups"]]
        assert lrs[2:] == pytest.approx([0.1 * lrs[0]] * 2, rel=1e-9)
    assert (
        whole.by_epoch[2]["optimizer"]["param_groups"]
        == (resumed.by_epoch[2]["optimizer"]["param_groups"])
    )
    assert whole.by_epoch[2]["scheduler"] == resumed.by_epoch[2]["scheduler"]
    temperature = "temperature.log_temperature"
    assert whole.by_epoch[1]["model"][temperature].item() != 0.0  # it learned
    for key, value in whole.by_epoch[2]["model"].items():
        assert torch.equal(resumed.by_epoch[2]["model"][key], value), key
    model = build_model("resnet", width=4)
    restore_model(model, whole.by_epoch[2]["model"], "last.pt")
    assert torch.equal(model.temperature.log_temperature, whole.by_epoch[2]["model"][temperature])
