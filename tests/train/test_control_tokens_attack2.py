"""`ember prepare --control-tokens` on scores its first tests did not try: JSON integers past a
float's range, which JSON's own 1e400 (a float: infinite) already passes as, or past the digits
Python converts; a parquet decimal column."""

import pytest

from ember.data import prepare, read_index

from tests.train.test_control_tokens import BAD, GOOD, documents


def test_an_integer_score_past_float_range_is_infinite_like_1e400(tmp_path):
    big = "1" + "0" * 400  # json.loads makes it an int that float() cannot hold
    src = tmp_path / "docs.jsonl"
    src.write_text(
        f'{{"text": "a", "score": {big}}}\n{{"text": "b", "score": -{big}}}\n'
        f'{{"text": "c. d.", "score": [1e400, -{big}]}}\n'
    )
    prepare([str(src)], tmp_path / "out", workers=1, progress=False, control_tokens="score:0.5")
    assert read_index(tmp_path / "out")["control"]["documents"] == {"good": 1, "bad": 2}
    assert documents(tmp_path / "out") == [[GOOD, 97], [BAD, 98], [GOOD, 99, 46, 32, BAD, 100, 46]]


def test_a_parquet_decimal_score_column_is_a_number(tmp_path):
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    scores = pa.array([Decimal("0.75"), Decimal("0.25"), Decimal("0.50")], pa.decimal128(4, 2))
    pq.write_table(pa.table({"text": ["a", "b", "c"], "score": scores}), tmp_path / "d.parquet")
    prepare([str(tmp_path / "d.parquet")], tmp_path / "out", workers=1, progress=False, control_tokens="score:0.5")
    assert documents(tmp_path / "out") == [[GOOD, 97], [BAD, 98], [GOOD, 99]]


@pytest.mark.parametrize("name, where", [("d.jsonl", "d.jsonl:2: "), ("d.json", "d.json: ")])
def test_an_integer_of_more_digits_than_python_converts_is_refused_naming_the_file(tmp_path, name, where):
    record = '{"text": "b", "score": 1' + "0" * 5000 + "}"
    body = '{"text": "a", "score": 1}\n' + record if name.endswith("l") else "[" + record + "]"
    (tmp_path / name).write_text(body + "\n")
    with pytest.raises(ValueError, match=f"{where}Exceeds the limit"):
        prepare([str(tmp_path / name)], tmp_path / "out", workers=1, progress=False, control_tokens="score:0.5")
    assert not (tmp_path / "out").exists()
