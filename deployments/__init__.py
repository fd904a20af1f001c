"""musicfn deployments layer."""
