"""Fail fast when an application asks for GPUs that the Ray cluster does not have.

Ray Serve schedules a ``num_gpus: 1`` replica and then waits for a GPU forever, without an
error, on a cluster that has none. musicfn checks the demand against
``ray.cluster_resources()`` before deploying and raises ``NoGpuError`` with the way out.
"""

from __future__ import annotations

from typing import Any

from musicfn.errors import NoGpuError

CPU_HINT = (
    "To run without a GPU use the CPU option: `--device cpu` on the command line or "
    "`device: cpu` in the application args (or the synth engine: `engine: synth`)"
)


def cluster_gpus() -> float:
    """GPUs the connected Ray cluster has in total (0 when none)."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return float(resources.get("GPU", 0.0))


def require_gpus(per_replica: float, *, replicas: int = 1, what: str = "the application") -> None:
    """Raise ``NoGpuError`` unless the cluster has ``per_replica`` × ``replicas`` GPUs.

    A cluster whose GPU nodes only appear through autoscaling reports none here; deploy such a
    cluster with the check disabled (``gpu_check: false`` in the application args).
    """
    if per_replica <= 0:
        return
    needed = per_replica * max(1, replicas)
    available = cluster_gpus()
    if available < needed:
        raise NoGpuError(
            f"{what} asks for {needed:g} GPU(s) but the Ray cluster has {available:g}; "
            f"Ray Serve would wait for them forever. {CPU_HINT}."
        )


def app_gpu_demand(app: Any) -> float:
    """Total GPUs the deployments of a Serve ``Application`` ask for (initial replicas).

    Walks the bound deployment and any applications passed to it as init args.
    """
    seen: set[int] = set()

    def walk(node: Any) -> float:
        deployment = getattr(node, "_bound_deployment", None)
        if deployment is None or id(deployment) in seen:
            return 0.0
        seen.add(id(deployment))
        gpus = float((deployment.ray_actor_options or {}).get("num_gpus", 0) or 0)
        replicas = deployment.num_replicas
        if not isinstance(replicas, int):  # "auto" or None: autoscaling starts at min_replicas
            autoscaling = getattr(deployment, "_deployment_config", None)
            config = getattr(autoscaling, "autoscaling_config", None)
            replicas = int(getattr(config, "min_replicas", 1) or 1) if config else 1
        total = gpus * max(1, replicas)
        config = deployment._replica_config
        for arg in [*config.init_args, *config.init_kwargs.values()]:
            total += walk(arg)
        return total

    return walk(app)


def check_app(app: Any, *, what: str = "the application") -> None:
    """``require_gpus`` for everything ``app`` asks for."""
    require_gpus(app_gpu_demand(app), what=what)
