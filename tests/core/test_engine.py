"""core/engine.py: batches formed as the in-process scorers form them, and a clear error without the extra.
The byte-identity of the Ray path is tested on a real two-worker cluster in tests/commands/test_deploy.py."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from pipeline.core.modeling import length_batches


def test_batches_are_length_sorted_cuts_in_a_stable_order():
    texts = ["ccc", "a", "bb", "a", "dddd", "bb", "e"]
    batches = length_batches(texts, 3)
    assert [b.tolist() for b in batches] == [[1, 3, 6], [2, 5, 0], [4]]  # ties keep input order
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(texts)))  # every row once


def test_the_ray_engine_without_ray_names_the_extra_to_install():
    code = ("import sys; sys.modules['ray'] = None\n"
            "from pipeline.core.engine import RayEngine\n"
            "try:\n    RayEngine()\nexcept Exception as e:\n    print(type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("KnownError") and ".[distributed]" in out, out
