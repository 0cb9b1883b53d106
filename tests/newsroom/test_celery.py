"""The queue a task came from, whichever road its message took."""

from types import SimpleNamespace

from kombu.transport.native_delayed_delivery import calculate_routing_key

from newsroom.celery import request_queue


def test_the_queue_is_the_routing_key_without_a_delayed_delivery_prefix():
    def request(routing_key):
        return SimpleNamespace(delivery_info={"routing_key": routing_key})

    assert request_queue(request("alerts")) == "alerts"
    # RabbitMQ, a countdown: the message went through the delay exchanges.
    assert request_queue(request(calculate_routing_key(600, "bench-1a2b-alerts"))) == (
        "bench-1a2b-alerts")
    assert request_queue(request("0.1.alerts")) == "0.1.alerts"  # a name, not a prefix
    assert request_queue(SimpleNamespace(delivery_info=None)) is None  # run eagerly
