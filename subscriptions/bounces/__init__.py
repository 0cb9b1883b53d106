"""Bounces without an ESP: mail that comes back to our VERP address
(sending/verp.py) is read (parse.py), applied to its reader by the ESP webhooks'
service (process.py), and received by SMTP (server.py, `manage.py bounce_server`).
"""
