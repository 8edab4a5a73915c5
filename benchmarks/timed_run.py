"""One training run as train.py runs it, with or without its MLflow tracking, timed part by part.

    python -m benchmarks.timed_run [--tracking] [--config YAML] [--smoke]

The child process of `bench_tracking_overhead`: a fresh process per run, so the tracked run pays
what train.py pays in each process (importing the tracking code, the first model upload's
one-off costs). It prints one line, `timed_run: {json}`, holding the seconds of `train()`, of the
import and construction of the callback, of each hook the engine called on it, and of the parts
inside the hooks that PARTS names, and the folder its `experiments` package came from.

It looks up what it calls of the code it measures by name (USES, PARTS), so that
`bench_tracking_overhead --against REV` can run this same file on another revision's code: where
that code lacks one of them, it prints `timed_run lacks: <name>` and exits 2 before timing anything.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.abc
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path
from types import ModuleType
from typing import Any

PREFIX = "timed_run: "
LACKS = "timed_run lacks: "
# The smoke run only has to pass through every path: an mlp of width 16 trains and evaluates the
# 10k test images in 0.1 s, tutorial_cnn at its width 32 in 5 s on 2 cores.
SMOKE_RUN = {
    "model": "mlp",
    "width": 16,
    "epochs": 1,
    "train_subset": 512,
    "val_size": 500,
    "warmup_epochs": 0,
}
# What the run calls of the code it measures: name -> (module, attribute path).
USES = {
    "load_config": ("experiments.config", "load_config"),
    "dataset": ("experiments.engine", "dataset"),
    "train": ("experiments.engine", "train"),
    "MlflowCallback": ("experiments.tracking", "MlflowCallback"),
}
# Parts of the hooks timed on their own, looked up the same way. A rename in the tracking code
# fails the run here, naming the part, rather than timing nothing.
PARTS = {
    "plots": ("experiments.plots", "run_plots"),
    "model_upload": ("experiments.tracking.run", "MlflowCallback._log_model"),
}


class Lacking(Exception):
    """The code measured has no such module or attribute; its one argument is the dotted name."""


def lookup(module: str, path: str) -> tuple[Any, str]:
    """The object that holds the last name of `path` in `module`, and that name."""
    *owners, attr = path.split(".")
    try:
        owner: Any = importlib.import_module(module)
        for name in owners:
            owner = getattr(owner, name)
    except ModuleNotFoundError as e:
        # Only the module named here, or a package above it: a missing dependency is no rename.
        if not e.name or not (module + ".").startswith(e.name + "."):
            raise
        raise Lacking(f"{module}.{path}") from e
    except AttributeError as e:
        raise Lacking(f"{module}.{path}") from e
    if not hasattr(owner, attr):
        raise Lacking(f"{module}.{path}")
    return owner, attr


def use(name: str) -> Any:
    """USES[name], imported."""
    owner, attr = lookup(*USES[name])
    return getattr(owner, attr)


class HookTimer:
    """Forwards every attribute of the wrapped callback; each method call it makes adds its
    seconds to `spent[name]`, so a hook added to the engine later is timed as well. Not a
    Callback subclass: the base class's no-op hooks would shadow the forwarding."""

    def __init__(self, inner: object, spent: dict[str, float]) -> None:
        self.inner, self.spent = inner, spent

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        return timer(attr, self.spent, name) if callable(attr) else attr


def timer(fn: Callable[..., Any], spent: dict[str, float], key: str) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0

    return timed


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Calls patch() as soon as the code measured first imports module `name`. Wrapping a part
    whose module is not imported yet must not import it early: that would take the import's cost
    out of the hook that pays it (the plotting stack, which a tracked run imports as it ends)."""

    def __init__(self, name: str, patch: Callable[[], None]) -> None:
        self.name, self.patch = name, patch

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != self.name:
            return None
        spec = PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            execute = spec.loader.exec_module

            def exec_module(module: ModuleType) -> None:
                execute(module)
                self.patch()

            spec.loader.exec_module = exec_module
        return spec


@contextlib.contextmanager
def timed_parts(spent: dict[str, float]) -> Iterator[None]:
    """Wrap each of PARTS in a timer for the block, now or when the code imports its module,
    and put them back after."""
    patched: list[tuple[Any, str, Any]] = []
    waiting: list[PatchOnImport] = []

    def patch(key: str, module: str, path: str) -> None:
        owner, attr = lookup(module, path)
        original = getattr(owner, attr)
        setattr(owner, attr, timer(original, spent, key))
        patched.append((owner, attr, original))

    for key, (module, path) in PARTS.items():
        if module in sys.modules:
            patch(key, module, path)
        elif importlib.util.find_spec(module) is None:
            raise Lacking(f"{module}.{path}")
        else:
            waiting.append(PatchOnImport(module, functools.partial(patch, key, module, path)))
    sys.meta_path[:0] = waiting
    try:
        yield
    finally:
        sys.meta_path[:] = [f for f in sys.meta_path if f not in waiting]
        for owner, attr, original in reversed(patched):
            setattr(owner, attr, original)


def run(config: str | None, device: str, tracking: bool, smoke: bool) -> dict[str, Any]:
    load_config, dataset, train = use("load_config"), use("dataset"), use("train")
    overrides = {**SMOKE_RUN, "device": device} if smoke else {"device": device}
    cfg = load_config(config, overrides)
    code = Path(importlib.import_module("experiments").__file__).parent.parent
    out: dict[str, Any] = {"tracking": tracking, "epochs": cfg.epochs, "code": str(code)}
    if not tracking:
        dataset(cfg.data_dir)
        t0 = time.perf_counter()
        train(cfg, [])
        out["train_s"] = time.perf_counter() - t0
        return out
    # train.py imports the tracking code in main(), after everything else: the same here.
    t0 = time.perf_counter()
    callback_class = use("MlflowCallback")
    out["import_s"] = time.perf_counter() - t0
    dataset(cfg.data_dir)
    t0 = time.perf_counter()
    callback = callback_class(cfg)
    out["construct_s"] = time.perf_counter() - t0
    hooks: dict[str, float] = {}
    parts: dict[str, float] = {}
    with timed_parts(parts):
        t0 = time.perf_counter()
        train(cfg, [HookTimer(callback, hooks)])
        out["train_s"] = time.perf_counter() - t0
    return {**out, "hooks_s": hooks, "parts_s": parts}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.timed_run",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--tracking", action="store_true", help="with train.py's MlflowCallback")
    p.add_argument("--config", default=None, help="train.py experiment file (default: defaults)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train")
    p.add_argument(
        "--smoke", action="store_true", help="1 epoch on 512 images, tutorial_cnn at width 4"
    )
    args = p.parse_args(argv)
    try:
        result = run(args.config, args.device, args.tracking, args.smoke)
    except Lacking as e:
        print(LACKS + str(e), flush=True)
        return 2
    print(PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
