"""``news-monitor notify``: alerts (and signals) from Kafka to Slack, Teams, email, ntfy and webhooks.

The pure part of the notify consumer: destination config (:mod:`.config`), what a record
is (:mod:`.items`), messages and templates (:mod:`.message`), digests, quiet hours and
rate limits (:mod:`.schedule`) and the service that ties them together with
at-least-once delivery (:mod:`.service`); its metrics are :mod:`monitor.observe.notify`.
No Kafka client, HTTP library, SQLite or Apprise here: the adapters
(``monitor.adapters.notify_*``) implement the service's Protocols, and
:mod:`monitor.app.notify` builds them. docs/notify.md is the manual.
"""
