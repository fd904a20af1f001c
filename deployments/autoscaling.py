"""Custom Serve autoscaling for the job runners: scale on the catalogue's queue depth.

Job runners pull work from the catalogue (decision 9), so Serve sees almost no ongoing requests
on them and its default request-based policy would never scale them. Instead every runner
replica reports the catalogue's queue depth through Serve's custom-metrics hook, and this policy
turns that into a replica count.

Ray 2.60 wiring (``ray.serve.config.AutoscalingPolicy`` / ``AutoscalingContext``):

* A replica reports custom metrics by defining a method named exactly
  ``record_autoscaling_stats(self) -> dict[str, int | float]`` (sync or ``async``; no
  arguments). Serve calls it every ``min(metrics_interval_s, look_back_period_s × factor)``
  seconds, with a 10 s timeout (``RAY_SERVE_RECORD_AUTOSCALING_STATS_TIMEOUT_S``), only when the
  deployment has an ``autoscaling_config``. If its first result is not a dict of str to int/float
  Serve logs an error and disables custom metrics for that replica for good.
* The controller aggregates each metric per replica over ``look_back_period_s`` with the
  deployment's ``aggregation_function`` (default ``mean``) and hands them to the policy as
  ``ctx.aggregated_metrics[name][replica_id]``.
* ``autoscaling_config.policy.policy_function`` names the policy
  (``"module:attr"``). ``policy_kwargs`` are passed **only** when that attr is a class (Serve
  instantiates it once with them and calls the instance each tick); a plain function gets none.
  Hence ``QueueDepthPolicy`` (takes the kwargs) next to ``queue_depth_policy`` (the function).
* A policy returns ``(replicas, policy_state)``. Serve then applies upscale/downscale delays,
  up/downscaling factors and the min/max bounds itself.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.serve.config import AutoscalingContext

#: Name of the custom metric the JobRunner replicas report: jobs pending + running across the
#: whole catalogue (the same value from every replica).
QUEUE_DEPTH_METRIC = "queue_depth"
#: Default queue depth one runner replica should handle.
TARGET_JOBS_PER_RUNNER = 4.0


def queue_depth_policy(
    ctx: AutoscalingContext, target_jobs_per_runner: float = TARGET_JOBS_PER_RUNNER
) -> tuple[int, dict[str, Any]]:
    """Replicas for the reported queue depth: ``ceil(max depth / target)``, within the bounds.

    ``ctx`` is a ``ray.serve.config.AutoscalingContext``. The replicas must report the metric
    ``queue_depth`` (``QUEUE_DEPTH_METRIC``) from ``record_autoscaling_stats``: the number of
    jobs pending or running across the whole catalogue, a float or int. Other reported metrics
    (e.g. ``running``, the jobs running in that replica) are ignored here.

    The desired count is ``clamp(ceil(max over replicas of queue_depth / target_jobs_per_runner),
    min, max)`` with the capacity-adjusted ``min_replicas`` / ``max_replicas``. The maximum over
    replicas is used because every replica reports the same catalogue-wide value, at slightly
    different times. While no replica has reported yet (start-up, replicas replaced) the
    current target count is kept. Returns ``(replicas, {})``: the policy keeps no state.
    """
    if not target_jobs_per_runner > 0:
        raise ValueError(f"target_jobs_per_runner must be > 0, got {target_jobs_per_runner!r}")
    metrics = ctx.aggregated_metrics or {}
    depths = [float(v) for v in (metrics.get(QUEUE_DEPTH_METRIC) or {}).values()
              if v is not None and not math.isnan(float(v))]
    if not depths:
        return int(ctx.target_num_replicas), {}
    desired = math.ceil(max(depths) / target_jobs_per_runner)
    low = int(ctx.capacity_adjusted_min_replicas)
    high = max(low, int(ctx.capacity_adjusted_max_replicas))
    return min(max(desired, low), high), {}


class QueueDepthPolicy:
    """``queue_depth_policy`` with its target from ``policy_kwargs``.

    Reference it in a Serve config as::

        autoscaling_config:
          policy:
            policy_function: deployments.autoscaling:QueueDepthPolicy
            policy_kwargs: {target_jobs_per_runner: 4}
    """

    def __init__(self, target_jobs_per_runner: float = TARGET_JOBS_PER_RUNNER) -> None:
        if isinstance(target_jobs_per_runner, bool) or not isinstance(
                target_jobs_per_runner, int | float) or not target_jobs_per_runner > 0:
            raise ValueError("policy_kwargs.target_jobs_per_runner must be a number > 0, got "
                             f"{target_jobs_per_runner!r}")
        self.target_jobs_per_runner = float(target_jobs_per_runner)

    def __call__(self, ctx: AutoscalingContext) -> tuple[int, dict[str, Any]]:
        """One autoscaling decision (called by the Serve controller every control-loop tick)."""
        return queue_depth_policy(ctx, self.target_jobs_per_runner)


__all__ = ["QUEUE_DEPTH_METRIC", "TARGET_JOBS_PER_RUNNER", "QueueDepthPolicy",
           "queue_depth_policy"]
