"""Encoders turn item media into fixed-size vectors; plain classes, no Kafka."""
