<?php
/**
 * The WhatsApp opt-in checkbox, on the classic and the block checkout.
 *
 * @package Cartback
 */

defined( 'ABSPATH' ) || exit;

/**
 * Shows the checkbox (unticked) and keeps the shopper's answer, and the words they saw, on the order.
 */
class Cartback_Optin {

	const FIELD       = 'cartback_whatsapp_optin';
	const BLOCK_FIELD = 'cartback/whatsapp-optin';
	const META_OPT_IN = 'cartback_whatsapp_optin';
	const META_TEXT   = 'cartback_optin_text';

	/**
	 * Hook into both checkouts.
	 */
	public static function init() {
		add_filter( 'woocommerce_checkout_fields', array( __CLASS__, 'add_classic_field' ) );
		add_action( 'woocommerce_checkout_create_order', array( __CLASS__, 'save_classic_choice' ), 10, 2 );
		add_action( 'woocommerce_init', array( __CLASS__, 'register_block_field' ) );
		add_action( 'woocommerce_store_api_checkout_update_order_from_request', array( __CLASS__, 'save_block_choice' ), 10, 2 );
	}

	/**
	 * The consent text, with the store's name.
	 *
	 * @return string Plain text: escape it to print it.
	 */
	public static function consent_text() {
		// WordPress keeps the site title HTML-escaped ("A &amp; B").
		$store = wp_specialchars_decode( get_bloginfo( 'name' ), ENT_QUOTES );
		/* translators: %s: the store's name. */
		return sprintf( __( 'Send me reminders and offers from %s on WhatsApp', 'cartback' ), $store );
	}

	/**
	 * The classic checkout: a checkbox under the billing phone and email.
	 *
	 * @param array $fields Checkout fields by fieldset.
	 * @return array
	 */
	public static function add_classic_field( $fields ) {
		$fields['billing'][ self::FIELD ] = array(
			'type'     => 'checkbox',
			'label'    => esc_html( self::consent_text() ),
			'required' => false,
			'default'  => 0,
			'class'    => array( 'form-row-wide' ),
			'priority' => 125,
		);
		return $fields;
	}

	/**
	 * The classic checkout: keep the answer on the order being created.
	 *
	 * @param WC_Order $order The order, not saved yet.
	 * @param array    $data  The posted checkout data (WooCommerce checked its nonce).
	 */
	public static function save_classic_choice( $order, $data ) {
		self::save_choice( $order, ! empty( $data[ self::FIELD ] ) );
	}

	/**
	 * The block checkout: an additional field in the contact section (WooCommerce 8.9+).
	 */
	public static function register_block_field() {
		if ( ! function_exists( 'woocommerce_register_additional_checkout_field' ) ) {
			return;
		}
		woocommerce_register_additional_checkout_field(
			array(
				'id'       => self::BLOCK_FIELD,
				'label'    => self::consent_text(),
				'location' => 'contact',
				'type'     => 'checkbox',
				'required' => false,
			)
		);
	}

	/**
	 * The block checkout: keep the answer on the order whenever the checkout sends it.
	 *
	 * @param WC_Order        $order   The checkout's order (saved by WooCommerce right after).
	 * @param WP_REST_Request $request The Store API request.
	 */
	public static function save_block_choice( $order, $request ) {
		$choice = self::block_choice( $request );
		if ( null !== $choice ) {
			self::save_choice( $order, $choice );
		}
	}

	/**
	 * The box's value in a Store API request, null when the request does not carry it.
	 *
	 * @param WP_REST_Request $request The Store API request.
	 * @return bool|null
	 */
	public static function block_choice( $request ) {
		$fields = $request['additional_fields'];
		if ( ! is_array( $fields ) || ! isset( $fields[ self::BLOCK_FIELD ] ) ) {
			return null;
		}
		return filter_var( $fields[ self::BLOCK_FIELD ], FILTER_VALIDATE_BOOLEAN );
	}

	/**
	 * Write the answer and the exact words shown.
	 *
	 * @param WC_Order $order     The order.
	 * @param bool     $opted_in  The shopper's answer.
	 */
	private static function save_choice( $order, $opted_in ) {
		$order->update_meta_data( self::META_OPT_IN, $opted_in ? 'yes' : 'no' );
		$order->update_meta_data( self::META_TEXT, self::consent_text() );
	}
}
