"""Cross-device negatives: 2 CPU processes (torchrun, gloo, DDP) with the gathered pool give the
same loss and gradients as one process with the whole batch, also with distillation from a
teacher over the whole batch, and with GradCache."""

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


def test_two_process_gradients_with_and_without_grad_cache_equal_the_single_process_full_batch(tiny_bert, tmp_path, make_pairs):
    from safetensors.torch import load_file

    rows = make_pairs(8, seed=3)
    rows[6]["positive"] = rows[1]["positive"]  # a duplicate positive on the other process
    pairs = [{**r, "negatives": [make_pairs(1, seed=50 + i)[0]["positive"]]} for i, r in enumerate(rows)]
    pairs_file = tmp_path / "pairs.json"
    pairs_file.write_text(json.dumps(pairs))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "MLPLATFORM_LOAD_PLUGINS": "embeddings"}  # its model families; no other plugin
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
    assert not torch.equal(load_file(tmp_path / "one.st")["loss"], load_file(tmp_path / "one.st.teacher")["loss"])
    for two_process, reference in (("two.st", "one.st"), ("two.st.teacher", "one.st.teacher"),
                                   ("two.st.teacher.gradcache", "one.st.teacher"),
                                   ("one.st.teacher.gradcache", "one.st.teacher")):
        a, full_batch = load_file(tmp_path / two_process), load_file(tmp_path / reference)
        assert a.keys() == full_batch.keys() and "loss.log_scale" in a, two_process
        assert torch.allclose(a["loss"], full_batch["loss"], rtol=1e-5), two_process
        for name in a:
            # to 1e-5 of the tensor's largest entry: sums over chunks and processes round
            # differently (2e-6 of a 0.5 entry); a wrong factor or a lost chunk is far above it
            error = float((a[name] - full_batch[name]).abs().max())
            assert error <= 1e-5 * float(full_batch[name].abs().max()) + 1e-7, (two_process, name, error)
