"""A huge feed item is matched off the event loop: the daemon keeps answering meanwhile.

Real parts: the Tansu broker, a local feed server, the daemon's own HTTP endpoint. The
rule set is the real one; its ``match`` is wrapped only to ask for /healthz from inside
the matching of the huge article, with a blocking client: if matching held the event
loop, nothing could answer it.
"""

from __future__ import annotations

import urllib.request

import pytest

from monitor.engine import RuleSet
from monitor.matching import THREAD_MATCH_CHARS
from monitor.worker import Monitor
from tests.observe.test_metrics import ITEM, ONE_ITEM, SANCTIONS, Daemon, _settings, until, value

pytestmark = pytest.mark.integration


async def test_healthz_answers_while_a_huge_article_is_matched(broker, feed_server, tmp_path, monkeypatch):
    url = feed_server.serve("/huge.rss", ONE_ITEM.format(items=""))
    monitor = Monitor(_settings(tmp_path, broker.bootstrap_servers, [url]))
    answers: list[object] = []
    real_match = RuleSet.match

    def match(self: RuleSet, article):
        if len(article.body) + len(article.summary) > THREAD_MATCH_CHARS:
            host, port = monitor.http_address
            no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with no_proxy.open(f"http://{host}:{port}/healthz", timeout=10) as response:
                    answers.append(response.status)
            except OSError as exc:  # the loop never answered: it was busy matching
                answers.append(repr(exc))
        return real_match(self, article)

    monkeypatch.setattr(RuleSet, "match", match)
    huge = " ".join([SANCTIONS] * (4 * THREAD_MATCH_CHARS // len(SANCTIONS)))
    async with Daemon(monitor) as daemon:
        feed_server.serve("/huge.rss", ONE_ITEM.format(items=ITEM.format(title="Sanctions", slug="huge", text=huge)))

        async def alerted() -> bool:
            return value(await daemon.scrape(), "news_monitor_alerts_total", rule="sanctions", topic="alerts.sanctions") == 1

        await until(alerted, timeout=60, what="the huge article's sanctions alert")
        assert answers == [200]
