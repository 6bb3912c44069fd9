"""The relay: publishes committed PENDING jobs to Kafka or Redis Streams (relay issue)."""
