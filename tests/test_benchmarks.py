"""The benchmark scripts: a --smoke run of each, so they don't rot, the code each run is found to
have measured, and how the tuning flow's printed lines become figures.

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

from benchmarks import bench_tune, figures, machine, process, publish, readme
from benchmarks.process import ProcessRun

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
def test_tune_smoke_run_measures_both_flows_and_the_rungs_from_make(tmp_path):
    smoke("bench_tune", tmp_path)
    code = ("Makefile", "tune.py", "train.py", "experiments/tuning/confirm.py")
    data = check_result(tmp_path, "tune", code)
    samples = data["samples"]
    assert len(samples["train"]) == 1 and samples["rungs"]
    assert samples["flow"]["registered"].startswith("fashion-lab v1 @champion")


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


FLOW = """\
study: tune-cpu
trials: 8 counted (budget 8): 7 complete, 1 pruned, 0 failed, 0 running, 0 waiting
best_trial: 7
trial 7 beats the baseline (trial 0) beyond seed noise: +0.48 points (95% CI [+0.31, +0.66], \
Welch p = 0.00162); best.yaml is trial 7
baseline_trial: 0
baseline_val_accuracies: 0.9342,0.9351,0.9338
challenger_trial: 7
challenger_val_accuracies: 0.9390,0.9401,0.9385
gain_over_baseline_points: 0.48
gain_over_baseline_ci95_points: 0.31,0.66
gain_over_baseline_p: 0.00162
beats_baseline: yes
confirmed_trial: 7
"""
RETRAIN = """\
best_trial: 7
retraining trial 7's config on all 60k training images
registered: fashion-lab v1 @champion: val 0.9392: no champion yet
test_accuracy: 0.9371
"""


def printed(text: str, wall_s: float) -> ProcessRun:
    return ProcessRun(["make", "tune"], 0, wall_s, [(0.0, line) for line in text.splitlines()])


def test_the_tuning_flow_printed_becomes_figures_recomputed_from_its_samples():
    flow = bench_tune.flow(printed(FLOW, 2400.0), printed(FLOW + RETRAIN, 300.0))
    assert flow["challenger"] == [0.9390, 0.9401, 0.9385] and flow["beats_baseline"] is True
    assert (flow["confirmed_trial"], flow["champion_test_accuracy"]) == (7, 0.9371)
    train = [
        {"seed": k, "test_accuracy": acc, "train_s": s, "wall_s": s + 9}
        for k, (acc, s) in enumerate([(0.9323, 146.3), (0.9348, 150.1), (0.9311, 144.0)])
    ]
    rungs = [
        {"trial": t, "at_rung": a, "final": b} for t, a, b in [(0, 0.8, 0.86), (1, 0.82, 0.88)]
    ]
    samples = {"prune_from_epoch": 1, "train": train, "flow": flow, "rungs": rungs}
    f = figures.derive("tune", samples)
    points, low, high, p = flow["printed_gain"]
    assert f["gain"].value == pytest.approx(points, abs=0.005)
    assert (f["gain_ci_low"].value, f["gain_ci_high"].value) == pytest.approx(
        (low, high), abs=0.005
    )
    assert f["gain_p"].value == pytest.approx(p, rel=0.01)
    assert f["gain_p"].verdict() == "< 0.05: met (1 run)"
    assert f["flow_multiple"].value == pytest.approx(2700 / 146.3)
    assert f["flow_multiple"].verdict() == "≤ 30×: met (1 run)"
    assert f["champion_gain"].text() == "+0.48 points"  # 93.71 - 93.23
    assert f["train_accuracy"].spread() == "93.11–93.48%"
    assert f["rung_rho"].value == pytest.approx(1.0)


def test_a_tuning_flow_missing_a_line_names_it():
    with pytest.raises(KeyError, match="printed no 'challenger_trial' line"):
        bench_tune.flow(printed(FLOW.replace("challenger_trial", "x"), 1.0), printed(RETRAIN, 1.0))


def test_the_first_rung_is_make_tunes_prune_from_epoch():
    makefile = (ROOT / "Makefile").read_text()
    found = re.search(r"--prune-from-epoch (\d+)", makefile[makefile.index("\ntune:") :])
    assert bench_tune.prune_from_epoch(makefile) == int(found[1])
    with pytest.raises(ValueError, match="names no --prune-from-epoch"):
        bench_tune.prune_from_epoch("tune: setup\n\t$(PY) tune.py --pruner none\n")


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
