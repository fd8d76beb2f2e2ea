import pytest

from mlplatform.testing import run_cli


@pytest.fixture
def cli(tmp_path):
    """Run the real CLI in a subprocess with the working directory in a temp dir."""

    def _run(*args, env=None, extra_path=()):
        return run_cli(*args, cwd=tmp_path, env=env, extra_path=extra_path)

    return _run
