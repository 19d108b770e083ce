"""The shopper's click: a signed link checked, the step's discount made, the checkout rebuilt.

``links`` signs and checks the one-click tokens (ids only, never a phone); ``discounts`` decides
and names the step's code; ``rebuild`` records the click and sends the shopper to a checkout the
platform rebuilt with the discount applied (its state crosses the cart lock as typed objects).
"""
