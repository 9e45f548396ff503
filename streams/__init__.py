"""Kafka adapters: the Faust app, event schemas, the local broker, the CLI."""
