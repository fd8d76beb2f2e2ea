"""Helpers for this plugin's tests (and for plugins that test artifacts built by it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

MODEL_LIBRARIES = ("diffusers", "transformers")


def load_without_model_libraries(
    artifact_dir, io_path, output: str = "image"
) -> subprocess.CompletedProcess:
    """In a fresh process where `import diffusers` / `import transformers` raise ImportError
    (so neither the libraries nor the model's Python class can be used), load the artifact, run
    it on each saved case and print, per case, the relative error against the saved expected
    output, the package that ran it and the packages in memory after it (or the InputError that
    refused it), and which of those libraries ended up in sys.modules."""
    script = textwrap.dedent(f"""
        import json, sys
        for name in {MODEL_LIBRARIES!r}:
            sys.modules[name] = None  # any import of it (or a submodule) now raises ImportError
        try:
            import diffusers  # noqa: F401
        except ImportError:
            pass
        else:
            sys.exit("the import block does not work")
        import torch
        from mlplatform_compile import InputError, load_module
        from mlplatform_compile.loader import loaded_packages
        module = load_module({str(artifact_dir)!r})
        results = []
        for case in torch.load({str(io_path)!r}, weights_only=True):
            try:
                out = module(case["inputs"])[{output!r}]
            except InputError as exc:
                results.append({{"refused": exc.problem}})
                continue
            expected = case["expected"]
            rel = ((out - expected).abs().max() / expected.abs().max()).item()
            results.append({{"rel": rel, "profile": module.last_profile,
                             "in_memory": loaded_packages(module)}})
        loaded = sorted(n for n, m in sys.modules.items()
                        if m is not None and n.split(".")[0] in {MODEL_LIBRARIES!r})
        print("RESULT " + json.dumps({{"results": results, "loaded": loaded, "repr": repr(module)}}))
    """)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
