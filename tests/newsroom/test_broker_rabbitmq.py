"""The Operations page, /readyz, /metrics and the canary on a real RabbitMQ broker.

Run with CELERY_BROKER_URL pointing at a vhost of their own (.ci/run does):

    CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/newsroom-ci \\
        .venv/bin/python -m pytest tests/newsroom/test_broker_rabbitmq.py -m rabbitmq

Without it, or with RabbitMQ down, every test here is skipped and says why.
"""

import re
import time
import uuid
from urllib.parse import urlsplit

import pytest
from amqp.exceptions import PreconditionFailed
from django.conf import settings as django_settings
from kombu import Exchange, Queue
from prometheus_client.parser import text_string_to_metric_families

from newsroom.celery import app
from newsroom.ops import broker, canary, samples
from newsroom.ops.tasks import ops_sample
from tests.newsroom.test_ops_page import OPS_URL, _staff
from tests.settings_helpers import free_port

pytestmark = pytest.mark.rabbitmq
TOKEN = "metrics-token-for-tests-0123456789"
BEARER = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True, scope="module")
def rabbitmq():
    if django_settings.BROKER_KIND != "rabbitmq":
        pytest.skip("the broker is not RabbitMQ: set CELERY_BROKER_URL=amqp://user:pw@host/vhost "
                    "(a vhost of its own) to run these; .ci/run does")
    where = urlsplit(django_settings.CELERY_BROKER_URL)
    try:
        broker.broker_ping(2)
    except Exception as exc:
        pytest.skip(f"RabbitMQ at {where.hostname}:{where.port or 5672} (CELERY_BROKER_URL) "
                    f"does not answer: {type(exc).__name__}: {exc}")


@pytest.fixture
def quorum_queue(settings):
    """A quorum queue of our own, known to the page and /metrics, deleted afterwards."""
    name = f"rabbit-test-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, type="topic"), routing_key=name,
                  queue_arguments={"x-queue-type": "quorum"})
    settings.CELERY_TASK_ROUTES = {**settings.CELERY_TASK_ROUTES, "ops.test": {"queue": name}}
    yield queue
    with app.connection_for_write() as conn:
        queue.bind(conn.default_channel).delete()
        queue.exchange.bind(conn.default_channel).delete()


def publish(queue: Queue, count: int) -> None:
    for _ in range(count):
        app.send_task("ops.test", queue=queue)  # declares it, waits for the confirm


@pytest.fixture
def token(settings):
    settings.NEWSROOM_METRICS_TOKEN = TOKEN


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **BEARER)
    assert response.status_code == 200, response.content
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_the_amqp_reader_is_chosen_from_the_url():
    assert isinstance(broker.current(), broker.AmqpBroker)


def test_depth_and_consumers_come_from_a_passive_declare(quorum_queue):
    publish(quorum_queue, 3)
    missing = f"rabbit-test-never-declared-{uuid.uuid4().hex[:8]}"
    stats = broker.queue_stats([quorum_queue.name, missing, quorum_queue.name])
    assert [(s.name, s.depth, s.consumers, s.oldest_age) for s in stats] == [
        (quorum_queue.name, 3, 0, None),
        (missing, 0, 0, None),  # not declared: nothing waits there, and no error
        (quorum_queue.name, 3, 0, None),  # the channel the 404 closed was replaced
    ]
    assert broker.unacked_count() is None  # AMQP cannot tell without the management API


@pytest.mark.django_db
def test_the_operations_page_shows_depth_and_says_what_it_cannot_know(client, quorum_queue):
    client.force_login(_staff("oncall", "newsroom.view_operations",
                              "subscriptions.view_edition"))
    publish(quorum_queue, 2)
    response = client.get(OPS_URL)
    assert response.status_code == 200
    [row] = [q for q in response.context["queues"] if q.name == quorum_queue.name]
    assert (row.depth, row.oldest) == (2, "unknown")
    page = response.content.decode()
    assert re.search(rf'<th scope="row">{quorum_queue.name}</th><td class="num">2</td>'
                     r"<td>unknown</td>", page)
    assert '<td class="num" id="ops-unacked">unknown</td>' in page
    assert "The broker did not answer" not in page


@pytest.mark.django_db
def test_metrics_reads_depth_and_consumers_and_leaves_out_the_unknown(client, token,
                                                                      quorum_queue):
    publish(quorum_queue, 4)
    samples_ = scrape(client)
    assert samples_[("newsroom_scrape_section_ok", (("section", "queues"),))] == 1
    labels = (("queue", quorum_queue.name),)
    assert samples_[("newsroom_queue_depth", labels)] == 4
    assert samples_[("newsroom_queue_consumers", labels)] == 0
    assert ("newsroom_queue_oldest_age_seconds", labels) not in samples_  # unknown, not 0
    assert ("newsroom_queue_unacked", ()) not in samples_


@pytest.mark.django_db
def test_readyz_reaches_rabbitmq_and_fails_promptly_when_it_is_gone(client, token, settings):
    assert client.get("/readyz", **BEARER).json()["checks"]["broker"]["ok"] is True

    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    started = time.monotonic()
    response = client.get("/readyz", **BEARER)
    assert response.status_code == 503 and response.json()["failed"] == ["broker"]
    assert time.monotonic() - started < 2 * settings.NEWSROOM_HEALTH_TIMEOUT + 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_on_rabbitmq_drains_every_quorum_queue(celery_worker, client):
    """The canary from every routed queue completes (one of them after a countdown,
    through the broker's delayed delivery), the queues are quorum queues, and the
    sampler run by the worker feeds the page."""
    started = time.time()
    for queue in broker.known_queues():
        canary.canary.apply_async(queue=queue)
    canary.canary.apply_async(queue=django_settings.CELERY_TASK_DEFAULT_QUEUE, countdown=3)
    ops_sample.apply_async()
    deadline = time.monotonic() + 60
    while True:
        states = canary.canary_states()
        fresh = {q for q, state in states.items() if state.completed_at >= started}
        delayed = states.get(django_settings.CELERY_TASK_DEFAULT_QUEUE)
        if (fresh >= set(broker.known_queues()) and delayed and delayed.waited is not None
                and delayed.waited >= 3 and samples.history()):
            break
        assert time.monotonic() < deadline, (
            f"canaries {sorted(fresh)}, default waited {delayed and delayed.waited}; "
            f"see {celery_worker.log_path}")
        time.sleep(0.2)

    with app.connection_for_write() as conn:
        for name in broker.known_queues():
            _, _, consumers = conn.default_channel.queue_declare(name, passive=True)
            assert consumers >= 1, name
            with pytest.raises(PreconditionFailed, match="x-queue-type"):
                conn.channel().queue_declare(name, durable=True, auto_delete=False,
                                             arguments={"x-queue-type": "classic"})

    [sample] = samples.history()[-1:]
    assert sample.unacked is None and set(broker.known_queues()) <= set(sample.depth)
    client.force_login(_staff("oncall", "newsroom.view_operations"))
    assert celery_worker.name in client.get(OPS_URL).content.decode()


def test_a_command_that_enqueues_refuses_while_rabbitmq_is_down(settings):
    from newsroom.ops.management.redis_reachable import redis_unreachable

    assert redis_unreachable() is None
    port = free_port()
    settings.CELERY_BROKER_URL = f"amqp://guest:secret@127.0.0.1:{port}//"
    problem = redis_unreachable()
    assert problem and f"RabbitMQ at 127.0.0.1:{port}" in problem and "secret" not in problem
