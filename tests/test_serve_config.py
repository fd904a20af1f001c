"""serve_config.yaml loaded for a machine: Ray's schema, strict keys, only the allowed overrides.

No Ray cluster: loading and validating never needs one.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.serve_config import EngineOverrides, load_serve_config
from musicfn.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "serve_config.yaml"
CPU = EngineOverrides(engine="synth", device="cpu", model="tiny-model", cluster_cpus=2.0)


def flatten(tree: Any, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Any]:
    """Leaves of a config tree by path; list items keyed by their ``name`` when they have one."""
    if isinstance(tree, dict):
        return {k: v for key, item in tree.items() for k, v in flatten(item, (*path, key)).items()}
    if isinstance(tree, list):
        return {k: v for i, item in enumerate(tree) for k, v in flatten(
            item, (*path, item.get("name", i) if isinstance(item, dict) else i)).items()}
    return {path: tree}


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[tuple[Any, ...], tuple[Any, Any]]:
    a, b = flatten(before), flatten(after)
    return {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return loaded


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def deployments(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in config["applications"][0]["deployments"]}


def test_the_shipped_config_validates_with_rays_schema() -> None:
    schema = ServeDeploySchema.model_validate(raw())
    (app,) = schema.applications
    assert app.import_path == "deployments.app:build_app"
    assert load_serve_config(CONFIG, overrides=None) == raw()  # validated, unchanged


def test_cpu_override_changes_only_engine_args_and_musicgen_placement() -> None:
    production = raw()
    adapted = load_serve_config(CONFIG, overrides=CPU)
    args = ("applications", "musicfn", "args")
    musicgen = ("applications", "musicfn", "deployments", "MusicGen", "ray_actor_options")
    assert diff(production, adapted) == {
        (*args, "engine"): ("audiocraft", "synth"),
        (*args, "model"): ("facebook/musicgen-small", "tiny-model"),
        (*args, "device"): ("cuda", "cpu"),
        (*musicgen, "num_gpus"): (1, 0),
        # 2 CPUs, 1 kept for the audio tasks, max_replicas 4: 0.25 each.
        (*musicgen, "num_cpus"): (1, 0.25),
    }
    assert production == raw()  # the input is not modified
    from musicfn_cli.commands.run_cmd import _config_changes  # what `musicfn run` prints

    assert len(_config_changes(production, adapted)) == 5


def test_num_cpus_is_kept_when_the_cluster_has_room_and_gpu_override_keeps_placement() -> None:
    big = EngineOverrides(engine="synth", device="cpu", cluster_cpus=16.0)
    changed = diff(raw(), load_serve_config(CONFIG, overrides=big))
    assert {k[-1] for k in changed} == {"engine", "device", "num_gpus"}
    gpu = EngineOverrides(engine="audiocraft", device="cuda", model="m", cluster_cpus=2.0)
    changed = diff(raw(), load_serve_config(CONFIG, overrides=gpu))
    assert {k[-1] for k in changed} == {"model"}  # engine and device are the YAML's already


def test_ingress_and_runner_limits_in_the_effective_config() -> None:
    effective = deployments(load_serve_config(CONFIG, overrides=CPU))
    ingress = effective["Ingress"]
    assert ingress["max_ongoing_requests"] == 200
    assert ingress["graceful_shutdown_timeout_s"] == 20
    runner = effective["JobRunner"]
    assert runner["max_ongoing_requests"] == 1000
    assert runner["ray_actor_options"] == {"num_cpus": 0}
    assert runner["autoscaling_config"]["policy"]["policy_function"] == (
        "deployments.autoscaling:QueueDepthPolicy")
    # MusicGen's user_config stays the one owner of the generation limits.
    assert effective["MusicGen"]["user_config"] == deployments(raw())["MusicGen"]["user_config"]


@pytest.mark.parametrize(("where", "typo"), [
    ((), "proxy_locaton"),
    (("http_options",), "prot"),
    (("applications", 0), "routeprefix"),
    (("applications", 0, "deployments", 0), "max_ongoing_request"),
    (("applications", 0, "deployments", 0, "autoscaling_config"), "min_replica"),
    (("applications", 0, "deployments", 1, "ray_actor_options"), "num_gpu"),
    (("applications", 0, "deployments", 2, "autoscaling_config", "policy"), "kwargs"),
])
def test_an_unknown_key_fails_before_deploy(tmp_path: Path, where: tuple[Any, ...],
                                            typo: str) -> None:
    config = raw()
    node: Any = config
    for step in where:
        node = node[step]
    node[typo] = 1
    ServeDeploySchema.model_validate(config)  # Ray alone would ignore it
    with pytest.raises(ConfigurationError, match=rf"unknown key.*{typo}"):
        load_serve_config(write(tmp_path, config), overrides=CPU)


@pytest.mark.parametrize(("change", "message"), [
    ({"max_ongoing_requests": 0}, "max_ongoing_requests"),
    ({"autoscaling_config": {"min_replicas": 5, "max_replicas": 2}}, "autoscaling_config"),
    ({"autoscaling_config": {"min_replicas": 1, "max_replicas": 2, "policy": {
        "policy_function": "deployments.autoscaling:NoSuchPolicy"}}}, "NoSuchPolicy"),
])
def test_bad_values_fail_with_configuration_error(tmp_path: Path, change: dict[str, Any],
                                                  message: str) -> None:
    config = raw()
    deployments(config)["Ingress"].update(change)
    with pytest.raises(ConfigurationError, match=message):
        load_serve_config(write(tmp_path, config), overrides=None)


def test_a_musicgen_limit_typo_fails_before_deploy(tmp_path: Path) -> None:
    config = raw()
    deployments(config)["MusicGen"]["user_config"]["limits"]["max_duraton_s"] = 10
    with pytest.raises(ConfigurationError, match=r"MusicGen.*user_config.*max_duraton_s"):
        load_serve_config(write(tmp_path, config), overrides=None)


def test_missing_file_and_foreign_app(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        load_serve_config(tmp_path / "nope.yaml", overrides=None)
    config = copy.deepcopy(raw())
    config["applications"][0]["import_path"] = "somewhere.else:app"
    with pytest.raises(ConfigurationError, match="no application"):
        load_serve_config(write(tmp_path, config), overrides=CPU)


def test_run_defaults_to_the_repository_config() -> None:
    from musicfn_cli.commands.run_cmd import default_config_path
    from musicfn_cli.main import build_parser

    assert default_config_path() == CONFIG
    args = build_parser().parse_args(["run", "--once", "--config", "other.yaml"])
    assert args.config == Path("other.yaml") and args.once
    assert build_parser().parse_args(["run"]).config is None
