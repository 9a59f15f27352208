"""Feed credentials never leave the process: a real ``run --once`` with credentialed feed
urls, every log line and every record it produced scanned for the secrets."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from tests.support import ROOT, SEEDS, LocalServer, alerts_from, read_topic

pytestmark = pytest.mark.integration


class GuardedFeeds(LocalServer):
    """Serves the sample feed only to a client that shows the user-info and the token:
    proof that the real url is still what is fetched."""

    def __init__(self, user: str, password: str, token: str) -> None:
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.token = token
        self.body = (SEEDS / "world-news.rss.xml").read_bytes()
        self.refused = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path != "/feed.rss":
            return web.Response(status=404, text="not found")
        if request.headers.get("Authorization") != self.auth or request.query.get("token") != self.token:
            self.refused += 1
            return web.Response(status=401, text="who are you?")
        return web.Response(body=self.body, content_type="application/rss+xml")


async def _cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", *args,
        cwd=cwd, env={**clean, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_no_secret_reaches_a_log_line_a_record_or_a_command(broker, tmp_path):
    run = uuid.uuid4().hex[:8]
    secrets = {
        "password": f"feedpw{run}",
        "token": f"feedtoken{run}",
        "other_token": f"othertoken{run}",
        "session": f"session{run}",
        "sasl": f"saslpw{run}",
        "ssl": f"sslpw{run}",
    }
    server = await GuardedFeeds("bob", secrets["password"], secrets["token"]).start()
    try:
        good = server.url(f"/feed.rss?token={secrets['token']}&edition=eu").replace("://", f"://bob:{secrets['password']}@")
        # A failing feed: its url appears in errors (the log, the run summary, the status table).
        failing = server.url(f"/missing.rss?api_key={secrets['other_token']}&sess={secrets['session']}")
        config = tmp_path / "monitor.toml"
        config.write_text(
            f"""
[kafka]
connect_timeout = 10
sasl_username = "monitor"
sasl_password = "{secrets['sasl']}"
ssl_password = "{secrets['ssl']}"
[state]
dir = "{tmp_path / 'state'}"
[feeds]
parse_workers = 0
[[feeds.feed]]
url = "{good}"
[[feeds.feed]]
url = "{failing}"
[rules]
paths = ["{ROOT / 'rules'}"]
[log]
level = "debug"
format = "json"
"""
        )
        env = {
            "NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            # Configurable: "sess" is not a default secret name.
            "NEWS_MONITOR_FEEDS_REDACT_PARAMS": "token,api_key,sess",
        }
        code, stdout, stderr = await _cli("run", "--once", "--config", str(config), env=env, cwd=tmp_path)
        assert code == 0, stderr[-3000:]
        assert server.refused == 0, "the real url (user-info and token) is what is fetched"
        assert "3 raised, 3 acknowledged" in stdout and "failed:" in stdout

        lines = stderr.splitlines()
        assert len(lines) > 20, "a debug run logs plenty, the library's lines included"
        assert any(orjson.loads(line)["event"].startswith("lib.aiokafka") for line in lines)
        for line in lines:
            orjson.loads(line)  # every line is one JSON object
            for name, secret in secrets.items():
                assert secret not in line, f"the {name} secret is in a log line: {line[:300]}"
        for name, secret in secrets.items():
            assert secret not in stdout, f"the {name} secret is in the run summary"
        masked_good = server.url("/feed.rss?token=***&edition=eu").replace("://", "://***@")
        assert masked_good in stderr and "sess=***" in stdout

        records = []
        for topic in ("alerts.summit", "alerts.sanctions", "alerts.arms-control", "monitor.feed-health"):
            records += await read_topic(broker.bootstrap_servers, topic, idle=0.5)
        ours = [r for r in records if f"127.0.0.1:{server.port}".encode() in r.value]
        assert len(ours) >= 3
        for record in ours:
            blob = record.value + (record.key or b"") + b"".join(value for _, value in record.headers)
            for name, secret in secrets.items():
                assert secret.encode() not in blob, f"the {name} secret is in a record on {record.topic}"
        alerts = alerts_from([r for r in ours if r.topic.startswith("alerts.")], [masked_good])
        assert len(alerts) == 3
        for record in ours:
            if record.topic.startswith("alerts."):
                assert dict(record.headers)["ce_source"] == masked_good.encode()

        for fmt in ("plain", "json"):
            code, out, err = await _cli("status", "--config", str(config), "--format", fmt, env=env, cwd=tmp_path)
            assert code in (0, 1), err
            assert masked_good in out and "sess=***" in out, "the failing feed's error, masked"
            for name, secret in secrets.items():
                assert secret not in out + err, f"the {name} secret is in `status --format {fmt}`"
    finally:
        await server.stop()


_HOSTILE_LINKS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>t</title><link>{site}</link>
<item><title>EU adopts sanctions on Russia, {run} script</title><link>javascript:alert(document.cookie)</link>
<guid isPermaLink="false">urn:links:{run}:1</guid>
<description>The European Union agreed economic sanctions against Russia.</description></item>
<item><title>EU adopts sanctions on Russia, {run} relative</title><link>edblog/{run}/2</link>
<guid isPermaLink="false">urn:links:{run}:2</guid>
<description>The European Union agreed economic sanctions against Russia.</description></item>
</channel></rss>"""


async def test_only_http_links_are_published_and_file_feeds_have_a_file_uri(broker, feed_server, tmp_path):
    from monitor.worker import Monitor
    from tests.support import make_settings, read_alerts

    run = uuid.uuid4().hex[:8]
    served = feed_server.serve(f"/links-{run}.rss", _HOSTILE_LINKS.format(run=run, site="https://site.example.org/"))
    local = tmp_path / "feeds" / f"links-{run}.rss"
    local.parent.mkdir()
    local.write_text(_HOSTILE_LINKS.format(run=f"{run}f", site="https://blog.example.org/"), encoding="utf-8")
    # Story grouping off: the four items are near-copies of one text on purpose.
    settings = make_settings(tmp_path, broker.bootstrap_servers, [served, str(local)], overrides={"stories": {"enabled": False}})
    monitor = Monitor(settings)
    summary = await monitor.run(once=True, handle_signals=False)
    assert summary.alerts_by_topic["alerts.sanctions"] == 4, "every article matched and alerted, links or not"

    alerts = await read_alerts(broker.bootstrap_servers, [served, local.as_uri()], ["alerts.sanctions"], expect=4)
    urls = {a["article"]["title"].rsplit(", ", 1)[1]: a["article"]["url"] for a in alerts}
    assert urls == {
        f"{run} script": None,
        f"{run} relative": f"{feed_server.url('')}/edblog/{run}/2",
        f"{run}f script": None,
        f"{run}f relative": f"https://blog.example.org/edblog/{run}f/2",
    }
    assert {a["article"]["feed_url"] for a in alerts} == {served, local.as_uri()}
    assert "news_monitor_article_links_dropped_total{reason=\"not_http\"} 2.0" in monitor.observer.metrics.render().decode()
