"""Batch inference: a file of work items read strictly, and the share of them this process does.

Under `accelerate launch` (or torchrun) every process reads the same file and takes its own
contiguous share through accelerate's `split_between_processes` (no padding, so no item is done
twice and none is lost); a plain run is one process that does them all. Items keep their index in
the file, so output names and seeds do not depend on how many processes there are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError, atomic_write_json

from .errors import InputImageError


def read_batch_file(path: str | Path, allowed: tuple[str, ...], text_key: str = "prompt") -> list[dict[str, Any]]:
    """Items of a batch file: `.jsonl` (one JSON object per line, keys from `allowed`) or any other
    suffix as UTF-8 text, one `text_key` value per line. Blank lines are skipped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"batch file {path} does not exist",
                          "check the path (relative paths are taken from where you run)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"batch file {path} is not UTF-8 text: {exc}",
                          "save it as UTF-8, one item per line") from exc
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            items.append({text_key: line.strip()})
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"batch file {path}, line {number}: not JSON ({exc.msg})",
                              "write one JSON object per line") from exc
        if not isinstance(item, dict):
            raise ConfigError(f"batch file {path}, line {number}: a {type(item).__name__}, not "
                              "an object", 'write e.g. {"prompt": "a cat", "seed": 3}')
        unknown = sorted(set(item) - set(allowed))
        if unknown:
            raise ConfigError(f"batch file {path}, line {number}: unknown key(s) {unknown}",
                              f"allowed keys: {', '.join(allowed)}")
        items.append(item)
    if not items:
        raise ConfigError(f"batch file {path} has no items", "write one item per line")
    return items


def distributed() -> bool:
    """True when launched with several processes (accelerate launch / torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _state() -> Any:
    """accelerate's PartialState; without CUDA it must be told to use CPU processes (gloo),
    else it ignores the launch and reports a single process."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def process_share(items: list[Any]) -> tuple[list[tuple[int, Any]], int, int]:
    """([(index, item), ...] this process does, process index, number of processes)."""
    indexed = list(enumerate(items))
    if not distributed():
        return indexed, 0, 1
    state = _state()
    with state.split_between_processes(indexed) as share:
        return list(share), state.process_index, state.num_processes


def wait_for_everyone() -> None:
    if distributed():
        _state().wait_for_everyone()


def process_device(device: str) -> str:
    """`device=auto` under a multi-process launch means this process's own device."""
    if device != "auto" or not distributed():
        return device
    return str(_state().device)


def read_image_list(path: str | Path) -> list[str]:
    """The image paths of a batch file (one per line), refusing two with the same file stem
    (their outputs, named after the stem, would overwrite each other) and any that is not an
    image file, before any work starts: a bad item 900 must not cost the work of items 1-899,
    and every process of a launch refuses the same file, so none is left waiting for the rest."""
    images = [item["input"] for item in read_batch_file(path, ("input",), text_key="input")]
    unreadable = [f"{image} ({problem})" for image in images
                  if (problem := _not_an_image(Path(image).expanduser()))]
    if unreadable:
        shown = "; ".join(unreadable[:5]) + (f"; and {len(unreadable) - 5} more"
                                             if len(unreadable) > 5 else "")
        raise InputImageError(
            f"batch file {path}: {len(unreadable)} of {len(images)} images cannot be read: {shown}",
            "fix or remove those lines (relative paths are taken from where you run); "
            "nothing was processed",
        )
    seen: dict[str, str] = {}
    for image in images:
        stem = Path(image).stem
        if stem in seen:
            raise ConfigError(
                f"batch file {path}: {seen[stem]} and {image} have the same name {stem!r}; "
                "their outputs would overwrite each other",
                "rename one of them, or run them in separate batches",
            )
        seen[stem] = image
    return images


def _not_an_image(path: Path) -> str | None:
    """Why `path` cannot be an input image (missing, or a header no image format has), else None.
    Only the header is read here; a truncated image is still refused when it is decoded."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return "no such file"
    try:
        with Image.open(path):
            return None
    except (UnidentifiedImageError, OSError) as exc:
        return f"not an image: {type(exc).__name__}"


def single_or_batch(task: str, single: Any, batch_file: str | None, extra: tuple[str, ...] = ()) -> None:
    """A task takes task.input or task.batch_file (not both, not neither)."""
    if batch_file and (single or any(extra)):
        raise ConfigError(f"task={task}: task.batch_file replaces task.input"
                          f"{' and task.output' if extra else ''}",
                          "pass either task.input=IMAGE or task.batch_file=FILE (one image path "
                          "per line)")
    if not batch_file and not single:
        raise ConfigError(f"task={task} needs an image",
                          "pass task.input=IMAGE or task.batch_file=FILE (one image path per line)")


def merge_records(output_dir: Path, name: str, records: list[dict[str, Any]], rank: int,
                  world: int, order: Callable[[dict[str, Any]], Any] = lambda r: r["item"],
                  ) -> Path | None:
    """Every process's records of a batch in one `name` file (JSON list, in item order).

    One process writes it directly. With several, each writes `<stem>.rank<N>.json`, all wait,
    and process 0 merges the parts (and removes them) once every process has finished; the
    other processes return None."""
    target = output_dir / name
    if world == 1:
        return atomic_write_json(target, sorted(records, key=order))
    stem = Path(name).stem
    atomic_write_json(output_dir / f"{stem}.rank{rank}.json", records)
    wait_for_everyone()
    if rank != 0:
        return None
    merged = []
    parts = [output_dir / f"{stem}.rank{other}.json" for other in range(world)]
    for part in parts:
        merged += json.loads(part.read_text(encoding="utf-8"))
    path = atomic_write_json(target, sorted(merged, key=order))
    for part in parts:  # only once the merged file is safely written
        os.remove(part)
    return path
