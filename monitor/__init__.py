"""news-monitor: a streaming news-alert monitor.

Feeds are polled, their entries parsed and normalised into :class:`~monitor.model.Article`
objects, de-duplicated, matched against operator rules and published as
:class:`~monitor.model.Alert` messages to Kafka topics.
"""

__version__ = "0.1.0"
PRODUCT = "news-monitor"
PRODUCT_URL = "https://github.com/news-monitor/news-monitor"
USER_AGENT = f"{PRODUCT}/{__version__} (+{PRODUCT_URL})"
