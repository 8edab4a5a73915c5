"""The benchmark scripts: a --smoke run of each, so they don't rot, and their RESULTS.md writer.

Smoke runs write into a temp folder and assert nothing about speed: on tiny sizes the numbers mean
nothing. The real measurements are `python -m benchmarks.<name>` on a quiet machine.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, call_main, cli_env

from benchmarks import all as run_all
from benchmarks import bench_make, bench_tracking_overhead, machine, publish, timed_run
from benchmarks.process import ProcessRun

REPORT_KEYS = {
    "name",
    "title",
    "smoke",
    "command",
    "measured_at",
    "git",
    "machine",
    "rows",
    "details",
    "notes",
}
ROW_KEYS = {"measure", "ours", "baseline", "unit", "ratio", "target", "met"}
MACHINE_KEYS = {"cpu", "usable_cores", "memory_gib", "load_avg_1m", "gpu", "torch", "torch_threads"}


@pytest.fixture
def real_results_untouched() -> Iterator[None]:
    """A smoke run must never write benchmarks/RESULTS.md or benchmarks/results/."""

    def snapshot() -> dict[str, str]:
        files = [ROOT / "benchmarks" / "RESULTS.md", *(ROOT / "benchmarks" / "results").glob("*")]
        return {str(f): hashlib.md5(f.read_bytes()).hexdigest() for f in files if f.is_file()}

    before = snapshot()
    yield
    assert snapshot() == before


def smoke(script: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m benchmarks.<script> --smoke` from the repo root, its main() in this process:
    the runs it starts are child processes all the same."""
    main = importlib.import_module(f"benchmarks.{script}").main
    res = call_main(main, "--smoke", "--out", str(out), *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def check_result(out: Path, name: str, measures: bool = True) -> dict:
    """The JSON's layout, its RESULTS.md section, and real numbers: at least one unless
    measures=False (a smoke run too short to reach what its rows time), finite and > 0 all."""
    data = json.loads((out / "results" / f"{name}.json").read_text())
    assert set(data) == REPORT_KEYS
    assert data["smoke"] is True and data["name"] == name
    assert set(data["machine"]) >= MACHINE_KEYS
    assert data["rows"] and all(set(r) == ROW_KEYS for r in data["rows"])
    # A row may be unmeasured (None), never hold a broken number.
    measured = [r["ours"] for r in data["rows"] if r["ours"] is not None]
    assert all(math.isfinite(v) and v > 0 for v in measured), data["rows"]
    assert measured or not measures, data["rows"]
    assert "--out" not in data["command"]
    md = (out / "RESULTS.md").read_text()
    assert f"<!-- bench:{name}:start -->" in md and publish.LOG_HEADING in md
    assert data["command"] in md
    return data


# bench_throughput has no test of its own: the gpu_check.sh smoke test below runs it, on the
# CPU as here, for tutorial_cnn (resnet, the same path, runs on the GPU only).
@pytest.mark.slow
@pytest.mark.parametrize(
    "script, name",
    [
        ("bench_loader", "loader"),
        ("bench_memory", "memory"),
    ],
)
def test_benchmark_smoke_run_writes_its_result(script, name, tmp_path, real_results_untouched):
    smoke(script, tmp_path)
    check_result(tmp_path, name)


@pytest.mark.slow
def test_tracking_overhead_smoke_run_measures_this_tree_and_another_revision_side_by_side(
    tmp_path, real_results_untouched
):
    # HEAD: every clone has it, a shallow one too; its worktree is a checkout apart all the same.
    res = call_main(
        bench_tracking_overhead.main, "--smoke", "--out", str(tmp_path), "--against", "HEAD"
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = check_result(tmp_path, "tracking_overhead_against")
    measures = [r["measure"] for r in data["rows"]]
    assert measures[0].startswith("tracking a run as train.py does")
    compared = [r for r in data["rows"] if " vs at HEAD" in r["measure"]]
    assert len(compared) == 3 + len(bench_tracking_overhead.PART_NAMES)
    assert all(r["baseline"] > 0 and r["ratio"] > 0 for r in compared)
    against = data["details"]["against"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert against["revisions"]["against_commit"] == head.stdout.strip()
    assert against["revisions"]["here"] == data["git"]
    # Each revision's runs imported its own tree's code; the worktree is gone afterwards.
    here_code = {r["code"] for r in data["details"]["runs"]}
    there_code = {r["code"] for r in against["runs"]}
    assert here_code == {str(ROOT)}
    assert len(there_code) == 1 and not Path(there_code.pop()).exists()


def test_tracking_overhead_against_an_unknown_revision_says_what_to_do():
    res = call_main(bench_tracking_overhead.main, "--smoke", "--against", "no-such-rev")
    assert res.returncode == 2
    assert "--against no-such-rev: git knows no commit 'no-such-rev'" in res.stderr
    assert "git log --oneline" in res.stderr


def test_tracking_overhead_against_a_revision_lacking_what_timed_run_calls_names_it(
    tmp_path, monkeypatch
):
    trees = []

    def runs_here_only(cmd, env, cwd):
        """This tree's runs time 1 s; the other revision's lacks the engine's train()."""
        trees.append(cwd)
        line = timed_run.PREFIX + json.dumps({"train_s": 1.0, "code": str(ROOT)})
        if cwd != ROOT:
            line = timed_run.LACKS + "experiments.engine.train"
        return ProcessRun(cmd, 2 * (cwd != ROOT), 0.1, [(0.1, line)])

    monkeypatch.setattr(bench_tracking_overhead, "run_process", runs_here_only)
    res = call_main(
        bench_tracking_overhead.main, "--smoke", "--out", str(tmp_path), "--against", "HEAD"
    )
    assert res.returncode == 2
    assert trees[:2] == [ROOT, ROOT] and len(trees) == 3
    assert f"--against HEAD: the code in {trees[2]} lacks experiments.engine.train" in res.stderr
    assert "which benchmarks/timed_run.py calls: measure a revision that has it" in res.stderr
    assert not trees[2].exists(), "the worktree outlived the error"
    assert not (tmp_path / "results").exists()


def test_timed_run_names_what_the_code_it_measures_lacks():
    with pytest.raises(timed_run.Lacking, match=r"^experiments\.engine\.no_such$"):
        timed_run.lookup("experiments.engine", "no_such")
    with pytest.raises(timed_run.Lacking, match=r"^experiments\.gone\.train$"):
        timed_run.lookup("experiments.gone", "train")
    owner, attr = timed_run.lookup(*timed_run.PARTS["model_upload"])
    assert (owner.__name__, attr) == ("MlflowCallback", "_log_model")


def test_timed_run_leaves_a_parts_module_for_the_code_to_import_and_times_it_then(monkeypatch):
    # Imported ahead of the code, a module's import would cost no hook (the plotting stack's).
    monkeypatch.setattr(timed_run, "PARTS", {"convert": ("colorsys", "rgb_to_hsv")})
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    spent: dict[str, float] = {}
    with timed_run.timed_parts(spent):
        assert "colorsys" not in sys.modules
        import colorsys

        assert colorsys.rgb_to_hsv(0.0, 0.0, 1.0) == (2 / 3, 1.0, 1.0)
    assert list(spent) == ["convert"]
    assert colorsys.rgb_to_hsv.__module__ == "colorsys", "left wrapped after the block"
    assert not any(isinstance(f, timed_run.PatchOnImport) for f in sys.meta_path)


@pytest.mark.slow
def test_time_to_accuracy_smoke_run(tmp_path, real_results_untouched):
    smoke("bench_time_to_accuracy", tmp_path)
    # A smoke run trains a few batches: the recipes need not reach their accuracy.
    data = check_result(tmp_path, "time_to_accuracy", measures=False)
    assert data["details"]["baseline"]["runs"][0]["epochs"], "the tutorial printed no epoch"


@pytest.mark.slow
def test_study_smoke_run(tmp_path, real_results_untouched):
    smoke("bench_study", tmp_path)
    data = check_result(tmp_path, "study")
    assert set(data["details"]["runs"]) == {"median", "none"}


@pytest.mark.slow
def test_make_smoke_run_times_both_entry_points_here_and_at_a_revision(
    tmp_path, real_results_untouched
):
    # This interpreter stands in for the checkout's venv, which a worktree may lack.
    res = call_main(
        bench_make.main,
        "--smoke",
        "--out",
        str(tmp_path),
        "--python",
        sys.executable,
        "--against",
        "HEAD",
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = check_result(tmp_path, "make_against")
    assert [r["measure"].split(":")[0] for r in data["rows"]] == (
        ["make train"] * 2 + ["make tune"] * 3 + ["make train"] * 2 + ["make tune"] * 2
    )
    assert "here vs at HEAD" in data["rows"][-1]["measure"]
    for side in (data["details"], data["details"]["against"]):
        assert side["tune_trials"]["median"] == 1
        assert 0 < side["train_test_accuracy"]["median"] <= 1
    assert data["details"]["against"]["revision"] == "HEAD"
    plain = check_result(tmp_path, "make")  # this checkout's rows alone, as without --against
    assert plain["rows"] == data["rows"][:5] and "against" not in plain["details"]


def test_make_against_an_unknown_revision_says_what_to_do():
    res = call_main(bench_make.main, "--smoke", "--python", sys.executable, "--against", "no-rev")
    assert res.returncode == 2
    assert "--against no-rev: git knows no commit 'no-rev'" in res.stderr


def test_make_without_a_venv_says_what_to_do(tmp_path):
    res = call_main(bench_make.main, "--smoke", "--repo", str(tmp_path))
    assert res.returncode == 2
    assert "has no .venv: run `make setup` there first, or pass --python" in res.stderr


AVX2_CAP = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


@pytest.mark.slow
def test_all_runs_the_chosen_benchmarks_and_writes_the_summary_per_machine(tmp_path):
    res = call_main(
        run_all.main, "--only", "loader", "--smoke", "--allow-dirty", "--out", str(tmp_path)
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    check_result(tmp_path, "loader")
    md = (tmp_path / "RESULTS.md").read_text()
    summary = md[md.index("<!-- bench:summary:start -->") : md.index("<!-- bench:loader:start")]
    assert "On " in summary and "| loader (git " in summary


@pytest.mark.slow
def test_all_under_the_avx2_cap_writes_and_summarizes_the_capped_result(tmp_path, monkeypatch):
    for name, value in AVX2_CAP.items():
        monkeypatch.setenv(name, value)
    res = call_main(
        run_all.main, "--only", "loader", "--smoke", "--allow-dirty", "--out", str(tmp_path)
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert not (tmp_path / "results" / "loader.json").exists()
    check_result(tmp_path, "loader_avx2")
    md = (tmp_path / "RESULTS.md").read_text()
    assert "capped by ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2" in md
    assert "| loader_avx2 (git " in md


def test_all_refuses_a_tree_with_uncommitted_changes(monkeypatch):
    monkeypatch.setattr(run_all, "git_revision", lambda: "abc1234-dirty")
    res = call_main(run_all.main, "--only", "loader")
    assert res.returncode == 2
    assert "uncommitted changes (abc1234-dirty)" in res.stderr and "--allow-dirty" in res.stderr


def test_all_names_the_benchmarks_it_knows(tmp_path):
    res = call_main(run_all.main, "--only", "loader,nope")
    assert res.returncode == 2
    assert "unknown benchmark(s) nope; choose from loader, throughput" in res.stderr


@pytest.mark.slow
def test_gpu_check_smoke_runs_on_the_cpu_and_prints_the_table(tmp_path, real_results_untouched):
    res = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = res.stdout[res.stdout.index("gpu_check: ") :]
    assert "| benchmark | measure |" in table and "study_workers" in table
    assert "== pytest -m gpu: done" in res.stdout
    for name in ["throughput", "study_workers"]:
        check_result(tmp_path, name)
    check_result(tmp_path, "time_to_accuracy", measures=False)
    studies = check_result(tmp_path, "study_workers")["details"]["runs"]
    assert list(studies) == ["2_workers", "1_worker"]
    assert (tmp_path / "gpu_check.log").read_text().startswith(res.stdout[:200])


# ---------------------------------------------------------------------------------------------
# RESULTS.md: one section per benchmark, replaced in place; the hand-written log never touched.


def test_results_md_sections_are_replaced_in_place_and_the_log_is_kept(tmp_path):
    md = tmp_path / "RESULTS.md"
    publish.update_results_md(md, "throughput", "first throughput")
    text = md.read_text()
    md.write_text(text + "- tried channels_last: 1.2x, kept\n")
    log = text[text.index(publish.LOG_HEADING) :] + "- tried channels_last: 1.2x, kept\n"

    publish.update_results_md(md, "throughput", "second throughput")
    once = md.read_text()
    publish.update_results_md(md, "throughput", "second throughput")
    assert md.read_text() == once
    assert "second throughput" in once and "first throughput" not in once
    assert once.endswith(log)
    # The other benchmarks keep their placeholders, in SECTIONS order.
    positions = [once.index(f"<!-- bench:{n}:start -->") for n in publish.SECTIONS]
    assert positions == sorted(positions)


def test_a_new_benchmark_section_goes_before_the_log(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text(f"# Results\n\n{publish.LOG_HEADING}\n\nhand-written\n")
    publish.update_results_md(md, "throughput_cuda", "on the GPU")
    text = md.read_text()
    assert text.index("on the GPU") < text.index(publish.LOG_HEADING)
    assert text.endswith(f"{publish.LOG_HEADING}\n\nhand-written\n")


def test_reproduce_command_leaves_out_where_the_results_went():
    argv = ["--smoke", "--out", "/tmp/x", "--repeats", "3", "--out=/tmp/y"]
    assert (
        publish.reproduce_command("bench_loader", argv)
        == "python -m benchmarks.bench_loader --smoke --repeats 3"
    )


def test_a_run_with_torch_held_to_avx2_is_named_so_and_kept_apart(monkeypatch):
    for name in machine.ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    assert publish.result_name("time_to_accuracy", "cpu") == "time_to_accuracy"
    for name, value in AVX2_CAP.items():
        monkeypatch.setenv(name, value)
    assert publish.result_name("time_to_accuracy", "cpu") == "time_to_accuracy_avx2"
    assert publish.reproduce_command("bench_make", ["--repeats", "3"]) == (
        "ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python -m benchmarks.bench_make "
        "--repeats 3"
    )
    xeon = {"cpu": "Xeon", "cpu_kind": "AVX512-BF16", "usable_cores": 2, "gpu": None}
    assert machine.label(xeon) == "Xeon (AVX512-BF16), 2 usable cores, no GPU"
    assert machine.label({**xeon, "isa_cap": machine.isa_cap()}) == (
        "Xeon (AVX512-BF16, capped by ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2), "
        "2 usable cores, no GPU"
    )


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


def test_the_benchmarks_own_outputs_leave_the_revision_clean(tmp_path, monkeypatch):
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    code, outputs = tmp_path / "train.py", [tmp_path / p for p in machine.OUTPUTS]
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    outputs[0] /= "loader.json"
    for f in [code, *outputs]:
        f.write_text("before\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "x")
    monkeypatch.setattr(machine, "ROOT", tmp_path)
    monkeypatch.delenv("FASHION_LAB_GIT_REVISION", raising=False)
    clean = machine.git_revision()
    assert clean != "unknown" and not clean.endswith("-dirty")
    for f in outputs:
        f.write_text("a new result\n")
    assert machine.git_revision() == clean
    code.write_text("changed\n")
    assert machine.git_revision() == f"{clean}-dirty"
