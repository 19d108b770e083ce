<?php
/**
 * The wire format cartback reads: payloads, signatures and the order-pay token.
 *
 * Plain PHP with no WordPress or WooCommerce calls, so it can be tested on its own
 * (see tests/connectors/test_woocommerce_plugin.py in the cartback repository).
 *
 * @package Cartback
 */

defined( 'ABSPATH' ) || exit;

/**
 * The customer fields a captured cart carries, in the order cartback documents them.
 */
const CARTBACK_CUSTOMER_FIELDS = array(
	'email',
	'phone',
	'first_name',
	'last_name',
	'company',
	'address_1',
	'address_2',
	'city',
	'state',
	'postcode',
	'country',
);

/**
 * A new id for the cart of a browser session: 32 hex characters.
 *
 * @return string
 */
function cartback_new_cart_id() {
	return bin2hex( random_bytes( 16 ) );
}

/**
 * The current time as [ seconds, microseconds ].
 *
 * @return int[]
 */
function cartback_now() {
	list( $fraction, $seconds ) = explode( ' ', microtime() );
	return array( (int) $seconds, min( 999999, (int) round( (float) $fraction * 1000000 ) ) );
}

/**
 * A UTC time as cartback reads it: "2026-11-28T09:00:00.123456" (no zone, microseconds).
 *
 * @param int $seconds      Unix time.
 * @param int $microseconds 0 to 999999.
 * @return string
 */
function cartback_gmt( $seconds, $microseconds ) {
	return gmdate( 'Y-m-d\TH:i:s', (int) $seconds ) . sprintf( '.%06d', (int) $microseconds );
}

/**
 * Money as a decimal string ("2098.00"), never a float.
 *
 * @param float|int|string $amount   The amount.
 * @param int              $decimals The store's price decimals.
 * @return string
 */
function cartback_money( $amount, $decimals ) {
	$value = round( (float) $amount, max( 0, (int) $decimals ) );
	return number_format( $value > 0 ? $value : 0, max( 0, (int) $decimals ), '.', '' );
}

/**
 * The cart.updated body, from the cart as the capture class describes it.
 *
 * @param array $cart         cart_id, currency, decimals, subtotal, total, items (product_id, variation_id,
 *                            name, variation, quantity, price, image), customer (CARTBACK_CUSTOMER_FIELDS
 *                            and customer_id), whatsapp_optin, optin_text, checkout, checkout_url.
 * @param int   $seconds      When it was captured (Unix time).
 * @param int   $microseconds Its microseconds.
 * @return array
 */
function cartback_cart_updated_payload( array $cart, $seconds, $microseconds ) {
	$decimals = isset( $cart['decimals'] ) ? (int) $cart['decimals'] : 2;
	$items    = array();
	foreach ( $cart['items'] as $item ) {
		$items[] = array(
			'product_id'   => (int) $item['product_id'],
			'variation_id' => isset( $item['variation_id'] ) ? (int) $item['variation_id'] : 0,
			'name'         => (string) $item['name'],
			'variation'    => isset( $item['variation'] ) ? (string) $item['variation'] : '',
			'quantity'     => (int) $item['quantity'],
			'price'        => cartback_money( $item['price'], $decimals ),
			'image'        => isset( $item['image'] ) ? (string) $item['image'] : '',
		);
	}
	$given    = isset( $cart['customer'] ) ? (array) $cart['customer'] : array();
	$customer = array();
	foreach ( CARTBACK_CUSTOMER_FIELDS as $field ) {
		$customer[ $field ] = isset( $given[ $field ] ) ? trim( (string) $given[ $field ] ) : '';
	}
	$customer['customer_id'] = isset( $given['customer_id'] ) ? (int) $given['customer_id'] : 0;

	return array(
		'cart_id'        => (string) $cart['cart_id'],
		'updated_at_gmt' => cartback_gmt( $seconds, $microseconds ),
		'currency'       => strtoupper( (string) $cart['currency'] ),
		'subtotal'       => cartback_money( $cart['subtotal'], $decimals ),
		'total'          => cartback_money( $cart['total'], $decimals ),
		'items'          => $items,
		'customer'       => $customer,
		'whatsapp_optin' => ! empty( $cart['whatsapp_optin'] ),
		'optin_text'     => isset( $cart['optin_text'] ) ? (string) $cart['optin_text'] : '',
		'checkout'       => isset( $cart['checkout'] ) ? (string) $cart['checkout'] : 'classic',
		'checkout_url'   => isset( $cart['checkout_url'] ) ? (string) $cart['checkout_url'] : '',
	);
}

/**
 * The cart.emptied body.
 *
 * @param string $cart_id      The reported cart.
 * @param string $currency     The store's currency.
 * @param int    $seconds      When it was emptied (Unix time).
 * @param int    $microseconds Its microseconds.
 * @return array
 */
function cartback_cart_emptied_payload( $cart_id, $currency, $seconds, $microseconds ) {
	return array(
		'cart_id'        => (string) $cart_id,
		'updated_at_gmt' => cartback_gmt( $seconds, $microseconds ),
		'currency'       => strtoupper( (string) $currency ),
	);
}

/**
 * What a cart.updated says, without its time: unchanged means nothing new to send.
 *
 * @param array $payload A cart.updated body.
 * @return string
 */
function cartback_content_hash( array $payload ) {
	unset( $payload['updated_at_gmt'] );
	return hash( 'sha256', (string) cartback_json( $payload ) );
}

/**
 * JSON as sent: slashes and Unicode kept as they are.
 *
 * @param array $payload The body.
 * @return string|false False when it cannot be encoded.
 */
function cartback_json( array $payload ) {
	return json_encode( $payload, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE ); // phpcs:ignore WordPress.WP.AlternativeFunctions.json_encode_json_encode -- no WordPress here; wp_json_encode would escape differently, and the signature covers these exact bytes.
}

/**
 * WooCommerce's webhook signature: base64 of the HMAC-SHA256 of the exact body.
 *
 * @param string $body   The body as sent.
 * @param string $secret The store's secret from cartback.
 * @return string
 */
function cartback_signature( $body, $secret ) {
	return base64_encode( hash_hmac( 'sha256', $body, $secret, true ) ); // phpcs:ignore WordPress.PHP.DiscouragedPHPFunctions.obfuscation_base64_encode -- the signature format.
}

/**
 * The body and headers of a delivery, signed like WooCommerce's own webhooks.
 *
 * @param string $topic       "cart.updated" or "cart.emptied".
 * @param array  $payload     The body.
 * @param string $secret      The store's secret.
 * @param string $source      home_url( '/' ).
 * @param string $delivery_id A random UUID for this send.
 * @return array|null [ 'body' => string, 'headers' => array ], null when the body cannot be encoded.
 */
function cartback_signed_request( $topic, array $payload, $secret, $source, $delivery_id ) {
	$body = cartback_json( $payload );
	if ( false === $body ) {
		return null;
	}
	list( $resource, $event ) = array_pad( explode( '.', $topic, 2 ), 2, '' );
	return array(
		'body'    => $body,
		'headers' => array(
			'Content-Type'             => 'application/json',
			'X-WC-Webhook-Source'      => $source,
			'X-WC-Webhook-Topic'       => $topic,
			'X-WC-Webhook-Resource'    => $resource,
			'X-WC-Webhook-Event'       => $event,
			'X-WC-Webhook-ID'          => '0',
			'X-WC-Webhook-Delivery-ID' => $delivery_id,
			'X-WC-Webhook-Signature'   => cartback_signature( $body, $secret ),
		),
	);
}

/**
 * The signature part of an order-pay token: base64url, no padding, of the HMAC-SHA256 of
 * "order-pay|{order_id}|{order_key}|{expires}".
 *
 * @param string     $secret    The store's secret.
 * @param int|string $order_id  The order.
 * @param string     $order_key Its key (wc_order_…).
 * @param int|string $expires   Unix time the link stops working.
 * @return string
 */
function cartback_pay_signature( $secret, $order_id, $order_key, $expires ) {
	$message = 'order-pay|' . $order_id . '|' . $order_key . '|' . $expires;
	$digest  = base64_encode( hash_hmac( 'sha256', $message, $secret, true ) ); // phpcs:ignore WordPress.PHP.DiscouragedPHPFunctions.obfuscation_base64_encode -- the token format.
	return rtrim( strtr( $digest, '+/', '-_' ), '=' );
}

/**
 * Whether a cartback_pay token "{expires}.{signature}" was made by cartback for this order and
 * has not expired.
 *
 * @param string     $token     The cartback_pay parameter.
 * @param int|string $order_id  The order being paid.
 * @param string     $order_key Its key.
 * @param string     $secret    The store's secret.
 * @param int        $now       The current Unix time.
 * @return bool
 */
function cartback_verify_pay_token( $token, $order_id, $order_key, $secret, $now ) {
	if ( ! is_string( $token ) || '' === $secret || '' === (string) $order_key ) {
		return false;
	}
	$parts = explode( '.', $token );
	if ( 2 !== count( $parts ) || ! preg_match( '/^[0-9]{1,12}$/', $parts[0] ) || '' === $parts[1] ) {
		return false;
	}
	if ( (int) $now > (int) $parts[0] ) {
		return false;
	}
	return hash_equals( cartback_pay_signature( $secret, $order_id, $order_key, $parts[0] ), $parts[1] );
}
