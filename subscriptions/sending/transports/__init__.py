"""Transports in django-anymail's shape: one contract (`base.Transport`), one class per road.

`choose.transport_get()` picks the road for the configured backend:
`smtp.SMTPTransport` (pipelined), `esp.ESPTransport` subclasses (anymail with
merge data), `one_by_one.OneByOneTransport` (any Django backend),
`outbox.OutboxTransport` (.eml files). `config` turns EMAIL_URL into settings
and stays free of Django's mail machinery, since the settings import it.
"""
