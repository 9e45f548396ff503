"""The recommendation core: plain classes, no Kafka. ``streams/`` adapts them to Faust."""
