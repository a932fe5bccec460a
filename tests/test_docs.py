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


SECTIONS = ["## Quick start", "## Bring your own data", "## Results", "## Documentation"]


def test_readme_is_read_in_three_minutes_and_keeps_its_structure():
    # What it is and the diagram first, then these sections in this order; detail belongs on the docs site.
    assert len(README) < 6_000, f"README.md is {len(README)} characters; move detail to docs/"
    heads = [line for line in README.splitlines() if line.startswith("## ")]
    assert heads == SECTIONS, heads
    intro = README[:README.index(SECTIONS[0])]
    assert "─ clean ─" in intro and "evaluate" in intro, "the stage diagram belongs above the quick start"
    steps = README[README.index(SECTIONS[1]):README.index(SECTIONS[2])]
    assert re.findall(r"^(\d)\. ", steps, flags=re.M) == ["1", "2", "3"], "bring your own data in three steps"


def test_readme_quick_start_commands_are_the_ones_ci_and_the_docs_run():
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", README, flags=re.S)[1]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2 and commands[0].endswith("&& dvc repro"), commands
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "bootstrap.sh" in line]
    assert ci == [commands[1]], "`.ci/run` must run exactly the README's test command"
    assert commands[1] in (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")


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
