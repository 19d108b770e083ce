"""The companion WooCommerce plugin (PHP) against the Python side that reads what it sends.

The PHP runs in php-cli subprocesses: the signing functions on their own, and the plugin's
classes over a small stand-in for WordPress and WooCommerce. Skipped when php is missing
(``make test`` installs it).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.base import CartSnapshot, ConsentSource
from connectors.woocommerce.connector import WooCommerceConnector, pay_link_token
from connectors.woocommerce.payloads import META_CART_ID, META_OPT_IN

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "connectors" / "woocommerce" / "plugin" / "cartback-for-woocommerce"
SIGNING = PLUGIN / "includes" / "cartback-signing.php"
PHP = shutil.which("php")
SECRET = "s3cr3t-token_urlsafe-XYZ"
SITE = "https://shop.example/"

requires_php = pytest.mark.skipif(
    PHP is None, reason="php-cli is not installed (`make test` installs it; or apt-get install php-cli)"
)

connector = WooCommerceConnector()


def run_php(tmp_path: Path, script: str, given: Any = None) -> Any:
    """Run a PHP script (``given`` as JSON on stdin) and return the JSON it prints."""
    path = tmp_path / "script.php"
    path.write_text(script)
    assert PHP is not None
    completed = subprocess.run(
        [PHP, "-d", "error_reporting=-1", "-d", "display_errors=stderr", str(path), str(PLUGIN)],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0 and not completed.stderr, completed.stderr or completed.stdout
    return json.loads(completed.stdout)


def delivery(sent: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return base64.b64decode(sent["body_b64"]), sent["headers"]


def verified_event(body: bytes, headers: dict[str, str]) -> Any:
    assert connector.verify_webhook(body, headers, SECRET)
    identity = connector.webhook_identity(headers)
    assert identity.store_ref == "https://shop.example"
    return connector.parse_webhook(identity, body, default_region="IN")


# -- the files ---------------------------------------------------------------------------


def php_files() -> list[Path]:
    return sorted(PLUGIN.rglob("*.php"))


@requires_php
@pytest.mark.parametrize("path", php_files(), ids=lambda path: str(path.relative_to(PLUGIN)))
def test_every_php_file_parses(path: Path):
    assert PHP is not None
    completed = subprocess.run([PHP, "-l", str(path)], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_every_php_file_refuses_to_run_outside_wordpress():
    for path in php_files():
        assert "defined( 'ABSPATH' ) || exit;" in path.read_text(), path


def test_the_plugin_header_and_readme_agree():
    main = (PLUGIN / "cartback-for-woocommerce.php").read_text()
    header = dict(re.findall(r"^ \* ([A-Za-z ]+):\s+(.+)$", main, re.MULTILINE))
    assert header["Plugin Name"] == "cartback for WooCommerce"
    assert header["Version"] == "1.0.0"
    assert (header["Requires at least"], header["Requires PHP"]) == ("6.3", "7.4")
    assert (header["WC requires at least"], header["WC tested up to"].split(".")[0]) == ("8.9", "9")
    assert (header["License"], header["Text Domain"]) == ("GPLv2 or later", "cartback")
    assert "define( 'CARTBACK_VERSION', '1.0.0' );" in main
    assert "Stable tag: 1.0.0" in (PLUGIN / "readme.txt").read_text()
    assert (PLUGIN / "assets" / "cartback-checkout.js").is_file()


# -- the contract: signing.php alone -------------------------------------------------------

SIGNING_PRELUDE = r"""<?php
define( 'ABSPATH', __DIR__ . '/' );
require $argv[1] . '/includes/cartback-signing.php';
$given = json_decode( stream_get_contents( STDIN ), true );
function signed( $topic, $payload, $secret ) {
	$request = cartback_signed_request( $topic, $payload, $secret, 'https://shop.example/', 'b2f6c9d4-1a7e-4c3b-9f55-0d2e8a6b7c10' );
	return array( 'body_b64' => base64_encode( $request['body'] ), 'headers' => $request['headers'] );
}
"""

# A phone-only shopper's cart as Cartback_Capture::describe() builds it: prices are floats from
# the cart, one line is a variation.
CART_UPDATED_SCRIPT = (
    SIGNING_PRELUDE
    + r"""
$cart = array(
	'cart_id'        => 'c3b1f0a2e4d54f7e9a0b1c2d3e4f5a6b',
	'currency'       => 'INR',
	'decimals'       => 2,
	'subtotal'       => 2597.5,
	'total'          => 2647.5,
	'items'          => array(
		array(
			'product_id'   => 12,
			'variation_id' => 34,
			'name'         => 'Block-print kurta',
			'variation'    => 'Size: M',
			'quantity'     => 2,
			'price'        => 1049.0,
			'image'        => 'https://shop.example/wp-content/uploads/kurta.jpg',
		),
		array(
			'product_id'   => '20',
			'variation_id' => 0,
			'name'         => 'Bandhani dupatta — लाल',
			'variation'    => '',
			'quantity'     => 1,
			'price'        => 499.5,
			'image'        => '',
		),
	),
	'customer'       => array( 'email' => '', 'phone' => '98765 43210', 'first_name' => 'Priya', 'country' => 'IN', 'customer_id' => 0 ),
	'whatsapp_optin' => true,
	'optin_text'     => 'Send me reminders and offers from Bazaar & Co on WhatsApp',
	'checkout'       => 'classic',
	'checkout_url'   => 'https://shop.example/checkout/',
);
$payload = cartback_cart_updated_payload( $cart, $given['seconds'], $given['microseconds'] );
$later   = cartback_cart_updated_payload( $cart, $given['seconds'] + 60, 0 );
$cart['customer']['phone'] = '98765 43211';
$other   = cartback_cart_updated_payload( $cart, $given['seconds'], $given['microseconds'] );
echo json_encode(
	array(
		'updated'         => signed( 'cart.updated', $payload, $given['secret'] ),
		'emptied'         => signed( 'cart.emptied', cartback_cart_emptied_payload( $cart['cart_id'], 'inr', $given['seconds'], 7 ), $given['secret'] ),
		'same_when_later' => cartback_content_hash( $payload ) === cartback_content_hash( $later ),
		'same_when_phone' => cartback_content_hash( $payload ) === cartback_content_hash( $other ),
		'new_cart_id'     => cartback_new_cart_id(),
	)
);
"""
)

CUSTOMER_KEYS = [
    "email",
    "phone",
    "first_name",
    "last_name",
    "company",
    "address_1",
    "address_2",
    "city",
    "state",
    "postcode",
    "country",
    "customer_id",
]


@pytest.fixture
def signed_carts(tmp_path: Path) -> dict[str, Any]:
    return run_php(
        tmp_path, CART_UPDATED_SCRIPT, {"secret": SECRET, "seconds": 1_795_856_400, "microseconds": 123_456}
    )


@requires_php
def test_a_cart_updated_is_signed_like_woocommerce_and_read_as_the_shoppers_cart(signed_carts):
    body, headers = delivery(signed_carts["updated"])

    assert headers == {
        "Content-Type": "application/json",
        "X-WC-Webhook-Source": SITE,
        "X-WC-Webhook-Topic": "cart.updated",
        "X-WC-Webhook-Resource": "cart",
        "X-WC-Webhook-Event": "updated",
        "X-WC-Webhook-ID": "0",
        "X-WC-Webhook-Delivery-ID": "b2f6c9d4-1a7e-4c3b-9f55-0d2e8a6b7c10",
        "X-WC-Webhook-Signature": headers["X-WC-Webhook-Signature"],
    }
    assert not connector.is_ping(body, headers)
    snapshot = verified_event(body, headers)

    assert isinstance(snapshot, CartSnapshot)
    assert snapshot.cart_id == "c3b1f0a2e4d54f7e9a0b1c2d3e4f5a6b"
    assert snapshot.updated_at == datetime(2026, 11, 28, 9, 0, 0, 123_456, tzinfo=UTC)
    assert (snapshot.currency, snapshot.subtotal, snapshot.total) == (
        "INR",
        Decimal("2597.50"),
        Decimal("2647.50"),
    )
    kurta, dupatta = snapshot.lines
    assert (kurta.title, kurta.variant_title, kurta.quantity, kurta.unit_price) == (
        "Block-print kurta",
        "Size: M",
        2,
        Decimal("1049.00"),
    )
    assert (kurta.product_id, kurta.variant_id) == ("12", "34")
    assert kurta.image_url == "https://shop.example/wp-content/uploads/kurta.jpg"
    assert (dupatta.title, dupatta.unit_price, dupatta.product_id, dupatta.variant_id) == (
        "Bandhani dupatta — लाल",
        Decimal("499.50"),
        "20",
        "20",
    )
    assert (dupatta.variant_title, dupatta.image_url) == (None, None)
    buyer = snapshot.buyer
    assert (buyer.phone_e164, buyer.email, buyer.first_name) == ("+919876543210", None, "Priya")
    assert buyer.marketing_consent and buyer.consent_source == ConsentSource.CHECKOUT_CHECKBOX
    assert snapshot.checkout_url == "https://shop.example/checkout/"
    assert snapshot.billing["phone"] == "98765 43210" and snapshot.billing["country"] == "IN"


@requires_php
def test_the_cart_updated_body_has_the_documented_shape(signed_carts):
    body, _ = delivery(signed_carts["updated"])
    payload = json.loads(body)

    assert list(payload) == [
        "cart_id",
        "updated_at_gmt",
        "currency",
        "subtotal",
        "total",
        "items",
        "customer",
        "whatsapp_optin",
        "optin_text",
        "checkout",
        "checkout_url",
    ]
    assert payload["updated_at_gmt"] == "2026-11-28T09:00:00.123456"
    assert [list(item) for item in payload["items"]] == [
        ["product_id", "variation_id", "name", "variation", "quantity", "price", "image"]
    ] * 2
    assert payload["items"][1]["product_id"] == 20 and payload["items"][1]["price"] == "499.50"
    assert list(payload["customer"]) == CUSTOMER_KEYS and payload["customer"]["customer_id"] == 0
    assert payload["optin_text"] == "Send me reminders and offers from Bazaar & Co on WhatsApp"
    # Compact, slashes and Unicode as they are (the signature covers these exact bytes).
    assert b"\\/" not in body and "लाल".encode() in body
    assert b'": ' not in body and b'", "' not in body


@requires_php
def test_a_cart_updated_signed_with_another_secret_or_changed_is_refused(signed_carts):
    body, headers = delivery(signed_carts["updated"])

    assert not connector.verify_webhook(body, headers, "another-secret")
    assert not connector.verify_webhook(body.replace(b"2647.50", b"2.50"), headers, SECRET)


@requires_php
def test_a_cart_emptied_stops_the_same_cart(signed_carts):
    body, headers = delivery(signed_carts["emptied"])

    assert headers["X-WC-Webhook-Topic"] == "cart.emptied" and headers["X-WC-Webhook-Event"] == "emptied"
    assert json.loads(body) == {
        "cart_id": "c3b1f0a2e4d54f7e9a0b1c2d3e4f5a6b",
        "updated_at_gmt": "2026-11-28T09:00:00.000007",
        "currency": "INR",
    }
    snapshot = verified_event(body, headers)
    assert isinstance(snapshot, CartSnapshot)
    assert snapshot.cart_id == "c3b1f0a2e4d54f7e9a0b1c2d3e4f5a6b" and snapshot.lines == ()


@requires_php
def test_only_a_change_in_what_the_cart_says_makes_a_new_send(signed_carts):
    assert signed_carts["same_when_later"] is True
    assert signed_carts["same_when_phone"] is False
    assert re.fullmatch(r"[0-9a-f]{32}", signed_carts["new_cart_id"])


# -- the order-pay token -------------------------------------------------------------------

PAY_TOKEN_SCRIPT = (
    SIGNING_PRELUDE
    + r"""
$results = array();
foreach ( $given as $case ) {
	$results[] = cartback_verify_pay_token( $case['token'], $case['order_id'], $case['order_key'], $case['secret'], $case['now'] );
}
echo json_encode( $results );
"""
)


@requires_php
def test_the_plugin_accepts_only_cartbacks_unexpired_pay_links_for_that_order(tmp_path: Path):
    expires = 1_796_000_000
    token = pay_link_token(SECRET, "727", "wc_order_Ab12Cd34", expires)
    signature = token.split(".", 1)[1]
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    good = {"token": token, "order_id": "727", "order_key": "wc_order_Ab12Cd34", "secret": SECRET}
    cases = {
        "valid": (good | {"now": expires - 3600}, True),
        "valid to the second it expires": (good | {"now": expires}, True),
        "the order id as an integer": (good | {"order_id": 727, "now": expires - 1}, True),
        "expired": (good | {"now": expires + 1}, False),
        "tampered signature": (good | {"token": f"{expires}.{flipped}", "now": expires - 1}, False),
        "extended expiry": (good | {"token": f"{expires + 86400}.{signature}", "now": expires - 1}, False),
        "wrong order key": (good | {"order_key": "wc_order_Zz99", "now": expires - 1}, False),
        "another order": (good | {"order_id": "728", "now": expires - 1}, False),
        "another store's secret": (good | {"secret": "not-this-store", "now": expires - 1}, False),
        "no secret configured": (good | {"secret": "", "now": expires - 1}, False),
        "empty": (good | {"token": "", "now": 0}, False),
        "no dot": (good | {"token": signature, "now": 0}, False),
        "no signature": (good | {"token": f"{expires}.", "now": 0}, False),
        "no expiry": (good | {"token": f".{signature}", "now": 0}, False),
        "expiry not a number": (good | {"token": f"{expires}x.{signature}", "now": 0}, False),
        "extra part": (good | {"token": f"{token}.x", "now": 0}, False),
    }

    results = run_php(tmp_path, PAY_TOKEN_SCRIPT, [case for case, _ in cases.values()])

    assert dict(zip(cases, results, strict=True)) == {name: expected for name, (_, expected) in cases.items()}


# -- the plugin's hooks, over a stand-in for WordPress and WooCommerce -------------------------

# Just enough WordPress and WooCommerce for the plugin's classes: hooks run in the order they
# were added, options, a session, a cart, orders, and wp_remote_post recording what is sent.
STAND_IN = r"""<?php
define( 'ABSPATH', __DIR__ . '/' );
$given  = json_decode( stream_get_contents( STDIN ), true );
$hooks  = array();
$sent   = array();
$fields = array();
$query  = array();
$options = array( 'cartback_endpoint' => 'https://cartback.example/webhooks/woocommerce', 'cartback_secret' => $given['secret'] );

function add_action( $hook, $callback, $priority = 10, $accepted = 1 ) {
	$GLOBALS['hooks'][ $hook ][ $priority ][] = array( $callback, $accepted );
	ksort( $GLOBALS['hooks'][ $hook ] );
	return true;
}
function add_filter( $hook, $callback, $priority = 10, $accepted = 1 ) {
	return add_action( $hook, $callback, $priority, $accepted );
}
function apply_filters( $hook, $value, ...$args ) {
	foreach ( $GLOBALS['hooks'][ $hook ] ?? array() as $callbacks ) {
		foreach ( $callbacks as list( $callback, $accepted ) ) {
			$value = call_user_func_array( $callback, array_slice( array_merge( array( $value ), $args ), 0, $accepted ) );
		}
	}
	return $value;
}
function do_action( $hook, ...$args ) {
	foreach ( $GLOBALS['hooks'][ $hook ] ?? array() as $callbacks ) {
		foreach ( $callbacks as list( $callback, $accepted ) ) {
			call_user_func_array( $callback, array_slice( $args, 0, $accepted ) );
		}
	}
}
function __( $text ) { return $text; }
function esc_html( $text ) { return htmlspecialchars( $text, ENT_QUOTES ); }
function wp_specialchars_decode( $text ) { return htmlspecialchars_decode( $text, ENT_QUOTES ); }
function get_bloginfo( $what ) { return 'Bazaar &amp; Co'; }
function get_option( $name, $default = false ) { return $GLOBALS['options'][ $name ] ?? $default; }
function esc_url_raw( $url ) { return $url; }
function home_url( $path ) { return 'https://shop.example' . $path; }
function wp_generate_uuid4() { return 'b2f6c9d4-1a7e-4c3b-9f55-0d2e8a6b7c10'; }
function wp_remote_post( $url, $args ) { $GLOBALS['sent'][] = array( 'url' => $url, 'body_b64' => base64_encode( $args['body'] ), 'headers' => $args['headers'], 'blocking' => $args['blocking'] ); }
function wc_clean( $value ) { return is_string( $value ) ? trim( strip_tags( $value ) ) : $value; }
function sanitize_email( $value ) { return trim( $value ); }
function sanitize_text_field( $value ) { return trim( strip_tags( $value ) ); }
function wp_unslash( $value ) { return $value; }
function absint( $value ) { return abs( (int) $value ); }
function wp_strip_all_tags( $text ) { return strip_tags( $text ); }
function get_woocommerce_currency() { return 'INR'; }
function wc_get_price_decimals() { return 2; }
function wc_get_checkout_url() { return 'https://shop.example/checkout/'; }
function get_current_user_id() { return 0; }
function wp_get_attachment_image_url( $id ) { return $id ? "https://shop.example/wp-content/uploads/$id.jpg" : false; }
function taxonomy_exists( $taxonomy ) { return 'pa_size' === $taxonomy; }
function get_term_by( $field, $slug, $taxonomy ) { return (object) array( 'name' => strtoupper( $slug ) ); }
function wc_attribute_label( $name ) { return 'pa_size' === $name ? 'Size' : ucfirst( $name ); }
function is_wc_endpoint_url( $endpoint ) { return isset( $GLOBALS['query'][ $endpoint ] ); }
function get_query_var( $name ) { return $GLOBALS['query'][ $name ] ?? ''; }
function wc_get_order( $id ) { return $GLOBALS['orders'][ $id ] ?? false; }
function woocommerce_register_additional_checkout_field( $field ) { $GLOBALS['fields'][] = $field; }
function wc_format_coupon_code( $code ) { return strtolower( trim( $code ) ); }

class WooCommerce {}
class WC_Product {
	public $title, $image;
	function __construct( $title, $image = 0 ) { $this->title = $title; $this->image = $image; }
	function get_title() { return $this->title; }
	function get_image_id() { return $this->image; }
}
class WC_Order {
	public $id, $key, $meta = array(), $saved = 0;
	function __construct( $id, $key ) { $this->id = $id; $this->key = $key; }
	function get_id() { return $this->id; }
	function get_order_key() { return $this->key; }
	function get_meta( $key ) { return $this->meta[ $key ] ?? ''; }
	function update_meta_data( $key, $value ) { $this->meta[ $key ] = $value; }
	function save_meta_data() { $this->saved++; }
}
class WC_Session_Handler {
	public $data = array(), $cookie = false;
	function get( $key, $default = null ) { return $this->data[ $key ] ?? $default; }
	function set( $key, $value ) { $this->data[ $key ] = $value; }
	function has_session() { return $this->cookie; }
	function set_customer_session_cookie( $set ) { $this->cookie = $set; }
}
class WC_Cart {
	public $items = array();
	function get_cart() { return $this->items; }
	function is_empty() { return ! $this->items; }
	function get_cart_hash() { return md5( json_encode( array_map( function ( $item ) { return array( $item['product_id'], $item['variation_id'], $item['quantity'] ); }, $this->items ) ) ); }
	public $coupons = array();
	function has_discount( $code ) { return in_array( $code, $this->coupons, true ); }
	function apply_coupon( $code ) { $this->coupons[] = $code; return true; }
	function display_prices_including_tax() { return true; }
	function get_displayed_subtotal() { return array_sum( array_map( function ( $item ) { return $item['line_subtotal'] + $item['line_subtotal_tax']; }, $this->items ) ); }
	function get_total( $context ) { return $this->get_displayed_subtotal() + 50; }
	function fill( $kurtas ) {
		$this->items = array(
			'k1' => array( 'product_id' => 12, 'variation_id' => 34, 'variation' => array( 'attribute_pa_size' => 'm' ), 'quantity' => $kurtas, 'line_subtotal' => 900.0 * $kurtas, 'line_subtotal_tax' => 149.0 * $kurtas, 'data' => new WC_Product( 'Block-print kurta', 7 ) ),
			'd1' => array( 'product_id' => 20, 'variation_id' => 0, 'variation' => array(), 'quantity' => 3, 'line_subtotal' => 1498.5, 'line_subtotal_tax' => 0.0, 'data' => new WC_Product( 'Dupatta' ) ),
		);
	}
}
class WC_Customer {
	public $props;
	function __construct( $props ) { $this->props = $props; }
	function __call( $name, $args ) { return $this->props[ substr( $name, 4 ) ] ?? ''; }
}
class WP_REST_Request implements ArrayAccess {
	public $params;
	function __construct( $params ) { $this->params = $params; }
	function offsetExists( $key ): bool { return isset( $this->params[ $key ] ); }
	#[\ReturnTypeWillChange]
	function offsetGet( $key ) { return $this->params[ $key ] ?? null; }
	function offsetSet( $key, $value ): void {}
	function offsetUnset( $key ): void {}
}
class Store {
	public $session, $cart;
}
function WC() {
	static $wc = null;
	if ( null === $wc ) {
		$wc          = new Store();
		$wc->session = new WC_Session_Handler();
		$wc->cart    = new WC_Cart();
	}
	return $wc;
}

require $argv[1] . '/cartback-for-woocommerce.php';
do_action( 'plugins_loaded' );
do_action( 'woocommerce_init' );

function topics() { return array_map( function ( $send ) { $headers = $send['headers']; return $headers['X-WC-Webhook-Topic']; }, $GLOBALS['sent'] ); }
function calculate() { do_action( 'woocommerce_after_calculate_totals', WC()->cart ); }
function end_request() { do_action( 'shutdown' ); }
"""

CLASSIC_JOURNEY = (
    STAND_IN
    + r"""
$out  = array();
$cart = WC()->cart;
$cart->fill( 2 );

$out['settings']         = array_column( apply_filters( 'woocommerce_get_settings_advanced', array(), 'cartback' ), 'type', 'id' );
$out['other_section']    = apply_filters( 'woocommerce_get_settings_advanced', array( 'untouched' ), 'keys' );
$out['sections']         = apply_filters( 'woocommerce_get_sections_advanced', array( '' => 'Page setup' ) );
$out['classic_field']    = apply_filters( 'woocommerce_checkout_fields', array( 'billing' => array() ) )['billing']['cartback_whatsapp_optin'];
$out['block_field']      = $fields;

calculate();
$out['before_contact'] = topics();

do_action( 'woocommerce_checkout_update_order_review', 'billing_first_name=Priya&billing_phone=98765+43210&billing_country=IN&cartback_whatsapp_optin=1' );
calculate();
calculate();
$out['after_phone'] = topics();

do_action( 'woocommerce_checkout_update_order_review', 'billing_first_name=Priya&billing_phone=98765+43210&billing_country=IN' );
calculate();
$out['after_unticking'] = topics();

$cart->fill( 3 );
calculate();
$out['after_a_third_kurta'] = topics();

// A checkout link empties the cart and fills it straight back in the same request.
$cart->items = array();
do_action( 'woocommerce_cart_emptied', true );
$cart->fill( 3 );
calculate();
end_request();
$out['after_refill'] = topics();

// The shopper removes everything.
$cart->items = array();
do_action( 'woocommerce_cart_item_removed', 'd1', $cart );
end_request();
end_request();
$out['after_emptying'] = topics();

// Back again, then the order.
$cart->fill( 1 );
calculate();
$order = new WC_Order( 727, 'wc_order_Ab12Cd34' );
do_action( 'woocommerce_checkout_create_order', $order, array( 'cartback_whatsapp_optin' => 1 ) );
do_action( 'woocommerce_checkout_order_created', $order );
calculate();
$out['after_the_order'] = topics();
$out['order_meta']      = $order->meta;
$out['order_saved']     = $order->saved;

// Paid: the order-received page empties the cart that became the order (wc_empty_cart()).
$cart->items = array();
do_action( 'woocommerce_cart_emptied', false );
end_request();
$out['after_paying'] = topics();

// A later cart in the same session is a new cart.
$cart->fill( 1 );
calculate();
$out['after_shopping_again'] = topics();
$out['sent'] = $sent;
echo json_encode( $out );
"""
)


def sent_payloads(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for sent in result["sent"]:
        assert sent["url"] == "https://cartback.example/webhooks/woocommerce" and sent["blocking"] is False
        body, headers = delivery(sent)
        verified_event(body, headers)
        events.append((headers["X-WC-Webhook-Topic"], json.loads(body)))
    return events


@requires_php
def test_the_classic_checkout_journey(tmp_path: Path):
    result = run_php(tmp_path, CLASSIC_JOURNEY, {"secret": SECRET})

    assert result["settings"] == {
        "cartback_options": "sectionend",
        "cartback_endpoint": "url",
        "cartback_secret": "password",
    }
    assert result["other_section"] == ["untouched"] and result["sections"]["cartback"] == "cartback"
    text = "Send me reminders and offers from Bazaar & Co on WhatsApp"
    field = result["classic_field"]
    assert (field["type"], field["label"], field["required"], field["default"]) == (
        "checkbox",
        "Send me reminders and offers from Bazaar &amp; Co on WhatsApp",
        False,
        0,
    )
    assert result["block_field"] == [
        {
            "id": "cartback/whatsapp-optin",
            "label": text,
            "location": "contact",
            "type": "checkbox",
            "required": False,
        }
    ]
    # Nothing before a phone or email; then one send per change, none for a recalculation alone.
    assert result["before_contact"] == []
    assert result["after_phone"] == ["cart.updated"]
    assert result["after_unticking"] == ["cart.updated"] * 2
    assert result["after_a_third_kurta"] == ["cart.updated"] * 3
    assert result["after_refill"] == ["cart.updated"] * 3
    assert result["after_emptying"] == ["cart.updated"] * 3 + ["cart.emptied"]
    # Refilled: the same cart again. The order carries its id; the session starts a new cart.
    assert result["after_the_order"] == ["cart.updated"] * 3 + ["cart.emptied", "cart.updated"]
    assert result["after_paying"] == result["after_the_order"]
    assert result["after_shopping_again"] == [*result["after_the_order"], "cart.updated"]

    events = sent_payloads(result)
    first, unticked, third, emptied, refilled, later = (payload for _, payload in events)
    assert first["whatsapp_optin"] is True and first["optin_text"] == text
    assert first["checkout"] == "classic" and first["customer"]["phone"] == "98765 43210"
    assert (first["subtotal"], first["total"]) == ("3596.50", "3646.50")
    kurta, dupatta = first["items"]
    assert (kurta["variation"], kurta["price"], kurta["image"]) == (
        "Size: M",
        "1049.00",
        "https://shop.example/wp-content/uploads/7.jpg",
    )
    assert (dupatta["variation"], dupatta["price"], dupatta["image"]) == ("", "499.50", "")
    assert unticked["whatsapp_optin"] is False and third["items"][0]["quantity"] == 3
    assert re.fullmatch(r"[0-9a-f]{32}", first["cart_id"])
    assert {first["cart_id"], unticked["cart_id"], third["cart_id"], emptied["cart_id"]} == {first["cart_id"]}
    assert refilled["cart_id"] == first["cart_id"]
    assert result["order_meta"] == {
        META_OPT_IN: "yes",
        "cartback_optin_text": text,
        META_CART_ID: first["cart_id"],
    }
    assert result["order_saved"] == 1
    assert later["cart_id"] != first["cart_id"]


BLOCK_JOURNEY = (
    STAND_IN
    + r"""
$out  = array();
$cart = WC()->cart;
$cart->fill( 1 );
$customer = new WC_Customer( array( 'billing_first_name' => 'Priya', 'billing_country' => 'IN', 'shipping_phone' => '+91 98765 43210' ) );

// The address form: the phone (here the shipping one) is on the session customer.
do_action( 'woocommerce_store_api_cart_update_customer_from_request', $customer, new WP_REST_Request( array( 'shipping_address' => array() ) ) );
calculate();
$out['after_phone'] = topics();

// The contact section: the opt-in travels with the checkout's draft order.
$draft = new WC_Order( 728, 'wc_order_Ef56' );
do_action( 'woocommerce_store_api_checkout_update_order_from_request', $draft, new WP_REST_Request( array( 'additional_fields' => array( 'cartback/whatsapp-optin' => true ) ) ) );
$out['after_optin'] = topics();
$out['draft_meta']  = $draft->meta;

// Place order.
$request = new WP_REST_Request( array( 'additional_fields' => array( 'cartback/whatsapp-optin' => true ) ) );
do_action( 'woocommerce_store_api_checkout_update_customer_from_request', $customer, $request );
do_action( 'woocommerce_store_api_checkout_update_order_from_request', $draft, $request );
do_action( 'woocommerce_store_api_checkout_order_processed', $draft );
$out['order_meta'] = $draft->meta;

// The UPI payment is given up: the cart is still the order's, so nothing more is sent.
calculate();
$out['after_the_order'] = topics();
$out['sent'] = $sent;
echo json_encode( $out );
"""
)


@requires_php
def test_the_block_checkout_journey(tmp_path: Path):
    result = run_php(tmp_path, BLOCK_JOURNEY, {"secret": SECRET})

    assert result["after_phone"] == ["cart.updated"]
    assert result["after_optin"] == ["cart.updated"] * 2
    assert result["draft_meta"][META_OPT_IN] == "yes"
    assert result["after_the_order"] == result["after_optin"]
    (_, before), (_, opted_in) = sent_payloads(result)
    assert before["checkout"] == "block" and before["whatsapp_optin"] is False
    assert before["customer"]["phone"] == "+91 98765 43210" and before["customer"]["first_name"] == "Priya"
    assert opted_in["whatsapp_optin"] is True and opted_in["cart_id"] == before["cart_id"]
    assert result["order_meta"][META_CART_ID] == before["cart_id"]


PAY_LINK_JOURNEY = (
    STAND_IN
    + r"""
$orders = array( 727 => new WC_Order( 727, 'wc_order_Ab12Cd34' ), 728 => new WC_Order( 728, 'wc_order_Ef56' ) );
$out    = array();
foreach ( $given['visits'] as $name => $visit ) {
	WC()->session->data   = array();
	WC()->session->cookie = false;
	$_GET  = $visit['get'];
	$query = array( 'order-pay' => $visit['order'] );
	do_action( 'template_redirect' );
	$out[ $name ] = array(
		'727'    => apply_filters( 'woocommerce_order_email_verification_required', true, $orders[727], 'order-pay' ),
		'728'    => apply_filters( 'woocommerce_order_email_verification_required', true, $orders[728], 'order-pay' ),
		'cookie' => WC()->session->cookie,
	);
}
echo json_encode( $out );
"""
)


@requires_php
def test_a_verified_pay_link_skips_the_email_check_for_its_order_only(tmp_path: Path):
    expires = 4_102_444_800  # 2100: the stand-in uses the real clock
    token = pay_link_token(SECRET, "727", "wc_order_Ab12Cd34", expires)
    link = {"pay_for_order": "true", "key": "wc_order_Ab12Cd34", "cartback_pay": token}
    visits = {
        "verified": {"order": "727", "get": link},
        "expired": {
            "order": "727",
            "get": link | {"cartback_pay": pay_link_token(SECRET, "727", "wc_order_Ab12Cd34", 1_000_000)},
        },
        "another order's key": {"order": "727", "get": link | {"key": "wc_order_Ef56"}},
        "a token for another order": {"order": "728", "get": link | {"key": "wc_order_Ef56"}},
        "no token": {"order": "727", "get": {"pay_for_order": "true", "key": "wc_order_Ab12Cd34"}},
    }

    result = run_php(tmp_path, PAY_LINK_JOURNEY, {"secret": SECRET, "visits": visits})

    assert result["verified"] == {"727": False, "728": True, "cookie": True}
    for name in visits.keys() - {"verified"}:
        assert result[name] == {"727": True, "728": True, "cookie": False}, name


COUPON_LINK_JOURNEY = (
    STAND_IN
    + r"""
$out = array();
foreach ( $given['visits'] as $name => $visit ) {
	WC()->cart->items   = array();
	WC()->cart->coupons = array();
	if ( $visit['filled'] ) {
		WC()->cart->fill( 1 );
	}
	$_GET = $visit['get'];
	do_action( 'template_redirect' );
	do_action( 'template_redirect' );  // a second page view applies nothing twice
	$out[ $name ] = WC()->cart->coupons;
}
echo json_encode( $out );
"""
)


@requires_php
def test_a_coupon_in_the_link_is_applied_to_a_restored_cart_once(tmp_path: Path):
    visits = {
        "restored cart": {"filled": True, "get": {"cartback_coupon": "CB-K7MQ3XZ9"}},
        "empty cart": {"filled": False, "get": {"cartback_coupon": "CB-K7MQ3XZ9"}},
        "no code": {"filled": True, "get": {}},
    }
    result = run_php(tmp_path, COUPON_LINK_JOURNEY, {"secret": SECRET, "visits": visits})
    assert result == {"restored cart": ["cb-k7mq3xz9"], "empty cart": [], "no code": []}
