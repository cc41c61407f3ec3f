"""The container files, checked without a Docker engine.

- docker/compose.yaml parses, and every file it mounts or builds from exists; the pieces
  point at each other (Prometheus scrapes the jml service on the port its config listens
  on, loads the alert rules it mounts; Grafana's provider reads the folder the dashboards
  are mounted in).
- docker/Dockerfile has the entrypoint, command, non-root user, volumes and a healthcheck
  that needs no curl.
- The image's install works: the files the Dockerfile COPYs, installed the way it installs
  them (`pip install .`) into a fresh venv, give a `jml` that answers --help, `check`s a
  minimal config and serves /healthz to the Dockerfile's own HEALTHCHECK command.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import yaml

from jml import config as config_mod
from tests.e2e.helpers import start_serve, write_config

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _expand(value: str) -> str:
    """Compose's ${VAR:-default} with the defaults (the tests set no variables)."""
    import re

    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def _bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    out = []
    for v in service.get("volumes", []):
        source, target = [*_expand(v).split(":"), ""][:2] if isinstance(v, str) else (v["source"], v["target"])
        if source.startswith((".", "/")):
            out.append(((DOCKER / source).resolve(), target))
    return out


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[tuple[str, str]] = []
    pending = ""
    for raw in (DOCKER / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        lines.append((word.upper(), rest.strip()))
    return lines


def _instr(name: str) -> list[str]:
    return [args for word, args in _dockerfile() if word == name]


def test_compose_parses_and_everything_it_mounts_exists() -> None:
    doc = _compose()
    services = doc["services"]
    assert {"jml", "postgres", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        for source, _target in _bind_mounts(svc):
            assert source.exists(), f"{name} mounts {source}, which does not exist"
        named = [v.split(":")[0] for v in svc.get("volumes", []) if isinstance(v, str) and not v.startswith(".")]
        for vol in named:
            assert vol in (doc.get("volumes") or {}), f"{name} uses undeclared volume {vol}"
    build = services["jml"]["build"]
    context = (DOCKER / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).is_file()
    assert services["jml"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_pieces_point_at_each_other() -> None:
    services = _compose()["services"]
    jml_mounts = {t: s for s, t in _bind_mounts(services["jml"])}
    cfg_file = jml_mounts["/config/jml.yaml"]
    cfg = config_mod.from_dict(yaml.safe_load(cfg_file.read_text(encoding="utf-8")), Path("/config"))
    assert cfg.state.url.startswith("postgresql+psycopg://")
    assert ":" not in cfg.state.url.split("//", 1)[1].split("@")[0], "no password in the state URL"
    assert cfg.state.url.split("@")[1].split(":")[0] in services
    port = cfg.server.listen.rpartition(":")[2]

    prom_mounts = {t: s for s, t in _bind_mounts(services["prometheus"])}
    prom = yaml.safe_load(prom_mounts["/etc/prometheus/prometheus.yml"].read_text(encoding="utf-8"))
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert f"jml:{port}" in targets
    for rule_file in prom["rule_files"]:
        assert rule_file in prom_mounts, f"prometheus loads {rule_file}, which is not mounted"

    graf_mounts = {t: s for s, t in _bind_mounts(services["grafana"])}
    provisioning = graf_mounts["/etc/grafana/provisioning"]
    providers = yaml.safe_load((provisioning / "dashboards" / "jml.yaml").read_text(encoding="utf-8"))["providers"]
    dash_dir = providers[0]["options"]["path"]
    assert dash_dir in graf_mounts
    dashboards = list(graf_mounts[dash_dir].glob("*.json"))
    assert dashboards and all(json.loads(d.read_text(encoding="utf-8")) for d in dashboards)
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text(encoding="utf-8"))
    ds = sources["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"].startswith("http://prometheus:")


def test_dockerfile_has_entrypoint_cmd_user_volumes_and_healthcheck() -> None:
    assert _instr("FROM")[0].startswith("python:3.11-slim")
    assert json.loads(_instr("ENTRYPOINT")[-1]) == ["jml"]
    assert json.loads(_instr("CMD")[-1]) == ["serve"]
    user = _instr("USER")[-1]
    assert user and user not in ("root", "0")
    volumes = json.loads(_instr("VOLUME")[-1])
    assert "/config" in volumes and "/exports" in volumes
    assert "JML_CONFIG=/config/jml.yaml" in " ".join(_instr("ENV"))
    health = _instr("HEALTHCHECK")[-1]
    assert "/healthz" in health and "curl" not in health and "wget" not in health
    for args in _instr("COPY"):
        *sources, _dest = shlex.split(args)
        for s in sources:
            assert (ROOT / s).exists(), f"COPY {s}: not in the build context"


def _healthcheck_argv() -> list[str]:
    health = _instr("HEALTHCHECK")[-1]
    return list(json.loads(health[health.index("CMD") + 3:].strip()))


def _local_backend() -> bool:
    """Can this environment build the wheel itself (setuptools with bdist_wheel)?"""
    import importlib.util

    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _install_like_the_image(tmp: Path) -> Path:
    """The Dockerfile's COPYs into a source folder, then its `pip install .` into a fresh venv
    that borrows this environment's dependencies (offline when the build backend is here)."""
    src = tmp / "src"
    src.mkdir()
    for args in _instr("COPY"):
        *sources, _dest = shlex.split(args)
        for s in sources:
            path = ROOT / s
            if path.is_dir():
                shutil.copytree(path, src / s, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy(path, src / s)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    site.mkdir(parents=True, exist_ok=True)
    (site / "_deps.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps"]
    attempt = None
    if _local_backend():
        attempt = subprocess.run([*pip, "--no-build-isolation", str(src)], capture_output=True, text=True, cwd=tmp)
    if attempt is None or attempt.returncode != 0:  # no usable backend here: pip fetches it, as `docker build` does
        attempt = subprocess.run([*pip, str(src)], capture_output=True, text=True, cwd=tmp, timeout=120)
    # pip fetches the build backend from PyPI, as `docker build` does: without PyPI the image
    # cannot be built, and this test fails rather than skips.
    assert attempt.returncode == 0, attempt.stderr[-2000:]
    return venv


def test_the_image_install_gives_a_working_jml(tmp_path: Path) -> None:
    venv = _install_like_the_image(tmp_path)
    jml = venv / "bin" / "jml"
    assert jml.is_file(), "pip install . must install the `jml` entry point"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JML_CONFIG")}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import jml; print(jml.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, check=True).stdout
    assert where.startswith(str(venv)), f"the venv imports jml from {where} rather than its install"

    out = subprocess.run([str(jml), "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0 and "serve" in out.stdout

    # A minimal config: SQLite state, nothing to poll, no apps. `check` runs the packaged migrations.
    cfg = write_config(tmp_path, location="./exports/", extra={"sources": {}})
    out = subprocess.run([str(jml), "--config", str(cfg), "check"], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "config: ok" in out.stdout and "state: reachable" in out.stdout

    # `serve` from the install, probed by the Dockerfile's own HEALTHCHECK command.
    argv = _healthcheck_argv()
    assert argv[0] == "python"
    probe = [str(venv / "bin" / "python"), *argv[1:]]
    served = start_serve(cfg, log_name="image-serve.log", exe=str(jml))
    with served:
        served.wait_up()
        ok = subprocess.run(probe, env={**env, "JML_HEALTHCHECK_URL": served.url + "healthz"}, timeout=10)
        assert ok.returncode == 0
        assert served.stop(signal.SIGTERM) == 0
    down = subprocess.run(probe, env={**env, "JML_HEALTHCHECK_URL": served.url + "healthz"}, timeout=10,
                          capture_output=True)
    assert down.returncode != 0, "the healthcheck must fail when nothing answers"
