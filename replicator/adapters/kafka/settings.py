"""The one place the ``kafka:`` config becomes client settings, for both Kafka clients the replicator uses.

Two clients, measured (bench/): change events are produced with confluent-kafka (librdkafka), whose ``produce``
costs a few µs of Python time where kafka-python's costs about 40 -- at 100k writes/s that is the difference between
a listener that keeps up and one that does not. Everything else (the applier's consumer group, admin calls, the
dead-letter, replay and repair tools: low volume, and code that wants kafka-python's synchronous API) uses
kafka-python, the client the design names. Both get their settings here, so TLS, SASL and MSK IAM are translated once
and tested once: :func:`kafka_python` and :func:`librdkafka` read the same fields and differ only in spelling.

AWS MSK IAM is SASL/OAUTHBEARER with a token that ``aws-msk-iam-sasl-signer-python`` signs from the usual AWS
credential chain (IRSA's web identity in a pod, an instance profile, env vars), optionally after assuming a role.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3
from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
from kafka.net.sasl.oauth import AbstractTokenProvider

from replicator.core.config import KafkaConfig
from replicator.core.errors import ConfigError

#: Refresh an IAM token this long before it expires (they are valid for 15 minutes).
_TOKEN_MARGIN_S = 60.0


class MskIamTokens(AbstractTokenProvider):
    """Signed MSK IAM tokens, cached until shortly before they expire. One instance per client; thread-safe.

    kafka-python calls :meth:`token`; librdkafka calls the instance itself as its ``oauth_cb``.
    """

    def __init__(self, region: str, role_arn: str | None = None) -> None:
        super().__init__()
        self.region, self.role_arn = region, role_arn
        self._lock = threading.Lock()
        self._token, self._expires_at = "", 0.0

    def _signed(self) -> tuple[str, float]:
        with self._lock:
            if time.time() >= self._expires_at - _TOKEN_MARGIN_S:
                if self.role_arn:
                    token, expiry_ms = MSKAuthTokenProvider.generate_auth_token_from_role_arn(self.region,
                                                                                              self.role_arn)
                else:
                    token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(self.region)
                self._token, self._expires_at = token, expiry_ms / 1000
            return self._token, self._expires_at

    def token(self) -> str:
        return self._signed()[0]

    def __call__(self, _oauthbearer_config: str) -> tuple[str, float]:
        """librdkafka's ``oauth_cb``: the token and its expiry in seconds since the epoch."""
        return self._signed()


def iam_region(config: KafkaConfig) -> str:
    """``kafka.aws_region``, else the credential chain's region (AWS_REGION, the profile); ConfigError if neither."""
    if config.aws_region:
        return config.aws_region
    region = boto3.session.Session().region_name
    if not region:
        raise ConfigError("kafka.sasl_mechanism AWS_MSK_IAM needs a region: set kafka.aws_region (or AWS_REGION)")
    return region


def kafka_python(config: KafkaConfig) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaConsumer / KafkaProducer / KafkaAdminClient."""
    settings: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in config.bootstrap_servers.split(",")],
        "client_id": config.client_id,
        "security_protocol": config.security_protocol,
    }
    if config.ssl_ca_file:
        settings["ssl_cafile"] = config.ssl_ca_file
    if config.ssl_cert_file:
        settings["ssl_certfile"] = config.ssl_cert_file
        settings["ssl_keyfile"] = config.ssl_key_file
    if config.ssl_key_password:
        settings["ssl_password"] = config.ssl_key_password.get_secret_value()
    if config.sasl_mechanism == "AWS_MSK_IAM":
        settings["sasl_mechanism"] = "OAUTHBEARER"
        settings["sasl_oauth_token_provider"] = MskIamTokens(iam_region(config), config.aws_role_arn)
    elif config.sasl_mechanism:
        settings["sasl_mechanism"] = config.sasl_mechanism
        settings["sasl_plain_username"] = config.sasl_username
        settings["sasl_plain_password"] = config.sasl_password.get_secret_value() if config.sasl_password else None
    return settings


def librdkafka(config: KafkaConfig) -> dict[str, Any]:
    """The same settings in librdkafka's spelling, for confluent-kafka's Producer."""
    settings: dict[str, Any] = {
        "bootstrap.servers": config.bootstrap_servers,
        "client.id": config.client_id,
        "security.protocol": config.security_protocol.lower(),
    }
    if config.security_protocol in ("SSL", "SASL_SSL"):
        # Without a CA file, the system's CA bundle, as kafka-python does.
        settings["ssl.ca.location"] = config.ssl_ca_file or "probe"
    if config.ssl_cert_file:
        settings["ssl.certificate.location"] = config.ssl_cert_file
        settings["ssl.key.location"] = config.ssl_key_file
    if config.ssl_key_password:
        settings["ssl.key.password"] = config.ssl_key_password.get_secret_value()
    if config.sasl_mechanism == "AWS_MSK_IAM":
        settings["sasl.mechanism"] = "OAUTHBEARER"
        settings["oauth_cb"] = MskIamTokens(iam_region(config), config.aws_role_arn)
    elif config.sasl_mechanism:
        settings["sasl.mechanism"] = config.sasl_mechanism
        settings["sasl.username"] = config.sasl_username
        if config.sasl_password:
            settings["sasl.password"] = config.sasl_password.get_secret_value()
    return settings
