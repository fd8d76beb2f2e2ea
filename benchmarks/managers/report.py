"""Markdown table and PNG chart for the model-manager benchmark records (see run.py)."""

from __future__ import annotations

from pathlib import Path


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} µs"


def markdown_table(records: list[dict]) -> str:
    lines = ["| benchmark | what | MB | runs | median ms | GB/s | note |", "|" + "---|" * 7]
    for r in records:
        what = r.get("what") or f"{r['format']} ({r['cache']})"
        note = ""
        if "speedup_vs_torch_load" in r:
            note = f"**{r['speedup_vs_torch_load']:.2f}x** faster than torch.load"
        if "eviction_cost_s" in r:
            note = f"eviction adds {_ms(r['eviction_cost_s'])} ms"
        gbps = f"{r['gb_per_s']:.2f}" if "gb_per_s" in r else "-"
        lines.append(f"| {r['bench']} | {what} | {r['bytes'] / 2**20:.0f} | {r['runs']} | "
                     f"{_ms(r['median_s'])} | {gbps} | {note} |")
    return "\n".join(lines)


def write_markdown(records: list[dict], path: Path, meta: dict) -> str:
    table = markdown_table(records)
    text = [
        "# Model-manager benchmark" + (" (quick smoke run)" if meta.get("quick") else ""),
        "",
        f"- machine: {meta['device_name']}; torch {meta['torch_version']}; Python "
        f"{meta['python']}; {meta['timestamp']}; total {meta['total_wall_s']:.0f} s; load "
        f"average at start {meta.get('load_average_at_start', '?')}",
        f"- load: {meta['load_mb']} MiB of float32 tensors saved both ways; each load in a fresh "
        "process (imports excluded), `cold` after dropping the file from the page cache "
        "(posix_fadvise DONTNEED), through the managers' safe loader; every 4 KiB page of tensor "
        "data touched (safetensors maps lazily)",
        "- manager: a RealESRGAN_x4plus-sized RRDBNet (23 blocks; 1 block in --quick; random "
        "weights, safetensors) through ModelManager; eviction: a budget that holds one of two",
        f"- download: {meta['download_mb']} MiB from a loopback HTTP server through fetch_url",
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

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    loads = [r for r in records if r["bench"] == "load"]
    caches = ["cold", "warm page cache"]
    formats = ["safetensors", "torch.load(weights_only)"]
    for index, fmt in enumerate(formats):
        values = [next(r["gb_per_s"] for r in loads if r["format"] == fmt and r["cache"] == c)
                  for c in caches]
        bars = axes[0].bar([c + (index - 0.5) * 0.38 for c in range(len(caches))], values, 0.38,
                           label=fmt)
        axes[0].bar_label(bars, fmt="%.2f", fontsize=8)
    download = next((r for r in records if r["bench"] == "download"), None)
    if download:
        bars = axes[0].bar([len(caches)], [download["gb_per_s"]], 0.38, label="download (loopback)")
        axes[0].bar_label(bars, fmt="%.2f", fontsize=8)
    axes[0].set_xticks(range(len(caches) + 1))
    axes[0].set_xticklabels([*caches, "download"])
    axes[0].set_ylabel("GB/s (higher is better)")
    axes[0].set_title(f"loading {meta['load_mb']} MiB of weights")
    axes[0].legend(fontsize=8)
    others = [r for r in records if r["bench"] in ("manager", "eviction")]
    labels = [r["what"] for r in others]
    values = [r["median_s"] * 1e3 for r in others]
    bars = axes[1].barh(range(len(others)), values)
    axes[1].bar_label(bars, labels=[_ms(r["median_s"]) for r in others], fontsize=7)
    axes[1].set_yticks(range(len(others)))
    axes[1].set_yticklabels(labels, fontsize=7)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("median ms (log scale, lower is better)")
    axes[1].set_title("ModelManager: RealESRGAN_x4plus-sized model")
    fig.suptitle(f"{meta['device_name']} | torch {meta['torch_version']} | {meta['timestamp']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
