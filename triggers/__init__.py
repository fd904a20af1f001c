"""Object-store triggers: MinIO webhook events, the incoming/ poller and batch runs."""
