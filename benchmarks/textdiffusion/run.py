"""Text-diffusion benchmark (issue 9): a small model trained briefly on the synthetic grammar
corpus, then side by side in one run

* training steps/s,
* sampling sentences/s for DDIM at 50 steps vs DDPM at all n_T steps (end to end: latent
  sampling plus greedy decoding, and the latent sampling alone), their speed ratio, and the
  quality metrics of mlplatform_textdiffusion.evaluate (mean +- std over --n-sets sample sets,
  plus the grammatical fraction, which the synthetic grammar makes exact),
* KV-cached greedy decoding vs full recomputation of the prefix at --kv-tokens tokens.

Writes textdiffusion_<device>[_quick].{json,md,png} to --out and prints the table.

    python benchmarks/textdiffusion/run.py --out benchmarks/results            # ~3-5 min on CPU
    python benchmarks/textdiffusion/run.py --quick --out /tmp/td               # smoke (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TARGET_DDIM_SPEEDUP = 10.0
TARGET_KV_SPEEDUP = 3.0


def write_models(root: Path, *, n_embd: int, n_layer: int, positions: int, seed: int = 0):
    """Tiny BERT encoder (from testing) and a GPT-2 decoder sized here (long enough for the KV test)."""
    import torch
    from mlplatform_textdiffusion.testing import make_tokenizer, tiny_bert_config, tiny_gpt2_config
    from transformers import BertModel, GPT2LMHeadModel

    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    bert, gpt2 = root / "bert", root / "gpt2"
    BertModel(tiny_bert_config()).save_pretrained(bert)
    cfg = tiny_gpt2_config()
    cfg.n_embd, cfg.n_layer, cfg.n_positions = n_embd, n_layer, positions
    cfg.n_head = max(2, n_embd // 32)
    GPT2LMHeadModel(cfg).save_pretrained(gpt2)
    tokenizer.save_pretrained(bert)
    tokenizer.save_pretrained(gpt2)
    return bert, gpt2


def timed(fn, repeats: int):
    fn()  # warm-up, not timed
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and steps (smoke test)")
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--n-T", type=int, default=None, help="diffusion steps (DDPM runs all)")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--n-sets", type=int, default=None)
    parser.add_argument("--num-samples", type=int, default=None, help="sentences per sample set")
    parser.add_argument("--kv-tokens", type=int, default=64)
    parser.add_argument("--kv-batch", type=int, default=8)
    parser.add_argument("--judge-lm", default=None, help="local causal LM dir for perplexity (else skipped)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from mlplatform_textdiffusion.evaluate import distinct_n, evaluate, novelty, self_bleu  # noqa: F401
    from mlplatform_textdiffusion.pipeline import TextDiffusionPipeline
    from mlplatform_textdiffusion.testing import is_grammatical, write_grammar_corpus
    from mlplatform_textdiffusion.train import train

    quick = args.quick
    train_steps = args.train_steps or (40 if quick else 800)
    n_T = args.n_T or (200 if quick else 1000)
    ddim_steps = min(args.ddim_steps, n_T)
    n_sets = args.n_sets or (2 if quick else 3)
    num_samples = args.num_samples or (8 if quick else 64)
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "textdiffusion_cpu" + ("_quick" if quick else "")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus_path = write_grammar_corpus(tmp / "grammar.txt", n=400 if quick else 2000, seed=args.seed)
        corpus = corpus_path.read_text().splitlines()
        bert, gpt2 = write_models(tmp / "models", n_embd=32 if quick else 64, n_layer=2 if quick else 4,
                                  positions=max(args.kv_tokens + 2, 40))
        options = {
            "name": "text_diffusion", "corpus": str(corpus_path), "steps": train_steps,
            "batch_size": 16 if quick else 32, "lr": 3e-3, "log_every": train_steps, "progress": False,
            "vae": {"encoder": {"connector": "BertForLatentConnector", "source": str(bert)},
                    "decoder": {"connector": "GPT2ForLatentConnector", "source": str(gpt2)},
                    "latent_size": 16, "max_length": 16, "kl_weight": 0.02,
                    "kl_anneal_steps": train_steps // 3, "free_bits": 0.5},
            "diffusion": {"n_T": n_T, "hidden_dim": 64 if quick else 128, "num_layers": 2,
                          "ema_decay": 0.99},
        }
        print(f"training {train_steps} steps (n_T={n_T}) ...", flush=True)
        start = time.perf_counter()
        result = train(options, tmp / "train", device="cpu", seed=args.seed)
        train_s = time.perf_counter() - start
        pipe = TextDiffusionPipeline.from_pretrained(result.model_dir, device="cpu")

        samplers = {}
        for name, steps in (("ddim", ddim_steps), ("ddpm", None)):
            label = f"{name}-{ddim_steps if name == 'ddim' else n_T}"
            print(f"sampling {label} ...", flush=True)
            latent_s, _ = timed(lambda n=name, s=steps: pipe.sample_latents(
                num_samples, sampler=n, steps=s, generator=torch.Generator().manual_seed(args.seed)), 3)
            e2e_s, (texts, _) = timed(lambda n=name, s=steps: pipe.sample(num_samples, sampler=n, steps=s,
                                                                          seed=args.seed), 3)
            ev = evaluate(pipe, corpus, n_sets=n_sets, num_samples=num_samples, sampler=name, steps=steps,
                          seed=args.seed, judge_lm=args.judge_lm)
            grammatical = []
            for i in range(n_sets):
                set_texts, _ = pipe.sample(num_samples, sampler=name, steps=steps, seed=args.seed + i)
                grammatical.append(sum(map(is_grammatical, set_texts)) / len(set_texts))
            metrics = dict(ev["metrics"])
            metrics["grammatical"] = {"mean": statistics.fmean(grammatical),
                                      "std": statistics.stdev(grammatical) if len(grammatical) > 1 else 0.0,
                                      "values": grammatical}
            samplers[name] = {
                "label": label, "steps": ddim_steps if name == "ddim" else n_T,
                "sentences_per_s": num_samples / e2e_s, "latent_sentences_per_s": num_samples / latent_s,
                "metrics": metrics, "examples": texts[:5], "notes": ev.get("notes", []),
            }

        print(f"decoding {args.kv_tokens} tokens with and without the KV cache ...", flush=True)
        decoder = pipe.model.model_vae.decoder
        z = torch.randn(args.kv_batch, pipe.latent_size, generator=torch.Generator().manual_seed(args.seed))
        never = -1  # an eos id no token has: every row decodes exactly kv_tokens tokens
        kv = {}
        with torch.no_grad():
            for use_cache in (True, False):
                seconds, (ids, _) = timed(lambda c=use_cache: decoder.generate(
                    z, pipe.codec.bos_id, never, args.kv_tokens, use_cache=c), 3)
                kv["cached" if use_cache else "full"] = {"seconds": seconds, "ids": ids,
                                                         "tokens_per_s": args.kv_batch * args.kv_tokens / seconds}

    ddim, ddpm = samplers["ddim"], samplers["ddpm"]
    speedup = ddim["sentences_per_s"] / ddpm["sentences_per_s"]
    latent_speedup = ddim["latent_sentences_per_s"] / ddpm["latent_sentences_per_s"]
    within = {}
    for name in ddim["metrics"]:
        a, b = ddim["metrics"][name], ddpm["metrics"][name]
        within[name] = abs(a["mean"] - b["mean"]) <= max(a["std"] + b["std"], 1e-9)
    kv_speedup = kv["full"]["seconds"] / kv["cached"]["seconds"]
    record = {
        "benchmark": "textdiffusion", "quick": quick, "device": "cpu",
        "device_name": platform.processor() or platform.machine(), "torch_version": torch.__version__,
        "python": sys.version.split()[0], "threads": torch.get_num_threads(),
        "model": {"train_steps": train_steps, "n_T": n_T, "decoder_n_embd": 32 if quick else 64,
                  "decoder_layers": 2 if quick else 4, "latent_size": 16, "corpus_sentences": len(corpus)},
        "training": {"steps": train_steps, "seconds": train_s, "steps_per_s": train_steps / train_s,
                     "final": result.metrics["final"]},
        "sampling": {"n_sets": n_sets, "num_samples": num_samples, **samplers,
                     "speedup_ddim_vs_ddpm": speedup, "latent_speedup_ddim_vs_ddpm": latent_speedup,
                     "quality_within_spread": within},
        "kv_cache": {"tokens": args.kv_tokens, "batch": args.kv_batch,
                     "cached_s": kv["cached"]["seconds"], "full_s": kv["full"]["seconds"],
                     "cached_tokens_per_s": kv["cached"]["tokens_per_s"],
                     "full_tokens_per_s": kv["full"]["tokens_per_s"], "speedup": kv_speedup,
                     "identical_tokens": kv["cached"]["ids"] == kv["full"]["ids"]},
        "targets": {
            "ddim_speedup_ge_10x": speedup >= TARGET_DDIM_SPEEDUP,
            "ddim_quality_within_spread": all(within.values()),
            "kv_speedup_ge_3x": kv_speedup >= TARGET_KV_SPEEDUP,
        },
    }
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    table = markdown(record)
    (out / f"{stem}.md").write_text(table)
    plot(record, out / f"{stem}.png")
    print(table)
    print(f"wrote {out / stem}.{{json,md,png}}")
    return 0


def _ms(stats) -> str:
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def markdown(r: dict) -> str:
    s, k, t = r["sampling"], r["kv_cache"], r["training"]
    ddim, ddpm = s["ddim"], s["ddpm"]
    lines = [
        f"# Text-diffusion benchmark ({'quick' if r['quick'] else 'full'}, {r['device']}, torch {r['torch_version']},"
        f" {r['threads']} threads)",
        "",
        f"Model: {r['model']}",
        "",
        f"Training: {t['steps']} steps in {t['seconds']:.1f} s = **{t['steps_per_s']:.1f} steps/s** "
        "(wall clock of train(), setup and the final evaluation included)",
        "",
        f"## Sampling ({s['n_sets']} sets x {s['num_samples']} sentences; mean ± std over sets)",
        "",
        f"| metric | {ddim['label']} | {ddpm['label']} | within spread |",
        "|---|---|---|---|",
        f"| sentences/s (sample + decode) | {ddim['sentences_per_s']:.1f} | {ddpm['sentences_per_s']:.1f} | |",
        f"| sentences/s (latents only) | {ddim['latent_sentences_per_s']:.1f} | "
        f"{ddpm['latent_sentences_per_s']:.1f} | |",
    ]
    for name in ddim["metrics"]:
        lines.append(f"| {name} | {_ms(ddim['metrics'][name])} | {_ms(ddpm['metrics'][name])} | "
                     f"{'yes' if s['quality_within_spread'][name] else 'no'} |")
    lines += [
        "",
        f"Speed ratio DDIM/DDPM: **{s['speedup_ddim_vs_ddpm']:.1f}x** end to end, "
        f"{s['latent_speedup_ddim_vs_ddpm']:.1f}x for the latents alone (target >= {TARGET_DDIM_SPEEDUP:.0f}x).",
        "",
        f"## KV cache ({k['tokens']} tokens, batch {k['batch']}, greedy)",
        "",
        "| decoding | seconds | tokens/s |",
        "|---|---|---|",
        f"| KV-cached | {k['cached_s']:.3f} | {k['cached_tokens_per_s']:.0f} |",
        f"| full recomputation | {k['full_s']:.3f} | {k['full_tokens_per_s']:.0f} |",
        "",
        f"Speed ratio: **{k['speedup']:.1f}x** (target >= {TARGET_KV_SPEEDUP:.0f}x); identical tokens: "
        f"{k['identical_tokens']}",
        "",
        "Targets: " + ", ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in r["targets"].items()),
        "",
    ]
    notes = ddim.get("notes", [])
    if notes:
        lines += ["Notes: " + "; ".join(notes), ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, k = r["sampling"], r["kv_cache"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    labels = [s["ddim"]["label"], s["ddpm"]["label"]]
    axes[0].bar(labels, [s["ddim"]["sentences_per_s"], s["ddpm"]["sentences_per_s"]], color=["C0", "C1"])
    axes[0].set_yscale("log")
    axes[0].set_title(f"sentences/s (x{s['speedup_ddim_vs_ddpm']:.1f})")
    names = [n for n in s["ddim"]["metrics"] if n not in ("reconstruction_bleu", "self_bleu", "perplexity")]
    xs = range(len(names))
    for offset, key, color in ((-0.2, "ddim", "C0"), (0.2, "ddpm", "C1")):
        m = s[key]["metrics"]
        axes[1].bar([x + offset for x in xs], [m[n]["mean"] for n in names], width=0.4,
                    yerr=[m[n]["std"] for n in names], color=color, label=s[key]["label"], capsize=3)
    axes[1].set_xticks(list(xs), names, rotation=20)
    axes[1].set_title("quality (mean ± std over sets)")
    axes[1].legend()
    axes[2].bar(["KV-cached", "full"], [k["cached_tokens_per_s"], k["full_tokens_per_s"]], color=["C2", "C3"])
    axes[2].set_title(f"decoding tokens/s at {k['tokens']} tokens (x{k['speedup']:.1f})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
