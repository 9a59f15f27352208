"""What the daemon tells its operators: Prometheus metrics, feed-health events,
readiness, the status snapshot and the latest alerts."""
