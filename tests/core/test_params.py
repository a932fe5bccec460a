from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import ROOT  # noqa: E402 - the repository root (tests/conftest.py)

from pipeline.core.params import ParamsError, load_params


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def _differences(a, b, key=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            yield from _differences(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{key}.{k}".lstrip("."))
    elif a != b:
        yield f"{key}: params.yaml {a!r}, code {b!r}"


def test_params_yaml_is_exactly_the_code_defaults():
    # One source for each default: every key of params.yaml, not one section, equals the code's default, so code
    # that builds params without the file (tests, library users) runs what `dvc repro` runs.
    from pipeline.core.params import Params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert list(_differences(load_params(ROOT / "params.yaml").model_dump(), Params().model_dump())) == []
    # ...and the file spells out every key (nothing silently falls back to a default).
    assert set(raw) == set(Params.model_fields)
    for section, values in raw.items():
        if isinstance(values, dict):
            assert set(values) == set(type(getattr(Params(), section)).model_fields), section


def test_params_yaml_schema_and_reference_are_written_from_the_models_and_the_schema_validates_params_yaml():
    # params.yaml included: its comments are the descriptions, so a stale comment (735 hidden rows for 737) fails here.
    import jsonschema

    out = subprocess.run([sys.executable, "scripts/params_schema.py", "--check"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    schema = json.loads((ROOT / "params.schema.json").read_text())
    text = (ROOT / "params.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=params.schema.json")
    raw = yaml.safe_load(text)
    raw["clean"]["label_names"] = {str(k): v for k, v in raw["clean"]["label_names"].items()}  # YAML int keys
    jsonschema.validate(raw, schema)
    for bad in ({"train": {"learning_rat": 0.1}}, {"train": {"batch_size": 0}}, {"split": {"method": "random"}}):
        section, change = next(iter(bad.items()))
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**raw, section: {**raw[section], **change}}, schema)


@pytest.mark.parametrize("yaml_text, key, fragment", [
    ("clean:\n  text_colum: x\n", "clean.text_colum", "unknown key"),
    ("bogus: 1\n", "bogus", "unknown key"),
    ("train:\n  lora:\n    rank: 4\n", "train.lora.rank", "unknown key"),
    ("train:\n  batch_size: '32'\n", "train.batch_size", "expected an integer"),
    ("train:\n  batch_size: 0\n", "train.batch_size", ">= 1"),
    ("train:\n  learning_rate: -1\n", "train.learning_rate", "> 0"),
    ("train:\n  learning_rate: abc\n", "train.learning_rate", "expected a number"),
    ("train:\n  epochs: true\n", "train.epochs", "expected a number"),
    ("distill:\n  alpha: 1.5\n", "distill.alpha", "<= 1"),
    ("distill:\n  temperature: 0\n", "distill.temperature", "> 0"),
    ("distill:\n  layers: [0, 0]\n", "distill.layers", "distinct"),
    ("split:\n  train: 0.7\n", "split", "sum to 1"),
    ("augment:\n  back_translation:\n    backend: google\n", "augment.back_translation.backend", "expected one of"),
    ("augment:\n  synonym:\n    classes: some\n", "augment.synonym.classes", "expected"),
    ("augment:\n  back_translation:\n    variants: 2\n", "augment.back_translation.variants", "one variant per pivot"),
    ("rebalance:\n  strategy: smote\n", "rebalance.strategy", "expected one of"),
    ("clean:\n  min_chars: 10\n  max_chars: 5\n", "clean.min_chars", "larger than max_chars"),
    ("train:\n  launcher: 'rm -rf /'\n", "train.launcher", "expected 'python'"),
    ("seed: -1\n", "seed", ">= 0"),
    ("clean: [1, 2]\n", "clean", "expected a mapping"),
])
def test_bad_params_name_the_key(tmp_path, yaml_text, key, fragment):
    with pytest.raises(ParamsError) as e:
        load_params(write(tmp_path, yaml_text))
    msg = str(e.value)
    assert f"{key}:" in msg and fragment in msg, msg


def test_yaml_float_strings_are_numbers(tmp_path):
    # PyYAML reads 1e-5 (no dot) as the string "1e-5".
    p = load_params(write(tmp_path, "train:\n  learning_rate: 1e-5\n"))
    assert p.train.learning_rate == pytest.approx(1e-5)


def test_class_list_and_torchrun_launcher(tmp_path):
    p = load_params(write(tmp_path, """
        augment:
          synonym: {classes: [spam]}
        train: {launcher: torchrun --nproc_per_node 2}
    """))
    assert p.augment.synonym.classes == ["spam"]
    assert p.train.launcher.startswith("torchrun")


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(write(tmp_path, "train: [unclosed\n"))
