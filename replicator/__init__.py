"""Change-data-capture from Redis into DynamoDB through Kafka.

Stages, in the order data flows: ``capture`` (keyspace notifications → versioned states), ``publish`` (Avro events to
Kafka, keyed by owner), ``apply`` (consumer group → conditional DynamoDB writes), ``snapshot`` (backfill through the
same path). The pure core they share is ``events``, ``mapping`` and ``config``.
"""

__version__ = "0.1.0"
