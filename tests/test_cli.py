"""Helpers shared by the command-line tools."""

from __future__ import annotations

import gc

import pytest

from experiments.cli import exit_process, run_tool, setup_done


def test_exit_process_exits_with_the_code_and_spares_the_collector_the_live_heap():
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as stop:
            exit_process(3)
        assert stop.value.code == 3
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_run_tool_pauses_the_collector_until_setup_done_then_freezes_what_set_up_made():
    seen = {}

    def main() -> int:
        seen["paused"] = not gc.isenabled()
        setup_done()
        seen["after"] = (gc.isenabled(), gc.get_freeze_count())
        return 4

    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as stop:
            run_tool(main)
        assert stop.value.code == 4
        assert seen["paused"]
        enabled, frozen = seen["after"]
        assert enabled and frozen > 0
    finally:
        gc.enable()
        gc.unfreeze()


def test_setup_done_leaves_an_in_process_callers_collector_alone():
    gc.unfreeze()
    setup_done()
    assert gc.isenabled() and gc.get_freeze_count() == 0
