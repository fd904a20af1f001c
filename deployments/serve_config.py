"""serve_config.yaml, loaded for this machine and deployed: one production description.

``load_serve_config`` reads the YAML, applies the only overrides a machine may need (engine,
model and device in the app ``args``; on a CPU box MusicGen's GPU and CPU reservations) and
validates the result strictly, so a typo fails here rather than at deploy time.
``deploy_config`` deploys it to the connected Ray cluster the way ``serve run config.yaml``
does, without the dashboard's REST API, and waits until the application runs or fails.

This module is the one owner of the private Ray Serve API that takes a whole config
(``ServeControllerClient.deploy_apps``, reached through ``ray.serve.context._get_global_client``).
"""

from __future__ import annotations

import copy
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml  # type: ignore[import-untyped]  # PyYAML, a dependency of ray[serve]
from pydantic import BaseModel, ValidationError

from musicfn.errors import ConfigurationError

#: Applications whose ``args`` are the MusicGen app's (engine, model, device, ...).
MUSICFN_IMPORT_PATHS = ("deployments.app:build_app", "deployments.musicgen:build_app")
#: CPUs left to the audio Ray tasks (1 CPU each) when MusicGen runs on the CPU.
CPUS_KEPT_FOR_TASKS = 1.0

_FAILED = ("DEPLOY_FAILED", "UNHEALTHY")
_RAISED = re.compile(r"^[\w.]*(Error|Exception)\b[^:]*: ")


@dataclass(frozen=True)
class EngineOverrides:
    """What this machine changes in the production description.

    ``model`` None keeps the YAML's. ``cluster_cpus`` (the Ray cluster's CPUs) bounds
    MusicGen's ``num_cpus`` on the CPU so that its replicas, even at ``max_replicas``, leave
    ``CPUS_KEPT_FOR_TASKS`` for the normalise/analyse/encode tasks.
    """

    engine: str
    device: Literal["cpu", "cuda"]
    model: str | None = None
    cluster_cpus: float | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, Any], *,
                  cluster_cpus: float | None = None) -> EngineOverrides:
        """From the app args ``choose_engine`` returns (engine, device, optional model)."""
        device = args.get("device", "cpu")
        if device not in ("cpu", "cuda"):
            raise ConfigurationError(f"device must be cpu or cuda here, got {device!r}")
        model = args.get("model")
        return cls(engine=str(args["engine"]), device=device,
                   model=None if model is None else str(model), cluster_cpus=cluster_cpus)


def load_serve_config(path: Path, *, overrides: EngineOverrides | None) -> dict[str, Any]:
    """The Serve config in ``path`` with ``overrides`` applied, validated.

    Raises ``ConfigurationError`` when the file is missing or not YAML, when no application
    runs musicfn's ``build_app`` (with overrides), or when the result fails validation.
    """
    if not Path(path).is_file():
        raise ConfigurationError(f"serve config {path} not found")
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read serve config {path}: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"serve config {path} must be a mapping at the top level")
    config = apply_overrides(loaded, overrides) if overrides is not None else loaded
    validate_serve_config(config, source=str(path))
    return config


def apply_overrides(config: Mapping[str, Any], overrides: EngineOverrides) -> dict[str, Any]:
    """A copy of ``config`` with ``overrides`` applied to every musicfn application.

    Changes only ``args.engine/model/device`` (dropping a multi-model table when it picks the
    synth engine or a model of its own) and, for the CPU, MusicGen's
    ``ray_actor_options.num_gpus`` (to 0) and ``num_cpus`` (see ``EngineOverrides``).
    """
    from deployments.musicgen import DEPLOYMENT_NAME
    from deployments.musicgen_config import MULTI_MODEL_ARGS

    result = copy.deepcopy(dict(config))
    apps = [a for a in result.get("applications") or []
            if isinstance(a, dict) and a.get("import_path") in MUSICFN_IMPORT_PATHS]
    if not apps:
        raise ConfigurationError("the serve config has no application with import_path "
                                 f"{' or '.join(MUSICFN_IMPORT_PATHS)} to adapt to this machine")
    for app in apps:
        args = app.setdefault("args", {})
        args["engine"], args["device"] = overrides.engine, overrides.device
        if overrides.model is not None:
            args["model"] = overrides.model
        if overrides.engine == "synth" or overrides.model is not None:
            for key in MULTI_MODEL_ARGS:  # this machine serves the one model it chose
                args.pop(key, None)
        if overrides.device != "cpu":
            continue
        for deployment in app.get("deployments") or []:
            if not isinstance(deployment, dict) or deployment.get("name") != DEPLOYMENT_NAME:
                continue
            options = deployment.get("ray_actor_options")
            if not isinstance(options, dict):
                continue
            if options.get("num_gpus"):
                options["num_gpus"] = 0
            cpus = options.get("num_cpus")
            if overrides.cluster_cpus is not None and isinstance(cpus, int | float):
                room = max(0.0, overrides.cluster_cpus - CPUS_KEPT_FOR_TASKS)
                cap = math.floor(room / _max_replicas(deployment) * 100) / 100
                if cpus > cap:
                    options["num_cpus"] = cap
    return result


def _max_replicas(deployment: Mapping[str, Any]) -> int:
    replicas = deployment.get("num_replicas")
    scaling = deployment.get("autoscaling_config") or {}
    return max(1, replicas if isinstance(replicas, int) else int(scaling.get("max_replicas", 1)))


def validate_serve_config(config: Mapping[str, Any], *, source: str = "serve config") -> Any:
    """``config`` as Ray's ``ServeDeploySchema``, checked more strictly than Ray does.

    Ray ignores unknown keys (for forward compatibility) and keeps ``autoscaling_config`` a
    plain dict; here unknown keys, bad autoscaling settings, a policy that does not import and
    a MusicGen ``user_config`` its deployment would refuse all raise ``ConfigurationError``.
    """
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    from deployments.musicgen import DEPLOYMENT_NAME, MusicGenUserConfig

    unknown = _unknown_keys(config, [ServeDeploySchema], "")
    if unknown:
        raise ConfigurationError(f"{source}: unknown key(s) {', '.join(unknown)}")
    for app in _dicts(config.get("applications")):
        for d in _dicts(app.get("deployments")):
            where = f"{source}: application {app.get('name')!r} deployment {d.get('name')!r}"
            if isinstance(d.get("autoscaling_config"), dict):
                try:  # imports the policy, as the controller will
                    AutoscalingConfig.model_validate(d["autoscaling_config"])
                except (ValidationError, ImportError, AttributeError, ValueError) as exc:
                    raise ConfigurationError(f"{where} autoscaling_config: "
                                             f"{_one_line(exc)}") from None
            if d.get("name") == DEPLOYMENT_NAME and isinstance(d.get("user_config"), dict):
                try:
                    MusicGenUserConfig.model_validate(d["user_config"])
                except ValidationError as exc:
                    raise ConfigurationError(f"{where} user_config: {_one_line(exc)}") from None
    try:
        return ServeDeploySchema.model_validate(dict(config))
    except (ValidationError, ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(f"{source}: {_one_line(exc)}") from None


def _dicts(items: Any) -> list[dict[str, Any]]:
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _unknown_keys(value: Any, models: Sequence[type[BaseModel]], where: str) -> list[str]:
    """Dotted paths of the keys in ``value`` that none of ``models`` has as a field."""
    if not isinstance(value, Mapping) or not models:
        return []
    fields: dict[str, list[Any]] = {}
    for model in models:
        for name, info in model.model_fields.items():
            for key in {name, info.alias}:
                if key:
                    fields.setdefault(key, []).append(info.annotation)
    found: list[str] = []
    for key, item in value.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            found.append(path)
            continue
        sub = [m for annotation in fields[key] for m in _models_in(annotation)]
        items = list(enumerate(item)) if isinstance(item, list) else [(None, item)]
        for index, element in items:
            found += _unknown_keys(element, sub, path if index is None else f"{path}[{index}]")
    return found


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation nests directly (not as values of a dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (dict, Mapping):
        return []
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
                         for e in exc.errors())
    return " ".join(str(exc).split())


def deploy_config(config: Mapping[str, Any], *, http_host: str | None = None,
                  http_port: int | None = None, timeout_s: float = 600.0,
                  on_status: Callable[[Mapping[str, Any]], None] | None = None) -> str:
    """Deploy ``config`` on the connected Ray cluster and wait until its apps are RUNNING.

    Starts Serve with the config's proxy location and ``http_options`` (``http_host`` /
    ``http_port`` replace the YAML's when given), then submits the whole config to the Serve
    controller as ``serve run config.yaml`` does: no dashboard or REST API needed. Returns the
    proxy's base URL (applications live under their ``route_prefix``). ``on_status``, when
    given, sees ``serve.status().applications`` at each poll while waiting (start-up timing).

    Raises ``NoGpuError`` before deploying when the deployments pin more GPUs than the
    cluster has (Serve would wait for them forever), and ``ConfigurationError`` when an
    application goes DEPLOY_FAILED or UNHEALTHY (with the failing deployments' messages) or
    is not RUNNING after ``timeout_s``.
    """
    from ray import serve

    data = copy.deepcopy(dict(config))
    http = data.setdefault("http_options", {})
    if http_host is not None:
        http["host"] = http_host
    if http_port is not None:
        http["port"] = http_port
    schema = validate_serve_config(data)
    _check_gpus(schema)
    serve.start(proxy_location=schema.proxy_location,
                http_options=schema.http_options.model_dump(),
                grpc_options=schema.grpc_options.model_dump(),
                controller_options=schema.controller_options)
    _controller_client().deploy_apps(schema, _blocking=False)
    _wait_running([app.name for app in schema.applications], timeout_s, on_status)
    host = schema.http_options.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - a client URL
    return f"http://{f'[{host}]' if ':' in host else host}:{schema.http_options.port}"


def _controller_client() -> Any:
    """The Serve controller client (private Ray API, used only here)."""
    from ray.serve.context import _get_global_client

    return _get_global_client()


def _check_gpus(schema: Any) -> None:
    """``NoGpuError`` when the config's GPU-pinned replicas cannot all be placed."""
    from deployments import gpu_check

    for app in schema.applications:
        if (app.args or {}).get("gpu_check") is False:
            continue
        demand = 0.0
        for d in app.deployments:
            options = d.ray_actor_options
            gpus = float((options.get("num_gpus") if isinstance(options, dict)
                          else getattr(options, "num_gpus", 0)) or 0)
            if gpus:
                demand += gpus * _initial_replicas(d)
        if demand:
            gpu_check.require_gpus(demand, what=f"serve config application {app.name!r}")


def _initial_replicas(deployment: Any) -> int:
    if isinstance(deployment.num_replicas, int):
        return int(deployment.num_replicas)
    autoscaling = deployment.autoscaling_config if isinstance(
        deployment.autoscaling_config, dict) else {}
    return max(1, int(autoscaling.get("initial_replicas") or autoscaling.get("min_replicas", 1)))


def _wait_running(app_names: Sequence[str], timeout_s: float,
                  on_status: Callable[[Mapping[str, Any]], None] | None = None) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        apps = serve.status().applications
        if on_status is not None:
            on_status(apps)
        states: dict[str, Any] = {name: apps.get(name) for name in app_names}
        if all(s is not None and s.status == "RUNNING" for s in states.values()):
            return
        failed = {n: s for n, s in states.items() if s is not None and s.status in _FAILED}
        if failed or time.monotonic() > deadline:
            problems = failed or {n: s for n, s in states.items()
                                  if s is None or s.status != "RUNNING"}
            verdict = "failed" if failed else f"not RUNNING after {timeout_s:g} s"
            raise ConfigurationError(f"Serve deployment {verdict}: " + " | ".join(
                _describe(name, state) for name, state in problems.items()))
        time.sleep(0.2)


def _describe(name: str, state: Any) -> str:
    if state is None:
        return f"application {name!r}: not started"
    parts = [f"application {name!r} {state.status.value}"]
    if state.message:
        parts.append(_last_line(state.message))
    for dname, d in state.deployments.items():
        if d.status != "HEALTHY":
            parts.append(f"deployment {dname} {d.status.value}"
                         + (f": {_last_line(d.message)}" if d.message else ""))
    return "; ".join(parts)


def _last_line(message: str) -> str:
    """What went wrong in a (traceback) message: its last exception line(s), else last line."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    raised = [i for i, line in enumerate(lines) if _RAISED.match(line)]
    if not raised:
        return lines[-1] if lines else ""
    kept = [line for line in lines[raised[-1]:]
            if not line.startswith("For further information")]
    return " ".join(kept)[:600]


def deployment_configs(app_name: str) -> dict[str, dict[str, Any]]:
    """The effective config (``DeploymentSchema`` fields) of each deployment of ``app_name``.

    ``serve.status()`` has only statuses; this reads the controller's details (what
    ``GET /api/serve/applications/`` returns), e.g. the live ``max_ongoing_requests``.
    """
    from ray.serve.schema import ServeInstanceDetails

    details = ServeInstanceDetails(**_controller_client().get_serve_details())
    app = details.applications.get(app_name)
    if app is None:
        return {}
    return {name: d.deployment_config.model_dump(exclude_unset=True)
            for name, d in app.deployments.items()}


__all__ = ["EngineOverrides", "apply_overrides", "deploy_config", "deployment_configs",
           "load_serve_config", "validate_serve_config"]
