"""What the daemon tells its operators, fed by the seams of the pipeline and delivery.

:mod:`monitor.observe.observer`   the one place the seams report to; hands each report on
:mod:`monitor.observe.summary`    the run summary: the one count of polls and alerts raised
:mod:`monitor.observe.metrics`    Prometheus metrics (with notify.py, the only users of prometheus_client)
:mod:`monitor.observe.events`     feed-health events, published without blocking a poll
:mod:`monitor.observe.readiness`  whether the daemon can do its job (``/readyz``)
:mod:`monitor.observe.snapshot`   the status page's data and the latest alerts
:mod:`monitor.observe.status`     the feed-health table of ``news-monitor status``
:mod:`monitor.observe.wiring`     what the observers read of the rest, as Protocols
:mod:`monitor.observe.notify`     the metrics of the ``news-monitor notify`` process
"""
