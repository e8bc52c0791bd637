"""deploy/: the compose file against the compose-spec schema, the Kubernetes manifests against
the Kubernetes schemas (both schemas ship inside registry packages: check-jsonschema,
kubernetes-validate), and the links between them, the Dockerfile and the code."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from worker.cli import build_parser
from worker.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
MEDSEG_ROLES = ("prestart", "gateway", "worker-cpu", "worker-gpu", "dashboard")
# The oldest Kubernetes we claim to run on, and the newest the package knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def _compose_schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return schema


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in _manifests() if d["kind"] == kind}


def _env_keys(mapping: dict[str, Any]) -> set[str]:
    return {key for key in mapping if key.startswith("MEDSEG_")}


def _assert_known_settings(keys: set[str]) -> None:
    fields = {f"MEDSEG_{name.upper()}" for name in Settings.model_fields}
    assert keys, "no MEDSEG_ variables found"
    assert keys <= fields, f"not Settings fields: {sorted(keys - fields)}"


# ------------------------------------------------------------------------- compose


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    jsonschema.validate(_compose(), _compose_schema())


def test_compose_validation_really_rejects_a_broken_file() -> None:
    broken = copy.deepcopy(_compose())
    broken["services"]["gateway"]["healthcheck"]["interval"] = ["30s"]
    broken["services"]["redis"]["restart_policy"] = "always"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _compose_schema())


def test_compose_has_every_role_with_healthchecks_and_ordered_start() -> None:
    services = _compose()["services"]
    expected = {"redis", "postgres", "flower", "prometheus", "orthanc", *MEDSEG_ROLES}
    assert expected <= set(services)
    for name in ("redis", "postgres", "gateway", "worker-cpu", "worker-gpu", "prometheus"):
        assert services[name]["healthcheck"]["test"], name
    # Flower runs from the dashboard image, whose HEALTHCHECK probes the dashboard's port.
    for name, port in (("dashboard", 8080), ("flower", 5555)):
        assert f"127.0.0.1:{port}/" in " ".join(services[name]["healthcheck"]["test"]), name
    prestart = services["prestart"]
    assert prestart["command"][:2] == ["medseg", "prestart"]
    assert prestart["restart"] == "no"
    for name in ("gateway", "worker-cpu", "worker-gpu"):
        depends = services[name]["depends_on"]
        assert depends["prestart"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["postgres"]["condition"] == "service_healthy"
        # incoming/ and results/ are shared by the gateway and every worker
        assert "medseg-data:/var/lib/medseg" in services[name]["volumes"]


def test_compose_gpu_worker_is_in_the_gpu_profile_with_an_nvidia_device() -> None:
    gpu = _compose()["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert gpu["environment"]["MEDSEG_DEVICE"] == "cuda"
    assert "--queues" in gpu["command"]
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "gpu"


def test_compose_builds_targets_that_exist_in_the_dockerfile() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, flags=re.MULTILINE))
    for name in MEDSEG_ROLES:
        build = _compose()["services"][name]["build"]
        assert build["target"] in targets, name
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        )
    for source in re.findall(r"^COPY (?!--from)(\S+) ", dockerfile, flags=re.MULTILINE):
        assert (ROOT / source).exists(), source


def _merged(base: Any, override: Any) -> Any:
    """Compose's merge of -f files for what the override files use: mappings merge key by key,
    anything else is replaced (compose appends some sequences; no override here has one)."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merged(base[key], value) if key in base else value
        return merged
    return override


def _services_dockerfile_targets() -> set[str]:
    dockerfile = (DEPLOY / "airgap" / "services.Dockerfile").read_text()
    return set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, flags=re.MULTILINE))


def test_airgap_compose_override_is_valid_and_names_images_the_airgap_build_makes() -> None:
    override: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.airgap.yaml").read_text())
    jsonschema.validate(override, _compose_schema())
    merged = _merged(_compose(), override)
    jsonschema.validate(merged, _compose_schema())
    services = _compose()["services"]
    # It only swaps the third-party images: no new service, nothing else changed.
    assert set(override["services"]) <= set(services)
    for name, service in override["services"].items():
        assert set(service) == {"image"}, name
        assert merged["services"][name] == {**services[name], "image": service["image"]}
    # Every third-party image of compose.yaml has a stand-in; the medseg images are unchanged.
    third_party = {name for name, service in services.items() if "build" not in service}
    assert set(override["services"]) == third_party
    # build.sh tags services.Dockerfile's target T as medseg-local/T:bookworm.
    build_sh = (DEPLOY / "airgap" / "build.sh").read_text()
    assert 'image="medseg-local/$service:bookworm"' in build_sh
    (built,) = re.findall(r"for service in ([a-z ]+); do", build_sh)
    targets = _services_dockerfile_targets()
    for name, service in override["services"].items():
        repository, tag = service["image"].split(":")
        assert repository.startswith("medseg-local/"), name
        target = repository.removeprefix("medseg-local/")
        assert tag == "bookworm", name
        assert target in targets, f"{name}: no target {target} in airgap/services.Dockerfile"
        assert target in built.split(), f"{name}: build.sh does not build {target}"
    for source in re.findall(
        r"^COPY (?!--from)(\S+) ",
        (DEPLOY / "airgap" / "services.Dockerfile").read_text(),
        flags=re.MULTILINE,
    ):
        assert (DEPLOY / "airgap" / source).exists(), source


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with nothing set: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_settings_are_real_settings_and_commands_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]
    keys: set[str] = set()
    for name in MEDSEG_ROLES:
        keys |= _env_keys(services[name]["environment"])
    _assert_known_settings(keys)
    for name in ("gateway", "worker-gpu"):
        with monkeypatch.context() as env:
            for key, value in services[name]["environment"].items():
                env.setenv(key, _interpolate(str(value)))
            settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.database_url.startswith("postgresql+psycopg://medseg:")
        assert settings.destinations[0].host == "orthanc"
    parser = build_parser()
    for name in MEDSEG_ROLES:
        command = [_interpolate(c) for c in services[name]["command"]]
        assert command[0] == "medseg"
        parser.parse_args(command[1:])


def test_prometheus_scrapes_the_gateway_metrics_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    port = _compose()["services"]["gateway"]["environment"]["MEDSEG_METRICS_PORT"]
    targets = [
        t
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for t in static["targets"]
    ]
    assert f"gateway:{port}" in targets
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    exprs = " ".join(rule["expr"] for group in rules["groups"] for rule in group["rules"])
    for metric in (
        "medseg_instances_received_total",
        "medseg_queue_depth",
        "medseg_jobs",
        "medseg_deliveries",
        "medseg_queue_consumers",
    ):
        assert metric in exprs


# ------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_strictly(version: str) -> None:
    manifests = _manifests()
    assert len(manifests) >= 12
    for filename, doc in manifests:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{filename}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_kubernetes_validation_really_rejects_a_broken_manifest() -> None:
    deployment = copy.deepcopy(_by_kind("Deployment")["medseg-gateway"])
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    deployment = copy.deepcopy(_by_kind("Deployment")["medseg-gateway"])
    deployment["spec"]["replica"] = 2  # strict: unknown field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    images = {image["name"] for image in kustomization["images"]}
    used = {
        c["image"]
        for d in _by_kind("Deployment").values()
        for c in d["spec"]["template"]["spec"]["containers"]
        + d["spec"]["template"]["spec"].get("initContainers", [])
    }
    assert used == images


def test_gpu_workers_land_on_gpu_nodes_and_workers_scale() -> None:
    deployments = _by_kind("Deployment")
    gpu = deployments["medseg-worker-gpu"]["spec"]["template"]["spec"]
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
    cpu = deployments["medseg-worker-cpu"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"].get("limits", {})
    hpas = _by_kind("HorizontalPodAutoscaler")
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()}
    assert targets == {"medseg-worker-cpu", "medseg-worker-gpu"}
    for hpa in hpas.values():
        assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert deployments["medseg-gateway"]["spec"]["strategy"]["type"] == "Recreate"


def test_shared_storage_is_read_write_many_and_mounted_by_every_role() -> None:
    pvc = _by_kind("PersistentVolumeClaim")["medseg-data"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    config = _by_kind("ConfigMap")["medseg-config"]["data"]
    for name, deployment in _by_kind("Deployment").items():
        spec = deployment["spec"]["template"]["spec"]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]}
        assert claims == {"medseg-data"}, name
        mount = spec["containers"][0]["volumeMounts"][0]["mountPath"]
        assert mount == config["MEDSEG_DATA_DIR"], name
    _assert_known_settings(
        _env_keys(config) | _env_keys(_by_kind("Secret")["medseg-secret"]["stringData"])
    )


def test_kubernetes_commands_parse() -> None:
    parser = build_parser()
    for deployment in _by_kind("Deployment").values():
        spec = deployment["spec"]["template"]["spec"]
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["command"][0] == "medseg"
            parser.parse_args(container["command"][1:])


# ------------------------------------------------------------------------- systemd, packaging


def test_systemd_units_run_real_commands() -> None:
    parser = build_parser()
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert units
    for unit in units:
        for line in unit.read_text().splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=")):
                argv = line.split("=", 1)[1].split()
                assert argv[0] == "/opt/medseg/venv/bin/medseg", unit.name
                parser.parse_args(argv[1:])
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "medseg.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    _assert_known_settings(set(env))


def test_the_wheel_the_images_install_carries_weights_and_migrations(tmp_path: Path) -> None:
    # Built from a copy: setuptools leaves build/ in the source tree it builds.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(ROOT / name, src / name)
    for package in ("dicom_gateway", "worker", "db"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (wheel,) = tmp_path.glob("medseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for model, checkpoint in (
        ("fetal_head", "fetal_head_unet"),
        ("fetal_brain", "fetal_brain_unet"),
        ("lung_ct", "lung_ct_unet"),
        ("lung_cxr", "lung_cxr_unet"),
        ("lung_cxr", "pneumonia_frcnn"),
    ):
        assert f"worker/models/{model}/{checkpoint}.pt" in names
        assert f"worker/models/{model}/{checkpoint}.json" in names
    assert any(n.startswith("db/migrations/versions/") for n in names)
    assert "db/migrations/script.py.mako" in names
    assert {"worker/dashboard/static/live.js", "worker/dashboard/templates/studies.html"} <= names


def test_the_gateway_image_runs_without_the_worker_extra() -> None:
    # The gateway target installs [gateway,postgres] only: no torch, OpenCV or highdicom.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'cv2', 'highdicom'):\n"
        "            raise ImportError('not in the gateway image: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from worker.cli import main\n"
        "import dicom_gateway.server, worker.runtime.prestart, worker.delivery.echo\n"
        "import worker.runtime.celery_app\n"
        "from worker.core.registry import all_specs\n"
        "assert all_specs()\n"
        "sys.exit(main(['models']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fetal-head-unet" in done.stdout
