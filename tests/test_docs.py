"""The docs: a README that fits on a screen and whose links and commands exist; a docs site that builds strictly."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pipeline.commands.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_fits_on_a_screen():
    assert len(README) <= 12_000, f"README.md is {len(README)} characters; move detail to docs/"


def test_readme_links_point_at_files_that_exist():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_readme_commands_are_real_subcommands():
    used = set(re.findall(r"finetune (\w+)", README))
    assert used and used <= set(COMMANDS), used - set(COMMANDS)


def test_docs_site_builds_strictly(tmp_path):
    # Strict: a broken link, a page missing from the files, or a bad nav entry fails the build.
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "your-data" / "index.html").is_file()


def test_readme_results_row_for_the_bundled_data_is_the_committed_run():
    # The README's SMS row is written by hand: it must say what metrics/eval.json (the committed run) says.
    import json

    ev = json.loads((ROOT / "metrics" / "eval.json").read_text())
    row = next(line for line in README.splitlines() if line.startswith("| SMS spam"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    teacher, baseline, kept = cells[2], cells[3], cells[5]
    assert teacher.startswith(f"{ev['teacher']['macro_f1']:.3f}"), (teacher, ev["teacher"]["macro_f1"])
    assert baseline.startswith(f"{ev['baseline']['macro_f1']:.3f}"), (baseline, ev["baseline"]["macro_f1"])
    kept_eval = ev["comparisons"]["student_onnx_vs_teacher"]["macro_f1_retained"]
    assert kept.startswith(f"{100 * kept_eval:.1f}%"), (kept, kept_eval)
