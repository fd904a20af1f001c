"""deploy/kuberay/rayservice.yaml: a RayService in the production layout (docs/multinode.md)
whose embedded serveConfigV2 is Serve-valid and is serve_config.yaml for GPUs, and whose
environment names only real musicfn settings, secrets coming from a Secret."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from pydantic import SecretStr

from musicfn.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "kuberay" / "rayservice.yaml"
SECRETS = {"MUSICFN_S3_ACCESS_KEY", "MUSICFN_S3_SECRET_KEY", "MUSICFN_API_KEY",
           "MUSICFN_WEBHOOK_TOKEN", "MUSICFN_WEBHOOK_SECRET"}


def _docs() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if d]
    return {d["kind"]: d for d in docs}


def _service() -> dict[str, Any]:
    service = _docs()["RayService"]
    assert service["apiVersion"] == "ray.io/v1"
    return service


def _serve_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(_service()["spec"]["serveConfigV2"])
    return config


def _deployment(config: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in config["applications"][0]["deployments"]
                                 if d["name"] == name)
    return found


def _container(group: dict[str, Any]) -> dict[str, Any]:
    containers = group["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def _start_resources(group: dict[str, Any]) -> dict[str, float]:
    """The custom resources of a group's ``rayStartParams`` (KubeRay's quoted JSON)."""
    raw = group["rayStartParams"]["resources"]
    parsed: dict[str, float] = json.loads(raw.strip().strip("'").strip('"').replace('\\"', '"'))
    return parsed


def _setting_for(env_name: str) -> str | None:
    """The Settings field that reads ``env_name`` (by prefix + name, or by an alias)."""
    for name, info in Settings.model_fields.items():
        aliases = getattr(info.validation_alias, "choices", None) or []
        if env_name == f"MUSICFN_{name.upper()}" or env_name in aliases:
            return name
    return None


def test_serve_config_v2_is_valid_for_serve_and_for_musicfn() -> None:
    from ray.serve.schema import ServeDeploySchema

    from deployments.serve_config import validate_serve_config

    config = _serve_config()
    schema = ServeDeploySchema.model_validate(config)  # Serve's own schema
    assert [app.name for app in schema.applications] == ["musicfn"]
    # musicfn's stricter check: unknown keys, the autoscaling policy imports, user_config.
    validate_serve_config(config, source=str(MANIFEST))


def test_serve_config_v2_is_serve_config_yaml_for_gpus() -> None:
    """The only differences from serve_config.yaml: the proxy listens on the pod's address
    and MusicGen also needs the GPU group's ``gpu_node`` resource."""
    expected = yaml.safe_load((ROOT / "serve_config.yaml").read_text(encoding="utf-8"))
    expected = copy.deepcopy(expected)
    expected["http_options"]["host"] = "0.0.0.0"
    _deployment(expected, "MusicGen")["ray_actor_options"]["resources"] = {"gpu_node": 0.01}
    assert _serve_config() == expected
    musicgen = _deployment(_serve_config(), "MusicGen")
    assert musicgen["ray_actor_options"]["num_gpus"] == 1
    assert _serve_config()["applications"][0]["args"]["device"] == "cuda"


def test_cluster_layout_head_holds_the_catalogue_gpus_hold_musicgen() -> None:
    cluster = _service()["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == __import__("ray").__version__
    head = cluster["headGroupSpec"]
    assert _start_resources(head) == {"head": 1}
    assert head["rayStartParams"]["num-gpus"] == "0"
    head_box = _container(head)
    assert "nvidia.com/gpu" not in head_box["resources"].get("limits", {})
    data_dir = {e["name"]: e.get("value") for e in head_box["env"]}["MUSICFN_DATA_DIR"]
    mounts = {m["mountPath"]: m["name"] for m in head_box["volumeMounts"]}
    volumes = {v["name"]: v for v in head["template"]["spec"]["volumes"]}
    claim = volumes[mounts[data_dir]]["persistentVolumeClaim"]["claimName"]
    assert _docs()["PersistentVolumeClaim"]["metadata"]["name"] == claim

    (gpu,) = cluster["workerGroupSpecs"]
    assert _start_resources(gpu) == {"gpu_node": 1}
    assert gpu["rayStartParams"]["num-gpus"] == "1"
    box = _container(gpu)
    assert box["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert not box.get("volumeMounts"), "GPU workers never open the catalogue file"
    assert box["env"] == head_box["env"], "one environment for every pod"
    musicgen = _deployment(_serve_config(), "MusicGen")
    assert set(musicgen["ray_actor_options"]["resources"]) == set(_start_resources(gpu))
    assert musicgen["autoscaling_config"]["max_replicas"] <= gpu["maxReplicas"]


def test_env_names_are_settings_and_secrets_come_from_a_secret() -> None:
    env = _container(_service()["spec"]["rayClusterConfig"]["headGroupSpec"])["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    unknown = [n for n in names if n.startswith("MUSICFN_") and _setting_for(n) is None]
    assert not unknown, f"not musicfn settings: {unknown}"
    by_name = {e["name"]: e for e in env}
    assert set(by_name) >= SECRETS | {"MUSICFN_S3_ENDPOINT_URL"}
    secret_names = set()
    for name, entry in by_name.items():
        field = _setting_for(name)
        is_secret = field is not None and SecretStr in getattr(
            Settings.model_fields[field].annotation, "__args__", ())
        if name in SECRETS or is_secret:
            ref = entry["valueFrom"]["secretKeyRef"]
            secret_names.add(ref["name"])
            assert "value" not in entry, name
        else:
            assert "valueFrom" not in entry, name
    assert len(secret_names) == 1, secret_names
    # The plain values are valid settings, read from the environment as a pod reads them
    # (secrets stand in as placeholders).
    env = {n: e["value"] for n, e in by_name.items() if "value" in e}
    env.update({n: "placeholder" for n in SECRETS})
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        settings = Settings()
    assert not settings.uses_embedded_s3
    assert settings.device == "cuda"
    assert settings.catalogue_resources == {"head": 0.01}


@pytest.mark.parametrize("group", ["head", "gpu"])
def test_start_params_are_strings(group: str) -> None:
    cluster = _service()["spec"]["rayClusterConfig"]
    spec = cluster["headGroupSpec"] if group == "head" else cluster["workerGroupSpecs"][0]
    assert all(isinstance(v, str) for v in spec["rayStartParams"].values())
