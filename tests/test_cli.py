"""Helpers shared by the command-line tools."""

from __future__ import annotations

import gc

import pytest

from experiments.cli import exit_process


def test_exit_process_exits_with_the_code_and_spares_the_collector_the_live_heap():
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as stop:
            exit_process(3)
        assert stop.value.code == 3
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
