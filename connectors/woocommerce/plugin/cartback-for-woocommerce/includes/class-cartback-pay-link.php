<?php
/**
 * Verified links from cartback's reminders to an order's payment page.
 *
 * @package Cartback
 */

defined( 'ABSPATH' ) || exit;

/**
 * A visitor who opens …/order-pay/{id}/?pay_for_order=true&key=…&cartback_pay={expires}.{signature}
 * with a valid signature goes straight to paying: WooCommerce does not ask them to confirm the
 * order's email address first, for that order only.
 */
class Cartback_Pay_Link {

	const PARAMETER = 'cartback_pay';
	const COUPON    = 'cartback_coupon';
	const VERIFIED  = 'cartback_verified_orders';
	const REMEMBER  = 20;

	/**
	 * Hook into the order-pay page.
	 */
	public static function init() {
		add_action( 'template_redirect', array( __CLASS__, 'check_link' ) );
		// After a cart-restoring plugin (CartFlows) has refilled the cart on the same visit.
		add_action( 'template_redirect', array( __CLASS__, 'apply_coupon' ), 30 );
		add_filter( 'woocommerce_order_email_verification_required', array( __CLASS__, 'skip_verification' ), 10, 3 );
	}

	/**
	 * On the order-pay page, remember the order when the link's signature checks out.
	 */
	public static function check_link() {
		// phpcs:disable WordPress.Security.NonceVerification.Recommended -- a link from a message: the signature below is its proof.
		if ( ! isset( $_GET[ self::PARAMETER ], $_GET['key'] ) || ! is_wc_endpoint_url( 'order-pay' ) ) {
			return;
		}
		$token = sanitize_text_field( wp_unslash( $_GET[ self::PARAMETER ] ) );
		$key   = wc_clean( wp_unslash( $_GET['key'] ) );
		// phpcs:enable WordPress.Security.NonceVerification.Recommended
		$order_id = absint( get_query_var( 'order-pay' ) );
		$order    = $order_id ? wc_get_order( $order_id ) : false;
		$session  = WC()->session;
		if ( ! $order || ! $session || ! is_string( $key ) || ! hash_equals( $order->get_order_key(), $key ) ) {
			return;
		}
		if ( ! cartback_verify_pay_token( $token, $order_id, $key, Cartback_Settings::secret(), time() ) ) {
			return;
		}
		$verified = array_map( 'absint', (array) $session->get( self::VERIFIED, array() ) );
		if ( ! in_array( $order_id, $verified, true ) ) {
			$verified[] = $order_id;
			$session->set( self::VERIFIED, array_slice( $verified, -self::REMEMBER ) );
		}
		// A visitor new to the store has no session cookie yet: give them one so it lasts.
		if ( $session instanceof WC_Session_Handler && ! $session->has_session() ) {
			$session->set_customer_session_cookie( true );
		}
	}

	/**
	 * A reminder for a cart restored by another plugin's link carries the shopper's code as
	 * cartback_coupon: apply it to the refilled cart. A code is no secret (the shopper could
	 * type it), and WooCommerce still checks its limits and expiry.
	 */
	public static function apply_coupon() {
		// phpcs:ignore WordPress.Security.NonceVerification.Recommended -- a link from a message; WooCommerce validates the code.
		$code = isset( $_GET[ self::COUPON ] ) ? wc_format_coupon_code( sanitize_text_field( wp_unslash( $_GET[ self::COUPON ] ) ) ) : '';
		$cart = WC()->cart;
		if ( '' === $code || ! $cart || $cart->is_empty() || $cart->has_discount( $code ) ) {
			return;
		}
		$cart->apply_coupon( $code );
	}

	/**
	 * No email check for an order this visitor reached through a verified link.
	 *
	 * @param bool          $required Whether WooCommerce would ask for the email.
	 * @param WC_Order|null $order    The order.
	 * @param string        $context  "order-pay" or "order-received".
	 * @return bool
	 */
	public static function skip_verification( $required, $order = null, $context = '' ) {
		if ( ! $required || ! $order instanceof WC_Order || ! WC()->session ) {
			return $required;
		}
		$verified = array_map( 'absint', (array) WC()->session->get( self::VERIFIED, array() ) );
		return in_array( $order->get_id(), $verified, true ) ? false : $required;
	}
}
