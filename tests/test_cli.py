"""Helpers shared by the command-line tools."""

from __future__ import annotations

import argparse
import gc
import re

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


def test_tune_help_explains_every_flag_with_its_default(capsys):
    from tune import main as tune_main

    with pytest.raises(SystemExit) as exit:
        tune_main(["--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    options = text[text.index("\noptions:") :]
    # Each flag's entry: from its line, indented by two, to the next such line or a heading.
    entries = re.findall(r"^  (-[^\n]*(?:\n(?!  -|\S)[^\n]*)*)", options, re.M)
    from experiments.tuning.flags import build_parser

    shown = [a for a in build_parser()._actions if a.help != argparse.SUPPRESS]
    flags = {s for a in shown for s in a.option_strings if s.startswith("--")}
    described = {f: e for e in entries for f in re.findall(r"--[\w-]+", e.split("  ")[0])}
    assert flags - {"--help"} <= set(described)
    for flag, entry in described.items():
        if flag == "--help":
            continue
        words = " ".join(entry.split())
        assert len(words.split()) > 3, f"{flag} is not explained: {words!r}"
        assert "default:" in words, f"{flag} does not say its default: {words!r}"
