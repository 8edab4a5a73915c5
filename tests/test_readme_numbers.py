"""The README's speed tables hold only numbers that a result file in benchmarks/results/ holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT

from benchmarks import check_readme
from benchmarks import readme as tables

RESULT = {
    "rows": [
        {
            "measure": "images/s",
            "ours": 96173.85,
            "baseline": 30592.55,
            "unit": "img/s",
            "ratio": 3.1437,
            "target": "≤ 15 s",
            "met": True,
        }
    ],
    "details": {"runs": [{"test_accuracy": 0.9418, "train_wall_s": 13.07}]},
}
ROW = (
    "| throughput, batch 256 | {ours} | 30,593 img/s | 3.14× | ≤ 15 s: met "
    "| [`x`](benchmarks/results/x.json) |"
)


def readme(tmp_path: Path, *rows: str) -> Path:
    """A README in tmp_path whose Speed table holds `rows`, beside a results/x.json of RESULT."""
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "x.json").write_text(json.dumps(RESULT))
    table = ["| measure | ours | tutorial | ratio | target | source |", "|" + " --- |" * 6]
    text = "\n".join(["# x", "", "## Speed", "", *table, *rows, "", "## Tests", ""])
    (tmp_path / "README.md").write_text(text)
    return tmp_path / "README.md"


def test_every_number_in_the_real_readme_speed_tables_has_a_result_behind_it():
    assert check_readme.problems(ROOT / "README.md") == []


def test_the_readme_speed_tables_are_what_the_results_give(capsys):
    assert tables.main(["--check", str(ROOT / "README.md")]) == 0, capsys.readouterr().out


def test_the_readme_tables_group_rows_by_the_machine_their_results_name(tmp_path):
    path = readme_with_markers(tmp_path)
    assert tables.main([str(path)]) == 0
    text = path.read_text()
    assert "On AMD EPYC (AVX2), 2 usable cores, no GPU:" in text
    assert "| Training throughput: `tutorial_cnn`, batch 256 | 96,174 img/s | 30,593 img/s" in text
    assert check_readme.problems(path) == []
    assert tables.main(["--check", str(path)]) == 0


def readme_with_markers(tmp_path: Path) -> Path:
    """A README whose Speed section holds only the markers, beside a results/throughput.json."""
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    machine = {"cpu": "AMD EPYC", "cpu_kind": "AVX2", "usable_cores": 2, "gpu": None}
    row = {**RESULT["rows"][0], "measure": "training images/s, tutorial_cnn"}
    (results / "throughput.json").write_text(
        json.dumps({**RESULT, "machine": machine, "rows": [row]})
    )
    (tmp_path / "README.md").write_text(f"# x\n\n## Speed\n\n{tables.START}\n{tables.END}\n")
    return tmp_path / "README.md"


@pytest.mark.parametrize("ours", ["96,174 img/s", "13.1 s (94.18%)", "**3.14×**"])
def test_a_number_matches_its_result_as_the_readme_rounds_it(tmp_path, ours):
    assert check_readme.problems(readme(tmp_path, ROW.format(ours=ours))) == []


def test_a_wrong_number_fails_naming_it(tmp_path, capsys):
    path = readme(tmp_path, ROW.format(ours="96,180 img/s (94.2%)"))
    assert check_readme.main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "96,180 in 'ours'" in out and "benchmarks/results/x.json" in out
    assert "94.2%" not in out  # 0.9418 rounds to it


@pytest.mark.parametrize(
    "row, named",
    [
        # A threshold is one the benchmark checked, in its unit, not any number the file holds.
        (ROW.replace("≤ 15 s", "≤ 3 s").format(ours="96,174"), "3 in 'target'"),
        (ROW.replace("[`x`](benchmarks/results/x.json)", "x").format(ours="1"), "source cell"),
        (ROW.replace("x.json", "y.json").format(ours="1"), "source cell"),
    ],
)
def test_a_row_without_a_source_or_with_a_target_never_checked_fails(tmp_path, row, named):
    assert named in "\n".join(check_readme.problems(readme(tmp_path, row)))
