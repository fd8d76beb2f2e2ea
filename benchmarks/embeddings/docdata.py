"""Deterministic retrieval pairs from the Python standard library's own docstrings (offline).

For every module in MODULES (imported in this order), the module itself and its public
functions, classes and the classes' public methods (sorted by name, `inspect.getmembers`) whose
`inspect.getdoc` docstring has a one-line summary and a rest of at least MIN_REST characters
give one pair:

    query    = the summary (first paragraph, whitespace collapsed)
    positive = the rest of the docstring (whitespace collapsed), cut to 600 characters

Pairs whose query or positive text was already seen are dropped (first wins), so every query
has exactly one relevant document. Each pair is assigned to the held-out split when
blake2b(qualified name) mod 100 < 15, else to training; both lists are sorted by qualified
name. The result depends only on the Python version (the docstrings), recorded with a hash.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import sys
import warnings

MODULES = (
    "abc argparse ast asyncio base64 bisect builtins bz2 calendar cmath codecs collections "
    "concurrent.futures configparser contextlib copy csv dataclasses datetime decimal difflib "
    "email email.message enum fileinput fnmatch fractions ftplib functools gettext glob gzip "
    "hashlib heapq hmac html html.parser http.client http.cookies http.server imaplib "
    "importlib inspect io ipaddress itertools json logging logging.handlers lzma mailbox math "
    "mimetypes multiprocessing numbers operator optparse os os.path pathlib pickle pickletools "
    "platform plistlib poplib pprint pydoc queue quopri random re reprlib sched secrets "
    "selectors shelve shlex shutil signal smtplib socket socketserver sqlite3 ssl stat "
    "statistics string struct subprocess symtable sys sysconfig tarfile tempfile textwrap "
    "threading time timeit tokenize trace traceback types typing unittest unittest.mock "
    "urllib.parse urllib.request uuid warnings weakref xml.dom.minidom xml.etree.ElementTree "
    "xmlrpc.client zipfile zlib"
).split()
MIN_REST = 40
MAX_REST = 600
HELD_OUT_PERCENT = 15


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _split(doc: str | None) -> tuple[str, str] | None:
    if not doc:
        return None
    parts = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)
    if len(parts) != 2:
        return None
    summary, rest = _clean(parts[0]), _clean(parts[1])
    if len(summary) < 10 or len(rest) < MIN_REST:
        return None
    return summary, rest[:MAX_REST]


def _objects(name: str):
    module = importlib.import_module(name)
    yield name, module
    for attr, obj in sorted(inspect.getmembers(module), key=lambda kv: kv[0]):
        if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            yield f"{name}.{attr}", obj
            for meth, member in sorted(vars(obj).items()):
                if not meth.startswith("_") and (inspect.isfunction(member) or inspect.isroutine(member)):
                    yield f"{name}.{attr}.{meth}", member
        elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
            yield f"{name}.{attr}", obj


def make_pairs() -> tuple[list[dict], list[dict], dict]:
    """(train, held_out, info): pairs as {"query", "positive", "name"} dicts."""
    seen_q, seen_p, rows = set(), set(), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module in MODULES:
            try:
                objects = list(_objects(module))
            except Exception:  # noqa: BLE001 - a module missing on this platform
                continue
            for qualname, obj in objects:
                try:
                    split = _split(inspect.getdoc(obj))
                except Exception:  # noqa: BLE001
                    continue
                if split is None or split[0] in seen_q or split[1] in seen_p:
                    continue
                seen_q.add(split[0])
                seen_p.add(split[1])
                rows.append({"name": qualname, "query": split[0], "positive": split[1]})
    rows.sort(key=lambda r: r["name"])
    held = [r for r in rows if int(hashlib.blake2b(r["name"].encode(), digest_size=8).hexdigest(), 16)
            % 100 < HELD_OUT_PERCENT]
    held_names = {r["name"] for r in held}
    train = [r for r in rows if r["name"] not in held_names]
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
    info = {"source": "Python standard library docstrings (benchmarks/embeddings/docdata.py)",
            "python": sys.version.split()[0], "pairs": len(rows), "train_pairs": len(train),
            "held_out_pairs": len(held), "sha256_16": digest}
    return train, held, info


def write_jsonl(rows: list[dict], path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for r in rows:
            handle.write(json.dumps({"query": r["query"], "positive": r["positive"]}) + "\n")


if __name__ == "__main__":
    train, held, info = make_pairs()
    print(json.dumps(info))
    print(held[0])
