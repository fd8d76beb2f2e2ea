"""Developer sessions: tests, lint, plugins (install check), bench (CPU), bench_gpu (CUDA only)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.download_python = "never"  # offline runners: use the interpreters that exist


@nox.session
def tests(session: nox.Session) -> None:
    """The full test suite, slow (compile) tests included."""
    session.install("-r", "requirements-dev.txt")
    session.run("python", "-m", "pytest", *session.posargs, env={"HF_HUB_OFFLINE": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "src", "plugins", "tests", "benchmarks", "noxfile.py")


@nox.session
def plugins(session: nox.Session) -> None:
    """Install the core and plugins/example as regular (non-editable) packages and drive the CLI."""
    session.install(".", "./plugins/example")
    session.run("python", "-m", "mlplatform", "job=plugins")
    out = session.run(
        "python", "-m", "mlplatform", "job=example", "greeting=shout", "job.who=nox", silent=True
    )
    if "HELLO, NOX!" not in out:
        session.error(f"example plugin did not run through the CLI:\n{out}")


@nox.session
def bench(session: nox.Session) -> None:
    """CPU compile benchmarks: eager vs inductor vs aot_inductor, side by side."""
    session.install("-r", "requirements-dev.txt", "matplotlib")
    session.run("python", "benchmarks/compile/run.py", "--device", "cpu", *session.posargs)


@nox.session(default=False, tags=["gpu"])
def bench_gpu(session: nox.Session) -> None:
    """CUDA: every GPU backend installed, the gpu-marked tests, then the compile benchmarks at
    512x512 (skips cleanly without CUDA). With MLPLATFORM_REQUIRE_GPU_BACKENDS=a,b (the GPU CI job
    sets it), a skipped gpu test or a skipped benchmark of one of those backends fails the run."""
    import glob
    import os

    session.install("-r", "requirements-dev.txt", "matplotlib", "-e", "plugins/compile[tensorrt]")
    wheels = os.environ.get("MLPLATFORM_GPU_WHEELS")
    if wheels:  # AITemplate + fx2ait, built from source by benchmarks/compile/gpu_setup.sh
        session.install(*sorted(glob.glob(os.path.join(wheels, "*.whl"))))
    required = os.environ.get("MLPLATFORM_REQUIRE_GPU_BACKENDS", "")
    session.run(
        "python", "-m", "pytest", "-m", "gpu", "-rs", "plugins/compile/tests",
        env={"HF_HUB_OFFLINE": "1"},
    )
    extra = ["--require-backends", required] if required else []
    session.run(
        "python", "benchmarks/compile/run.py", "--device", "cuda", *extra, *session.posargs
    )
