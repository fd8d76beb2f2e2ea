"""Markdown table and PNG chart for compile benchmark records (flat dicts, see run.py)."""

from __future__ import annotations

from pathlib import Path


def _fmt(value, spec: str, missing: str = "-") -> str:
    if value is None:
        return missing
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def markdown_table(records: list[dict]) -> str:
    head = ("| builder | model | shape | backend | dtype | median ms | speedup vs eager | peak mem MB "
            "| max abs err | max rel err | compile s | status |")
    lines = [head, "|" + "|".join(["---"] * 12) + "|"]
    for r in records:
        status = r.get("status", "?")
        if status != "ok":
            status = f"{status}: {(r.get('reason') or '').splitlines()[0][:160]}" if r.get("reason") else status
        elif r.get("parity_ok") is False:
            status = f"ok, ABOVE TOLERANCE {r.get('tolerance'):g}"
        if r.get("discarded_runs"):
            status += f" ({r['discarded_runs']} contended runs redone)"
        speed = r.get("speedup_vs_eager")
        lines.append("| " + " | ".join([
            r.get("builder", ""), str(r.get("model", "")) + (" (random)" if r.get("random_weights", True) else ""),
            str(r.get("shape") or r.get("shape_name", "")).replace("|", "/"),
            r.get("backend", ""), r.get("dtype", ""),
            _fmt(r.get("median_ms"), ".1f"),
            (f"**{speed:.2f}x**" if speed is not None and r.get("backend") != "eager" else _fmt(speed, ".2f")),
            _fmt(r.get("peak_mem_mb"), ".0f"),
            _fmt(r.get("max_abs_error"), ".1e"), _fmt(r.get("max_rel_error"), ".1e"),
            _fmt(r.get("compile_s"), ".1f"), status.replace("|", "/"),
        ]) + " |")
    return "\n".join(lines)


def write_markdown(records: list[dict], path: Path, meta: dict) -> str:
    first = next((r for r in records), {})
    table = markdown_table(records)
    text = [
        f"# Compile benchmark ({first.get('device', '?')})",
        "",
        f"- device: {meta.get('device_name')}; torch {meta.get('torch_version')}; "
        f"{meta.get('timestamp')}; total {meta.get('total_wall_s', 0):.0f} s",
        "- models: SD 1.5 architectures from shipped configs with **RANDOM weights** (speed only)"
        if not meta.get("quick") else "- models: tiny configs with **RANDOM weights** (smoke test)",
        "- median of the timed runs after warm-up; speedup = eager median / backend median, same "
        "inputs, same run; errors vs eager outputs (relative = max abs diff / max |eager|)",
        f"- peak memory: {next((r.get('memory_method') for r in records if r.get('memory_method')), 'n/a')}",
        "",
        table,
        "",
    ]
    path.write_text("\n".join(text))
    return table


def write_chart(records: list[dict], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.get("status") == "ok"]
    groups = []
    for r in ok:
        g = (r["builder"], r.get("shape_name", ""))
        if g not in groups:
            groups.append(g)
    backends = []
    for r in ok:
        if r["backend"] not in backends:
            backends.append(r["backend"])
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 3 + 2.2 * len(groups)) * 1.6 / 1.2, 4.5))
    width = 0.8 / max(1, len(backends))
    for index, backend in enumerate(backends):
        xs, speed, mem = [], [], []
        for gi, g in enumerate(groups):
            r = next((r for r in ok if (r["builder"], r.get("shape_name", "")) == g and r["backend"] == backend), None)
            if r is None:
                continue
            xs.append(gi + (index - (len(backends) - 1) / 2) * width)
            speed.append(r.get("speedup_vs_eager") or 0)
            mem.append(r.get("peak_mem_mb") or 0)
        bars = axes[0].bar(xs, speed, width, label=backend)
        axes[0].bar_label(bars, fmt="%.2f", fontsize=7)
        axes[1].bar(xs, mem, width, label=backend)
    labels = [f"{b}\n{s}" for b, s in groups]
    for ax in axes:
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(labels, fontsize=8)
    axes[0].axhline(1.0, color="black", linewidth=0.8)
    axes[0].set_ylabel("speedup over eager (x, higher is better)")
    axes[0].set_title("median latency: speedup vs eager")
    axes[1].set_ylabel("peak memory (MB)")
    axes[1].set_title("peak memory while running")
    axes[0].legend(fontsize=8)
    skipped = sorted({f"{r['backend']}" for r in records if r.get("status") == "skipped"})
    note = f"{meta.get('device_name')} | torch {meta.get('torch_version')} | random weights"
    if skipped:
        note += f" | skipped: {', '.join(skipped)}"
    failed = sorted({f"{r['builder']}/{r['backend']}" for r in records if r.get("status") == "error"})
    if failed:
        note += f" | failed: {', '.join(failed)}"
    fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
