"""Pairs from JSONL / CSV / Parquet with a column mapping; every file problem names file and line."""

from __future__ import annotations

import json

import pytest
from mlplatform_embeddings import DataConfig, Pair, load_splits, read_pairs

from mlplatform.api import ConfigError


def test_jsonl_csv_parquet_with_column_mapping(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"q": "a b", "doc": "c d", "hard": ["e", "f"]}, {"q": "g", "doc": "h", "hard": ["i", "j"]}]
    mapping = DataConfig(train_file="", query_column="q", positive_column="doc", negative_columns=["hard"])
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    parquet = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    expected = [Pair("a b", "c d", ("e", "f")), Pair("g", "h", ("i", "j"))]
    assert read_pairs(jsonl, mapping) == expected
    assert read_pairs(parquet, mapping) == expected
    csv = tmp_path / "pairs.csv"
    csv.write_text('q,doc,neg1,neg2\n"a b",c d,e,f\ng,h,i,j\n')
    csv_mapping = DataConfig(train_file="", query_column="q", positive_column="doc",
                             negative_columns=["neg1", "neg2"])
    assert read_pairs(csv, csv_mapping) == expected


def test_datasets_saved_on_disk_with_column_mapping(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = {"q": ["a b", "g"], "doc": ["c d", "h"], "hard": [["e", "f"], ["i", "j"]]}
    mapping = DataConfig(train_file="", query_column="q", positive_column="doc", negative_columns=["hard"])
    DatasetDict({"train": Dataset.from_dict(rows), "validation": Dataset.from_dict(rows)}).save_to_disk(
        tmp_path / "pairs")
    expected = [Pair("a b", "c d", ("e", "f")), Pair("g", "h", ("i", "j"))]
    assert read_pairs(tmp_path / "pairs" / "train", mapping) == expected
    train, validation = load_splits(DataConfig(
        train_file=str(tmp_path / "pairs" / "train"), validation_file=str(tmp_path / "pairs" / "validation"),
        query_column="q", positive_column="doc", negative_columns=["hard"]), seed=0)
    assert train == validation == expected
    with pytest.raises(ConfigError, match=r"holds a DatasetDict \(splits: train, validation\)"):
        read_pairs(tmp_path / "pairs", mapping)
    Dataset.from_dict({"q": ["x"], "text": ["y"]}).save_to_disk(tmp_path / "bad")
    with pytest.raises(ConfigError, match=r"bad, row 1: no column 'doc'"):
        read_pairs(tmp_path / "bad", mapping)


def test_missing_column_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"query": "a", "positive": "b"}\n{"query": "c", "pos": "d"}\n')
    with pytest.raises(ConfigError, match=r"train\.jsonl, line 2: no column 'positive'"):
        read_pairs(path, DataConfig(train_file=str(path)))
    csv = tmp_path / "train.csv"
    csv.write_text("query,positive\na,b\nc\n")
    with pytest.raises(ConfigError, match=r"train\.csv, line 3: column 'positive'"):
        read_pairs(csv, DataConfig(train_file=str(csv)))


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"query": "a", "positive": "b"}\n\n{"query": "c", "positive": \n')
    with pytest.raises(ConfigError, match=r"train\.jsonl, line 3: not valid JSON"):
        read_pairs(path, DataConfig(train_file=str(path)))
    path.write_text('["a", "b"]\n')
    with pytest.raises(ConfigError, match=r"line 1: a JSON list, not an object"):
        read_pairs(path, DataConfig(train_file=str(path)))


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="holds no records"):
        read_pairs(empty, DataConfig(train_file=str(empty)))
    with pytest.raises(ConfigError, match="does not exist"):
        read_pairs(tmp_path / "gone.jsonl", DataConfig(train_file=""))
    with pytest.raises(ConfigError, match="cannot tell the format"):
        read_pairs(tmp_path / "x.txt", DataConfig(train_file=""))


def test_validation_split_is_seeded_and_disjoint(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"query": f"q{i}", "positive": f"d{i}"}) + "\n" for i in range(20)))
    data = DataConfig(train_file=str(path), validation_split=0.25)
    train, validation = load_splits(data, seed=3)
    assert len(train) == 15 and len(validation) == 5
    assert not {p.query for p in train} & {p.query for p in validation}
    assert load_splits(data, seed=3) == (train, validation)
    other = tmp_path / "val.jsonl"
    other.write_text('{"query": "x", "positive": "y"}\n')
    assert load_splits(DataConfig(train_file=str(path), validation_file=str(other)), 0)[1] == [Pair("x", "y")]
