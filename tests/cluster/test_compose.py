"""docker-compose.yml: the topology and its safety rules, checked by parsing (no Docker engine
here). The same topology runs for real with processes in test_cluster_faults.py."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.helpers import REPO


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_every_service_of_the_topology_is_there(compose):
    expected = {"postgres", "mlflow", "ray-head", "ray-worker", "searchsvc"}
    assert set(compose["services"]) == expected


def test_ports_are_bound_to_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


SECRETS = ("POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "OPTUNA_DB_PASSWORD",
           "MLFLOW_ADMIN_PASSWORD", "MLFLOW_SECRET_KEY")  # fmt: skip


def test_no_default_secret_works(compose):
    text = (REPO / "docker-compose.yml").read_text()
    example = (REPO / "deploy" / "env.example").read_text()
    for secret in SECRETS:
        # Every use of a secret must fail when it is not set (${VAR:?message}).
        uses = re.findall(rf"\$\{{{secret}[^}}]*\}}", text)
        assert uses and all(u.startswith(f"${{{secret}:?") for u in uses), secret
        assert f"{secret}=\n" in example, secret


def test_no_secret_is_on_any_command_line(compose):
    for name, service in compose["services"].items():
        for key in ("command", "entrypoint"):
            line = " ".join(service[key]) if isinstance(service.get(key), list) else str(
                service.get(key, ""))  # fmt: skip
            assert not re.search(r"://[^/\s:@]+:[^@\s]+@", line), (name, key, line)
            assert not any(secret in line for secret in SECRETS), (name, key, line)


def test_each_database_has_its_own_role_and_only_the_driver_holds_credentials(compose):
    services = compose["services"]
    backend = services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    storage = services["searchsvc"]["environment"]["SEARCHSVC_STORAGE"]
    assert backend.startswith("postgresql+psycopg2://mlflow:") and backend.endswith("/mlflow")
    assert storage.startswith("postgresql+psycopg2://optuna:") and storage.endswith("/optuna")
    init = (REPO / "deploy" / "postgres-init.sh").read_text()
    assert "REVOKE ALL ON DATABASE mlflow FROM PUBLIC" in init
    assert "REVOKE ALL ON DATABASE optuna FROM PUBLIC" in init
    for node in ("ray-head", "ray-worker"):
        env = services[node]["environment"]
        held = [k for k in env if k in ("SEARCHSVC_STORAGE", "MLFLOW_TRACKING_PASSWORD")]
        assert held == [], f"{node} holds {held}: trials talk to neither store"


def test_mlflow_asks_for_credentials_and_the_ray_dashboard_is_off_by_default(compose):
    services = compose["services"]
    assert "--app-name basic-auth" in services["mlflow"]["command"]
    env = services["searchsvc"]["environment"]
    assert env["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert (
        env["MLFLOW_TRACKING_PASSWORD"]
        == "${MLFLOW_ADMIN_PASSWORD:?set MLFLOW_ADMIN_PASSWORD in .env}"
    )
    assert "--include-dashboard=${RAY_DASHBOARD:-false}" in services["ray-head"]["command"]


def test_services_start_in_order_behind_health_checks(compose):
    services = compose["services"]
    for name in ("postgres", "mlflow", "ray-head"):
        assert "healthcheck" in services[name], name
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["ray-head"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert services["searchsvc"]["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_mlflow_serves_artifacts_from_postgres_backed_store(compose):
    command = compose["services"]["mlflow"]["command"]
    assert "--serve-artifacts" in command
    backend = compose["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert backend.startswith("postgresql+psycopg2://")
    assert "mlflow-artifacts:/mlartifacts" in compose["services"]["mlflow"]["volumes"]


def test_ray_workers_scale_and_share_trial_storage(compose):
    worker = compose["services"]["ray-worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale needs both absent
    assert "ray start --address ray-head:6379" in worker["command"]
    for name in ("ray-head", "ray-worker", "searchsvc"):
        assert "shared:/shared" in compose["services"][name]["volumes"], name
    env = compose["services"]["searchsvc"]["environment"]
    assert env["SEARCHSVC_WORKDIR"].startswith("/shared/")
    assert env["SEARCHSVC_STORAGE"].startswith("postgresql+psycopg2://")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_submit_service_runs_searchsvc_as_a_ray_driver(compose):
    service = compose["services"]["searchsvc"]
    entrypoint = REPO / service["entrypoint"][0].removeprefix("/app/")
    assert entrypoint.exists() and "ray start --address" in entrypoint.read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "COPY deploy ./deploy" in dockerfile


def test_every_volume_of_the_project_image_is_a_folder_its_user_owns(compose):
    dockerfile = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    (setup,) = [line for line in dockerfile.splitlines() if "useradd" in line]
    made = set(re.findall(r"mkdir -p ([^&]+)", setup)[0].split())
    owned = set(re.findall(r"chown -R searchsvc ([^&]+)", setup)[0].split())
    for name, service in compose["services"].items():
        if service.get("image") != "searchsvc:latest":
            continue
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                continue  # a bind mount of the checkout
            assert any(m == target or m.startswith(f"{target}/") for m in made), (name, target)
            assert any(target == o or target.startswith(f"{o}/") for o in owned), (name, target)


def test_downloaded_data_is_cached_on_the_shared_volume(compose):
    env = compose["services"]["searchsvc"]["environment"]
    assert env["XDG_CACHE_HOME"].startswith("/shared/")
