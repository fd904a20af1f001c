"""musicfn: event-driven, serverless-style functions for AI music on Ray Serve."""

__version__ = "0.1.0"
