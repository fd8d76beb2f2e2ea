"""Batch inference: a file of work items read strictly, and the share of them this process does.

Under `accelerate launch` (or torchrun) every process reads the same file and takes its own
contiguous share through accelerate's `split_between_processes` (no padding, so no item is done
twice and none is lost); a plain run is one process that does them all. Items keep their index in
the file, so output names and seeds do not depend on how many processes there are.

A batch survives interruption (a killed process, a bad image at item 900): each item's records are
appended to a progress file in the run dir as soon as the item is done, and running the same batch
again into the same run dir (`hydra.run.dir=...`) does only the items no progress file holds.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError, MLPlatformError, atomic_write_json

from .errors import InputImageError

log = logging.getLogger(__name__)


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


def _split(indexed: list[tuple[int, Any]]) -> tuple[list[tuple[int, Any]], int, int]:
    """(this process's contiguous share of [(index, item), ...], process index, processes)."""
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


class BatchRun:
    """This process's part of a batch run, kept on disk item by item.

    Every finished item becomes one line of `<stem>.rank<N>.progress.jsonl` in the run dir (its
    index, the batch-file item it was, the run's settings, its records; written in one write,
    flushed and fsynced). A run that finds progress files of the same batch and settings (model,
    task options) in its run dir skips the items they hold, whatever number of processes wrote
    them, and splits the rest; `finish` waits for every process, and process 0 writes the one
    records file (`name`, a JSON list in item order) from every progress file, then removes
    them. A half-written line (a process killed while writing) is ignored: that item is done
    again.
    """

    def __init__(self, items: list[Any], output_dir: Path, name: str,
                 settings: dict[str, Any] | None = None):
        self.items, self.output_dir, self.name = items, Path(output_dir), name
        self.settings = _as_json(settings or {})
        self.stem = Path(name).stem
        finished = self._read_progress()
        wait_for_everyone()  # every process has read the progress before any process adds to it
        todo = [(i, item) for i, item in enumerate(items) if i not in finished]
        self.share, self.rank, self.world = _split(todo)
        self.resumed = len(finished)
        self.path: Path | None = None  # the records file, once process 0 wrote it
        self._progress = self.output_dir / f"{self.stem}.rank{self.rank}.progress.jsonl"
        self._tail_checked = False  # whether this run looked for a half-written last line yet
        if finished:
            log.warning("%s: %d of %d items were done by an earlier run into %s; doing the "
                        "other %d", name, len(finished), len(items), self.output_dir,
                        len(items) - len(finished))

    def done(self, index: int, records: list[dict[str, Any]], **extra: Any) -> None:
        """Item `index` is finished: its records (and `extra`, e.g. an embedding) are on disk."""
        line = json.dumps({"item": index, "source": self.items[index], "settings": self.settings,
                           "records": records, **extra}, default=str)
        with open(self._progress, "a", encoding="utf-8") as handle:
            if not self._tail_checked:  # only an earlier, killed run can have left one
                if handle.tell() and not _ends_with_newline(self._progress):
                    handle.write("\n")  # close the half-written line
                self._tail_checked = True
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def finish(self, order: Callable[[dict[str, Any]], Any] = lambda r: r["item"],
               also: Callable[[list[dict[str, Any]]], None] | None = None,
               ) -> list[dict[str, Any]] | None:
        """Wait for every process; process 0 writes the records file from every progress line
        (earlier runs' included), lets `also(lines)` write what else the batch makes from them
        (lines in item order), then removes the progress files and returns the lines; the other
        processes return None."""
        wait_for_everyone()
        if self.rank != 0:
            return None
        lines = [line for _index, line in sorted(self._read_progress(warn=False).items())]
        missing = len(self.items) - len(lines)
        if missing:  # a process stopped without stopping this one: keep the progress
            raise MLPlatformError(f"{self.name}: {missing} of {len(self.items)} items have no "
                                  "progress line (a process stopped early)",
                                  f"run the same batch again into {self.output_dir} to do them")
        records = sorted((r for line in lines for r in line["records"]), key=order)
        self.path = atomic_write_json(self.output_dir / self.name, records)
        if also is not None:
            also(lines)
        for part in self._progress_files():  # only once everything is safely written
            os.remove(part)
        return lines

    def _progress_files(self) -> list[Path]:
        return sorted(self.output_dir.glob(f"{self.stem}.rank*.progress.jsonl"))

    def _read_progress(self, warn: bool = True) -> dict[int, dict[str, Any]]:
        """{index: progress line} of every progress file; a line of another batch is an error.
        Half-written lines are reported when the run starts (`warn`), not again at its end."""
        finished: dict[int, dict[str, Any]] = {}
        for path in self._progress_files():
            text = path.read_text(encoding="utf-8")
            complete, _, partial = text.rpartition("\n")
            damaged = int(bool(partial))
            for raw in filter(None, complete.split("\n")):
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError:
                    line = None
                if not isinstance(line, dict):
                    damaged += 1
                    continue
                index = line.get("item")
                known = isinstance(index, int) and 0 <= index < len(self.items)
                if not known or line.get("source") != _as_json(self.items[index]):
                    now = f"is {self.items[index]!r}" if known else "does not exist"
                    raise ConfigError(
                        f"{path} records item {index} as {line.get('source')!r}, but item "
                        f"{index} of this batch {now}: the run dir holds progress of another "
                        "batch",
                        "resume with the batch file the interrupted run had, or give this run "
                        "a run dir of its own (hydra.run.dir=...)",
                    )
                if line.get("settings") != self.settings:
                    raise ConfigError(
                        f"{path}: the interrupted run had other settings "
                        f"({_differences(line.get('settings') or {}, self.settings)})",
                        "resume with the settings the interrupted run had, or give this run a "
                        "run dir of its own (hydra.run.dir=...)",
                    )
                finished.setdefault(index, line)
            if damaged and warn:
                log.warning("%s: %d half-written lines ignored; those items are done again",
                            path, damaged)
        return finished


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _differences(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> str:
    """'model: a -> b, options.steps: 20 -> 25' for the settings that changed."""
    changed = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            inner = _differences(old, new, f"{prefix}{key}.")
            changed += [inner] if inner else []
        elif old != new:
            changed.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return ", ".join(changed)


def run_settings(ctx: Any, options: Any) -> dict[str, Any]:
    """What makes a batch's outputs what they are: the model, dtype, seed and task options."""
    import dataclasses

    fields = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options)
    return {"model": ctx.model, "dtype": str(ctx.dtype), "seed": ctx.seed, "options": fields}


def _as_json(value: Any) -> Any:
    """`value` as it reads back from a progress line."""
    return json.loads(json.dumps(value, default=str))
