"""The benchmark scripts: a --smoke run of each, so they don't rot, and the code each run is found
to have measured.

Smoke runs write into a temp folder and assert nothing about speed: on tiny sizes the numbers mean
nothing. The real measurements are `python -m benchmarks.<name>` on a quiet machine.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, call_main, cli_env

from benchmarks import figures, machine, process, publish, readme

KEYS = {"name", "benchmark", "smoke", "command", "measured_at", "git", "code", "machine"}
KEYS |= {"samples", "summary"}


def smoke(script: str, out: Path, *args: str) -> None:
    """`python -m benchmarks.<script> --smoke` from the repo root, its main() in this process:
    the runs it starts are child processes all the same."""
    main = importlib.import_module(f"benchmarks.{script}").main
    res = call_main(main, "--smoke", "--out", str(out), *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def check_result(out: Path, name: str, code: tuple[str, ...] = ()) -> dict:
    """A smoke result: its layout, its summary what its samples give, unfit to show for being a
    smoke run, and the code it measured found, `code` among it, with each file's blob hash."""
    data = json.loads((out / "results" / f"{name}.json").read_text())
    assert set(data) == KEYS and data["smoke"] is True and data["name"] == name
    derived = figures.derive(data["benchmark"], data["samples"])
    assert data["summary"] == {k: publish.plain(f.value) for k, f in derived.items()}
    assert f"{out / 'results' / name}.json is a smoke run: it measures nothing" in (
        readme.load(out / "results", name, ROOT).problems
    )
    assert set(code) <= set(data["code"]), sorted(data["code"])
    assert all(data["code"][p] == publish.blob(ROOT / p) for p in data["code"])
    assert not [p for p in data["code"] if p.startswith((".venv/", "tests/"))]
    assert "--out" not in data["command"]
    return data


# What the engine's every run imports: found in whichever process ran it.
ENGINE = ("experiments/engine.py", "data_utils/loader.py", "models/tutorial_cnn.py")


@pytest.mark.slow
def test_loader_smoke_run_finds_the_code_it_measured_in_its_own_process(tmp_path):
    smoke("bench_loader", tmp_path)
    data = check_result(tmp_path, "loader", ("benchmarks/bench_loader.py", *ENGINE))
    assert len(data["samples"]["ours"]) == len(data["samples"]["tutorial"]) == 1


@pytest.mark.slow
def test_memory_smoke_run_finds_the_code_its_children_ran(tmp_path):
    smoke("bench_memory", tmp_path)
    check_result(tmp_path, "memory", ("train.py", "benchmarks/tutorial_baseline.py", *ENGINE))


@pytest.mark.slow
def test_time_to_accuracy_smoke_run_finds_the_recipe_its_child_read(tmp_path):
    smoke("bench_time_to_accuracy", tmp_path)
    code = ("train.py", "experiments/configs/speedrun.yaml", "benchmarks/tutorial_baseline.py")
    data = check_result(tmp_path, "tta", code)
    assert data["samples"]["tutorial"]["runs"][0]["accuracies"], "the tutorial printed no epoch"
    assert [r["name"] for r in data["samples"]["recipes"]] == ["speedrun"]


@pytest.mark.slow
def test_tracking_overhead_smoke_run_times_every_part(tmp_path):
    smoke("bench_tracking_overhead", tmp_path)
    data = check_result(tmp_path, "tracking", ("benchmarks/timed_run.py", "experiments/plots.py"))
    assert all(data["samples"][part][0] > 0 for part in figures.PARTS)


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_step_and_fails_when_no_gpu_test_ran(tmp_path):
    res = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    gpu = torch.cuda.is_available()
    assert res.returncode == (0 if gpu else 1), res.stdout[-3000:] + res.stderr[-3000:]
    ran = re.search(r"GPU tests: (\d+) of (\d+) ran and passed, (\d+) skipped", res.stdout)
    assert ran and int(ran[2]) >= 5 and ran[1 if gpu else 3] == ran[2], res.stdout
    if not gpu:  # all skipped: the check refuses to pass without them
        assert res.stdout.rstrip().endswith("failed: GPU tests ran")
    assert "== throughput tutorial_cnn: done" in res.stdout
    assert "== time to 93% and 94%: done" in res.stdout
    check_result(tmp_path, "throughput", ("benchmarks/bench_throughput.py", *ENGINE))
    check_result(tmp_path, "tta", ("experiments/configs/gpu_speedrun.yaml",))
    assert (tmp_path / "gpu_check.log").read_text().startswith(res.stdout[:200])


def test_the_code_a_child_process_ran_is_found_with_its_blob_hashes(tmp_path):
    folder = publish.trace()
    code = "import data_utils; open('experiments/configs/speedrun.yaml').close()"
    process.run_process([sys.executable, "-c", code]).check()
    found = publish.measured_code(folder, extra=["Makefile"])
    for path in ("data_utils/__init__.py", "experiments/configs/speedrun.yaml", "Makefile"):
        out = subprocess.run(["git", "hash-object", path], cwd=ROOT, capture_output=True, text=True)
        assert found[path] == out.stdout.strip()
    # This process's own modules count too, less those that only write and check results.
    assert "benchmarks/process.py" in found and "benchmarks/publish.py" not in found
    assert not [p for p in found if p.startswith(("benchmarks/trace/", "tests/", ".venv/"))]


@pytest.mark.parametrize(
    "runs, target, verdict",
    [
        ([0.99, 1.07, 0.99], "≤ 1 GiB", "≤ 1 GiB: met (median; 2 of 3 runs)"),
        ([91.2, 91.1, 90.98, 91.3, 91.1], "≥ 91%", "≥ 91%: met (median; 4 of 5 runs)"),
        ([1.41, 1.38, 1.45], "≥ 2×", "≥ 2×: missed (median; 0 of 3 runs)"),
        ([22.0, math.inf, 21.0], "≤ 60 s", "≤ 60 s: met (median; 2 of 3 runs)"),
        ([math.inf, math.inf, 21.0], "≤ 60 s", "≤ 60 s: missed (median; 1 of 3 runs)"),
    ],
)
def test_a_verdict_is_the_medians_and_counts_the_runs_that_met_the_target(runs, target, verdict):
    assert figures.Figure("x", "s", runs, target).verdict() == verdict


def test_a_run_that_never_reached_its_accuracy_never_got_there_in_time():
    run = {"seed": 0, "test_line_s": 20.0, "train_s": 15.0, "exit_s": 23.0}
    recipe = {"name": "speedrun", "target": 0.91, "limit_s": 60.0}
    recipe["runs"] = [{**run, "test_accuracy": 0.9098}, {**run, "test_accuracy": 0.9124}]
    tutorial = {"target": 0.91, "runs": [{"time_s": 230.0}, {"time_s": None}]}
    f = figures.derive("tta", {"limit_on": "process", "tutorial": tutorial, "recipes": [recipe]})
    assert f["speedrun_s"].runs == [math.inf, 20.0]
    assert f["speedrun_ratio"].runs == [0.0, math.inf]  # tutorial / never, never / ours
    assert f["tutorial_s"].text(math.inf) == "never"


def test_reproduce_command_leaves_out_where_the_results_went():
    argv = ["--smoke", "--out", "/tmp/x", "--repeats", "3"]
    assert (
        publish.reproduce_command("bench_loader", argv)
        == "python -m benchmarks.bench_loader --smoke --repeats 3"
    )


AVX2_CAP = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def test_a_run_with_torch_held_to_avx2_is_named_and_shown_apart(monkeypatch):
    for name in machine.ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    assert publish.result_name("tta", "cpu") == "tta"
    assert publish.result_name("throughput", "cuda", "resnet") == "throughput_cuda_resnet"
    for name, value in AVX2_CAP.items():
        monkeypatch.setenv(name, value)
    assert publish.result_name("tta", "cpu") == "tta_avx2"
    assert publish.reproduce_command("bench_memory", ["--repeats", "3"]) == (
        "ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python -m benchmarks.bench_memory "
        "--repeats 3"
    )
    xeon = {"cpu": "Xeon", "cpu_kind": "AVX512-BF16", "usable_cores": 2, "gpu": None}
    assert machine.kind(xeon) == "AVX512-BF16 CPU"
    assert machine.kind({**xeon, "isa_cap": machine.isa_cap()}) == "AVX512-BF16 CPU held to AVX2"
    assert machine.kind({**xeon, "gpu": "NVIDIA H200"}) == "GPU (NVIDIA H200)"


def test_the_cap_holds_torch_to_avx2_and_the_result_records_it():
    code = "from benchmarks.machine import machine; m = machine(); print(m['isa_cap'], '|', "
    code += "m['cpu_capability'])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**cli_env(), **AVX2_CAP},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 | AVX2"
