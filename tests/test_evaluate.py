from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.evaluate import slice_metrics, worst_slices


def test_slices_cover_every_test_row_once_per_column():
    rng = np.random.default_rng(0)
    n = 200
    test = pd.DataFrame({"text": ["x" * int(k) for k in rng.integers(1, 300, n)],
                         "lang": rng.choice(["en", "fr", None], n)})
    y = rng.integers(0, 2, n)
    preds = {"a": y.copy(), "b": np.where(test["lang"].eq("fr"), 1 - y, y)}
    s = slice_metrics(test, preds, y, ["neg", "pos"], ["lang", "not_a_column"])
    assert set(s) == {"text_length", "lang"}
    for col, values in s.items():
        assert sum(v["support"] for v in values.values()) == n, col
    assert set(s["lang"]) == {"en", "fr", "(missing)"} and len(s["text_length"]) == 4
    assert s["lang"]["fr"]["b"]["accuracy"] == 0.0 and s["lang"]["en"]["b"]["accuracy"] == 1.0
    assert any(w.startswith("lang = fr") for w in worst_slices(s, "b"))
    # A slice holding one class that a model gets all right scores 1.0, not 0.5.
    one = pd.DataFrame({"text": ["a", "bb", "ccc", "dddd"] * 5, "g": ["x"] * 10 + ["y"] * 10})
    y1 = np.array([0] * 10 + [0, 1] * 5)
    s1 = slice_metrics(one, {"m": y1.copy()}, y1, ["neg", "pos"], ["g"])
    assert s1["g"]["x"]["m"]["macro_f1"] == 1.0 and s1["g"]["x"]["per_class"] == {"neg": 10}
