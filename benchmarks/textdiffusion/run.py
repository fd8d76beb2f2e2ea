"""Text-diffusion benchmark (issue 9): a small model trained in two stages on the synthetic
grammar corpus (the VAE, then the DDPM prior on its frozen latents), then side by side in one run

* training steps/s of each stage,
* sampling sentences/s for DDIM at 50 steps vs DDPM at all n_T steps (end to end: latent
  sampling plus greedy decoding of the same batch by the same decoder, and the latent sampling
  alone), their speed ratio, and the quality metrics of mlplatform_textdiffusion.evaluate plus
  the grammatical fraction (exact, from the synthetic grammar), mean +- std over --n-sets sample
  sets; the grammatical fraction of unconditioned N(0, I) latents as the floor,
* KV-cached greedy decoding vs full recomputation of the prefix at --kv-tokens tokens.

Writes textdiffusion_<device>[_quick].{json,md,png} to --out and prints the table.

    python benchmarks/textdiffusion/run.py --out benchmarks/results            # ~5 min on CPU
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


def write_models(root: Path, *, n_embd: int, n_layer: int, enc_hidden: int, enc_layers: int, positions: int,
                 seed: int = 0):
    """A BERT encoder and a GPT-2 decoder sized here (the decoder long enough for the KV test),
    without dropout (tiny models on a toy grammar underfit with it), with the word-level
    tokenizer of the grammar. GPT-2 uses the fused tanh GELU (same function as gelu_new)."""
    import torch
    from mlplatform_textdiffusion.testing import make_tokenizer, tiny_bert_config, tiny_gpt2_config
    from transformers import BertModel, GPT2LMHeadModel

    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    bert, gpt2 = root / "bert", root / "gpt2"
    enc = tiny_bert_config()
    enc.hidden_size, enc.num_hidden_layers, enc.intermediate_size = enc_hidden, enc_layers, 2 * enc_hidden
    enc.hidden_dropout_prob = enc.attention_probs_dropout_prob = 0.0
    BertModel(enc).save_pretrained(bert)
    cfg = tiny_gpt2_config()
    cfg.n_embd, cfg.n_layer, cfg.n_positions = n_embd, n_layer, positions
    cfg.n_head = max(2, n_embd // 32)
    cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.0
    cfg.activation_function = "gelu_pytorch_tanh"
    GPT2LMHeadModel(cfg).save_pretrained(gpt2)
    tokenizer.save_pretrained(bert)
    tokenizer.save_pretrained(gpt2)
    return bert, gpt2


def timed(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Time each callable `repeats` times, interleaved (a, b, a, b, ...) after one warm-up each,
    so that load from other processes hits all of them alike. Returns ({name: {"min", "median",
    "all"}} in seconds, {name: last output}). The minimum is the figure used: on a shared machine
    it is the least disturbed run (as timeit recommends)."""
    outputs = {name: fn() for name, fn in fns.items()}  # warm-up, not timed
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
    stats = {name: {"min": min(t), "median": statistics.median(t), "all": t} for name, t in times.items()}
    return stats, outputs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and steps (smoke test)")
    parser.add_argument("--vae-steps", type=int, default=None, help="stage 1: VAE steps")
    parser.add_argument("--prior-steps", type=int, default=None, help="stage 2: DDPM steps on frozen latents")
    parser.add_argument("--prediction", default="v", choices=["eps", "x0", "v"], help="the DDPM's parametrisation")
    parser.add_argument("--n-T", type=int, default=None, help="diffusion steps (DDPM runs all)")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0: deterministic)")
    parser.add_argument("--n-sets", type=int, default=None)
    parser.add_argument("--num-samples", type=int, default=None, help="sentences per sample set")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each measurement (min is used)")
    parser.add_argument("--kv-tokens", type=int, default=64)
    parser.add_argument("--kv-batch", type=int, default=8)
    parser.add_argument("--judge-lm", default=None, help="local causal LM dir for perplexity (else skipped)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from mlplatform_textdiffusion.evaluate import evaluate, mean_std
    from mlplatform_textdiffusion.pipeline import TextDiffusionPipeline
    from mlplatform_textdiffusion.testing import is_grammatical, write_grammar_corpus
    from mlplatform_textdiffusion.train import train

    quick = args.quick
    vae_steps = args.vae_steps or (40 if quick else 600)
    prior_steps = args.prior_steps or (40 if quick else 800)
    n_T = args.n_T or (200 if quick else 1000)
    ddim_steps = min(args.ddim_steps, n_T)
    n_sets = args.n_sets or (2 if quick else 10)
    num_samples = args.num_samples or (8 if quick else 64)
    repeats = args.repeats or (2 if quick else 5)
    sizes = ({"n_embd": 32, "n_layer": 2, "enc_hidden": 32, "enc_layers": 1, "eps_hidden": 64, "eps_layers": 2}
             if quick else
             {"n_embd": 64, "n_layer": 4, "enc_hidden": 64, "enc_layers": 2, "eps_hidden": 256, "eps_layers": 3})
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))

    def fraction_grammatical(texts):
        return sum(map(is_grammatical, texts)) / len(texts)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "textdiffusion_cpu" + ("_quick" if quick else "")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus_path = write_grammar_corpus(tmp / "grammar.txt", n=400 if quick else 2000, seed=args.seed)
        corpus = corpus_path.read_text().splitlines()
        bert, gpt2 = write_models(tmp / "models", n_embd=sizes["n_embd"], n_layer=sizes["n_layer"],
                                  enc_hidden=sizes["enc_hidden"], enc_layers=sizes["enc_layers"],
                                  positions=max(args.kv_tokens + 2, 40))
        common = {
            "name": "text_diffusion", "corpus": str(corpus_path), "progress": False,
            "vae": {"encoder": {"connector": "BertForLatentConnectorNew", "source": str(bert)},
                    "decoder": {"connector": "GPT2ForLatentConnector", "source": str(gpt2)},
                    # a fixed posterior variance and a KL weight keep the latents compact (unlike
                    # N(0, I), which then decodes worse: the floor below) and used by the decoder
                    "latent_size": 16, "max_length": 16, "posterior_logvar": -4.0, "kl_weight": 0.1,
                    "kl_anneal_steps": vae_steps // 3},
            "diffusion": {"n_T": n_T, "hidden_dim": sizes["eps_hidden"], "num_layers": sizes["eps_layers"],
                          "prediction": args.prediction, "train_on": "mu", "ema_decay": 0.99},
        }
        stages = {}
        print(f"stage 1: VAE, {vae_steps} steps ...", flush=True)
        start = time.perf_counter()
        vae_run = train({**common, "mode": "vae", "steps": vae_steps, "batch_size": 16 if quick else 32, "lr": 2e-3,
                         "log_every": max(1, vae_steps // 4)}, tmp / "vae", device="cpu", seed=args.seed)
        stages["vae"] = {"steps": vae_steps, "seconds": time.perf_counter() - start, "final": vae_run.metrics["final"]}
        print(f"stage 2: DDPM prior on the frozen latents (n_T={n_T}, {args.prediction}-prediction), "
              f"{prior_steps} steps ...", flush=True)
        start = time.perf_counter()
        prior_run = train({**common, "mode": "ddpm", "init_from": str(vae_run.model_dir), "steps": prior_steps,
                           "batch_size": 32 if quick else 128, "lr": 1e-3, "log_every": max(1, prior_steps // 4)},
                          tmp / "prior", device="cpu", seed=args.seed)
        stages["prior"] = {"steps": prior_steps, "seconds": time.perf_counter() - start,
                           "final": prior_run.metrics["final"]}
        for stage in stages.values():
            stage["steps_per_s"] = stage["steps"] / stage["seconds"]
        pipe = TextDiffusionPipeline.from_pretrained(prior_run.model_dir, device="cpu")

        settings = {"ddim": (ddim_steps, args.eta), "ddpm": (None, 0.0)}
        labels = {"ddim": f"ddim-{ddim_steps} eta={args.eta:g}", "ddpm": f"ddpm-{n_T}"}

        def latents(name):
            steps, eta = settings[name]
            return pipe.sample_latents(num_samples, sampler=name, steps=steps, eta=eta,
                                       generator=torch.Generator().manual_seed(args.seed))

        def end_to_end(name):  # latents, then greedy decoding of that batch (stops when all reach eos)
            steps, eta = settings[name]
            return pipe.sample(num_samples, sampler=name, steps=steps, eta=eta, seed=args.seed)

        print(f"timing {labels['ddim']} and {labels['ddpm']} (interleaved, {repeats} runs each) ...", flush=True)
        fns = {}
        for name in settings:
            fns[f"{name}_latents"] = lambda n=name: latents(n)
            fns[f"{name}_e2e"] = lambda n=name: end_to_end(n)
        timings, outputs = timed(fns, repeats)
        samplers = {}
        for name, (steps, eta) in settings.items():
            print(f"evaluating {labels[name]} ...", flush=True)
            ev = evaluate(pipe, corpus, n_sets=n_sets, num_samples=num_samples, sampler=name, steps=steps, eta=eta,
                          seed=args.seed, judge_lm=args.judge_lm, extra_metrics={"grammatical": fraction_grammatical})
            latent_s, e2e_s = timings[f"{name}_latents"]["min"], timings[f"{name}_e2e"]["min"]
            samplers[name] = {
                "label": labels[name], "steps": ddim_steps if name == "ddim" else n_T,
                "eta": eta if name == "ddim" else None,
                "sentences_per_s": num_samples / e2e_s, "latent_sentences_per_s": num_samples / latent_s,
                "e2e_s": timings[f"{name}_e2e"], "latents_s": timings[f"{name}_latents"],
                "metrics": ev["metrics"], "examples": outputs[f"{name}_e2e"][0][:5], "notes": ev.get("notes", []),
            }
        # the floor: the same decoder on unconditioned N(0, I) latents (no prior)
        random_grammatical = []
        for i in range(n_sets):
            z = torch.randn(num_samples, pipe.latent_size, generator=torch.Generator().manual_seed(args.seed + i))
            random_grammatical.append(fraction_grammatical(pipe.decode(z)))

        print(f"decoding {args.kv_tokens} tokens with and without the KV cache ...", flush=True)
        decoder = pipe.model.model_vae.decoder
        z = torch.randn(args.kv_batch, pipe.latent_size, generator=torch.Generator().manual_seed(args.seed))
        never = -1  # an eos id no token has: every row decodes exactly kv_tokens tokens
        with torch.no_grad():
            kv_times, kv_out = timed({name: lambda c=(name == "cached"): decoder.generate(
                z, pipe.codec.bos_id, never, args.kv_tokens, use_cache=c) for name in ("cached", "full")}, repeats)
        kv = {name: {"seconds": kv_times[name]["min"], "median_s": kv_times[name]["median"], "ids": kv_out[name][0],
                     "tokens_per_s": args.kv_batch * args.kv_tokens / kv_times[name]["min"]}
              for name in ("cached", "full")}

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
        "device_name": cpu_name(), "torch_version": torch.__version__,
        "python": sys.version.split()[0], "threads": torch.get_num_threads(), "timing": f"min of {repeats} interleaved runs",
        "load_average": os.getloadavg(), "cpu_count": os.cpu_count(),
        "model": {"n_T": n_T, "prediction": args.prediction, "train_on": "mu", "latent_size": 16,
                  "encoder": f"BERT {sizes['enc_layers']}x{sizes['enc_hidden']} (cls+mean)",
                  "decoder": f"GPT-2 {sizes['n_layer']}x{sizes['n_embd']}",
                  "eps_model": f"mlp_skip {sizes['eps_layers']}x{sizes['eps_hidden']}",
                  "corpus_sentences": len(corpus)},
        "training": stages,
        "sampling": {"n_sets": n_sets, "num_samples": num_samples, **samplers,
                     "random_latents_grammatical": mean_std(random_grammatical),
                     "speedup_ddim_vs_ddpm": speedup, "latent_speedup_ddim_vs_ddpm": latent_speedup,
                     "quality_within_spread": within},
        "kv_cache": {"tokens": args.kv_tokens, "batch": args.kv_batch,
                     "cached_s": kv["cached"]["seconds"], "full_s": kv["full"]["seconds"],
                     "cached_median_s": kv["cached"]["median_s"], "full_median_s": kv["full"]["median_s"],
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


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ms(stats) -> str:
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def markdown(r: dict) -> str:
    s, k, t = r["sampling"], r["kv_cache"], r["training"]
    ddim, ddpm = s["ddim"], s["ddpm"]
    lines = [
        f"# Text-diffusion benchmark ({'quick' if r['quick'] else 'full'}, {r['device']}, torch {r['torch_version']},"
        f" {r['threads']} threads)",
        "",
        f"Machine: {r['device_name']}, {r['cpu_count']} CPUs, load average at the end {r['load_average'][0]:.1f} "
        f"(shared); times are the {r['timing']}.",
        "",
        f"Model: {r['model']}",
        "",
        f"Training (wall clock of train(), setup and the final evaluation included): stage 1 (VAE) "
        f"{t['vae']['steps']} steps in {t['vae']['seconds']:.1f} s = **{t['vae']['steps_per_s']:.1f} steps/s**, "
        f"reconstruction BLEU {t['vae']['final']['reconstruction_bleu']:.1f}, token accuracy "
        f"{t['vae']['final']['rec_token_accuracy']:.3f}; stage 2 (DDPM on frozen latents) {t['prior']['steps']} "
        f"steps in {t['prior']['seconds']:.1f} s = **{t['prior']['steps_per_s']:.1f} steps/s**, final DDPM loss "
        f"{t['prior']['final']['ddpm_loss']:.3f}",
        "",
        f"## Sampling ({s['n_sets']} sets x {s['num_samples']} sentences; mean ± std over sets)",
        "",
        f"| metric | {ddim['label']} | {ddpm['label']} | within spread |",
        "|---|---|---|---|",
        f"| sentences/s (sample + decode) | {ddim['sentences_per_s']:.1f} | {ddpm['sentences_per_s']:.1f} | |",
        f"| sentences/s (latents only) | {ddim['latent_sentences_per_s']:.1f} | "
        f"{ddpm['latent_sentences_per_s']:.1f} | |",
        f"| seconds per set of {s['num_samples']}, end to end: min (median) | {ddim['e2e_s']['min']:.3f} "
        f"({ddim['e2e_s']['median']:.3f}) | {ddpm['e2e_s']['min']:.3f} ({ddpm['e2e_s']['median']:.3f}) | |",
        f"| seconds per set, latents only: min (median) | {ddim['latents_s']['min']:.3f} "
        f"({ddim['latents_s']['median']:.3f}) | {ddpm['latents_s']['min']:.3f} ({ddpm['latents_s']['median']:.3f}) | |",
    ]
    for name in ddim["metrics"]:
        lines.append(f"| {name} | {_ms(ddim['metrics'][name])} | {_ms(ddpm['metrics'][name])} | "
                     f"{'yes' if s['quality_within_spread'][name] else 'no'} |")
    lines += [
        "",
        f"Grammatical fraction of unconditioned N(0, I) latents through the same decoder (no prior): "
        f"{_ms(s['random_latents_grammatical'])}.",
        "",
        f"Speed ratio DDIM/DDPM: **{s['speedup_ddim_vs_ddpm']:.1f}x** end to end, "
        f"{s['latent_speedup_ddim_vs_ddpm']:.1f}x for the latents alone (target >= {TARGET_DDIM_SPEEDUP:.0f}x).",
        "",
        f"## KV cache ({k['tokens']} tokens, batch {k['batch']}, greedy)",
        "",
        "| decoding | seconds: min (median) | tokens/s (at min) |",
        "|---|---|---|",
        f"| KV-cached | {k['cached_s']:.3f} ({k['cached_median_s']:.3f}) | {k['cached_tokens_per_s']:.0f} |",
        f"| full recomputation | {k['full_s']:.3f} ({k['full_median_s']:.3f}) | {k['full_tokens_per_s']:.0f} |",
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
