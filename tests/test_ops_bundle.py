"""The ops bundle in deploy/: the Grafana dashboard charts exactly the metrics a hub exports, and
the compose file wires the hub, Prometheus and Grafana to each other with real settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from latentwire.hub import Hub
from latentwire.hub.journal import Journal
from latentwire.hub.metrics import HubMetrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
METRIC = re.compile(r"\b((?:latentwire_hub|process)_[a-z_]+)\b")


async def exported_metric_names(tmp_path: Path) -> set[str]:
    """Every series name a hub with a journal exports (counters with their ``_total``)."""
    journal = await Journal.open(tmp_path / "hub.db")
    hub = Hub(journal=journal)
    try:
        metrics = HubMetrics(hub)
        metrics.bind_loop()
        return {f.name + "_total" if f.type == "counter" else f.name for f in metrics.registry.collect()}
    finally:
        await hub.aclose()
        await journal.aclose()


async def test_the_grafana_dashboard_charts_every_hub_metric_and_no_other(tmp_path: Path) -> None:
    exported = await exported_metric_names(tmp_path)
    assert {"process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total"} <= exported
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    charted = {name for expr in exprs for name in METRIC.findall(expr)}
    assert charted <= exported, f"the dashboard charts metrics no hub exports: {sorted(charted - exported)}"
    hub_metrics = {n for n in exported if n.startswith("latentwire_hub_")}
    assert hub_metrics <= charted, f"hub metrics missing from the dashboard: {sorted(hub_metrics - charted)}"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert all('instance=~"$instance"' in expr for expr in exprs)


def test_compose_wires_hub_prometheus_and_grafana() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    hub_env = services["hub"]["environment"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert targets == [f"hub:{hub_env['LATENTWIRE_HUB_METRICS_PORT']}"]
    assert hub_env["LATENTWIRE_HUB_METRICS_HOST"] == "0.0.0.0"  # reachable from the prometheus container
    assert f"127.0.0.1:{hub_env['LATENTWIRE_HUB_DASHBOARD_PORT']}:" in " ".join(services["hub"]["ports"])
    assert services["hub"]["build"]["context"] == ".." and (DEPLOY / ".." / "Dockerfile").is_file()
    # Every file mounted into a container exists, and Grafana's home dashboard is the mounted one.
    for service in services.values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{source} is mounted but missing"
    grafana = services["grafana"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert f"./grafana-dashboard.json:{home}:ro" in grafana["volumes"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/latentwire.yaml").read_text())
    assert Path(home).parent == Path(provider["providers"][0]["options"]["path"])
    source = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
