"""musicfn storage layer."""
