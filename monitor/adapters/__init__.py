"""Adapters at the edges: they implement the Protocols the core declares.

:mod:`monitor.adapters.http`         feed fetching: aiohttp for http(s), the disk for files
:mod:`monitor.adapters.pages`        article pages, behind the address guard
:mod:`monitor.adapters.kafka`        aiokafka: publisher, topic admin, reader, broker probe
:mod:`monitor.adapters.group`        a consumer-group member for the roles of ``run --role``
:mod:`monitor.adapters.replay`       a topic from a point in time to its end, writing nothing (``backtest``)
:mod:`monitor.adapters.store`        the SQLite state store
:mod:`monitor.adapters.statelock`    one daemon per state directory
:mod:`monitor.adapters.web`          the HTTP endpoint: metrics, probes, status page
:mod:`monitor.adapters.broker`       the embedded Kafka-protocol broker (Tansu)
:mod:`monitor.adapters.filewatch`    the rule files' watcher (watchfiles)
:mod:`monitor.adapters.parser_pool`  the CPU pool: parsing and other CPU work in worker processes
:mod:`monitor.adapters.processes`    child processes that die with the daemon
:mod:`monitor.adapters.notify_apprise`, ``notify_store``, ``notify_web``  the ``notify`` process's sender, store and endpoint

Only modules in this package touch the network, the broker or the disk.
"""
