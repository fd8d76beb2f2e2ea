"""Build progress: named phases with elapsed time, logged and collected for the manifest."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

log = logging.getLogger("mlplatform_compile.build")


class Phases:
    """`with phases("compile"):` logs the start, the end and the time taken."""

    def __init__(self, title: str):
        self.title = title
        self.timings: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("[%s] %s ...", self.title, name)
        begin = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - begin
            self.timings[name] = round(took, 3)
            log.info("[%s] %s done in %.1fs (total %.1fs)", self.title, name, took, self.elapsed)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start
