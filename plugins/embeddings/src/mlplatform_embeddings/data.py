"""Training pairs: query / positive (/ hard negatives) rows from JSONL, CSV or Parquet, mapped
through the configured column names. Every problem in a user's file is a ConfigError naming the
file and the line (JSONL, CSV) or row (Parquet)."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError

from .clip import ImagePath
from .schemas import DATA_FORMATS, DataConfig


@dataclass(frozen=True)
class Pair:
    query: str
    positive: str
    negatives: tuple[str, ...] = field(default_factory=tuple)


def data_format(path: Path, declared: str | None) -> str:
    if declared:
        if declared not in DATA_FORMATS:
            raise ConfigError(
                f"data.format is {declared!r}", f"use one of {', '.join(DATA_FORMATS)} or null"
            )
        return declared
    if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        return "hf"  # a Hugging Face datasets save_to_disk directory
    suffix = path.suffix.lower().lstrip(".")
    found = {"jsonl": "jsonl", "json": "jsonl", "csv": "csv", "parquet": "parquet"}.get(suffix)
    if found is None:
        raise ConfigError(
            f"cannot tell the format of {path} from its suffix {path.suffix!r}",
            "name it .jsonl, .csv or .parquet, point at a datasets save_to_disk directory, or set "
            "data.format",
        )
    return found


def _records(path: Path, fmt: str):
    """(line or row label, record dict) for each record of the file."""
    try:
        if fmt == "jsonl":
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ConfigError(
                            f"{path}, line {number}: not valid JSON ({exc.msg}, column {exc.colno})",
                            "each line must be one JSON object; fix or remove that line",
                        ) from exc
                    if not isinstance(record, dict):
                        raise ConfigError(
                            f"{path}, line {number}: a JSON {type(record).__name__}, not an object",
                            'each line must be one JSON object like {"query": ..., "positive": ...}',
                        )
                    yield f"line {number}", record
        elif fmt == "csv":
            with path.open(encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle)
                for record in reader:
                    # line_num is the physical line of the record's end (header is line 1)
                    label = f"line {reader.line_num}"
                    if None in record:
                        raise ConfigError(
                            f"{path}, {label}: more fields than the header has columns",
                            "quote fields that contain commas, or fix that line",
                        )
                    yield label, record
        elif fmt == "hf":
            yield from _hf_records(path)
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            for number, record in enumerate(table.to_pylist(), start=1):
                yield f"row {number}", record
    except FileNotFoundError as exc:
        raise ConfigError(f"data file {path} does not exist", "check the path") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc})", "save it as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read data file {path}: {exc}", "check the file") from exc
    except Exception as exc:  # pyarrow's own errors for a damaged Parquet file
        if type(exc).__module__.startswith("pyarrow"):
            raise ConfigError(f"{path} is not a readable Parquet file: {exc}", "re-write it") from exc
        raise


def _hf_records(path: Path):
    """Rows of a Hugging Face `datasets` Dataset saved with save_to_disk (one split)."""
    from datasets import Dataset, load_from_disk

    if not path.is_dir():
        raise ConfigError(f"data file {path} is not a datasets save_to_disk directory",
                          "point at the directory save_to_disk wrote")
    try:
        dataset = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"cannot load a datasets dataset from {path}: {exc}",
                          "point at a directory written by Dataset.save_to_disk") from exc
    if not isinstance(dataset, Dataset):
        splits = ", ".join(dataset)
        raise ConfigError(f"{path} holds a DatasetDict (splits: {splits}), not one split",
                          f"point data.train_file / validation_file at a split, e.g. {path}/train")
    for number, record in enumerate(dataset, start=1):
        yield f"row {number}", record


def _text(record: dict[str, Any], column: str, where: str, path: Path) -> str:
    if column not in record:
        raise ConfigError(
            f"{path}, {where}: no column {column!r} (columns: {', '.join(map(str, record))})",
            "fix that record, or map the columns with data.query_column / data.positive_column / "
            "data.negative_columns",
        )
    value = record[column]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{path}, {where}: column {column!r} must be a non-empty string, got {value!r}",
            "fix that record",
        )
    return value


def _negatives(record: dict[str, Any], column: str, where: str, path: Path) -> list[str]:
    if column not in record:
        return [_text(record, column, where, path)]  # raises, naming the column
    value = record[column]
    if isinstance(value, list):
        texts = value
    else:
        texts = [value]
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ConfigError(
            f"{path}, {where}: hard-negative column {column!r} must hold a non-empty string or a "
            f"list of them, got {value!r}",
            "fix that record",
        )
    return list(texts)


def _image(value: str, where: str, path: Path) -> ImagePath:
    """An image file named in a record, relative to the data file's folder unless absolute."""
    image = Path(value)
    image = image if image.is_absolute() else path.parent / image
    if not image.is_file():
        raise ConfigError(f"{path}, {where}: image file {image} does not exist",
                          "fix the path in that record (relative paths start at the data file's folder)")
    return ImagePath(image)


def read_pairs(path: str | Path, data: DataConfig) -> list[Pair]:
    """Every pair in `path`; an empty file is an error. With data.image_column, each pair is a
    caption (query_column) and an image file (image_column), and the negative columns hold
    hard-negative image files."""
    path = Path(path)
    fmt = data_format(path, data.format)
    pairs = []
    counts = set()
    for where, record in _records(path, fmt):
        query = _text(record, data.query_column, where, path)
        if data.image_column:
            positive = _image(_text(record, data.image_column, where, path), where, path)
        else:
            positive = _text(record, data.positive_column, where, path)
        negatives = [n for column in data.negative_columns for n in _negatives(record, column, where, path)]
        if data.image_column:
            negatives = [_image(n, where, path) for n in negatives]
        counts.add(len(negatives))
        if len(counts) > 1:
            raise ConfigError(
                f"{path}, {where}: {len(negatives)} hard negatives, while earlier records have "
                f"{min(counts)}",
                "give every record the same number of hard negatives",
            )
        pairs.append(Pair(query, positive, tuple(negatives)))
    if not pairs:
        raise ConfigError(f"data file {path} holds no records", "add query/positive pairs to it")
    return pairs


def load_splits(data: DataConfig, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, validation): validation_file, or a seeded validation_split of train_file."""
    train = read_pairs(data.train_file, data)
    if data.validation_file:
        return train, read_pairs(data.validation_file, data)
    if not 0.0 <= data.validation_split < 1.0:
        raise ConfigError(
            f"data.validation_split is {data.validation_split}; it must be in [0, 1)",
            "pass e.g. data.validation_split=0.1",
        )
    if data.validation_split == 0.0:
        return train, []
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(train) * data.validation_split))
    if n_val >= len(train):
        raise ConfigError(
            f"data.validation_split={data.validation_split} leaves no training pairs of {len(train)}",
            "lower data.validation_split or add data",
        )
    held = set(order[:n_val])
    return [p for i, p in enumerate(train) if i not in held], [train[i] for i in sorted(held)]
