"""Batch inference: a file of work items read strictly, and the share of them this process does.

Under `accelerate launch` (or torchrun) every process reads the same file and takes its own
contiguous share through accelerate's `split_between_processes` (no padding, so no item is done
twice and none is lost); a plain run is one process that does them all. Items keep their index in
the file, so output names and seeds do not depend on how many processes there are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError


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
