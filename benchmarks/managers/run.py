"""Model-manager benchmark: how fast weights come off disk (safetensors vs torch.load of the same
weights), what a warm lookup costs, how fast downloads run (loopback server), and what eviction
costs. Every figure of one table is measured side by side in one run on one machine.

    python benchmarks/managers/run.py                  # -> benchmarks/results/managers_cpu.*
    python benchmarks/managers/run.py --quick --out /tmp/r   # small sizes, a smoke test

Cold loads: each load runs in a fresh Python process (imports done before the clock starts) after
the file's pages were dropped from the page cache with posix_fadvise(DONTNEED), so the disk is
read; "warm page cache" repeats it with the file cached. The timed load touches every 4 KiB page
of tensor data (safetensors maps the file and reads lazily; torch.load reads all of it), so both
formats deliver the same bytes in memory. Sizes are bytes of tensor data.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
sys.path.insert(0, str(HERE))

LOAD_SNIPPET = """
import sys, time
from pathlib import Path
from mlplatform_managers.safe_load import load_state_dict
import torch, safetensors.torch  # imports are not what is measured
path = Path(sys.argv[1])
start = time.perf_counter()
state = load_state_dict(path, model="bench")
# touch one value in every 4 KiB page: safetensors hands out memory-mapped tensors whose bytes
# are only read when used, torch.load reads everything up front; this makes both read it all
total = 0
for t in state.values():
    flat = t.reshape(-1)
    flat[:: max(4096 // t.element_size(), 1)].float().sum().item()
    total += t.numel() * t.element_size()
print(time.perf_counter() - start, total)
"""


def make_weights(megabytes: int, seed: int = 0) -> dict:
    """A state dict of float32 tensors (conv-like shapes) totalling about `megabytes` MiB."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state, left, index = {}, megabytes << 20, 0
    while left > 0:
        numel = min(left // 4, 64 * 64 * 3 * 3 * 64)  # up to 9.4 MB per tensor, like big convs
        state[f"layer{index}.weight"] = torch.randn(numel, generator=gen)
        left -= numel * 4
        index += 1
    return state


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed_fresh_load(path: Path, cold: bool) -> tuple[float, int]:
    if cold:
        drop_from_page_cache(path)
    out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, str(path)], capture_output=True,
                         text=True, check=True)
    seconds, total = out.stdout.split()
    return float(seconds), int(float(total))


def bench_formats(directory: Path, megabytes: int, repeats: int) -> list[dict]:
    """safetensors vs torch.load(weights_only=True) on the same weights, interleaved."""
    import torch
    from safetensors.torch import save_file

    state = make_weights(megabytes)
    files = {"safetensors": directory / "w.safetensors", "torch.load(weights_only)": directory / "w.pt"}
    save_file(state, str(files["safetensors"]))
    torch.save(state, files["torch.load(weights_only)"])
    del state
    times: dict[tuple[str, bool], list[float]] = {}
    sizes = {}
    for _ in range(repeats):
        for cold in (True, False):
            for fmt, path in files.items():
                seconds, total = timed_fresh_load(path, cold)
                times.setdefault((fmt, cold), []).append(seconds)
                sizes[fmt] = total
    records = []
    for (fmt, cold), values in times.items():
        median = statistics.median(values)
        records.append({
            "bench": "load", "format": fmt, "cache": "cold" if cold else "warm page cache",
            "bytes": sizes[fmt], "file_bytes": files[fmt].stat().st_size, "runs": len(values),
            "median_s": median, "min_s": min(values), "gb_per_s": sizes[fmt] / median / 1e9,
        })
    for cache in ("cold", "warm page cache"):
        st = next(r for r in records if r["format"] == "safetensors" and r["cache"] == cache)
        tl = next(r for r in records if r["format"] != "safetensors" and r["cache"] == cache)
        st["speedup_vs_torch_load"] = tl["median_s"] / st["median_s"]
    return records


def _catalog_for(models: Path, catalog: Path, names: list[str], blocks: int) -> None:
    from managers_support import esrgan_weights, write_esrgan_catalog

    for name in names:
        esrgan_weights(models / name, blocks)
    write_esrgan_catalog(catalog, models, names)


def bench_manager(directory: Path, repeats: int, lookups: int, blocks: int) -> list[dict]:
    """Cold ModelManager.load (verify + spandrel build) of a RealESRGAN_x4plus-sized model,
    warm lookups of the loaded model, and eviction (a budget that holds one model)."""
    from mlplatform_managers import ModelManager, load_catalog

    models, catalog = directory / "models", directory / "catalog"
    _catalog_for(models, catalog, ["big_a", "big_b"], blocks)
    records = []
    cold, first = [], []
    for run in range(max(repeats, 2)):  # the first run, and at least one with the hash known
        manager = ModelManager(models, catalog=load_catalog([catalog], packaged=False),
                               budget_bytes=1 << 40)
        if run == 0:
            (models / ".verified.json").unlink(missing_ok=True)
        start = time.perf_counter()
        manager.load("big_a", device="cpu")
        (first if run == 0 else cold).append(time.perf_counter() - start)
        manager.unload_all()
    manager = ModelManager(models, catalog=load_catalog([catalog], packaged=False),
                           budget_bytes=1 << 40)
    manager.load("big_a", device="cpu")
    size = manager.loaded["big_a"].size_bytes
    start = time.perf_counter()
    for _ in range(lookups):
        manager.load("big_a", device="cpu")
    warm = (time.perf_counter() - start) / lookups
    start = time.perf_counter()
    for _ in range(lookups):
        with manager.use("big_a", device="cpu"):
            pass
    pinned = (time.perf_counter() - start) / lookups
    records += [
        {"bench": "manager", "what": "first load (sha256 verified, spandrel build)", "bytes": size,
         "median_s": statistics.median(first), "runs": len(first)},
        {"bench": "manager", "what": "load (hash remembered, spandrel build)", "bytes": size,
         "median_s": statistics.median(cold), "runs": len(cold)},
        {"bench": "manager", "what": "warm lookup: load() of a loaded model", "bytes": size,
         "median_s": warm, "runs": lookups},
        {"bench": "manager", "what": "warm lookup: with use() (pin + unpin)", "bytes": size,
         "median_s": pinned, "runs": lookups},
    ]
    # eviction: the budget holds one model, so loading the other evicts it
    manager.unload_all()
    manager = ModelManager(models, catalog=load_catalog([catalog], packaged=False),
                           budget_bytes=int(size * 1.5))
    manager.load("big_a", device="cpu")
    evicting, unloads, plain = [], [], []
    for run in range(repeats):
        target = "big_b" if run % 2 == 0 else "big_a"
        start = time.perf_counter()
        manager.load(target, device="cpu")  # evicts the other one
        evicting.append(time.perf_counter() - start)
        other = "big_a" if target == "big_b" else "big_b"
        assert not manager.is_loaded(other)
    for _ in range(repeats):
        start = time.perf_counter()
        manager.unload_all()
        unloads.append(time.perf_counter() - start)
        start = time.perf_counter()
        manager.load("big_a", device="cpu")
        plain.append(time.perf_counter() - start)
    records += [
        {"bench": "eviction", "what": "load with an eviction", "bytes": size,
         "median_s": statistics.median(evicting), "runs": len(evicting)},
        {"bench": "eviction", "what": "load into free budget", "bytes": size,
         "median_s": statistics.median(plain), "runs": len(plain)},
        {"bench": "eviction", "what": "unload alone (gc + free)", "bytes": size,
         "median_s": statistics.median(unloads), "runs": len(unloads)},
    ]
    records[-3]["eviction_cost_s"] = records[-3]["median_s"] - records[-2]["median_s"]
    manager.unload_all()
    return records


class _Files(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        data = self.server.payload
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        view = memoryview(data)
        for start in range(0, len(data), 1 << 20):
            self.wfile.write(view[start:start + (1 << 20)])


def bench_download(directory: Path, megabytes: int, repeats: int) -> list[dict]:
    import hashlib

    from mlplatform_managers import DownloadPolicy, fetch_url

    payload = os.urandom(megabytes << 20)
    digest = hashlib.sha256(payload).hexdigest()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    server.payload = payload
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/weights.bin"
    times = []
    try:
        for run in range(repeats):
            dest = directory / "dl" / f"w{run}.bin"
            start = time.perf_counter()
            fetch_url(url, dest, sha256=digest, size=len(payload), models_dir=directory / "dl",
                      policy=DownloadPolicy(progress=False))
            times.append(time.perf_counter() - start)
            dest.unlink()
    finally:
        server.shutdown()
        server.server_close()
    median = statistics.median(times)
    return [{"bench": "download", "what": "loopback http, .part + sha256 + atomic rename",
             "bytes": len(payload), "median_s": median, "runs": repeats,
             "gb_per_s": len(payload) / median / 1e9}]


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"device_name": f"{os.cpu_count()}-vCPU {platform.machine()} ({cpu})",
            "torch_version": torch.__version__, "python": platform.python_version(),
            "timestamp": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            # the machine may be shared: a load average near or above the core count means the
            # figures include contention
            "load_average_at_start": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from report import write_chart, write_markdown

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_mb, download_mb = (8, 4) if args.quick else (512, 256)
    repeats = 1 if args.quick else 5
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_managers_") as tmp:
        tmp_path = Path(tmp)
        records = bench_formats(tmp_path, load_mb, repeats)
        records += bench_manager(tmp_path, repeats, 200 if args.quick else 10000,
                                 1 if args.quick else 23)
        records += bench_download(tmp_path, download_mb, repeats)
    meta = {**machine(), "quick": args.quick, "load_mb": load_mb, "download_mb": download_mb,
            "total_wall_s": time.perf_counter() - started}
    stem = "managers_cpu_quick" if args.quick else "managers_cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "records": records}, indent=2))
    print(write_markdown(records, args.out / f"{stem}.md", meta))
    write_chart(records, args.out / f"{stem}.png", meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
