"""Bad inputs end in one error line naming the file, line, column, key or output path — never a raw traceback."""
from __future__ import annotations

import gzip
import subprocess
import sys
import zipfile

import pandas as pd
import pytest
from conftest import ROOT

from pipeline.io import DataError, OutputError, read_raw_table, write_table

CSV = "text,label\ngood film,pos\nbad film,neg\n"


@pytest.mark.parametrize("name, content, fragment", [
    ("corrupt.csv.gz", b"\x1f\x8b\x08\x00garbage-not-deflate", "not a valid gzip file"),
    ("archive.csv", None, "is a zip archive, not CSV"),
    ("tabs.csv", b"text\tlabel\ngood film\tpos\n", "looks tab-separated; set clean.format: tsv"),
    ("dupe.csv", b"text,label,text\na,pos,b\n", "names column(s) ['text'] more than once"),
    ("bad.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b", "label": \n', "line 2 is not valid JSON"),
    ("list.jsonl", b'["a", "x"]\n', "line 1 is a JSON list"),
    ("table.csv", None, "is a Parquet file"),
])
def test_bad_files_name_the_file_and_what_to_do(tmp_path, name, content, fragment):
    path = tmp_path / name
    if name == "archive.csv":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("data.csv", CSV)
    elif name == "table.csv":
        pd.DataFrame({"text": ["a"], "label": ["b"]}).to_parquet(path)
    else:
        path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_raw_table(str(path))
    assert str(path) in str(e.value) and fragment in str(e.value), str(e.value)


def test_a_folder_and_a_good_gzip(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        read_raw_table(str(tmp_path))
    gz = tmp_path / "ok.csv.gz"
    with gzip.open(gz, "wt") as f:
        f.write(CSV)
    assert len(read_raw_table(str(gz))[0]) == 2


def test_unwritable_output_names_the_path(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")  # a file where a folder should be: even root cannot write below it
    with pytest.raises(OutputError, match="not-a-folder/out.parquet: cannot write here"):
        write_table(pd.DataFrame({"a": [1]}), blocker / "out.parquet")


def test_truncated_weights_are_a_model_error(tmp_path):
    import shutil

    from pipeline.modeling import ModelError, load_classifier, resolve_model

    src = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    model = tmp_path / "model"
    shutil.copytree(src, model)
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="train.model: cannot load"):
        load_classifier(str(model), "train.model", num_labels=2)


def test_a_stage_reports_a_known_bad_input_in_one_line(tmp_path):
    raw = tmp_path / "raw.csv"
    raw.write_text("review,stars\ngood,5\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipeline.clean", "--params", str(ROOT / "params.yaml"),
                           "--input", str(raw), "--output", str(out / "c.parquet"), "--dropped",
                           str(out / "d.parquet"), "--metrics", str(out / "m.json")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "no column 'text' (clean.text_column)" in proc.stderr, proc.stderr
    assert not out.exists()  # nothing half-written


def test_json_error_line_is_found_in_real_sized_input(tmp_path):
    lines = [f'{{"text": "row {i}", "label": "a"}}' for i in range(1000)]
    lines[736] = '{"text": "row 736", "label": "a"'
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(DataError, match="line 737 is not valid JSON"):
        read_raw_table(str(path))
