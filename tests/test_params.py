from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline.params import ParamsError, load_params


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_repo_params_load_and_match_defaults(params):
    from pipeline.params import AugmentParams

    # One source for each default: the code's augment defaults are what params.yaml runs.
    assert params.augment == AugmentParams()
    assert params.split.train == 0.8
    assert params.train.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert params.clean.label_names == {"0": "ham", "1": "spam"}


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
