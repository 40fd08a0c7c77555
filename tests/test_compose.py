"""docker-compose.yml is validated by Debian's docker-compose (no Docker engine runs here)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed (.ci/run installs it)")
SECRETS = {"POSTGRES_PASSWORD": "pw-for-test", "BUDGETNAS_ADMIN_TOKEN": "admin-for-test"}


def compose_config(env: dict[str, str], *profiles: str) -> subprocess.CompletedProcess[str]:
    args = [str(COMPOSE), "-f", str(REPO / "docker-compose.yml")]
    for p in profiles:
        args += ["--profile", p]
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([*args, "config"], capture_output=True, text=True, env={**clean, **env}, timeout=120)


def test_compose_config_is_valid_with_all_profiles() -> None:
    proc = compose_config(SECRETS, "gpu", "trainer")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    services = cfg["services"]
    assert set(services) == {"postgres", "server", "agent-cpu", "agent-gpu", "trainer"}
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    gpu = services["agent-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert services["trainer"]["restart"] == "no"
    assert services["server"]["environment"]["BUDGETNAS_ADMIN_TOKEN"] == "admin-for-test"


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_required_secrets(missing: str) -> None:
    env = {k: v for k, v in SECRETS.items() if k != missing}
    proc = compose_config(env)
    assert proc.returncode != 0
    assert f"set {missing}" in proc.stderr


def test_gpu_agent_and_trainer_only_start_with_their_profiles() -> None:
    proc = compose_config(SECRETS)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    assert services["agent-gpu"]["profiles"] == ["gpu"]
    assert services["trainer"]["profiles"] == ["trainer"]
    assert all("profiles" not in services[s] for s in ("postgres", "server", "agent-cpu"))
