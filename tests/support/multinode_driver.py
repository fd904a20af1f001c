"""The multi-node test's Ray driver, run as its own process (the pytest process already has
its session cluster):
``python -m tests.support.multinode_driver wait|deploy|placement ADDRESS ...``.

Settings come from the ``MUSICFN_*`` environment, as in production. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from musicfn.settings import get_settings

#: The custom resources of the layout (docs/multinode.md): the head holds the catalogue.
HEAD_RESOURCE = "head"
GPU_RESOURCE = "gpu_node"
APP = "musicfn"


def _connect(address: str) -> None:
    import ray

    ray.init(address=address, namespace=get_settings().ray_namespace,
             logging_level=logging.ERROR, log_to_driver=False)


def _alive_nodes() -> list[dict[str, Any]]:
    import ray

    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return [n for n in nodes if n["Alive"]]


def wait(address: str, resource: str, present: bool, timeout_s: float) -> dict[str, Any]:
    """Until a live node has ``resource`` (or, with ``present`` False, none has)."""
    _connect(address)
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = _alive_nodes()
        having = [n["NodeID"] for n in nodes if n["Resources"].get(resource)]
        if bool(having) == present:
            return {"alive": len(nodes), "having": having}
        if time.monotonic() > deadline:
            raise TimeoutError(f"{resource} present={present} not reached: {nodes}")
        time.sleep(0.5)


def placement() -> dict[str, Any]:
    """Which node runs the catalogue owner and each deployment's replicas, and which
    nodes have the layout's resources."""
    import ray
    from ray.serve.context import _get_global_client

    from storage.catalogue.actor import find_owner

    settings = get_settings()
    nodes = _alive_nodes()
    owner = find_owner(settings.catalogue_file, settings.ray_namespace)
    owner_node = None if owner is None else ray.get(owner.__ray_call__.remote(
        lambda _self: ray.get_runtime_context().get_node_id()), timeout=60)
    client: Any = _get_global_client()
    details: Any = client.get_serve_details()
    app = details["applications"].get(APP) or {"deployments": {}}
    return {
        "head_nodes": [n["NodeID"] for n in nodes if n["Resources"].get(HEAD_RESOURCE)],
        "gpu_nodes": [n["NodeID"] for n in nodes if n["Resources"].get(GPU_RESOURCE)],
        "owner_node": owner_node,
        "replicas": {name: [r["node_id"] for r in d["replicas"] if r["state"] == "RUNNING"]
                     for name, d in app["deployments"].items()},
    }


def layout_config(path: Path) -> dict[str, Any]:
    """serve_config.yaml as ``musicfn run`` loads it on a CPU box (synth engine), with the
    multi-node layout's placement and what one host running two nodes needs."""
    from deployments.musicgen import DEPLOYMENT_NAME
    from deployments.serve_config import EngineOverrides, load_serve_config

    config = load_serve_config(path, overrides=EngineOverrides(
        engine="synth", device="cpu", cluster_cpus=2.0))
    # Both nodes share this host's ports: one HTTP proxy (on the head), not one per node.
    config["proxy_location"] = "HeadOnly"
    for app in config["applications"]:
        for d in app["deployments"]:
            if d["name"] == DEPLOYMENT_NAME:
                options = d.setdefault("ray_actor_options", {})
                options["resources"] = {GPU_RESOURCE: 0.01}  # as on a GPU worker group
                options["num_cpus"] = 0.5
                d.pop("autoscaling_config", None)
                d["num_replicas"] = 1
                d["graceful_shutdown_timeout_s"] = 5
    return config


def deploy(address: str, config_path: Path, http_port: int) -> dict[str, Any]:
    """Create the catalogue owner pinned to the head, deploy the config, say where
    everything landed."""
    from deployments.serve_config import deploy_config
    from storage.catalogue.actor import catalogue_actor

    _connect(address)
    settings = get_settings()
    # The first creator's options count: the deployments find this owner by name.
    owner = catalogue_actor(settings.catalogue_file, detached=True,
                            checkpoint_mb=settings.catalogue_checkpoint_mb,
                            namespace=settings.ray_namespace, settings=settings,
                            resources={HEAD_RESOURCE: 0.01})
    import ray

    ray.get(owner.rebuild_status.remote(), timeout=120)
    url = deploy_config(layout_config(config_path), http_host="127.0.0.1", http_port=http_port,
                        timeout_s=240)
    return {"url": url, **placement()}


def main() -> None:
    """Run one phase; print its result as one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=["wait", "deploy", "placement"])
    parser.add_argument("address")
    parser.add_argument("--resource", default=GPU_RESOURCE)
    parser.add_argument("--absent", action="store_true")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--config", type=Path, default=Path("serve_config.yaml"))
    parser.add_argument("--http-port", type=int, default=0)
    args = parser.parse_args()
    if args.phase == "wait":
        result = wait(args.address, args.resource, not args.absent, args.timeout)
    elif args.phase == "deploy":
        result = deploy(args.address, args.config, args.http_port)
    else:
        _connect(args.address)
        result = placement()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
