"""Jobs by dotted name: every name resolves to its entry point, and jobs waiting in Redis
under a name their entry point has left still run after an upgrade."""

from __future__ import annotations

import importlib

import pytest
from rq import Queue
from rq.job import JobStatus
from rq.utils import import_attribute
from sqlmodel import select

from app.worker import CartbackWorker
from demo.store.webhooks import build_delivery
from sequences import queue
from sequences.models import WebhookDelivery
from sequences.runtime import QUEUE_NAME
from tests.support.factories import collect_spooled, make_store


@pytest.mark.parametrize("name", queue.JOB_NAMES)
def test_every_job_name_is_where_its_entry_point_lives(name):
    function = import_attribute(name)
    assert callable(function)
    assert f"{function.__module__}.{function.__qualname__}" == name


@pytest.mark.parametrize(("former", "current"), sorted(queue.FORMER_NAMES.items()))
def test_a_former_name_leads_to_a_current_entry_point_and_is_gone_itself(former, current):
    assert current in queue.JOB_NAMES
    module_name, _, function_name = former.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        return
    # The module is still there (a package that moved on): the function must not be.
    assert not hasattr(module, function_name)


def test_enqueueing_a_name_that_is_no_job_is_refused(runtime):
    with pytest.raises(ValueError, match="unknown job"):
        queue.enqueue(runtime.queue, "sequences.jobs.no_such_job", options=queue.JobOptions("x", "x"))


def _run_one_job_enqueued_as(runtime, name, *args):
    """Enqueue as an older cartback did (a plain rq Queue, the name as it was), run a worker."""
    job = Queue(QUEUE_NAME, connection=runtime.redis).enqueue(name, *args, result_ttl=600)
    CartbackWorker([runtime.queue], connection=runtime.redis).work(burst=True)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED, job.latest_result().exc_string
    return job.return_value()


def test_a_woocommerce_connection_job_enqueued_under_its_old_name_runs(runtime):
    answer = _run_one_job_enqueued_as(runtime, "app.woocommerce_connect.complete_connection_job", 424242)
    # The entry point's own answer for a connection that never received keys.
    assert answer == "not connected: no keys were received for this connection"


def test_a_demo_webhook_job_enqueued_under_its_old_name_runs(runtime):
    store = make_store(runtime)
    delivery = build_delivery(
        store_ref=store.platform_store_id,
        topic="shop/update",
        payload={"name": "Demo Bazaar"},
        secret=runtime.secrets.decrypt(store.webhook_secret_ciphertext),
        app_url=runtime.settings.app_url,
        now=runtime.now(),
    )
    status = _run_one_job_enqueued_as(
        runtime,
        "app.demo_store.webhooks.deliver_webhook",
        delivery.url,
        delivery.headers,
        delivery.body.decode("utf-8"),
    )
    assert status == 200
    collect_spooled(runtime)
    with runtime.database.session() as session:
        received = session.exec(
            select(WebhookDelivery).where(WebhookDelivery.delivery_id == delivery.webhook_id)
        ).all()
    assert len(received) == 1
