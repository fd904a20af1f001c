"""The JobRunner's queue-depth autoscaling policy, on contexts built by hand (no Ray cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve._private.common import DeploymentID, ReplicaID
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from deployments.autoscaling import (
    QUEUE_DEPTH_METRIC,
    TARGET_JOBS_PER_RUNNER,
    QueueDepthPolicy,
    queue_depth_policy,
)

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENT = DeploymentID(name="JobRunner", app_name="musicfn")


def replica(n: int) -> ReplicaID:
    return ReplicaID(unique_id=f"r{n}", deployment_id=DEPLOYMENT)


def context(depths: dict[int, float] | None, *, target: int = 2, low: int = 1,
            high: int = 4, other: dict[str, Any] | None = None,
            config: AutoscalingConfig | None = None,
            state: dict[str, Any] | None = None) -> AutoscalingContext:
    """A context as the controller builds it; ``depths`` maps replica number to queue_depth."""
    metrics: dict[str, Any] | None = None
    if depths is not None:
        metrics = {QUEUE_DEPTH_METRIC: {replica(n): v for n, v in depths.items()},
                   **(other or {})}
    running = [replica(n) for n in range(target)]
    return AutoscalingContext(
        deployment_id=DEPLOYMENT, deployment_name=DEPLOYMENT.name, app_name="musicfn",
        current_num_replicas=len(running), target_num_replicas=target,
        running_replicas=running, total_num_requests=0.0, total_queued_requests=0.0,
        aggregated_metrics=metrics, raw_metrics={},
        capacity_adjusted_min_replicas=low, capacity_adjusted_max_replicas=high,
        policy_state=state or {}, last_scale_up_time=None, last_scale_down_time=None,
        current_time=1000.0,
        config=config or AutoscalingConfig(min_replicas=low, max_replicas=high))


@pytest.mark.parametrize("depths", [None, {}])
def test_no_metrics_yet_keeps_the_current_count(depths: dict[int, float] | None) -> None:
    assert queue_depth_policy(context(depths, target=3)) == (3, {})
    # Another metric alone (e.g. a replica that reports only "running") is not a queue depth.
    ctx = context({}, target=3, other={"running": {replica(0): 9.0}})
    assert queue_depth_policy(ctx)[0] == 3


@pytest.mark.parametrize(("depths", "expected"), [
    ({0: 5.0, 1: 5.0}, 2),     # ceil(5 / 4)
    ({0: 8.0, 1: 8.0}, 2),     # exactly two runners' worth
    ({0: 9.0, 1: 12.0}, 3),    # the max over replicas: ceil(12 / 4)
    ({0: 13.0}, 4),
    ({0: 0.0, 1: 0.0}, 1),     # empty queue: down to min_replicas, never 0
    ({0: 500.0, 1: 2.0}, 4),   # capped at max_replicas
])
def test_replicas_follow_the_deepest_reported_queue(depths: dict[int, float],
                                                   expected: int) -> None:
    assert TARGET_JOBS_PER_RUNNER == 4
    assert queue_depth_policy(context(depths, other={"running": {replica(0): 1.0}})) == (
        expected, {})


def test_bounds_are_the_capacity_adjusted_ones() -> None:
    assert queue_depth_policy(context({0: 40.0}, low=1, high=2))[0] == 2
    assert queue_depth_policy(context({0: 0.0}, low=3, high=6))[0] == 3


def test_kwargs_set_the_target() -> None:
    assert QueueDepthPolicy(target_jobs_per_runner=2)(context({0: 5.0}))[0] == 3
    assert QueueDepthPolicy(target_jobs_per_runner=10)(context({0: 5.0}))[0] == 1
    assert QueueDepthPolicy()(context({0: 5.0}))[0] == 2
    for bad in (0, -1, "4", True):
        with pytest.raises(ValueError, match="target_jobs_per_runner"):
            QueueDepthPolicy(target_jobs_per_runner=bad)  # type: ignore[arg-type]


def job_runner_autoscaling() -> dict[str, Any]:
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    (app,) = config["applications"]
    (runner,) = [d for d in app["deployments"] if d["name"] == "JobRunner"]
    autoscaling: dict[str, Any] = runner["autoscaling_config"]
    return autoscaling


def test_serve_config_wires_the_policy_the_way_serve_resolves_it() -> None:
    """Serve 2.60 instantiates a class policy once with policy_kwargs, then calls it."""
    from ray.serve._private.autoscaling_state import _resolve_policy_callable

    config = AutoscalingConfig.model_validate(job_runner_autoscaling())
    assert config.policy.policy_function == "deployments.autoscaling:QueueDepthPolicy"
    policy = _resolve_policy_callable(config.policy)
    assert type(policy).__name__ == "QueueDepthPolicy"
    assert policy.target_jobs_per_runner == 4
    assert policy(context({0: 9.0}))[0] == 3


def test_serve_applies_its_delays_and_bounds_around_the_policy() -> None:
    """Through Serve's own wrapper: scale-up waits upscale_delay_s, no metrics = no change."""
    from ray.serve._private.autoscaling_state import _resolve_policy_callable
    from ray.serve.autoscaling_policy import _apply_autoscaling_config

    settings = {**job_runner_autoscaling(), "upscale_delay_s": 0}
    config = AutoscalingConfig.model_validate(settings)
    wrapped = _apply_autoscaling_config(_resolve_policy_callable(config.policy))
    assert wrapped(context({0: 16.0}, target=1, config=config))[0] == 4
    assert wrapped(context(None, target=2, config=config))[0] == 2

    delayed = AutoscalingConfig.model_validate(job_runner_autoscaling())  # upscale_delay_s 10
    wrapped = _apply_autoscaling_config(_resolve_policy_callable(delayed.policy))
    replicas, state = wrapped(context({0: 16.0}, target=1, config=delayed))
    assert replicas == 1 and state  # the first wish to scale up only starts the delay
