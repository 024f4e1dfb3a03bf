"""tests/ holds conftest.py and folders, one per kind of test (docs/architecture.md):
a new test file lands in the folder of its kind, never loose at the top."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_top_level_holds_only_conftest_and_folders():
    loose = sorted(
        p.name
        for p in TESTS.iterdir()
        if p.is_file() and p.name not in ("conftest.py", "__init__.py")
    )
    assert loose == []


def test_every_folder_of_python_tests_is_a_package():
    # tests import each other as tests.<folder>.<module>; a folder without
    # __init__.py would be imported under its bare name and could collide.
    missing = sorted(
        str(d.relative_to(TESTS))
        for d in TESTS.rglob("*")
        if d.is_dir()
        and "__pycache__" not in d.parts
        and any(d.glob("test_*.py"))
        and not (d / "__init__.py").exists()
    )
    assert missing == []
