"""infra/install.py (issue 18 item 16): pip's configuration reaches uv, torch stays CPU-only, make passes the port."""

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
spec = importlib.util.spec_from_file_location("install", REPO / "infra" / "install.py")
install = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install)


def test_pip_configuration_is_handed_to_uv(monkeypatch, tmp_path):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///srv/simple")
    cmd = install.uv_command("uv", str(REPO))
    assert cmd[:3] == ["uv", "pip", "install"]
    assert ["--find-links", str(tmp_path)] == cmd[cmd.index("--find-links"):cmd.index("--find-links") + 2]
    assert "file:///srv/simple" in cmd and "unsafe-best-match" in cmd
    assert str(REPO / "constraints.txt") in cmd and "--torch-backend" not in cmd


def test_without_pip_configuration_torch_comes_from_the_cpu_index(monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("VIDEODPO_TORCH_BACKEND", raising=False)
    cmd = install.uv_command("uv", str(REPO))
    assert cmd[cmd.index("--torch-backend") + 1] == "cpu"


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_run_passes_the_port():
    out = subprocess.run(["make", "-n", "-W", "pyproject.toml", "run", "PORT=8123", "HOST=0.0.0.0"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if "webapp.quickstart" in x)
    assert "--port 8123" in line and "--host 0.0.0.0" in line
    assert "infra/install.py" in out  # the installer runs when pyproject.toml changed
