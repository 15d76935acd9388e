"""Webhooks: subscriptions to the event outbox, and the dispatcher that delivers each event to them, signed."""
