"""What the daemon tells its operators: Prometheus metrics, feed-health events,
readiness, the status snapshot and the latest alerts; and the metrics of the
``news-monitor notify`` process (:mod:`monitor.observe.notify`)."""
