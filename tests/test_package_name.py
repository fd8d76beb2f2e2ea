import subprocess
import sys
from pathlib import Path


def test_package_name_does_not_shadow_the_standard_library():
    assert "platform" in sys.stdlib_module_names  # why the package is not called that
    assert "mlplatform" not in sys.stdlib_module_names


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
