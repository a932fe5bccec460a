"""Progress lines: what a person reads in `dvc repro`'s output during a long stage."""
from __future__ import annotations

import logging
import re

from transformers import TrainerControl, TrainerState, TrainingArguments

from pipeline.core.progress import Eta, duration, logged
from pipeline.core.trainers import EtaCallback

LINE = re.compile(r"^(?P<what>.+): (?P<done>[\d,]+)/(?P<total>[\d,]+) (?P<unit>\w+) \((?P<pct>\d+)%\), "
                  r"(?P<elapsed>\S+) elapsed(, about (?P<left>\S+) left)?$")


def lines(caplog) -> list[dict]:
    return [LINE.match(r.getMessage()).groupdict() for r in caplog.records if r.name == "pipeline.progress"]


def test_duration_reads_as_a_person_writes_it():
    assert [duration(s) for s in (0, 45, 192, 3600, 3900, -3)] == ["0s", "45s", "3m12s", "1h00m", "1h05m", "0s"]


def test_a_line_every_five_percent_with_the_time_left(caplog):
    caplog.set_level(logging.INFO)
    eta = Eta("training teacher", 200, after_s=0)
    for _ in range(200):
        eta.update()
    got = lines(caplog)
    assert [int(g["pct"]) for g in got] == list(range(5, 101, 5))
    assert all(g["left"] is not None for g in got[:-1]) and got[-1]["left"] is None  # nothing left at the end
    assert got[0]["done"] == "10" and got[0]["total"] == "200" and got[0]["unit"] == "steps"


def test_a_resumed_run_starts_counting_where_it_was(caplog):
    caplog.set_level(logging.INFO)
    eta = Eta("training", 100, start=50, after_s=0)
    eta.set(52)
    eta.set(55)
    assert [int(g["pct"]) for g in lines(caplog)] == [55]  # 50% was the last run's


def test_short_work_logs_nothing(caplog):
    caplog.set_level(logging.INFO)
    for _ in logged(range(40), "predict", unit="rows"):  # a server's one request runs the same loops
        pass
    assert lines(caplog) == []


def test_logged_counts_rows_while_walking_batches(caplog):
    caplog.set_level(logging.INFO)
    batches = [[1, 2, 3]] * 3 + [[4]]
    out = []
    for b in logged(batches, "predict", unit="rows", weights=map(len, batches)):
        out.append(b)
    assert out == batches
    eta = Eta("x", 10, after_s=0, unit="rows")
    eta.update(3)
    eta_lines = lines(caplog)
    assert eta_lines[-1]["done"] == "3" and eta_lines[-1]["total"] == "10"


def test_the_trainer_callback_follows_the_optimiser_steps(caplog, tmp_path):
    caplog.set_level(logging.INFO)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    state, control = TrainerState(max_steps=40, global_step=0), TrainerControl()
    cb = EtaCallback("training teacher")
    cb.on_train_begin(args, state, control)
    cb.eta.after_s = 0
    for step in range(1, 41):
        state.global_step = step
        cb.on_step_end(args, state, control)
    got = lines(caplog)
    assert got[0]["what"] == "training teacher" and got[-1]["done"] == "40" and got[-1]["pct"] == "100"
    assert len(got) == 20
