"""The replicated deploy, read as files: Docker is not there to run it, so what must hold of
docker-compose.yml, docker-compose.sentinel.yml, the nginx config and the Dockerfile is
checked on what they say."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from authsvc.config import Settings
from authsvc.store.urls import parse_store_url

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.sentinel.yml"]


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    return document


def command_words(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(w) for w in command]


def replicas(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run ``authsvc serve``."""
    return {
        name: service
        for name, service in compose["services"].items()
        if command_words(service)[:2] == ["authsvc", "serve"]
    }


def is_one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def volume_at(service: dict[str, Any], path: str) -> str:
    """The named volume mounted at ``path`` (``name:path[:mode]``)."""
    for mount in service.get("volumes", []):
        source, target = mount.split(":")[:2]
        if target == path:
            return str(source)
    raise AssertionError(f"nothing mounted at {path}")


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return float(match[1])


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_two_replicas_share_one_keys_volume_made_once(name: str) -> None:
    compose = load(name)
    serving = replicas(compose)
    assert len(serving) >= 2
    keys_dirs = {service["environment"]["AUTHSVC_KEYS_DIR"] for service in serving.values()}
    (keys_dir,) = keys_dirs
    (volume,) = {volume_at(service, keys_dir) for service in serving.values()}
    assert volume in compose["volumes"]  # a named volume, not a path of one host
    # The signing keys and refresh-token.secret are made once, by a one-shot service on
    # the same volume that every replica waits for: replicas never race to make them.
    (maker,) = [
        (service_name, service)
        for service_name, service in compose["services"].items()
        if "keys generate" in " ".join(command_words(service))
    ]
    maker_name, maker_service = maker
    assert is_one_shot(maker_service)
    assert f"--dir {keys_dir}" in " ".join(command_words(maker_service))
    assert volume_at(maker_service, keys_dir) == volume
    for service in serving.values():
        assert service["depends_on"][maker_name]["condition"] == "service_completed_successfully"
        assert volume_at(service, keys_dir) == volume


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_replicas_agree_on_issuer_and_store_and_outlast_the_shutdown_timeout(name: str) -> None:
    serving = replicas(load(name)).values()
    for setting in ("AUTHSVC_ISSUER", "AUTHSVC_REDIS_URL"):
        assert len({service["environment"][setting] for service in serving}) == 1, setting
    for service in serving:
        shutdown = float(service["environment"].get("AUTHSVC_SHUTDOWN_TIMEOUT", 0)) or (
            Settings().shutdown_timeout
        )
        # docker stop sends SIGTERM, then SIGKILL after the grace period.
        assert seconds(service["stop_grace_period"]) > shutdown


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_long_running_service_has_a_health_check(name: str) -> None:
    for service_name, service in load(name)["services"].items():
        if not is_one_shot(service):
            assert service.get("healthcheck", {}).get("test"), service_name


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_redis_data_node_keeps_an_append_only_file_and_never_evicts(name: str) -> None:
    nodes = [
        service
        for service in load(name)["services"].values()
        if command_words(service)[:1] == ["redis-server"]
    ]
    assert nodes
    for service in nodes:
        words = command_words(service)
        flags = dict(zip(words[1::2], words[2::2], strict=False))
        assert flags["--appendonly"] == "yes"
        assert flags["--appendfsync"] == "everysec"
        assert flags["--maxmemory-policy"] == "noeviction"
        assert volume_at(service, "/data")


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_nginx_balances_over_every_replica(name: str) -> None:
    compose = load(name)
    nginx = compose["services"]["nginx"]
    config_path = next(mount.split(":")[0] for mount in nginx["volumes"] if "/etc/nginx/" in mount)
    config = (ROOT / config_path).read_text(encoding="utf-8")
    upstream = re.search(r"upstream authsvc \{(.*?)\}", config, re.DOTALL)
    assert upstream
    servers = set(re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream[1], re.MULTILINE))
    serving = replicas(compose)
    assert servers == {(service_name, str(Settings().port)) for service_name in serving}
    assert "proxy_pass http://authsvc;" in config
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in config
    for service in serving.values():
        assert service["environment"]["AUTHSVC_TRUSTED_PROXIES"]  # so that header counts
        assert service["environment"].get("AUTHSVC_PORT", "8080") == "8080"
    for replica_name in serving:
        assert nginx["depends_on"][replica_name]["condition"] == "service_healthy"


def test_the_sentinel_variant_finds_its_master_through_three_sentinels() -> None:
    compose = load("docker-compose.sentinel.yml")
    services = compose["services"]
    (url,) = {service["environment"]["AUTHSVC_REDIS_URL"] for service in replicas(compose).values()}
    address = parse_store_url(url)
    assert address.topology == "sentinel"
    assert len(address.nodes) == 3
    for host, port in address.nodes:
        script = " ".join(command_words(services[host]))
        assert "redis-sentinel" in script
        assert f"port {port}" in script
        monitored = re.search(r"sentinel monitor (\S+) (\S+) (\d+) (\d+)", script)
        assert monitored
        name, master, master_port, quorum = monitored.groups()
        assert name == address.service_name
        assert int(quorum) == 2  # a majority of the three
        assert command_words(services[master])[0] == "redis-server"
        assert master_port == "6379"
    replica = [service for service in services.values() if "--replicaof" in command_words(service)]
    assert len(replica) == 1


def test_the_image_runs_as_a_non_root_user_on_a_slim_base() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert base.endswith("-slim")
    # The last USER is the one that runs: an account the image made, never root.
    user = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)[-1]
    assert user not in ("root", "0")
    assert re.search(rf"useradd --system --uid {user} ", dockerfile)
