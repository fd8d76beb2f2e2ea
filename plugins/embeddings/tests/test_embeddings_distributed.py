"""Cross-device negatives: 2 CPU processes (torchrun, gloo, DDP) with the gathered pool give the
same loss and gradients as one process with the whole batch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # two torchrun processes and one plain run (about 20 s)

SCRIPT = Path(__file__).with_name("two_process_gradients.py")


def test_two_process_gradients_equal_the_single_process_full_batch(tiny_bert, tmp_path, make_pairs):
    from safetensors.torch import load_file

    rows = make_pairs(8, seed=3)
    rows[6]["positive"] = rows[1]["positive"]  # a duplicate positive on the other process
    pairs = [{**r, "negatives": [make_pairs(1, seed=50 + i)[0]["positive"]]} for i, r in enumerate(rows)]
    pairs_file = tmp_path / "pairs.json"
    pairs_file.write_text(json.dumps(pairs))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    torchrun = shutil.which("torchrun") or pytest.skip("torchrun not installed")
    common = [str(SCRIPT), str(tiny_bert), str(pairs_file)]
    with socket.socket() as probe:  # a free port: other test runs may share the machine
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    two = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", port, *common, str(tmp_path / "two.st")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, *common, str(tmp_path / "one.st")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = load_file(tmp_path / "two.st"), load_file(tmp_path / "one.st")
    assert a.keys() == b.keys() and "loss.log_scale" in a
    assert torch.allclose(a["loss"], b["loss"], rtol=1e-5)
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-7), name
