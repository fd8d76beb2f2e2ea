import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def source_roots(repo: Path = REPO) -> list[Path]:
    """Every directory this repository puts on sys.path: src/ and each plugin's src/."""
    return [repo / "src", *sorted(repo.glob("plugins/*/src"))]


def test_no_module_of_this_project_shadows_the_standard_library_platform():
    """With the repository's source roots first on sys.path (as an editable install or
    PYTHONPATH=src puts them), `import platform` is still the standard library's, so torch,
    pytest and the CLI keep working, and the package is importable as `mlplatform`."""
    roots = source_roots()
    assert len(roots) >= 2 and all(r.is_dir() for r in roots), roots
    for root in roots:  # no top-level platform module or package in any source root
        shadows = [p for p in (root / "platform.py", root / "platform") if p.exists()]
        assert not shadows, shadows
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, roots))}
    code = (
        "import sys, sysconfig, pathlib, platform, mlplatform\n"
        "stdlib = pathlib.Path(sysconfig.get_paths()['stdlib']).resolve()\n"
        "where = pathlib.Path(platform.__file__).resolve()\n"
        "assert where.parent == stdlib, (where, stdlib)\n"
        "assert platform.system() and platform.python_version() == '%d.%d.%d' % sys.version_info[:3]\n"
        "print(pathlib.Path(mlplatform.__file__).resolve())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(REPO / "src" / "mlplatform")
    help_proc = subprocess.run(
        [sys.executable, "-m", "mlplatform", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert help_proc.returncode == 0, help_proc.stdout + help_proc.stderr
    assert "mlplatform is powered by Hydra" in help_proc.stdout
    assert "job:" in help_proc.stdout and "build" in help_proc.stdout


def test_import_mlplatform_stays_light():
    code = "import sys, mlplatform, mlplatform.plugins; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_console_script_and_module_do_the_same(cli, tmp_path):
    script = Path(sys.executable).parent / "mlplatform"  # the console script of this environment
    via_script = subprocess.run([script, "job=plugins"], cwd=tmp_path, capture_output=True, text=True)
    via_module = cli("job=plugins")
    assert via_script.returncode == via_module.returncode == 0
    assert via_script.stdout == via_module.stdout
    assert "Installed mlplatform plugins" in via_module.stdout
