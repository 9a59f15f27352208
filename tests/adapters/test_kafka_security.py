"""Security settings reach aiokafka as configured; secrets come from the environment."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from monitor.adapters.kafka import producer_options
from monitor.errors import ConfigError
from monitor.settings import load_settings


def _config(tmp_path: Path, kafka: str) -> Path:
    path = tmp_path / "monitor.toml"
    path.write_text(f'[kafka]\nbootstrap_servers = "kafka-1:9093"\n{kafka}\n')
    return path


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_settings_pass_through_with_password_from_environment(tmp_path, mechanism):
    path = _config(tmp_path, f'security_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "{mechanism}"\nsasl_username = "monitor"')
    settings = load_settings(path, environ={"NEWS_MONITOR_KAFKA_SASL_PASSWORD": "s3cret"})
    options = producer_options(settings.kafka, "kafka-1:9093")
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == mechanism
    assert options["sasl_plain_username"] == "monitor"
    assert options["sasl_plain_password"] == "s3cret"
    assert options["enable_idempotence"] is True and options["acks"] == "all"
    assert "s3cret" not in repr(settings)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_ssl_settings_build_a_verifying_context_with_client_certificate(tmp_path):
    key, cert = tmp_path / "client.key", tmp_path / "client.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=news-monitor-test"],
        check=True, capture_output=True, timeout=60,
    )
    path = _config(
        tmp_path,
        f'security_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "monitor"\n'
        f'ssl_cafile = "{cert}"\nssl_certfile = "{cert}"\nssl_keyfile = "{key}"',
    )
    settings = load_settings(path, environ={"NEWS_MONITOR_KAFKA_SASL_PASSWORD": "pw"})
    options = producer_options(settings.kafka, "kafka-1:9093")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.get_ca_certs()[0]["subject"] == ((("commonName", "news-monitor-test"),),)


def test_missing_certificate_file_is_a_config_error_naming_the_key(tmp_path):
    path = _config(tmp_path, f'security_protocol = "SSL"\nssl_cafile = "{tmp_path / "nope.pem"}"')
    with pytest.raises(ConfigError, match="ssl_cafile"):
        load_settings(path, environ={})


def test_sasl_without_password_is_a_config_error(tmp_path):
    path = _config(tmp_path, 'security_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\nsasl_username = "monitor"')
    with pytest.raises(ConfigError, match=r"sasl_password|NEWS_MONITOR_KAFKA_SASL_PASSWORD"):
        load_settings(path, environ={})


@pytest.mark.parametrize("codec", ["snappy", "lz4", "zstd"])
def test_a_compression_whose_codec_is_missing_is_a_config_error_not_a_traceback(tmp_path, codec):
    # README: compression_type gzip, snappy, lz4, zstd or none. Without cramjam aiokafka raised
    # RuntimeError('Compression library for zstd not found'): a traceback and exit 1 at start.
    from aiokafka.codec import has_snappy

    settings = load_settings(_config(tmp_path, f'compression_type = "{codec}"'), environ={})
    if has_snappy():
        assert producer_options(settings.kafka, "kafka-1:9093")["compression_type"] == codec
        return
    with pytest.raises(ConfigError, match=rf"\[kafka\] compression_type = '{codec}' needs its codec, which is not installed"):
        producer_options(settings.kafka, "kafka-1:9093")
    assert producer_options(load_settings(_config(tmp_path, 'compression_type = "gzip"'), environ={}).kafka, "k:1")["compression_type"] == "gzip"
