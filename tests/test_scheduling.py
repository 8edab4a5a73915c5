"""make test's scheduling: which tests share a worker because they share a module's fixture."""

from __future__ import annotations

from pathlib import Path

from scheduling import fixture_groups

MODULE = """
import pytest

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return 1

@pytest.fixture
def checked(trained):
    return trained

@pytest.fixture
def fresh(tmp_path):
    return 2

def test_direct(trained):
    pass

@pytest.mark.parametrize("x", [1, 2])
def test_through_another_fixture(checked, x):
    pass

def test_alone(fresh, tmp_path):
    pass
"""


def test_tests_using_a_module_fixture_directly_or_not_are_grouped_by_it(tmp_path: Path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_made.py").write_text(MODULE)
    (tmp_path / "tests" / "helpers.py").write_text("def test_not_collected(trained): pass\n")
    assert fixture_groups(tmp_path, tmp_path / "tests") == {
        "tests/test_made.py::test_direct": "tests/test_made.py::trained",
        "tests/test_made.py::test_through_another_fixture": "tests/test_made.py::trained",
    }


def test_this_suites_module_fixtures_are_found():
    root = Path(__file__).resolve().parent.parent
    groups = fixture_groups(root, root / "tests")
    assert groups["tests/test_study_lifecycle.py::test_a_larger_n_trials_extends_the_study"] == (
        "tests/test_study_lifecycle.py::life"
    )
    assert (
        "tests/test_tune.py::test_four_launchers_started_together_on_fresh_stores_share_one_study"
        not in groups
    )
