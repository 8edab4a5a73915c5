"""The training engine: `train(cfg, callbacks) -> TrainResult`. The math knows nothing of
tracking; it hands each epoch's metrics to its callbacks (MLflow logging is one, a pruner
another)."""

from __future__ import annotations

import functools
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from data_utils import DeviceLoader, FashionMNIST, load_fashion_mnist
from experiments.callbacks import Callback, Callbacks, TrainResult
from experiments.checkpoint import restore_model, save_checkpoint
from experiments.config import Config, ConfigError, to_dict, validate
from experiments.precision import RESOLVED, autocast, resolve_precision, step_rate
from experiments.splits import data_splits, loaders
from experiments.stops import DivergenceError, StopRun, stop_cause
from models import build_model, initialize_weights
from models.losses import LossFn, build_loss
from models.optim import build_optimizer, build_schedule


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but torch sees no GPU; use auto or cpu")
    return torch.device(name)


@functools.lru_cache(maxsize=2)
def dataset(data_dir: str) -> FashionMNIST:
    """Read and checksum the IDX files once per process; a study's trials share them."""
    return load_fashion_mnist(data_dir or None)


@torch.inference_mode()
def evaluate(
    model: nn.Module, loader: DeviceLoader, loss_fn: LossFn
) -> tuple[float, float, Tensor]:
    """Mean loss, accuracy and all logits, with one host sync at the end. Always fp32: the
    accuracy reported is the one the logged fp32 model gives when reloaded."""
    model.eval()
    device = next(model.parameters()).device
    logits = []
    loss_sum = torch.zeros((), device=device)
    labels = []
    for x, y in loader:
        out = model(x)
        loss_sum += loss_fn(out, y) * len(y)
        logits.append(out)
        labels.append(y)
    out, y = torch.cat(logits), torch.cat(labels)
    # Counted, not averaged in float32, so 0.9320 is logged as 0.932 and not 0.93199998.
    right = (out.argmax(1) == y).sum().item()
    return (loss_sum / len(y)).item(), right / len(y), out.cpu()


def build_training(
    cfg: Config, device: torch.device, steps_per_epoch: int
) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Seeded model (initialized, channels_last), optimizer and per-step schedule."""
    torch.manual_seed(cfg.seed)
    model = initialize_weights(build_model(cfg.model, cfg.width), cfg.init)
    model = model.to(device, memory_format=torch.channels_last)
    opt = build_optimizer(
        model,
        cfg.optimizer,
        cfg.lr,
        cfg.weight_decay,
        cfg.momentum,
        cfg.nesterov,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        head_lr_scale=cfg.head_lr_scale,
    )
    sched = build_schedule(
        opt, cfg.schedule, cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch)
    )
    return model, opt, sched


def estimate_seconds(cfg: Config) -> float:
    """About how long train(cfg) takes on this machine: a few timed forward and backward passes
    of its model at its batch size, in the precision it would train in, scaled to its epochs'
    images; validation adds a forward pass (about a third of a step) per val image."""
    device = resolve_device(cfg.device)
    model, _, _ = build_training(cfg, device, steps_per_epoch=1)
    loss_fn = build_loss(cfg.loss, cfg.label_smoothing)
    n_train = min(cfg.train_subset or 60000, 60000 - cfg.val_size)
    precision = resolve_precision(
        cfg.precision,
        device,
        model,
        loss_fn,
        cfg.batch_size,
        cfg.epochs * n_train // cfg.batch_size,
    )
    step_rate(model, loss_fn, cfg.batch_size, device, precision, steps=1)  # oneDNN picks kernels
    rate = step_rate(model, loss_fn, cfg.batch_size, device, precision)
    return cfg.epochs * (n_train + cfg.val_size / 3) / rate


def train(
    cfg: Config,
    callbacks: Sequence[Callback] = (),
    resume: dict[str, Any] | None = None,
    test: bool = True,
) -> TrainResult:
    """Train, validate each epoch, test the best weights (unless test=False: a study's trial is
    scored on val accuracy alone)."""
    t_start = time.perf_counter()
    validate(cfg)
    device = resolve_device(cfg.device)
    threads = torch.get_num_threads()  # given back at the end: the caller keeps its own
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = dataset(cfg.data_dir)
    train_loader, val_loader, test_loader = loaders(cfg, data, device)
    model, opt, sched = build_training(cfg, device, len(train_loader))
    loss_fn = build_loss(cfg.loss, cfg.label_smoothing)
    eval_loss = build_loss("cross_entropy")
    cbs = Callbacks(callbacks)

    start_epoch, step, best, history = 0, 0, -1.0, []
    # Every train_loss point and the best weights so far travel in last.pt, so a resumed run
    # can re-send what never reached the tracking store and test the weights it would have.
    train_losses: list[tuple[int, float]] = []
    best_weights: dict[str, Tensor] | None = None
    if resume is not None:
        start_epoch, step, best, history, train_losses, best_weights = _restore(
            resume, model, opt, sched, device
        )

    # A resumed run keeps the precision its first part resolved "auto" to.
    precision = (resume or {}).get("precision")
    if cfg.precision != "auto" or precision not in RESOLVED:
        run_steps = cfg.epochs * len(train_loader)
        precision = resolve_precision(
            cfg.precision, device, model, loss_fn, cfg.batch_size, run_steps
        )
    # The resolved device and precision replace "auto" in the logged params.
    extra = {
        "n_params": sum(p.numel() for p in model.parameters()),
        "device": device.type,
        "precision": precision,
    }
    cbs.on_start(data.md5, extra)
    cbs.on_data(data_splits(cfg, data, train_loader, val_loader, test_loader))
    if resume is not None:
        cbs.on_resume(history, train_losses)
    ckpt_dir = Path(tempfile.mkdtemp(prefix="fashion-lab-ckpt-"))
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0, first_step = time.perf_counter(), step
            train_loader.set_epoch(epoch)
            losses, step, seen = train_epoch(
                cfg, model, opt, sched, loss_fn, train_loader, epoch, step, precision
            )
            metrics = {"train_images_per_s": seen / (time.perf_counter() - t0)}
            if val_loader is not None:
                val_loss, val_acc, _ = evaluate(model, val_loader, eval_loss)
                _check_finite(cfg, val_loss, f"val_loss at epoch {epoch + 1}")
                metrics |= {"val_loss": val_loss, "val_accuracy": val_acc}
                improved = val_acc > best
                best = max(best, val_acc)
            else:
                improved = True  # no validation split: the latest model is the one to test
            if improved:
                best_weights = {k: v.to("cpu", copy=True) for k, v in model.state_dict().items()}
            metrics["epoch_time_s"] = time.perf_counter() - t0
            metrics["train_loss_epoch"] = _epoch_mean(losses, first_step)
            history.append(metrics)
            train_losses += losses
            cbs.on_epoch_end(epoch + 1, metrics, losses)
            if cfg.checkpoint:
                state = {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "epoch": epoch + 1,
                    "step": step,
                    "rng": {
                        "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                    },
                    "config": to_dict(cfg),
                    "precision": precision,
                    "best_val_accuracy": best,
                    "history": history,
                    "train_losses": train_losses,
                    "best_model": None if improved else best_weights,
                }
                for name in ["last.pt", "best.pt"] if improved else ["last.pt"]:
                    save_checkpoint(state, ckpt_dir / name)
                    cbs.on_checkpoint(ckpt_dir / name)
            # Printed last, so a reader of this line knows the epoch is on record.
            tqdm.write(_epoch_line(epoch, cfg.epochs, metrics))

        if best_weights is not None:
            restore_model(model, best_weights, "the best epoch")
        test_loss, test_acc, test_logits = (
            evaluate(model, test_loader, eval_loss) if test else (None, None, None)
        )
        if test_acc is not None:
            # Now, not after the callbacks: the result is known before plots and uploads end.
            tqdm.write(f"test  test_loss={test_loss:.4f}  test_accuracy={test_acc:.4f}")
        result = TrainResult(
            cfg=cfg,
            history=history,
            best_val_accuracy=best if val_loader is not None else None,
            test_accuracy=test_acc,
            test_loss=test_loss,
            epochs_run=cfg.epochs - start_epoch,
            wall_s=time.perf_counter() - t_start,
            model=model,
            test_logits=test_logits,
            test_labels=data.test_labels,
            test_images=data.test_images,
        )
        cbs.on_end(result)
        return result
    except StopRun as e:
        cbs.on_error("KILLED", str(e), e.tags)
        raise
    except DivergenceError as e:
        cbs.on_error("FAILED", f"diverged: {e}")
        raise
    except KeyboardInterrupt as e:
        cbs.on_error("KILLED", f"{stop_cause(e)}; resume with --resume")
        raise
    except Exception as e:  # a run must never be left RUNNING by a crash
        cbs.on_error("FAILED", failure_reason(cfg, e))
        raise
    finally:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        torch.set_num_threads(threads)


def _restore(
    resume: dict[str, Any],
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
) -> tuple[int, int, float, list, list[tuple[int, float]], dict[str, Tensor]]:
    """Load a checkpoint into model, optimizer, schedule and RNGs; return where the run was:
    (epoch, step, best val accuracy, history, train_loss points, best weights)."""
    restore_model(model, resume["model"], "last.pt")
    opt.load_state_dict(resume["optimizer"])
    sched.load_state_dict(resume["scheduler"])
    torch.set_rng_state(resume["rng"]["torch"])
    if device.type == "cuda" and resume["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(resume["rng"]["cuda"])
    train_losses = [(int(s), float(v)) for s, v in resume.get("train_losses", [])]
    # None: the checkpoint's own epoch was the best.
    best_weights = resume.get("best_model") or resume["model"]
    return (
        resume["epoch"],
        resume["step"],
        resume["best_val_accuracy"],
        list(resume["history"]),
        train_losses,
        best_weights,
    )


def failure_reason(cfg: Config, e: BaseException) -> str:
    """One line for a run's error tag; out of memory names what to shrink."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        device = resolve_device(cfg.device).type
        if device == "cuda":
            device = f"cuda ({torch.cuda.get_device_name()})"
        first = (str(e).strip().splitlines() or [""])[0]
        return (
            f"out of GPU memory: model {cfg.model} (width {cfg.width or 'default'}), "
            f"batch size {cfg.batch_size}, device {device}: {first}"
        )
    return f"{type(e).__name__}: {e}"


def train_epoch(
    cfg: Config,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: LossFn,
    loader: DeviceLoader,
    epoch: int,
    step: int,
    precision: str,
) -> tuple[list[tuple[int, float]], int, int]:
    """One pass: (train_loss points, global step, images seen), computing in the resolved
    precision ("bf16" or "fp32"). The loss is summed on the device and read once per log_every
    steps."""
    model.train()
    device = next(model.parameters()).device
    running, n, points = torch.zeros((), device=device), 0, []
    t0, seen = time.perf_counter(), 0
    # disable=None: a bar on terminals only; logs get the one summary line per epoch.
    bar = tqdm(
        loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False, disable=None
    )
    for x, y in bar:
        with autocast(device, precision):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.detach()
        n, step, seen = n + 1, step + 1, seen + len(y)
        if step % cfg.log_every == 0:
            points.append((step, _flush(cfg, running, n, step)))
            running.zero_()
            n = 0
            rate = seen / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{points[-1][1]:.4f}", img_s=f"{rate:,.0f}")
    if n:
        points.append((step, _flush(cfg, running, n, step)))
    return points, step, seen


def _flush(cfg: Config, running: Tensor, n: int, step: int) -> float:
    value = (running / n).item()
    _check_finite(cfg, value, f"train_loss at step {step}")
    return value


def _epoch_mean(points: list[tuple[int, float]], first_step: int) -> float:
    """Mean loss over the epoch's steps: each logged window weighs as many steps as it holds
    (the last one of an epoch is usually shorter)."""
    total, prev = 0.0, first_step
    for step, value in points:
        total, prev = total + value * (step - prev), step
    return total / max(prev - first_step, 1)


def _check_finite(cfg: Config, value: float, what: str) -> None:
    if not math.isfinite(value) or value > cfg.max_loss:
        raise DivergenceError(f"{what} is {value} (limit {cfg.max_loss}); lower the lr")


def _epoch_line(epoch: int, epochs: int, m: dict[str, float]) -> str:
    parts = [f"epoch {epoch + 1}/{epochs}", f"train_loss={m['train_loss_epoch']:.4f}"]
    if "val_accuracy" in m:
        parts += [f"val_loss={m['val_loss']:.4f}", f"val_accuracy={m['val_accuracy']:.4f}"]
    parts += [f"{m['train_images_per_s']:,.0f} img/s", f"{m['epoch_time_s']:.1f}s"]
    return "  ".join(parts)
