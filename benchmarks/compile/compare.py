#!/usr/bin/env python
"""Compare compile benchmark results with a saved baseline; exit 1 when any regress.

    python benchmarks/compile/compare.py NEW.json BASELINE.json [--threshold 0.10] [--md OUT.md]

Records are matched on (builder, model, shape, backend, dtype, device). A record regresses when
its median is more than `threshold` slower than the baseline's, when it ran (ok) in the baseline
and fails now, or when its error vs eager now exceeds the tolerance it met before. Speedup vs
eager is shown too: it is measured within one run, so it is the figure least affected by a
different or busier machine. Absolute medians are only comparable on the same machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KEY = ("builder", "model", "shape", "backend", "dtype", "device")


def _key(r: dict) -> tuple:
    return tuple(str(r.get(k)) for k in KEY)


def _load(path) -> list[dict]:
    data = json.loads(Path(path).read_text())
    return data["records"] if isinstance(data, dict) else data


def compare(new: list[dict], base: list[dict], threshold: float = 0.10) -> tuple[list[dict], bool]:
    by_key = {_key(r): r for r in base}
    rows, regressed = [], False
    for r in new:
        b = by_key.get(_key(r))
        row = {"key": _key(r), "new_ms": r.get("median_ms"), "base_ms": None, "change": None,
               "new_speedup": r.get("speedup_vs_eager"), "base_speedup": None, "verdict": "new"}
        if b is not None:
            row.update(base_ms=b.get("median_ms"), base_speedup=b.get("speedup_vs_eager"), verdict="ok")
            if b.get("status") == "ok" and r.get("status") != "ok" and r.get("status") != "skipped":
                row["verdict"] = f"REGRESSED: now {r.get('status')}"
            elif r.get("median_ms") and b.get("median_ms"):
                change = r["median_ms"] / b["median_ms"] - 1
                row["change"] = change
                if change > threshold:
                    row["verdict"] = f"REGRESSED: {change:+.0%} median"
                elif change < -threshold:
                    row["verdict"] = f"improved ({change:+.0%})"
            if b.get("parity_ok") and r.get("parity_ok") is False:
                row["verdict"] = "REGRESSED: error above tolerance"
        regressed |= row["verdict"].startswith("REGRESSED")
        rows.append(row)
    return rows, regressed


def format_rows(rows: list[dict], threshold: float) -> str:
    def f(v, spec):
        return "-" if v is None else format(v, spec)

    lines = [f"Regression threshold: {threshold:.0%} slower median.", "",
             "| builder | model | shape | backend | baseline ms | new ms | change | baseline speedup | new speedup | verdict |",
             "|" + "|".join(["---"] * 10) + "|"]
    for row in rows:
        builder, model, shape, backend, _dtype, _device = row["key"]
        lines.append(f"| {builder} | {model} | {shape} | {backend} | {f(row['base_ms'], '.1f')} | "
                     f"{f(row['new_ms'], '.1f')} | {f(row['change'], '+.1%')} | "
                     f"{f(row['base_speedup'], '.2f')} | {f(row['new_speedup'], '.2f')} | {row['verdict']} |")
    return "\n".join(lines)


def compare_files(new_path, base_path, threshold: float = 0.10, md_path=None) -> bool:
    """Print (and optionally write) the comparison; True when anything regressed."""
    rows, regressed = compare(_load(new_path), _load(base_path), threshold)
    text = format_rows(rows, threshold)
    print(f"\nComparison with {base_path}:\n{text}")
    if md_path:
        Path(md_path).write_text(f"# Compile benchmark vs baseline {base_path}\n\n{text}\n")
    print("[compare] REGRESSIONS found" if regressed else "[compare] no regressions", file=sys.stderr)
    return regressed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("new")
    ap.add_argument("baseline")
    ap.add_argument("--threshold", type=float, default=0.10)
    ap.add_argument("--md", default=None)
    args = ap.parse_args(argv)
    return 1 if compare_files(args.new, args.baseline, args.threshold, args.md) else 0


if __name__ == "__main__":
    sys.exit(main())
