"""Give back the pages of a loaded shared library that nothing reads again.

AOTInductor embeds the weights in the package's `.so` and, on load, copies them into a heap blob
it runs from. The copy reads every page of the `.so`'s constant section, and those file-backed
pages stay resident while the library is mapped: a second copy of the weights in RSS (CLIP text:
961 MB resident after load against 556 MB for eager). Read-only, file-backed pages can always be
dropped (`madvise(MADV_DONTNEED)`): should anything touch them again, the kernel reads them back
from the file, so this changes memory use only, never results.
"""

from __future__ import annotations

import ctypes
import logging
import re
import sys
from pathlib import Path

log = logging.getLogger(__name__)
MADV_DONTNEED = 4
_MAPS_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s+(.*)$")


def mapped_files() -> dict[str, list[tuple[int, int, str, int]]]:
    """{path: [(start, end, perms, anonymous kB)]} of this process's file-backed mappings (Linux;
    else {}). `anonymous` counts copied-on-write pages: a mapping with any (RELRO after
    relocation) no longer matches its file and must keep its pages."""
    maps: dict[str, list[tuple[int, int, str, int]]] = {}
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return maps
    current: list | None = None
    for line in text.splitlines():
        match = _MAPS_LINE.match(line)
        if match:
            start, end, perms, path = match.groups()
            current = None
            if path.startswith("/"):
                current = [int(start, 16), int(end, 16), perms, 0]
                maps.setdefault(path, []).append(current)
        elif current is not None and line.startswith("Anonymous:"):
            current[3] = int(line.split()[1])
    return {path: [tuple(r) for r in ranges] for path, ranges in maps.items()}


def release_new_library_pages(before: dict[str, list], suffix: str = ".so") -> int:
    """Drop the resident read-only pages of files ending in `suffix` (libraries; OpenVINO's
    model.bin) mapped since `before` (mapped_files()); returns the bytes advised. Writable
    mappings and mappings with copied-on-write pages (relocations, globals, RELRO) are left
    alone."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    for path, ranges in mapped_files().items():
        if path in before or not path.endswith(suffix):
            continue
        for start, end, perms, anonymous in ranges:
            if "w" in perms or anonymous:
                continue
            if madvise(start, end - start, MADV_DONTNEED) == 0:
                released += end - start
    if released:
        log.debug("released %.1f MB of read-only library pages", released / 2**20)
    return released
