"""deploy/grafana/musicfn.json: a valid Grafana dashboard whose every query names series that
the real service exports.

The structure checks need nothing running. The live check deploys the app (synth engine,
SeaweedFS, DuckDB owner) on the session cluster, drives traffic that touches every metric
(a generation batch of 2, reads, a 404, a webhook event rejected, an S3 NoSuchKey), scrapes
Ray's real Prometheus endpoint and requires every metric name parsed out of every panel's
PromQL (and the template variables' queries) to be there.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from musicfn.metrics import _SPECS
from storage.embedded_s3 import EmbeddedS3
from storage.objects import ObjectStore
from tests.support import make_settings
from tests.support.events import notification
from tests.support.observability import Sample, wait_for_samples

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "musicfn.json"
APP = "grafana"
TOKEN = "grafana-test-webhook-token"

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
             "group_right", "offset", "bool", "inf", "nan"}
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label matchers,
    label lists, ranges and Grafana variables left out)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors ($__rate_interval, ...)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names: set[str] = set()
    for match in _NAME.finditer(text):
        word = match.group()
        before = text[match.start() - 1] if match.start() else " "
        if before in "$.0123456789" or word.lower() in _KEYWORDS:
            continue  # a Grafana variable, part of a number, a keyword
        if text[match.end():].lstrip().startswith("("):
            continue  # a function
        names.add(word)
    return names


def variable_metric_names(query: str) -> set[str]:
    """The metric a Grafana ``label_values(metric{...}, label)`` / ``query_result(...)``
    template query reads."""
    found = re.match(r"\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)", query)
    if found:
        return {found.group(1)}
    inner = re.match(r"\s*query_result\((.*)\)\s*$", query)
    return metric_names(inner.group(1)) if inner else set()


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every non-row panel, including those nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            out += panel.get("panels") or []
        else:
            out.append(panel)
    return out


def _queried(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    """Metric name -> the panels (or variables) that query it."""
    users: dict[str, set[str]] = {}
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            for name in metric_names(target["expr"]):
                users.setdefault(name, set()).add(panel["title"])
    for var in dashboard["templating"]["list"]:
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            for name in variable_metric_names(query):
                users.setdefault(name, set()).add(f"${var['name']}")
    return users


def _exported_names() -> set[str]:
    """Every Prometheus sample name musicfn's metrics can have (Ray adds ``ray_``,
    counters ``_total``, histograms ``_bucket``/``_sum``/``_count``)."""
    names: set[str] = set()
    for name, (kind, *_rest) in _SPECS.items():
        base = f"ray_{name}"
        if kind == "counter":
            names.add(f"{base}_total")
        elif kind == "histogram":
            names |= {base + s for s in _HISTOGRAM_SUFFIXES}
        else:
            names.add(base)
    return names


# -- the file itself -------------------------------------------------------------------------


def test_parser_finds_names_not_functions_labels_or_variables() -> None:
    expr = ('histogram_quantile(0.95, sum by (route, le) (rate(ray_musicfn_request_seconds_bucket'
            '{ray_io_cluster=~"$Cluster", route=~"a|b"}[$__rate_interval]))) / on (route) '
            'group_left sum without (WorkerId) (ray_x_total offset 5m) > bool 1e3')
    assert metric_names(expr) == {"ray_musicfn_request_seconds_bucket", "ray_x_total"}
    assert variable_metric_names('label_values(ray_a_total{x="y"}, route)') == {"ray_a_total"}
    assert variable_metric_names("query_result(max(ray_b))") == {"ray_b"}


def test_dashboard_is_a_valid_grafana_dashboard() -> None:
    d = _dashboard()
    assert d["title"] and d["uid"] and len(d["uid"]) <= 40
    assert d.get("id") is None  # provisioned or imported: Grafana assigns the id
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 27
    variables = {v["name"]: v for v in d["templating"]["list"]}
    source = variables["datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    panels = _panels(d)
    assert len(panels) >= 10
    ids = [p["id"] for p in d["panels"]] + [p["id"] for p in panels if p not in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in d["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
    for panel in panels:
        where = f"panel {panel['title']!r}"
        assert panel["type"] in ("timeseries", "stat", "gauge", "bargauge", "heatmap", "table")
        assert panel["datasource"]["uid"] == "${datasource}", where
        assert panel["targets"], where
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", where
            assert target["expr"].count("(") == target["expr"].count(")"), where
            assert target["expr"].count("{") == target["expr"].count("}"), where
            assert metric_names(target["expr"]), f"{where}: a query without a metric"
    for name, var in variables.items():
        if var["type"] == "query":
            assert var["datasource"]["uid"] == "${datasource}", name
    for expr in (t["expr"] for p in panels for t in p["targets"]):
        for ref in re.findall(r"\$(\w+)", expr):
            assert ref.startswith("__") or ref in variables, f"unknown variable ${ref}"


def test_every_musicfn_metric_has_a_panel_and_every_query_is_one_of_ours() -> None:
    queried = _queried(_dashboard())
    exported = _exported_names()
    assert set(queried) <= exported, sorted(set(queried) - exported)
    covered = {re.sub(r"^ray_|(_total|_bucket|_sum|_count)$", "", n) for n in queried}
    assert covered == set(_SPECS), sorted(set(_SPECS) - covered)


# -- against the real service ------------------------------------------------------------------


@pytest.fixture(scope="module")
def traffic(serve_url: str, s3_server: EmbeddedS3,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The app deployed and driven through every metric once."""
    from ray import serve

    from deployments.app import build_app

    settings = make_settings(s3_server, tmp_path_factory.mktemp("grafana"), poller="off",
                             webhook_token=TOKEN)
    app = build_app({"engine": "synth", "device": "cpu", "num_cpus": 0.5,
                     "batch_wait_timeout_s": 0.2, "settings": settings.model_dump()})
    serve.run(app, name=APP, route_prefix="/v-grafana")
    try:
        with httpx.Client(base_url=f"{serve_url}/v-grafana", timeout=120,
                          trust_env=False) as api:
            r = api.post("/v1/generations", params={"wait": 90},
                         json={"prompt": "grafana beat", "duration_s": 2.0, "engine": "synth",
                               "stems": ["drums", "bass"], "bpm": 100})
            assert r.status_code == 200 and r.json()["status"] == "completed", r.text
            record = r.json()
            assert api.get("/v1/generations/0000000000000000000000000z").status_code == 404
            hook = api.post("/v1/events/s3", json=notification(settings.bucket, "else/x.wav"),
                            headers={"Authorization": f"Bearer {TOKEN}"})
            assert hook.status_code == 200 and hook.json()["accepted"] == 0, hook.text
            ObjectStore(settings).delete(record["record"]["audio_key"])
            gone = api.get(f"/v1/generations/{record['id']}/audio", params={"inline": 1})
            assert gone.status_code in (404, 500, 503), gone.text
        # The embedded S3's supervisor counts restarts only when SeaweedFS dies under
        # `musicfn run` (tests/test_s3_supervisor.py kills it): one count here goes through
        # the same recorder and Ray's exporter, so that panel's series name is checked too.
        import ray

        from musicfn import metrics

        ray.get(ray.remote(num_cpus=0)(metrics.record_embedded_s3_restart).remote("ok"))
        yield {"record": record}
    finally:
        serve.delete(APP)


@pytest.mark.ray
def test_every_queried_metric_is_exported_by_the_running_service(
        traffic: dict[str, Any]) -> None:
    queried = _queried(_dashboard())

    def missing(samples: list[Sample]) -> list[str]:
        names = {s.name for s in samples}
        return [f"{name} (used by {', '.join(sorted(users))})"
                for name, users in sorted(queried.items()) if name not in names]

    samples = wait_for_samples(os.environ["MUSICFN_TEST_METRICS_URL"], missing)
    # The series carry the labels the panels group by.
    labels = {name: set().union(*(s.labels for s in samples if s.name == name))
              for name in queried}
    assert {"route", "method", "status"} <= labels["ray_musicfn_requests_total"]
    assert "stage" in labels["ray_musicfn_stage_seconds_count"]
    assert {"outcome", "source"} <= labels["ray_musicfn_events_total"]
    assert {"operation", "code"} <= labels["ray_musicfn_s3_errors_total"]
    assert "deployment" in labels["ray_musicfn_queue_depth"]
    assert "engine" in labels["ray_musicfn_audio_seconds_total"]
    depth = {s.labels.get("deployment") for s in samples if s.name == "ray_musicfn_queue_depth"}
    assert "jobs" in depth, depth  # the queue panel's main series


# -- where Ray's Grafana integration picks it up (docs/grafana.md) ---------------------------


@pytest.mark.ray
def test_ray_provisions_the_dashboard_from_its_dashboard_output_dir(tmp_path: Path) -> None:
    """A real head node with its dashboard, started as docs/grafana.md says: Ray writes its
    Grafana provisioning so that Grafana loads every JSON in
    ``RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR``, adds its own dashboards there and leaves
    musicfn's in place."""
    import shutil
    import time

    import yaml  # type: ignore[import-untyped]

    from tests.support.multinode import RayNode

    folder = tmp_path / "grafana-dashboards"
    folder.mkdir()
    shutil.copy(DASHBOARD, folder / "musicfn.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSICFN_", "RAY_ADDRESS"))}
    env.update({"RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR": str(folder),
                "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"})
    head = RayNode("grafana", {}, env, dashboard=True)
    try:
        assert head.start().wait_started(), head.tail()
        assert head.temp_dir is not None
        provider = head.temp_dir / "session_latest/metrics/grafana/provisioning/dashboards"
        deadline = time.monotonic() + 120
        while not (folder / "serve_grafana_dashboard.json").exists() \
                or not (provider / "default.yml").exists():
            assert time.monotonic() < deadline, f"Ray wrote no Grafana config: {head.tail()}"
            time.sleep(0.5)
        config = yaml.safe_load((provider / "default.yml").read_text())
        paths = [p["options"]["path"] for p in config["providers"] if p["type"] == "file"]
        assert paths == [str(folder)]
        assert json.loads((folder / "musicfn.json").read_text()) == _dashboard()
        ini = (head.temp_dir / "session_latest/metrics/grafana/grafana.ini").read_text()
        assert "provisioning" in ini
    finally:
        head.stop()
