"""bench/ stays runnable and indexed: every script imports as `bench.<name>`, and bench/README.md names every script
and every result file (which script wrote it and which default it backs)."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")
INDEX = (BENCH / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", SCRIPTS)
def test_bench_script_imports(name):
    module = importlib.import_module(f"bench.{name}")
    assert module.__doc__, f"bench/{name}.py has no docstring saying how to run it"


def test_no_bench_script_edits_the_import_path():
    offenders = [n for n in SCRIPTS if "sys.path" in (BENCH / f"{n}.py").read_text(encoding="utf-8")]
    assert not offenders, offenders


def test_index_lists_every_script_and_result_file():
    listed = set(re.findall(r"`([\w.-]+)`", INDEX))
    missing_scripts = [f"{n}.py" for n in SCRIPTS if n != "common" and f"{n}.py" not in listed]
    results = sorted(p.name for p in (BENCH / "results").iterdir() if p.is_file())
    # serve_repeat_K.json are listed as a range: the first and last named, every one in between covered
    repeats = sorted(int(m[1]) for r in results if (m := re.fullmatch(r"serve_repeat_(\d+)\.json", r)))
    missing_results = [r for r in results if r not in listed and not re.fullmatch(r"serve_repeat_\d+\.json", r)]
    if repeats:
        assert f"serve_repeat_{repeats[0]}.json" in listed and f"serve_repeat_{repeats[-1]}.json" in listed
    assert not missing_scripts and not missing_results, (missing_scripts, missing_results)


def test_index_names_no_file_that_is_gone():
    named = re.findall(r"`([\w-]+\.(?:py|json|md))`", INDEX)
    gone = [n for n in named if not (BENCH / n).exists() and not (BENCH / "results" / n).exists()
            and n != "README.md"]
    assert not gone, gone
