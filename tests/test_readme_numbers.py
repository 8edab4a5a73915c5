"""Every measured number in the README and in benchmarks/RESULTS.md is what a clean, non-smoke
result's raw samples give, stale ones marked: each way the old checker was fooled, made on a
copy, fails the check."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

from benchmarks import figures, machine, readme
from benchmarks.publish import blob, plain

MACHINE = {
    "cpu": "Intel(R) Xeon(R) Processor",
    "cpu_kind": "AVX512-BF16",
    "isa_cap": "",
    "usable_cores": 2,
    "memory_gib": 23.5,
    "load_avg_1m": 0.4,
    "gpu": None,
    "torch": "2.14.1",
    "torch_threads": 2,
}
# Three rounds of the CPU training throughput: medians 4,109 and 2,907 img/s, ratio 1.41×.
SAMPLES = {
    "model": "tutorial_cnn",
    "device": "cpu",
    "batch_size": 256,
    "seed": [0, 1, 2],
    "ours": [4100.0, 4109.0, 4120.0],
    "tutorial": [2900.0, 2907.0, 2930.0],
}
PROSE = (
    "Ours trains at <!-- r:throughput.ours -->4,109 img/s<!-- /r -->, the tutorial at "
    "<!-- r:throughput.tutorial -->2,907 img/s<!-- /r -->."
)


def write_result(root: Path, name: str, samples: dict, **fields: object) -> Path:
    """results/<name>.json under root as a clean measurement of root/code.py writes it."""
    derived = figures.derive("throughput", samples)
    data = {
        "name": name,
        "benchmark": "throughput",
        "smoke": False,
        "command": "python -m benchmarks.bench_throughput",
        "measured_at": "2026-12-01T00:00:00+00:00",
        "git": {"commit": "a" * 40, "dirty": False},
        "code": {"code.py": blob(root / "code.py")},
        "machine": MACHINE,
        "samples": samples,
        "summary": {k: plain(f.value) for k, f in derived.items()},
        **fields,
    }
    path = root / "benchmarks" / "results" / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A repository of one measured file, one result, a README showing it in a table and in
    prose, and a RESULTS.md with its hand-written log; all written as the results give them."""
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("print('measured')\n")
    write_result(tmp_path, "throughput", SAMPLES)
    text = f"# x\n\n{PROSE}\n\n<!-- results: throughput -->\n<!-- /results -->\n\n## Tests\n"
    (tmp_path / "README.md").write_text(text)
    (tmp_path / "benchmarks" / "RESULTS.md").write_text(f"{readme.LOG_HEADING}\n\n- by hand\n")
    new_readme, new_results, problems, _ = readme.build(tmp_path)
    assert problems == []
    (tmp_path / "README.md").write_text(new_readme)
    (tmp_path / "benchmarks" / "RESULTS.md").write_text(new_results)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_the_real_readme_and_results_md_are_what_the_results_give():
    assert readme.check(ROOT) == []


def test_a_copy_written_from_its_results_passes_and_shows_them(copy):
    assert readme.check(copy) == []
    text = (copy / "README.md").read_text()
    assert "| Training: ours / tutorial | 1.41× | ≥ 2×: missed (median; 0 of 3 runs) |" in text
    assert "On the AVX512-BF16 CPU: Intel(R) Xeon(R) Processor, 2 usable cores." in text
    assert "[throughput]: benchmarks/results/throughput.json" in text
    assert (copy / "benchmarks" / "RESULTS.md").read_text().endswith("- by hand\n")


@pytest.mark.parametrize(
    "old, new",
    [
        ("≥ 2×: missed", "≥ 2×: met"),  # the verdict
        ("4,109 img/s", "2"),  # a number the result holds elsewhere (usable_cores)
        ("1.41×", "23.5×"),  # the same (memory_gib)
        (
            "4,109 img/s<!-- /r -->, the tutorial at <!-- r:throughput.tutorial -->2,907 img/s",
            "2,907 img/s<!-- /r -->, the tutorial at <!-- r:throughput.tutorial -->4,109 img/s",
        ),
    ],
    ids=["verdict", "number-in-the-result", "ratio-in-the-result", "ours-and-tutorial-swapped"],
)
def test_a_readme_edited_by_hand_fails(copy, old, new):
    edit(copy / "README.md", old, new)
    assert readme.check(copy) == [
        f"{copy / 'README.md'}: not what the results give; run `python -m benchmarks.readme`"
    ]


def test_results_md_edited_by_hand_fails_and_its_log_is_free(copy):
    results_md = copy / "benchmarks" / "RESULTS.md"
    edit(results_md, "- by hand", "- by hand, 4.2× faster")
    assert readme.check(copy) == []
    edit(results_md, "| 1.41× |", "| 1.42× |")
    assert "RESULTS.md: not what the results give" in readme.check(copy)[0]


def test_a_summary_that_its_samples_no_longer_give_fails(copy):
    path = copy / "benchmarks" / "results" / "throughput.json"
    data = json.loads(path.read_text())
    data["summary"]["ratio"] = 2.05
    path.write_text(json.dumps(data))
    assert readme.check(copy) == [f"{path}: its summary is not what its samples give: ratio"]


@pytest.mark.parametrize(
    "fields, says",
    [
        ({"smoke": True}, "is a smoke run"),
        ({"git": {"commit": "a" * 40, "dirty": True}}, "measured uncommitted changes to aaaaaaa"),
        ({"git": {"commit": "aaaaaaa-dirty", "dirty": False}}, "names no git commit"),
        ({"git": {"commit": None, "dirty": None}}, "names no git commit"),
    ],
    ids=["smoke", "dirty", "short-or-dirty-revision", "no-git"],
)
def test_a_smoke_or_dirty_result_fails_whatever_the_environment_says(
    copy, monkeypatch, fields, says
):
    # The old override of the revision: nothing reads it any more.
    monkeypatch.setenv("FASHION_LAB_GIT_REVISION", "a" * 40)
    path = write_result(copy, "throughput", SAMPLES, **fields)
    problems = readme.check(copy)
    assert len(problems) == 1 and problems[0].startswith(f"{path} {says}"), problems


def test_a_deleted_result_fails_where_it_is_shown(copy):
    path = copy / "benchmarks" / "results" / "throughput.json"
    path.unlink()
    assert readme.check(copy) == [f"{path} is missing: measure it, or show it nowhere"]


def test_a_result_whose_code_changed_is_stale_and_must_be_shown_so(copy):
    (copy / "code.py").write_text("print('changed since')\n")
    assert readme.check(copy) == [
        f"{copy / 'README.md'}: not what the results give; run `python -m benchmarks.readme`",
        f"{copy / 'benchmarks' / 'RESULTS.md'}: not what the results give; "
        "run `python -m benchmarks.readme`",
    ]
    new_readme, new_results, problems, results = readme.build(copy)
    assert problems == [] and [r.changed for r in results] == [["code.py"]]
    assert "| ≥ 2×: missed (median; 0 of 3 runs) | [throughput] stale |" in new_readme
    assert "4,109 img/s (stale)<!-- /r -->" in new_readme
    assert "**Stale**: the code it measured has changed since." in new_results
    (copy / "README.md").write_text(new_readme)
    (copy / "benchmarks" / "RESULTS.md").write_text(new_results)
    assert readme.check(copy) == []


def test_a_result_without_a_record_of_its_code_is_stale(copy):
    path = copy / "benchmarks" / "results" / "throughput.json"
    data = json.loads(path.read_text())
    del data["code"]
    path.write_text(json.dumps(data))
    *_, results = readme.build(copy)
    assert results[0].changed == ["(it predates the record of the code it measured)"]


@pytest.mark.parametrize(
    "text, flagged",
    [
        ("It trains at 93.48% test accuracy.", "93.48%"),
        ("The tutorial took 215-240 s.", "215-240 s"),
        ("It reads 15,883 img/s.", "15,883 img/s"),
        ("It holds 1 GiB.", "1 GiB"),
        ("A target of ≥ 93.5% or at least 1.1× faster, a sample every 10 s.", None),
        ("Run `train.py --lr 0.05` and see `0.93%`.", None),
        ("```\nmake train  # 93.48%\n```", None),
    ],
)
def test_a_measurement_like_number_outside_a_span_fails(copy, text, flagged):
    edit(copy / "README.md", "## Tests", f"{text}\n\n## Tests")
    problems = readme.check(copy)
    if flagged is None:
        assert problems == []
    else:
        assert problems == [
            f"{copy / 'README.md'}: {flagged!r} has no result behind it: write it as a span, "
            "<!-- r:NAME.KEY -->"
        ]


def test_a_span_names_a_figure_of_its_result(copy):
    edit(copy / "README.md", "r:throughput.ours -->", "r:throughput.nope -->")
    assert readme.check(copy) == [f"{copy / 'README.md'}: a span names no figure 'nope'"]


def test_the_revision_is_gits_alone_and_the_benchmarks_outputs_leave_it_clean(
    tmp_path, monkeypatch
):
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    code, outputs = tmp_path / "train.py", [tmp_path / p for p in machine.OUTPUTS]
    outputs[0] /= "loader.json"
    for f in [code, *outputs]:
        f.write_text("before\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "x")
    monkeypatch.setattr(machine, "ROOT", tmp_path)
    monkeypatch.setenv("FASHION_LAB_GIT_REVISION", "0" * 40)
    clean = machine.git_state()
    assert clean["dirty"] is False and len(clean["commit"]) == 40 and clean["commit"] != "0" * 40
    for f in outputs:
        f.write_text("a new result\n")
    assert machine.git_state() == clean
    code.write_text("changed\n")
    assert machine.git_state() == {**clean, "dirty": True}
    shutil.rmtree(tmp_path / ".git")
    assert machine.git_state() == {"commit": None, "dirty": None}
