"""What a step's message says (sequences.engine.messages): items, total, image, link, the way to
stop, and an offer only where the cart reaches its minimum."""

from __future__ import annotations

from datetime import timedelta

MIN = timedelta(minutes=1)
H = timedelta(hours=1)


def test_the_message_shows_the_shopper_the_items_total_image_link_and_how_to_stop(journey):
    journey.checkout(prices=("1499.00", "699.00", "849.00"))
    journey.run(15 * MIN)
    message = journey.outbox()[0]
    assert message.body.startswith("Hi Asha, you left Handloom Cotton Kurta and 2 more in your cart")
    assert "Total: ₹3,047.00" in message.body
    assert message.body.endswith("Not interested? Tap Stop promotions.")
    assert message.image_url == "http://localhost/demo-store/images/p0.svg"
    assert message.buttons[0]["url"].startswith("http://localhost/r/")
    assert message.buttons[1]["text"] == "Stop promotions"


def test_a_cart_below_the_offer_minimum_gets_no_discount_line(journey):
    journey.checkout(prices=("399.00",))
    journey.run(15 * MIN)
    journey.run(4 * H)
    assert "Claim" not in journey.outbox()[1].body
