"""The deployment files stay true to the code: every command they run exists, every name they use is real.

Docker is not running where these tests run, so nothing is built or started:
each file is parsed (YAML with PyYAML, the Dockerfile and Procfiles line by
line) and every ``conveyor …`` line is parsed by the real CLI, every
``celery -A conveyor.worker …`` line against Celery's own commands, every
``CONVEYOR_*`` name against Settings, and every port, service, ConfigMap and
Secret reference against what the files define.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import typer
import typer.main
import yaml

from conveyor import cli
from conveyor.executors.celery import cluster
from conveyor.settings import Settings
from tests.conftest import known_queues

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"

SETTING_VARS = {f"CONVEYOR_{name.upper()}" for name in Settings.model_fields}
#: variables the platform gives a process (Heroku/Railway's $PORT, a container's $HOSTNAME)
PLATFORM_VARS = {"PORT": "8000", "HOSTNAME": "pod-1"}
#: the user the image runs as
IMAGE_UID = 10001
#: commands of the service images (postgres, redis, rabbitmq), not ours
IMAGE_TOOLS = {"pg_isready", "redis-cli", "redis-server", "rabbitmq-diagnostics"}

FILES = [
    REPO / "Dockerfile",
    REPO / "Procfile",
    REPO / "Procfile.worker",
    REPO / "scripts" / "local-cluster",
    COMPOSE,
    *sorted(K8S.glob("*.yaml")),
]


# -- checking one command line ---------------------------------------------------------


def _expand(text: str) -> str:
    """$VAR and ${VAR} as a shell would, with the platform's variables; any other name fails."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in PLATFORM_VARS, f"{text!r} uses ${name}, which nothing sets"
        return PLATFORM_VARS[name]

    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", value, text.replace("$$", "$"))


def check_command(argv: list[str]) -> None:
    """Fail unless ``argv`` is a command that exists with options that exist."""
    argv = [_expand(a) for a in argv]
    program = argv[0]
    if program == "conveyor":
        check_conveyor(argv)
    elif program == "celery":
        check_celery(argv)
    elif program == "python" and argv[1] == "-c":
        compile(argv[2], "<python -c>", "exec")
    elif program == "sh" and argv[1] == "-c":
        check_command(shlex.split(argv[2]))
    else:
        assert program in IMAGE_TOOLS, f"unknown program in {argv}"


def _is_group(command: Any) -> bool:
    return hasattr(command, "get_command") and hasattr(command, "list_commands")


def check_conveyor(argv: list[str]) -> Any:
    """Parse a ``conveyor …`` line with the real CLI, converting every value, without running it.

    Typer carries its own copy of click, so its objects are used as they come.
    """
    command: Any = typer.main.get_command(cli.app)
    ctx = command.context_class(command, info_name="conveyor")
    args = argv[1:]
    while _is_group(command):
        assert args, f"{argv} names no command"
        name, args = args[0], args[1:]
        sub = command.get_command(ctx, name)
        assert sub is not None, f"{argv}: conveyor has no command {name!r}"
        if _is_group(sub):
            ctx = sub.context_class(sub, info_name=name, parent=ctx)
        else:
            ctx = sub.make_context(name, list(args), parent=ctx)
        command = sub
    if ctx.args:  # worker/beat/flower pass what they do not know on to Celery or Flower
        check_pass_through(str(command.name), ctx.args)
    return ctx


def _celery_cli() -> click.Group:
    from celery.bin.celery import celery

    return celery  # type: ignore[no-any-return]


def _option_names(tokens: list[str]) -> Iterator[str]:
    for token in tokens:
        if token.startswith("-"):
            yield token.split("=", 1)[0]


def check_pass_through(command: str, extra: list[str]) -> None:
    if command == "flower":
        from flower.options import options

        known = {f"--{name}" for name in options._options}
    else:
        known = {opt for p in _celery_cli().commands[command].params for opt in p.opts}
    for name in _option_names(extra):
        assert name in known, f"`conveyor {command}` passes {name} on, and `celery {command}` has no such option"


def check_celery(argv: list[str]) -> None:
    """``celery -A conveyor.worker <command> …``: the app is a real module attribute, the rest Celery's."""
    assert argv[1] in ("-A", "--app"), f"{argv}: name the app first"
    module, _, attribute = argv[2].partition(":")
    assert module == "conveyor.worker", f"{argv}: our Celery app is conveyor.worker"
    source = (REPO / "conveyor" / "worker.py").read_text()
    assigned = {
        target.id
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert (attribute or "app") in assigned  # celery -A module looks for module.app
    subcommand, rest = argv[3], argv[4:]
    celery = _celery_cli()
    assert subcommand in celery.commands, f"celery has no command {subcommand!r}"
    if subcommand == "inspect":
        from celery.app.control import Inspect

        action, rest = rest[0], rest[1:]
        assert callable(getattr(Inspect, action, None)), f"celery inspect has no {action!r}"
    known = {opt for p in celery.commands[subcommand].params for opt in p.opts}
    for name in _option_names(rest):
        assert name in known, f"`celery {subcommand}` has no option {name}"
    scheduler = _option(rest, "-S") or _option(rest, "--scheduler")
    if scheduler:
        module_name, _, class_name = scheduler.partition(":")
        assert hasattr(importlib.import_module(module_name), class_name), f"no scheduler {scheduler}"


def _shell_words(line: str) -> list[str]:
    return shlex.split(line)


def _option(argv: list[str], name: str) -> str | None:
    for i, token in enumerate(argv):
        if token == name:
            return argv[i + 1]
        if token.startswith(name + "="):
            return token.split("=", 1)[1]
    return None


def _url_port(text: str) -> int:
    match = re.search(r"https?://[\w.\-]+:(\d+)/", text)
    assert match, f"no URL with a port in {text!r}"
    return int(match.group(1))


# -- the checker checks --------------------------------------------------------------------


def test_the_command_checker_refuses_what_does_not_exist() -> None:
    """The checks below would catch a renamed command, option, value, module attribute or variable."""
    check_command(["conveyor", "worker", "-Q", "media", "--max-tasks-per-child", "5"])
    check_command(["celery", "-A", "conveyor.worker", "inspect", "ping", "--destination", "w@h"])
    bad = [
        ["conveyor", "wroker"],
        ["conveyor", "worker", "--pool", "gevent"],
        ["conveyor", "worker", "--max-tasks-per-kid", "5"],
        ["conveyor", "db", "downgrade"],
        ["celery", "-A", "conveyor.worker:nothing", "worker"],
        ["celery", "-A", "conveyor.worker", "inspect", "pong"],
        ["celery", "-A", "conveyor.worker", "beat", "--max-loop", "5"],
        ["conveyor", "serve", "--port", "$CONVEYOR_PORT"],
    ]
    for argv in bad:
        with pytest.raises((AssertionError, typer.TyperException)):
            check_command(argv)


def test_the_celery_lines_the_commands_exec_are_celerys_own() -> None:
    """`conveyor worker|beat|flower` become these argv: Celery must take every option."""
    worker = cluster.worker_argv(queues=["media"], concurrency=2, pool="solo", name="n@%h", extra=["--purge"])
    check_celery(worker[2:])
    check_celery(cluster.beat_argv(loglevel="debug", max_interval=5)[2:])
    flower = cluster.flower_argv(port=5555, address="127.0.0.1", extra=["--basic-auth=a:b"])
    assert flower[2:6] == ["celery", "-A", "conveyor.worker", "flower"]
    check_pass_through("flower", flower[6:])


def test_every_conveyor_variable_in_the_deployment_files_is_a_setting() -> None:
    """A CONVEYOR_* name that Settings does not read would be silently ignored."""
    for path in FILES:
        for name in set(re.findall(r"\bCONVEYOR_[A-Z0-9_]+", path.read_text())):
            assert name in SETTING_VARS, f"{path.relative_to(REPO)} sets {name}, which no setting reads"


# -- Dockerfile --------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and not line.startswith("#")
    ]


def test_the_dockerfile_builds_a_non_root_python_311_image_that_serves_on_8000() -> None:
    steps = _dockerfile()
    by_kind: dict[str, list[str]] = {}
    for kind, rest in steps:
        by_kind.setdefault(kind, []).append(rest)
    assert by_kind["FROM"] == ["python:3.11-slim"]
    for copy in by_kind["COPY"]:
        *sources, _ = copy.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    assert any('pip install ".[all]"' in run for run in by_kind["RUN"])
    assert any(f"--uid {IMAGE_UID}" in run for run in by_kind["RUN"])
    (user,) = by_kind["USER"]
    assert user.split(":")[0] == str(IMAGE_UID)

    default_port = Settings.model_fields["port"].default
    assert by_kind["EXPOSE"] == [str(default_port)]
    (healthcheck,) = by_kind["HEALTHCHECK"]
    probe = json.loads(healthcheck.split("CMD", 1)[1])
    check_command(probe)
    assert "/health" in probe[2]
    assert re.search(r"'CONVEYOR_PORT', '(\d+)'", probe[2]).group(1) == str(default_port)  # type: ignore[union-attr]

    (cmd,) = by_kind["CMD"]
    argv = json.loads(cmd)
    assert argv == ["conveyor", "serve", "--host", "0.0.0.0"]
    ctx = check_conveyor(argv)
    assert ctx.params["port"] is None  # the port is the setting's: EXPOSE above


def test_the_dockerignore_keeps_what_the_image_copies() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    copied = {source for kind, rest in _dockerfile() if kind == "COPY" for source in rest.split()[:-1]}
    assert copied.isdisjoint(ignored)


# -- Procfiles -----------------------------------------------------------------------------


def _procfile(name: str) -> dict[str, list[str]]:
    entries = {}
    for line in (REPO / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            process, command = line.split(":", 1)
            entries[process.strip()] = _shell_words(command)
    return entries


def test_the_procfiles_run_the_api_on_the_platform_port_and_the_worker_and_beat() -> None:
    web = _procfile("Procfile")
    assert set(web) == {"web", "release"}
    assert web["web"][:2] == ["conveyor", "serve"]
    assert _option(web["web"], "--port") == "$PORT"
    assert _option(web["web"], "--host") == "0.0.0.0"
    assert web["release"] == ["conveyor", "db", "upgrade"]
    workers = _procfile("Procfile.worker")
    assert set(workers) == {"worker", "beat"}
    for entries in (web, workers):
        for argv in entries.values():
            check_command(argv)


# -- docker-compose ------------------------------------------------------------------------


def _interpolate(value: Any) -> Any:
    """Compose's ${VAR:-default} → default, ${VAR:?error} → a stand-in, as `docker compose config` would."""
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        assert not name.startswith("CONVEYOR_") or name in SETTING_VARS
        return rest if op == ":-" else "key=tenant"

    return re.sub(r"\$\{(\w+)(:-|:\?)([^}]*)\}", one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("image", "").startswith("conveyor")}


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: _interpolate(v) for k, v in (service.get("environment") or {}).items()}


def test_compose_runs_every_role_and_the_services_they_need(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"api", "worker", "beat", "flower", "migrate", "postgres", "rabbitmq", "redis"}
    ours = _ours(compose)
    assert set(ours) == {"api", "worker", "beat", "flower", "migrate"}
    build = ours["api"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == REPO / "Dockerfile"
    commands = {name: s["command"] for name, s in ours.items()}
    assert commands["migrate"] == ["conveyor", "db", "upgrade"]
    assert commands["beat"][:2] == ["conveyor", "beat"]
    assert commands["worker"][:2] == ["conveyor", "worker"]
    assert commands["flower"][:2] == ["conveyor", "flower"]
    for argv in commands.values():
        check_command(argv)
    for name, service in ours.items():
        env = _env(service)
        assert env["CONVEYOR_EXECUTOR"] == "celery", name
        assert {"CONVEYOR_DATABASE_URL", "CONVEYOR_BROKER_URL"} <= set(env), name
        assert Settings(**{k.removeprefix("CONVEYOR_").lower(): v for k, v in env.items()}).executor == "celery"
    assert "CONVEYOR_API_KEYS" in _env(ours["api"])


def test_compose_dependencies_and_health_checks_hold_together(compose: dict[str, Any]) -> None:
    """Every depends_on names a service; healthy means it has a check; completed means it is a one-shot."""
    services = compose["services"]
    one_shots = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shots == {"migrate"}
    for name, service in services.items():
        check = service.get("healthcheck") or {}
        if name in one_shots:
            continue
        assert check.get("test"), f"{name} has no health check"
        assert not check.get("disable"), f"{name} has its health check disabled"
        test = check["test"]
        check_command(test[1:] if test[0] == "CMD" else shlex.split(test[1]))
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on {target}, which is not defined"
            if condition["condition"] == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), f"{target} has no check to wait for"
            else:
                assert condition["condition"] == "service_completed_successfully"
                assert target in one_shots
    for name in ("api", "worker", "beat", "flower"):
        assert "migrate" in services[name]["depends_on"]


def test_compose_ports_line_up_with_the_commands_and_health_checks(compose: dict[str, Any]) -> None:
    for name, service in _ours(compose).items():
        for mapping in service.get("ports", []):
            container = int(str(mapping).rsplit(":", 1)[1])
            assert _option(service["command"], "--port") == str(container), name
            assert _url_port(" ".join(service["healthcheck"]["test"])) == container, name
    assert _option(compose["services"]["flower"]["command"], "--address") == "0.0.0.0"  # reachable from the host


def test_compose_urls_name_the_services_with_their_credentials(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = _env(services["api"])
    database = urlsplit(env["CONVEYOR_DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert (database.username, database.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
    assert database.path == "/" + postgres["POSTGRES_DB"]
    broker = urlsplit(env["CONVEYOR_BROKER_URL"])
    rabbit = services["rabbitmq"]["environment"]
    assert (broker.scheme, broker.hostname, broker.port) == ("amqp", "rabbitmq", 5672)
    assert (broker.username, broker.password) == (rabbit["RABBITMQ_DEFAULT_USER"], rabbit["RABBITMQ_DEFAULT_PASS"])
    assert "redis://redis:6379/0" in COMPOSE.read_text()  # the documented alternative names a real service


def test_compose_keeps_state_on_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    mounts = {
        name: {m.split(":")[0]: m.split(":")[1] for m in service.get("volumes", [])}
        for name, service in compose["services"].items()
    }
    assert mounts["postgres"] == {"postgres-data": "/var/lib/postgresql/data"}
    assert mounts["redis"] == {"redis-data": "/data"}
    assert mounts["rabbitmq"] == {"rabbitmq-data": "/var/lib/rabbitmq"}
    data_dir = _env(compose["services"]["api"])["CONVEYOR_DATA_DIR"]
    for name in ("api", "worker"):
        assert mounts[name] == {"conveyor-data": data_dir}  # uploads the API takes, the workers read
    used = {volume for m in mounts.values() for volume in m}
    assert used == declared


# -- Kubernetes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"{key} defined twice"
            objects[key] = doc
    return objects


def _pod_specs(k8s: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {key: o["spec"]["template"]["spec"] for key, o in k8s.items() if key[0] in ("Deployment", "Job")}


def _data_keys(obj: dict[str, Any]) -> set[str]:
    return set(obj.get("data") or {}) | set(obj.get("stringData") or {})


def test_the_kustomization_lists_every_manifest_and_builds() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return  # the structure is checked above; kustomize itself is optional here
    built = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    images = set(re.findall(r"image: (\S+)", built.stdout))
    assert images == {"registry.example.com/conveyor:0.1.0"}


def test_every_kubernetes_reference_names_an_object_that_is_defined(k8s: dict[tuple[str, str], Any]) -> None:
    """ConfigMaps, Secrets (and their keys), volume claims, scale targets and trigger credentials."""
    for key, spec in _pod_specs(k8s).items():
        claims = {
            v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v
        }
        assert all(("PersistentVolumeClaim", c) in k8s for c in claims), key
        mounted = {v["name"] for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                kind, ref = (
                    ("ConfigMap", source["configMapRef"])
                    if "configMapRef" in source
                    else ("Secret", source["secretRef"])
                )
                assert (kind, ref["name"]) in k8s, f"{key} reads {kind} {ref['name']}, which is not defined"
            for var in container.get("env", []):
                for ref_kind, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    ref = (var.get("valueFrom") or {}).get(ref_kind)
                    if ref:
                        assert ref["key"] in _data_keys(k8s[(kind, ref["name"])]), (key, var["name"])
            assert {m["name"] for m in container.get("volumeMounts", [])} <= mounted, key
    for auth in (o for (kind, _), o in k8s.items() if kind == "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in _data_keys(k8s[("Secret", ref["name"])])
    for scaled in (o for (kind, _), o in k8s.items() if kind == "ScaledObject"):
        assert ("Deployment", scaled["spec"]["scaleTargetRef"]["name"]) in k8s
        for trigger in scaled["spec"]["triggers"]:
            assert ("TriggerAuthentication", trigger["authenticationRef"]["name"]) in k8s


def test_every_kubernetes_variable_is_a_setting_and_every_command_exists(k8s: dict[tuple[str, str], Any]) -> None:
    for kind in ("ConfigMap", "Secret"):
        for (k, name), obj in k8s.items():
            if k == kind:
                assert _data_keys(obj) <= SETTING_VARS, name
    for key, spec in _pod_specs(k8s).items():
        for container in spec["containers"]:
            check_command([*container.get("command", []), *container.get("args", [])])
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if "exec" in container.get(probe, {}):
                    check_command(container[probe]["exec"]["command"])
        assert spec["securityContext"]["runAsNonRoot"] is True, key
        assert spec["securityContext"]["runAsUser"] == IMAGE_UID, key


def test_the_api_is_probed_on_health_and_served_on_its_port(k8s: dict[tuple[str, str], Any]) -> None:
    api = k8s[("Deployment", "conveyor-api")]
    (container,) = api["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(k8s[("ConfigMap", "conveyor-config")]["data"]["CONVEYOR_PORT"])}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
        assert container[probe]["httpGet"]["port"] in ports
        assert container[probe]["timeoutSeconds"] >= 5  # /health asks the Celery workers
    service = k8s[("Service", "conveyor-api")]
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports or port["targetPort"] in ports.values()


def test_deployments_select_their_own_pods(k8s: dict[tuple[str, str], Any]) -> None:
    selectors = {}
    for (kind, name), obj in k8s.items():
        if kind == "Deployment":
            selector = obj["spec"]["selector"]["matchLabels"]
            assert selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items(), name
            selectors[name] = tuple(sorted(selector.items()))
    assert len(set(selectors.values())) == len(selectors)  # no Deployment adopts another's pods


def test_one_beat_workers_scaled_on_every_queue_and_a_migration_job(k8s: dict[tuple[str, str], Any]) -> None:
    beat = k8s[("Deployment", "conveyor-beat")]["spec"]
    assert beat["replicas"] == 1
    assert beat["strategy"]["type"] == "Recreate"
    assert beat["template"]["spec"]["containers"][0]["command"][:2] == ["conveyor", "beat"]
    worker = k8s[("Deployment", "conveyor-worker")]["spec"]["template"]["spec"]
    assert worker["containers"][0]["command"][:2] == ["conveyor", "worker"]
    assert worker["terminationGracePeriodSeconds"] >= 60  # a warm shutdown needs time
    scaled = k8s[("ScaledObject", "conveyor-worker")]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "conveyor-worker"
    # Every queue the default workloads declare is scaled on: a queue left out would wait for a manual scale.
    assert {t["metadata"]["queueName"] for t in scaled["triggers"]} == set(known_queues())
    assert all(t["type"] == "rabbitmq" and t["metadata"]["mode"] == "QueueLength" for t in scaled["triggers"])
    job = k8s[("Job", "conveyor-migrate")]["spec"]["template"]["spec"]
    assert job["containers"][0]["command"] == ["conveyor", "db", "upgrade"]
    assert job["restartPolicy"] in ("OnFailure", "Never")
