"""Copy generated results into README.md between their markers, so the README shows exactly what was measured.

    python scripts/sync_readme.py      # after `dvc repro` and/or the bench scripts

Blocks: report (metrics/REPORT.md, without its title), bench (bench/results/RESULTS.md), ablation
(bench/results/ABLATION.md), students
(bench/results/STUDENTS.md). A block whose source file is missing is left as it is.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = {
    "report": ROOT / "metrics" / "REPORT.md",
    "bench": ROOT / "bench" / "results" / "RESULTS.md",
    "ablation": ROOT / "bench" / "results" / "ABLATION.md",
    "students": ROOT / "bench" / "results" / "STUDENTS.md",
}


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    for name, src in BLOCKS.items():
        if not src.is_file():
            continue
        body = src.read_text(encoding="utf-8").strip()
        body = re.sub(r"\A# [^\n]*\n+", "", body)  # the file's own title: the README section has one
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- {name}:start --> … <!-- {name}:end --> block")
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    readme.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
