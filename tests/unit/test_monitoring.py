"""Monitoring as shipped (issue 32 item 1): Prometheus scrapes every role, the alert rules are
valid and fire when they should (promtool), and every query of the alerts and of the Grafana
dashboard names metrics the code exports. Compose itself cannot run here (no Docker daemon):
its monitoring parts are checked against the compose schema and against each other, and a
real Prometheus scraping a real gateway and worker is tests/integration/test_monitoring_live.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from sqlalchemy.orm import Session, sessionmaker

from tests.support.tools import need_tool
from tests.unit.test_deploy import _compose, _compose_schema, _merged

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "medseg.json"
METRIC = re.compile(r"\b(medseg_[a-z0-9_]+)\b")


def exported_metric_names(session_factory: sessionmaker[Session]) -> set[str]:
    """Every sample name the gateway's and the workers' endpoints can expose."""
    from prometheus_client import CollectorRegistry

    from dicom_gateway import metrics as gateway
    from worker.runtime.metrics import _metrics

    registry = CollectorRegistry()
    registry.register(gateway._StateCollector(session_factory, lambda queue: 0, None))
    families = list(gateway.REGISTRY.collect()) + list(registry.collect())
    families += [family for metric in _metrics().values() for family in metric.collect()]
    names: set[str] = {"medseg_workers_alive", "medseg_queue_consumers"}  # probe-dependent
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
    }
    for family in families:
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def _alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def test_promtool_checks_the_rules_and_their_unit_tests_pass(tmp_path: Path) -> None:
    promtool = need_tool("promtool")
    for name in ("alerts.yml", "alerts_test.yml"):
        shutil.copy(DEPLOY / name, tmp_path / name)
    checked = subprocess.run(
        [promtool, "check", "rules", "alerts.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_alert_rules())} rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_checks_the_scrape_config(tmp_path: Path) -> None:
    promtool = need_tool("promtool")
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]  # compose mounts it there
    config["rule_files"] = [str(tmp_path / "alerts.yml")]
    shutil.copy(DEPLOY / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_role_with_metrics_is_scraped_where_it_listens() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    env = _compose()["x-medseg-env"]
    gateway = jobs["medseg-gateway"]["static_configs"][0]["targets"]
    assert gateway == [f"gateway:{env['MEDSEG_METRICS_PORT']}"]
    (workers,) = jobs["medseg-worker"]["dns_sd_configs"]
    services = _compose()["services"]
    assert set(workers["names"]) == {name for name in services if name.startswith("worker-")}
    assert workers["port"] == int(env["MEDSEG_WORKER_METRICS_PORT"])
    assert env["MEDSEG_METRICS_HOST"] == "0.0.0.0"  # reachable from the prometheus container
    for name in ("worker-cpu", "worker-gpu"):  # the workers get the shared env block
        assert services[name]["environment"]["MEDSEG_WORKER_METRICS_PORT"] == "9102"
    # Kubernetes: the port in the config map, the worker pods annotated for scraping.
    configmap = yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())
    assert configmap["data"]["MEDSEG_WORKER_METRICS_PORT"] == "9102"
    for role in ("cpu", "gpu"):
        pod = yaml.safe_load((DEPLOY / "k8s" / f"worker-{role}.yaml").read_text())["spec"][
            "template"
        ]
        assert pod["metadata"]["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9102",
        }
        ports = pod["spec"]["containers"][0]["ports"]
        assert {"name": "metrics", "containerPort": 9102} in ports
    unit = (DEPLOY / "systemd" / "medseg-worker.service").read_text()
    assert "Environment=MEDSEG_WORKER_METRICS_PORT=9102" in unit


def test_alerts_and_panels_query_metrics_the_code_exports(
    session_factory: sessionmaker[Session],
) -> None:
    exported = exported_metric_names(session_factory)
    queries = [(rule["alert"], rule["expr"]) for rule in _alert_rules()] + _panel_queries()
    for where, expr in queries:
        unknown = set(METRIC.findall(expr)) - exported
        assert not unknown, f"{where}: {sorted(unknown)} not exported (have {sorted(exported)})"
    jobs = {
        j["job_name"]
        for j in yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    }
    for where, expr in queries:
        for job in re.findall(r'job="([^"]+)"', expr):
            assert job in jobs, f"{where}: no scrape job {job}"


def test_the_dashboard_has_each_view_an_operator_needs() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"] for p in dashboard["panels"]).lower()
    for view in ("queue depth", "throughput", "latency", "failures", "review backlog", "stage"):
        assert view in titles, view
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    datasource = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
    # Each panel's grid cell lies on Grafana's 24-column grid without overlapping another.
    cells = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cover = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & cover, panel["title"]
        cells |= cover


def test_grafana_is_provisioned_in_compose() -> None:
    override: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.monitoring.yaml").read_text())
    merged = _merged(_compose(), override)
    jsonschema.validate(merged, _compose_schema())
    grafana = merged["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    assert (DEPLOY / mounts["/etc/grafana/provisioning"]).resolve() == GRAFANA / "provisioning"
    assert (DEPLOY / mounts["/var/lib/grafana/dashboards"]).resolve() == GRAFANA / "dashboards"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "medseg.yml").read_text())[
        "providers"
    ][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    prometheus = merged["services"]["prometheus"]
    assert datasource["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in prometheus["ports"]
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert grafana["healthcheck"]["test"]


def test_the_review_backlog_counts_undecided_results_only(
    session_factory: sessionmaker[Session],
) -> None:
    """medseg_jobs{state="needs_review"} counts decided results too; the backlog does not."""
    from prometheus_client import CollectorRegistry

    from db.models import DeliveryState, JobState
    from dicom_gateway.metrics import _StateCollector
    from tests.support.history import with_result
    from worker.ops.review import decide

    with_result(session_factory, JobState.NEEDS_REVIEW, DeliveryState.WITHHELD, "x")
    decided, _ = with_result(session_factory, JobState.NEEDS_REVIEW, DeliveryState.WITHHELD, "x")
    decide(session_factory, decided, "accepted", by="dr x")
    registry = CollectorRegistry()
    registry.register(_StateCollector(session_factory, lambda queue: 0, None))
    assert registry.get_sample_value("medseg_review_backlog") == 1.0
    assert registry.get_sample_value("medseg_jobs", {"state": "needs_review"}) == 2.0
