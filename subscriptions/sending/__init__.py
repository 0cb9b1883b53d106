"""Editions and how they reach readers: dispatch, scheduling, steering, batches, content, transports."""
