"""Publishing change events to Kafka, keyed by owner so every owner's events stay ordered in one partition."""
