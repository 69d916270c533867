"""The installed package alone is enough to run a service: the wheel carries the schema
migrations, as the container image (``pip install .``) needs.

The wheel is built from a copy of the files the Dockerfile copies, installed without its
dependencies into a fresh venv; the dependencies come from the project's venv through
``PYTHONPATH`` (which does not run its ``.pth`` files, so the editable install of the
working tree stays out of reach). ``python -m services.projector`` is then started from a
folder outside the source tree against a fresh PostgreSQL database: it must apply every
migration and report healthy.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg

from shared.stack._servers import free_port

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ["pyproject.toml", "README.md", "proto", "shared", "services"]  # as the Dockerfile
WITHIN_S = 60.0


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheel(work: Path) -> Path:
    source = work / "source"
    source.mkdir()
    for name in SHIPPED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    wheels = work / "wheels"
    # Built as `pip install .` builds it, with the build backend pyproject.toml asks for.
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
        "--disable-pip-version-check", "--wheel-dir", wheels, source, cwd=work)
    (wheel,) = wheels.glob("snapdeploy-*.whl")
    return wheel


def health(port: int) -> tuple[int, dict[str, object]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return None


async def applied_migrations(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT name FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [row["name"] for row in rows]


def test_installed_wheel_migrates_and_serves(tmp_path: Path, database_url: str) -> None:
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
        "--disable-pip-version-check", wheel, cwd=tmp_path)
    shipped = sorted(p.name for p in (REPO / "shared" / "db" / "migrations").glob("*.sql"))
    assert shipped

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    deps = sysconfig.get_paths()["purelib"]
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SNAPDEPLOY_", "PYTHON")) and key != "DATABASE_URL"}
    env["PYTHONPATH"] = deps
    where = run(python, "-c", "import shared.db, services.projector; print(shared.db.__file__)",
                cwd=outside, env=env).strip()
    assert Path(where).is_relative_to(venv), f"shared.db was imported from {where}, not the wheel"

    port = free_port()
    env |= {"SNAPDEPLOY_DATABASE_URL": database_url,
            "SNAPDEPLOY_HEALTH_LISTEN": f"127.0.0.1:{port}"}
    log = (tmp_path / "projector.log").open("wb")
    service = subprocess.Popen([str(python), "-m", "services.projector"], cwd=outside, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WITHIN_S
        answer = health(port)
        while answer is None or answer[0] != 200:
            assert service.poll() is None, (
                f"the installed projector exited with {service.returncode}:\n"
                + (tmp_path / "projector.log").read_text(errors="replace"))
            assert time.monotonic() < deadline, (
                f"not healthy within {WITHIN_S:.0f}s (last /healthz: {answer}):\n"
                + (tmp_path / "projector.log").read_text(errors="replace"))
            time.sleep(0.2)
            answer = health(port)
        assert answer[1]["checks"] == {"started": "ok", "postgres": "ok"}
        assert asyncio.run(applied_migrations(database_url)) == shipped
    finally:
        service.terminate()
        try:
            service.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        log.close()
