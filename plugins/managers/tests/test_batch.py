"""Batch files read strictly, and the work split across processes by accelerate's real
PartialState (two CPU processes under torchrun, gloo): every item done once, none lost."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from mlplatform_managers.batch import process_share, read_batch_file

from mlplatform.api import ConfigError

PROBE = """
import json, os, sys
from mlplatform_managers.batch import process_share, wait_for_everyone
share, rank, world = process_share([f"item{i}" for i in range(int(sys.argv[2]))])
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump({"share": share, "world": world}, f)
wait_for_everyone()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_split_the_items_without_overlap_or_loss(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         str(tmp_path / "probe.py"), str(tmp_path), "7"],
        capture_output=True, text=True, timeout=240, start_new_session=True)
    assert result.returncode == 0, result.stderr
    shares = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(s["world"] == 2 for s in shares)
    done = [index for s in shares for index, _item in s["share"]]
    assert sorted(done) == list(range(7)) and all(s["share"] for s in shares)
    assert all(item == f"item{index}" for s in shares for index, item in s["share"])


def test_a_single_process_does_everything():
    assert process_share(["a", "b"]) == ([(0, "a"), (1, "b")], 0, 1)


def test_batch_files_are_read_strictly(tmp_path):
    text = tmp_path / "prompts.txt"
    text.write_text("a cat\n\n  a dog  \n")
    assert read_batch_file(text, ("prompt",)) == [{"prompt": "a cat"}, {"prompt": "a dog"}]
    lines = tmp_path / "items.jsonl"
    lines.write_text('{"prompt": "x", "seed": 2}\n')
    assert read_batch_file(lines, ("prompt", "seed")) == [{"prompt": "x", "seed": 2}]
    for content, message in [("[1]\n", "a list, not an object"), ("{oops\n", "line 1: not JSON"),
                             ("\n", "has no items")]:
        lines.write_text(content)
        with pytest.raises(ConfigError, match=message):
            read_batch_file(lines, ("prompt",))
    with pytest.raises(ConfigError, match="does not exist"):
        read_batch_file(tmp_path / "nope.txt", ("prompt",))
