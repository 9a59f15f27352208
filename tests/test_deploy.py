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


# -- the scale-out roles (docs/scaling.md) --------------------------------------------------

CLUSTER = K8S / "cluster"


def _cluster_kustomization() -> dict:
    return yaml.safe_load((CLUSTER / "kustomization.yaml").read_text())


def _cluster_manifests() -> dict[tuple[str, str], dict]:
    """What ``kubectl apply -k deploy/kubernetes/cluster/`` applies: the base's manifests
    without those its patches delete, plus the cluster's own."""
    kustomization = _cluster_kustomization()
    found = _manifests() if "../" in kustomization["resources"] else {}
    for entry in kustomization.get("patches", []):
        patch = yaml.safe_load(entry["patch"])
        if patch.get("$patch") == "delete":
            found.pop((patch["kind"], patch["metadata"]["name"]))
    for resource in kustomization["resources"]:
        if resource.endswith(".yaml"):
            for doc in yaml.safe_load_all((CLUSTER / resource).read_text()):
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def _pod_env(container: dict) -> dict[str, str]:
    """The container's NEWS_MONITOR_* variables; one from the pod's name gets a pod's name."""
    env = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            assert entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", entry
            env[entry["name"]] = "news-monitor-poller-7d9f8-abcde"
    return env


def _pod_settings(manifests: dict, pod: dict, container: dict, tmp_path: Path):
    """Settings as ``container`` of ``pod`` loads them: its ConfigMap, env and Secret."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    config_volume = volumes[mounts["/config"]]
    data = manifests[("ConfigMap", config_volume["configMap"]["name"])]["data"]
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    env = _pod_env(container)
    assert env.pop("NEWS_MONITOR_CONFIG") == "/config/monitor.toml"
    for source in container.get("envFrom", []):
        env.update(manifests[("Secret", source["secretRef"]["name"])]["stringData"])
    return _env_settings(env, tmp_path / "monitor.toml")


def test_cluster_kustomization_is_the_base_without_the_single_process():
    kustomization = _cluster_kustomization()
    for resource in kustomization["resources"]:
        assert (CLUSTER / resource).exists(), resource
    assert "../" in kustomization["resources"], "the cluster shares the base's config, rules, Secret and Service"
    manifests = _cluster_manifests()
    # One process and a cluster on the same topics would poll every feed twice.
    assert ("Deployment", "news-monitor") not in manifests and ("PersistentVolumeClaim", "news-monitor-state") not in manifests
    assert {name for kind, name in manifests if kind == "Deployment"} == {
        "news-monitor-poller", "news-monitor-matcher", "news-monitor-signals", "news-monitor-notify"
    }
    assert ("CronJob", "news-monitor-feeds-sync") in manifests
    for (kind, _name), doc in manifests.items():
        spec = doc["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else doc.get("spec", {})
        pod = spec.get("template", {}).get("spec")
        for volume in (pod or {}).get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in manifests
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in manifests


@pytest.mark.parametrize("role", ["poller", "matcher"])
def test_each_role_is_a_deployment_of_its_own_with_probes_and_its_state_on_kafka(role, tmp_path):
    manifests = _cluster_manifests()
    deployment = manifests[("Deployment", f"news-monitor-{role}")]
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["news-monitor", "run", "--role", role]
    # Scales on its own: a selector of its own, and more than one replica by default.
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items() and labels["app.kubernetes.io/component"] == role
    assert spec["replicas"] >= 2 and spec["strategy"]["type"] == "RollingUpdate"
    service = manifests[("Service", "news-monitor")]
    assert service["spec"]["selector"].items() <= labels.items(), "the Service (metrics scraping) reaches every role's pods"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" and container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True and container["securityContext"]["readOnlyRootFilesystem"] is True
    # The state moves with the work through Kafka: nothing on a PersistentVolumeClaim.
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all("persistentVolumeClaim" not in v for v in volumes.values())
    settings = _pod_settings(manifests, pod, container, tmp_path)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[settings.state.dir]]
    assert not settings.kafka.embedded, "a cluster needs a shared broker"
    assert settings.cluster.instance_id.startswith("news-monitor-"), "the pod's name names it in status --cluster"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.http.listen == f"0.0.0.0:{ports['http']}"
    if role == "matcher":
        assert not settings.signals.enabled and settings.signals.sightings_topic, "news-monitor signals runs on its sightings"
        assert all(path in mounts for path in settings.rules.paths), "the matcher reads the rules ConfigMap"
        assert ("ConfigMap", volumes[mounts[settings.rules.paths[0]]]["configMap"]["name"]) == ("ConfigMap", "news-monitor-rules")
    assert pod["terminationGracePeriodSeconds"] > settings.delivery.shutdown_timeout


def test_one_signals_process_reads_the_matchers_sightings_with_its_state_on_a_volume(tmp_path):
    manifests = _cluster_manifests()
    deployment = manifests[("Deployment", "news-monitor-signals")]
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["news-monitor", "signals"]
    # One process per state store (signals.lock): never two at once, not even in a rollout.
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    settings = _pod_settings(manifests, pod, container, tmp_path)
    matcher = manifests[("Deployment", "news-monitor-matcher")]["spec"]["template"]["spec"]
    matcher_settings = _pod_settings(manifests, matcher, matcher["containers"][0], tmp_path)
    assert settings.signals.source == "sightings" and settings.signals.sightings_topic == matcher_settings.signals.sightings_topic
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claim = volumes[mounts[settings.signals.state_dir]]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in manifests
    assert all(path in mounts for path in settings.rules.paths), "the signal blocks come from the rules ConfigMap"
    assert pod["securityContext"]["runAsNonRoot"] is True and container["securityContext"]["readOnlyRootFilesystem"] is True


def test_feeds_sync_runs_before_the_pollers_and_on_a_schedule_from_the_same_config(tmp_path):
    manifests = _cluster_manifests()
    poller = manifests[("Deployment", "news-monitor-poller")]["spec"]["template"]["spec"]
    [init] = poller["initContainers"]
    assert init["command"] == ["news-monitor", "feeds", "sync"]
    [main] = poller["containers"]
    assert [m for m in init["volumeMounts"] if m["mountPath"] == "/config"] == [m for m in main["volumeMounts"] if m["mountPath"] == "/config"]
    cronjob = manifests[("CronJob", "news-monitor-feeds-sync")]
    job = cronjob["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["news-monitor", "feeds", "sync"] and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    # A bad config (exit 2) fails the job at once; a broker outage (3) is tried again.
    [rule] = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2] and pod["restartPolicy"] == "Never"
    settings = _pod_settings(manifests, pod, container, tmp_path)
    assert settings.feeds.opml and (tmp_path / settings.feeds.opml).exists(), "feeds sync publishes the ConfigMap's feed list"


def test_compose_cluster_profile_runs_feeds_sync_once_then_two_pollers_and_two_matchers():
    compose = _compose()
    services = {name: s for name, s in compose["services"].items() if "cluster" in s.get("profiles", [])}
    assert set(services) == {"feeds-sync", "poller-1", "poller-2", "matcher-1", "matcher-2", "signals"}
    assert "--scale monitor=0" in (ROOT / "docker-compose.yml").read_text(), "the header says how to leave the single monitor out"
    sync = services.pop("feeds-sync")
    signals = services.pop("signals")
    assert signals["entrypoint"] == ["news-monitor", "signals"] and signals["depends_on"]["kafka"]["condition"] == "service_healthy"
    signal_settings = _env_settings(dict(signals["environment"]), DEPLOY / "config" / "monitor.toml")
    assert signal_settings.signals.source == "sightings" and signal_settings.signals.state_dir.startswith("/var/lib/news-monitor/")
    assert "monitor-state:/var/lib/news-monitor" in signals["volumes"], "its state survives a restart"
    assert sync["entrypoint"] == ["news-monitor", "feeds", "sync"] and sync["restart"] == "no"
    instances, host_ports, partitions = set(), set(), set()
    for name, service in services.items():
        role = name.split("-")[0]
        assert service["entrypoint"] == ["news-monitor", "run", "--role", role]
        assert service["build"] == compose["services"]["monitor"]["build"]
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        if role == "poller":
            assert service["depends_on"]["feeds-sync"]["condition"] == "service_completed_successfully"
        env = {k: v for k, v in service["environment"].items() if k.startswith("NEWS_MONITOR_")}
        settings = _env_settings(env, DEPLOY / "config" / "monitor.toml")
        assert settings.kafka.bootstrap_servers == "kafka:9092"
        instances.add(settings.cluster.instance_id)
        partitions.add(settings.kafka.topic_partitions)
        [port] = service["ports"]
        assert port.startswith("127.0.0.1:") and port.endswith(":" + settings.http.listen.rsplit(":", 1)[1])
        host_ports.add(port.split(":")[1])
        mounts = {v.split(":")[1] for v in service["volumes"]}
        assert "/config" in mounts and (role == "poller" or set(settings.rules.paths) <= mounts)
        if role == "matcher":
            assert not settings.signals.enabled, "the signals service raises the signals, from every matcher's sightings"
            assert settings.signals.sightings_topic == signal_settings.signals.sightings_topic
    sync_settings = _env_settings({k: v for k, v in sync["environment"].items()}, DEPLOY / "config" / "monitor.toml")
    assert len(instances) == 4 and len(host_ports) == 4, "each process its own instance id and status page"
    assert partitions == {sync_settings.kafka.topic_partitions} and min(partitions) >= 2, "the roles and feeds sync agree on partitions"
