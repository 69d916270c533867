"""Aggregates' pure rules: how state follows from events, and what a command decides."""
