"""Composition: the one place besides the command line that knows both the core and
the adapters, and builds the components of a run from the settings.

:mod:`monitor.app.daemon`  the single-process daemon (every stage in one process)
:mod:`monitor.app.roles`   the process of ``run --role``: what every role shares, and the Role interface
:mod:`monitor.app.matcher_role`  the matcher role (articles topic in, alerts out)
:mod:`monitor.app.status`  the feed-health table of ``news-monitor status``, from the state store
:mod:`monitor.app.notify`  the ``news-monitor notify`` process (alerts to people)
:mod:`monitor.app.notify`  the ``news-monitor notify`` process (and ``notify --test``)
:mod:`monitor.app.feeds_sync`  ``news-monitor feeds sync``: the feed list onto the feeds topic
:mod:`monitor.app.backtest`  ``news-monitor backtest``: candidate rules over the articles topic
"""
