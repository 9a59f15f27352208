"""Static checks of the deployment files: no Docker engine here, so check what can be checked.

Compose file and manifests parse and reference files that exist; the Dockerfile agrees
with pyproject and the repository; every NEWS_MONITOR_* variable they set is a real
setting; the configs they ship load; the systemd unit passes ``systemd-analyze verify``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from monitor.engine import load_rules
from monitor.settings import load_settings
from tests.support import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _manifests() -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and doc["kind"] != "Kustomization":
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def _env_settings(env: dict[str, str], config: Path | None = None):
    """Load settings as the container would; an unknown NEWS_MONITOR_* variable is an error."""
    return load_settings(config, environ=env, required=config is not None)


# -- docker compose -----------------------------------------------------------------------


def test_compose_runs_kraft_kafka_and_the_monitor_built_from_the_dockerfile():
    compose = _compose()
    kafka, monitor = compose["services"]["kafka"], compose["services"]["monitor"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"], "KRaft: no ZooKeeper"
    assert (ROOT / monitor["build"]["context"] / monitor["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert monitor["depends_on"]["kafka"]["condition"] == "service_healthy"
    bootstrap = monitor["environment"]["NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS"]
    host, port = bootstrap.split(":")
    assert host == "kafka" and f"PLAINTEXT://kafka:{port}" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert monitor["environment"]["NEWS_MONITOR_HTTP_LISTEN"].startswith("0.0.0.0:")
    assert all(p.startswith("127.0.0.1:") for p in monitor["ports"]), "the endpoint stays on the host's loopback"


def test_compose_mounts_exist_and_the_mounted_config_loads():
    compose = _compose()
    named = set(compose.get("volumes", {}))
    mounts = {}
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source in named:
                continue
            assert (ROOT / source).exists(), f"docker-compose.yml mounts {source}, which does not exist"
            mounts[target] = (ROOT / source).resolve()
    assert mounts["/rules"] == ROOT / "rules", "operators edit the repository's rules on the host"
    env = dict(compose["services"]["monitor"]["environment"])
    settings = _env_settings(env, mounts["/config"] / "monitor.toml")
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.rules.paths == ("/rules",) and settings.rules.watch
    assert (mounts["/config"] / settings.feeds.opml).exists()


# -- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_slim_and_non_root():
    instructions = _dockerfile()
    bases = [args for op, args in instructions if op == "FROM"]
    assert len(bases) >= 2 and all("slim" in base for base in bases)
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert not any(".[test]" in args or "[test]" in args for op, args in instructions if op == "RUN")


def test_dockerfile_entrypoint_is_the_installed_script_and_copies_exist():
    instructions = _dockerfile()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    [entrypoint] = [args for op, args in instructions if op == "ENTRYPOINT"]
    assert entrypoint.replace(" ", "") == '["news-monitor","run"]' and "news-monitor" in scripts
    module = scripts["news-monitor"].split(":")[0]
    assert (ROOT / (module.replace(".", "/") + ".py")).exists()
    for op, args in instructions:
        if op == "COPY" and "--from=" not in args:
            *sources, _target = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"


def test_dockerfile_environment_and_healthcheck_agree_with_the_settings():
    instructions = _dockerfile()
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(args for op, args in instructions if op == "ENV")))
    config = env.pop("NEWS_MONITOR_CONFIG")
    assert config == "/config/monitor.toml"
    news_env = {k: v for k, v in env.items() if k.startswith("NEWS_MONITOR_")}
    settings = _env_settings(news_env, DEPLOY / "config" / "monitor.toml")
    port = settings.http.listen.rsplit(":", 1)[1]
    assert settings.http.listen.startswith("0.0.0.0:")
    assert [args for op, args in instructions if op == "EXPOSE"] == [port]
    [healthcheck] = [args for op, args in instructions if op == "HEALTHCHECK"]
    assert f"127.0.0.1:{port}/healthz" in healthcheck


# -- Kubernetes ----------------------------------------------------------------------------


def test_kustomization_lists_files_that_exist():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).exists(), resource


def test_deployment_has_probes_resources_and_existing_config_and_secret():
    manifests = _manifests()
    deployment = manifests[("Deployment", "news-monitor")]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    assert env["NEWS_MONITOR_HTTP_LISTEN"].endswith(f":{ports['http']}")
    for volume in pod["volumes"]:
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in manifests
        if "persistentVolumeClaim" in volume:
            assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in manifests
    for source in container["envFrom"]:
        secret = manifests[("Secret", source["secretRef"]["name"])]
        assert "NEWS_MONITOR_KAFKA_SASL_PASSWORD" in secret["stringData"]
    service = manifests[("Service", "news-monitor")]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_configmaps_hold_a_config_and_rules_that_load(tmp_path):
    manifests = _manifests()
    config = manifests[("ConfigMap", "news-monitor-config")]["data"]
    (tmp_path / "config").mkdir()
    for name, text in config.items():
        (tmp_path / "config" / name).write_text(text)
    secret = manifests[("Secret", "news-monitor-kafka")]["stringData"]
    settings = _env_settings({"NEWS_MONITOR_HTTP_LISTEN": "0.0.0.0:8765", **secret}, tmp_path / "config" / "monitor.toml")
    assert settings.kafka.sasl_password == secret["NEWS_MONITOR_KAFKA_SASL_PASSWORD"]
    assert (tmp_path / "config" / settings.feeds.opml).exists()
    rules = manifests[("ConfigMap", "news-monitor-rules")]["data"]
    (tmp_path / "rules").mkdir()
    for name, text in rules.items():
        (tmp_path / "rules" / name).write_text(text)
    shipped = {rule.id for rule in load_rules([str(tmp_path / "rules")]).rules}
    assert shipped == {rule.id for rule in load_rules([str(ROOT / "rules")]).rules}, (
        "deploy/kubernetes/rules-configmap.yaml is out of date: regenerate it from rules/"
    )


# -- systemd -------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path):
    unit = (DEPLOY / "systemd" / "news-monitor.service").read_text()
    assert "ExecStart=/opt/news-monitor/bin/news-monitor run" in unit
    # verify insists the command exists: point it at this checkout's installed script.
    script = shutil.which("news-monitor") or str(Path(__import__("sys").executable).with_name("news-monitor"))
    assert Path(script).exists()
    (tmp_path / "news-monitor.service").write_text(unit.replace("/opt/news-monitor/bin/news-monitor", script))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "news-monitor.service")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# -- news-monitor notify -------------------------------------------------------------------


def test_compose_notify_profile_runs_notify_from_the_image_on_the_shared_config():
    compose = _compose()
    notify = compose["services"]["notify"]
    assert notify["profiles"] == ["notify"] and notify["entrypoint"] == ["news-monitor", "notify"]
    assert notify["build"] == compose["services"]["monitor"]["build"]
    env = {k: v for k, v in notify["environment"].items() if k.startswith("NEWS_MONITOR_")}
    settings = _env_settings(env, DEPLOY / "config" / "monitor.toml")
    port = settings.notify.listen.rsplit(":", 1)[1]
    assert settings.notify.listen.startswith("0.0.0.0:") and notify["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert f"127.0.0.1:{port}/healthz" in " ".join(notify["healthcheck"]["test"])
    [desk] = settings.notify_destinations({"NOTIFY_URL": "json://hooks.example.org/x"})
    assert desk.url == "json://hooks.example.org/x", "the URL comes from NOTIFY_URL, which compose passes on"
    assert "NOTIFY_URL" in notify["environment"]


def test_notify_deployment_has_probes_and_its_destination_secret_is_the_configmaps_url_file(tmp_path):
    manifests = _manifests()
    pod = manifests[("Deployment", "news-monitor-notify")]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["news-monitor", "notify"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" and container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["NEWS_MONITOR_NOTIFY_LISTEN"].endswith(f":{container['ports'][0]['containerPort']}")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret = manifests[("Secret", volumes["destinations"]["secret"]["secretName"])]["stringData"]
    assert ("PersistentVolumeClaim", volumes["state"]["persistentVolumeClaim"]["claimName"]) in manifests
    config = manifests[("ConfigMap", "news-monitor-config")]["data"]
    (tmp_path / "monitor.toml").write_text(config["monitor.toml"])
    kafka = manifests[("Secret", container["envFrom"][0]["secretRef"]["name"])]["stringData"]
    settings = _env_settings({**env, **kafka}, tmp_path / "monitor.toml")
    [table] = settings.notify.destination
    folder, name = table["url_file"].rsplit("/", 1)
    assert folder == mounts["destinations"] and name in secret
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "notify-deployment.yaml" in kustomization["resources"]
