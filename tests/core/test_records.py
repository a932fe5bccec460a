"""Records a CSV reader gets wrong: quote-swallowed records and bare carriage returns (issue 9 item 1)."""
from __future__ import annotations

import pytest
from conftest import ROOT

from pipeline.core.io import DataError
from pipeline.core.params import CleanParams, load_params, replace
from pipeline.core.records import read_records
from pipeline.stages.clean import clean, stage_metrics

# A file of (id, label, text) rows; the shipped params are the SMS file's.
ERROR, RECOVER, ALLOW = (CleanParams(label_column="label", label_names={}, multiline_records=m)
                         for m in ("error", "recover", "allow"))


def accident_csv(tmp_path):
    """300 records; a stray quote opens row 100's text and one in row 105 closes it: a reader sees 295."""
    lines = ["id,label,text"] + [f"{i},{'pos' if i % 2 else 'neg'},message number {i} here" for i in range(300)]
    lines[101] = '100,neg,"message number 100 unquoted'
    lines[106] = '105,pos,message number 105 ends here" ok'
    path = tmp_path / "accident.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_stray_quote_stops_by_default_naming_the_row(tmp_path):
    path = accident_csv(tmp_path)
    with pytest.raises(DataError) as e:
        read_records(str(path), ERROR)
    msg = str(e.value)
    assert str(path) in msg and "data row 101" in msg and "5 whole record(s)" in msg
    assert "clean.multiline_records: recover" in msg


def test_recover_restores_every_record_with_its_own_label(tmp_path):
    raw = read_records(str(accident_csv(tmp_path)), RECOVER)
    assert len(raw.df) == 300 and raw.restored_rows == 5
    assert raw.df["id"].tolist() == [str(i) for i in range(300)]
    assert raw.df["label"].tolist() == ["pos" if i % 2 else "neg" for i in range(300)]
    assert raw.df["text"].iloc[100] == "message number 100 unquoted"
    assert raw.raw_row[101:106] == [101] * 5  # restored rows point at the record the reader saw
    result = clean(raw.df, RECOVER, raw.name, raw.raw_row)
    result.restored_rows = raw.restored_rows
    m = stage_metrics(result)
    assert m["rows_in"] == 300 == m["rows_out"] + m["dropped_total"] and m["restored_rows"] == 5


def test_allow_keeps_what_the_reader_parsed(tmp_path):
    assert len(read_records(str(accident_csv(tmp_path)), ALLOW).df) == 295


def test_real_line_breaks_are_not_an_accident(tmp_path):
    path = tmp_path / "poems.csv"
    path.write_text('text,label\n"roses are red\nviolets are blue",pos\n"line one\nand more, ok",neg\nplain,neg\n')
    raw = read_records(str(path), ERROR)  # no inner line is a whole record with a known label
    assert len(raw.df) == 3 and raw.restored_rows == 0


def test_embedded_label_tab_text_lines_are_recovered(tmp_path):
    path = tmp_path / "converted.csv"
    path.write_text('text,label\n"first one ok\nham\tsecond one\nspam\tthird one",0\nlast,1\n')
    raw = read_records(str(path), replace(RECOVER, label_names={"0": "ham", "1": "spam"}))
    assert raw.df["text"].tolist() == ["first one ok", "second one", "third one", "last"]
    assert raw.df["label"].tolist() == ["0", "ham", "spam", "1"]


def test_bare_carriage_return(tmp_path):
    path = tmp_path / "cr.csv"
    path.write_bytes(b"text,label\ngood\rfilm,pos\r\nbad film,neg\r\n")
    with pytest.raises(DataError, match=r"line 2 has a bare carriage return"):
        read_records(str(path), ERROR)
    raw = read_records(str(path), RECOVER)
    assert raw.df["text"].tolist() == ["good film", "bad film"] and raw.bare_cr == 1
    # Inside a quoted field a \r is content, not an accident; a file with \r line ends only is fine too.
    quoted = tmp_path / "quoted.csv"
    quoted.write_bytes(b'text,label\n"good\rfilm",pos\n"say ""hi""\r there",neg\n')
    assert read_records(str(quoted), ERROR).df["label"].tolist() == ["pos", "neg"]
    mac = tmp_path / "mac.csv"
    mac.write_bytes(b"text,label\rgood film,pos\rbad film,neg\r")
    assert len(read_records(str(mac), ERROR).df) == 2


def test_the_bundled_file_is_repaired_to_the_corpus_5574_messages():
    """The UCI SMS Spam Collection has 5,574 messages; the bundled CSV folds 737 of them into 8 records."""
    p = load_params(ROOT / "params.yaml").clean
    raw = read_records(str(ROOT / "data/raw/sms-spam.csv"), p)
    assert len(raw.df) == 5574 and raw.restored_rows == 737
    assert raw.df["text"].str.len().max() == 910 and not raw.df["text"].str.contains("\n").any()
