"""Install the project into a virtual environment, fast: ``uv`` when it is on PATH (or bootstrapped from PyPI into
the environment), pip otherwise or when uv fails. One progress line per stage. Standard library only: it runs with
the new environment's bare interpreter.

    .venv/bin/python infra/install.py [--dev] [--pip]

torch stays the pinned CPU build: constraints.txt is always passed, and pip's own configuration (find-links, extra
indexes, a global constraint file) is handed to uv, which does not read pip.conf. Without such a configuration, uv
takes torch from PyTorch's CPU index (``--torch-backend cpu``; ``VIDEODPO_TORCH_BACKEND`` overrides, e.g. ``cu128``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
START = time.monotonic()


def say(stage: str, message: str) -> None:
    print(f"[install {stage}] {message} ({time.monotonic() - START:.0f} s)", flush=True)


def pip_config() -> dict[str, list[str]]:
    """pip's configured find-links, indexes and constraint files (``pip config list``: files and PIP_* variables)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    found: dict[str, list[str]] = {"find-links": [], "index-url": [], "extra-index-url": [], "constraint": []}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in found:
            for item in value.strip().strip("'\"").split():
                if item not in found[name]:
                    found[name].append(item)
    return found


def find_uv() -> str | None:
    here = Path(sys.executable).with_name("uv")
    if here.exists():
        return str(here)
    if os.environ.get("VIDEODPO_NO_UV_BOOTSTRAP") is None and shutil.which("uv") is None:
        say("1/3", "bootstrapping uv from PyPI into the environment")
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "uv"])
        if done.returncode == 0 and here.exists():
            return str(here)
    return shutil.which("uv")


def uv_command(uv: str, target: str) -> list[str]:
    cfg = pip_config()
    cmd = [uv, "pip", "install", "--python", sys.executable, "-c", str(REPO / "constraints.txt"), "-e", target]
    for url in cfg["index-url"]:
        cmd += ["--index-url", url]
    for url in cfg["extra-index-url"]:
        cmd += ["--extra-index-url", url]
    for url in cfg["find-links"]:
        cmd += ["--find-links", url]
    for path in cfg["constraint"]:
        cmd += ["-c", path]
    if cfg["extra-index-url"] or cfg["find-links"]:
        cmd += ["--index-strategy", "unsafe-best-match"]  # pip's rule: the best version over every index
    else:
        cmd += ["--torch-backend", os.environ.get("VIDEODPO_TORCH_BACKEND", "cpu")]
    return cmd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", action="store_true", help="with the test and lint tools (the dev extra)")
    parser.add_argument("--pip", action="store_true", help="use pip even when uv is available")
    args = parser.parse_args()
    target = f"{REPO}[dev]" if args.dev else str(REPO)
    uv = None if args.pip or os.environ.get("VIDEODPO_INSTALLER") == "pip" else find_uv()
    say("1/3", f"installer: {'uv (' + uv + ')' if uv else 'pip'}")
    if uv:
        say("2/3", f"resolving and installing {'the app and its dev tools' if args.dev else 'the app'} with uv")
        if subprocess.run(uv_command(uv, target), cwd=REPO).returncode == 0:
            say("3/3", "installed")
            return 0
        say("2/3", "uv failed; installing with pip instead")
    say("2/3", f"installing {'the app and its dev tools' if args.dev else 'the app'} with pip (several minutes)")
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c",
           str(REPO / "constraints.txt"), "-e", target]
    code = subprocess.run(cmd, cwd=REPO).returncode
    say("3/3", "installed" if code == 0 else f"pip failed (exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
