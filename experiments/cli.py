"""Argument types and the help format of the command-line tools."""

from __future__ import annotations

import argparse
import gc
import re
import sys
from collections.abc import Callable
from typing import NoReturn

# Stricter than MLflow, so that models:/NAME@champion always parses.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= low."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def gpu_list(text: str) -> list[str]:
    """An argparse type: CUDA_VISIBLE_DEVICES ids, as in 0,1,3."""
    gpus = [g.strip() for g in text.split(",")]
    if not all(gpus):
        raise argparse.ArgumentTypeError(f"expected ids like 0,1,3, got {text!r}")
    return gpus


def model_name(text: str) -> str:
    """An argparse type: the name of a registered model in MLflow's Model Registry."""
    if not MODEL_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} cannot name a registered model: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return text


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Defaults on every line, except None and False, whose help says what happens instead; the
    description and epilog keep their own line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def run_tool(main: Callable[[], int]) -> NoReturn:
    """A tool's own process: main() with the garbage collector paused until main calls
    setup_done(), then the exit of exit_process().

    Importing torch, mlflow and the tracking store's code makes over 400,000 objects that live
    as long as the process. While they pile up, the collector's full passes over all of them
    come one after another, each slower: 8 passes, 0.8 s in all, before a run's first step on a
    2-core CPU."""
    gc.disable()
    exit_process(main())


def setup_done() -> None:
    """The set-up objects frozen out of the collector's reach, and the collector back on; only
    where run_tool() paused it. A main() called in-process (tests, notebooks) leaves the caller's
    collector as it is: freezing would keep the caller's garbage forever."""
    if not gc.isenabled():
        # Without a collection first: the cycles that set-up left (about 3,000 objects in a
        # run's) stay frozen with it, where a collection would cost 0.25 s.
        gc.freeze()
        gc.enable()


def exit_process(code: int) -> NoReturn:
    """sys.exit(code) for a tool's process, less the garbage collector's passes at shutdown.

    With torch, mlflow and sqlalchemy loaded, those passes over every live object took about
    1.9 s of each process's exit on a 2-core CPU (a run's or a study worker's), to free memory
    the OS takes back anyway. Frozen objects are skipped by them; atexit handlers, thread joins
    and module teardown still run as usual.
    """
    gc.freeze()
    sys.exit(code)
