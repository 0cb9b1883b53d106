"""Editions and how they reach readers.

Dispatch, scheduling, steering, batches, content and transports.
"""
