"""musicfn functions layer."""
