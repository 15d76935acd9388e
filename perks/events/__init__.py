"""The event outbox: business events written in the transaction of their change, read in a gap-free order."""
