<?php
/**
 * Cart and contact capture before any order exists, for the classic and the block checkout.
 *
 * @package Cartback
 */

defined( 'ABSPATH' ) || exit;

/**
 * Remembers what the shopper typed at checkout (in their WooCommerce session) and sends the cart to
 * cartback when it has a phone or email and something changed since the last send.
 */
class Cartback_Capture {

	const META_CART_ID = 'cartback_cart_id';

	// Session keys.
	const CART_ID    = 'cartback_cart_id';
	const CONTACT    = 'cartback_contact';
	const OPT_IN     = 'cartback_optin';
	const CHECKOUT   = 'cartback_checkout';
	const SENT_HASH  = 'cartback_sent_hash';
	const REPORTED   = 'cartback_reported';
	const ORDER_CART = 'cartback_order_cart_hash';

	/**
	 * Whether the cart was emptied during this request (reported at its end if it stayed empty).
	 *
	 * @var bool
	 */
	private static $emptied = false;

	/**
	 * Hook into both checkouts and the cart.
	 */
	public static function init() {
		add_action( 'woocommerce_checkout_update_order_review', array( __CLASS__, 'capture_classic' ) );
		add_action( 'woocommerce_after_checkout_form', array( __CLASS__, 'enqueue_script' ) );
		add_action( 'woocommerce_store_api_cart_update_customer_from_request', array( __CLASS__, 'capture_block_customer' ), 10, 2 );
		add_action( 'woocommerce_store_api_checkout_update_customer_from_request', array( __CLASS__, 'capture_block_customer' ), 10, 2 );
		add_action( 'woocommerce_store_api_checkout_update_order_from_request', array( __CLASS__, 'capture_block_order' ), 20, 2 );
		add_action( 'woocommerce_after_calculate_totals', array( __CLASS__, 'maybe_send' ), 20 );
		add_action( 'woocommerce_cart_emptied', array( __CLASS__, 'cart_emptied' ) );
		add_action( 'woocommerce_cart_item_removed', array( __CLASS__, 'item_removed' ), 10, 2 );
		add_action( 'woocommerce_checkout_order_created', array( __CLASS__, 'order_created' ) );
		add_action( 'woocommerce_store_api_checkout_order_processed', array( __CLASS__, 'order_created' ) );
		add_action( 'shutdown', array( __CLASS__, 'report_emptied' ), 5 );
	}

	/**
	 * Classic checkout: every refresh of the order review posts the whole form. WooCommerce checked
	 * the request's nonce and recalculates the totals right after, which sends (maybe_send).
	 *
	 * @param string $post_data The checkout form, URL-encoded.
	 */
	public static function capture_classic( $post_data ) {
		parse_str( (string) $post_data, $posted );
		$contact = array();
		foreach ( CARTBACK_CUSTOMER_FIELDS as $field ) {
			$value             = isset( $posted[ 'billing_' . $field ] ) ? $posted[ 'billing_' . $field ] : '';
			$contact[ $field ] = is_string( $value ) ? wc_clean( $value ) : '';
		}
		$contact['email'] = sanitize_email( $contact['email'] );
		self::remember( $contact, ! empty( $posted[ Cartback_Optin::FIELD ] ), 'classic' );
	}

	/**
	 * Classic checkout: refresh the order review when the phone, email or opt-in change (the
	 * fields WooCommerce itself does not refresh on).
	 */
	public static function enqueue_script() {
		if ( Cartback_Settings::is_configured() ) {
			wp_enqueue_script( 'cartback-checkout', plugins_url( 'assets/cartback-checkout.js', CARTBACK_FILE ), array( 'jquery' ), CARTBACK_VERSION, true );
		}
	}

	/**
	 * Block checkout: the address forms (phone, email) were just set on the session customer.
	 * The Store API recalculates the totals after the cart update, which sends (maybe_send).
	 *
	 * @param WC_Customer     $customer The session customer.
	 * @param WP_REST_Request $request  The Store API request.
	 */
	public static function capture_block_customer( $customer, $request ) {
		$contact = array();
		foreach ( CARTBACK_CUSTOMER_FIELDS as $field ) {
			$getter            = 'get_billing_' . $field;
			$contact[ $field ] = (string) $customer->$getter();
		}
		if ( '' === $contact['phone'] ) {
			$contact['phone'] = (string) $customer->get_shipping_phone();
		}
		self::remember( $contact, Cartback_Optin::block_choice( $request ), 'block' );
	}

	/**
	 * Block checkout: the contact section (the opt-in) is sent with the checkout's order, and no
	 * recalculation follows, so send from here.
	 *
	 * @param WC_Order        $order   The checkout's draft order.
	 * @param WP_REST_Request $request The Store API request.
	 */
	public static function capture_block_order( $order, $request ) {
		$choice  = Cartback_Optin::block_choice( $request );
		$session = self::session();
		if ( null !== $choice && $session ) {
			$session->set( self::OPT_IN, $choice ? 'yes' : 'no' );
			$session->set( self::CHECKOUT, 'block' );
		}
		self::maybe_send();
	}

	/**
	 * Keep what the shopper typed in their session.
	 *
	 * @param array     $contact  Billing fields.
	 * @param bool|null $opted_in The opt-in box, null when not known from this request.
	 * @param string    $checkout "classic" or "block".
	 */
	private static function remember( array $contact, $opted_in, $checkout ) {
		$session = self::session();
		if ( ! $session ) {
			return;
		}
		$session->set( self::CONTACT, $contact );
		$session->set( self::CHECKOUT, $checkout );
		if ( null !== $opted_in ) {
			$session->set( self::OPT_IN, $opted_in ? 'yes' : 'no' );
		}
	}

	/**
	 * Send the cart if it has items, a phone or email, and changed since the last send.
	 */
	public static function maybe_send() {
		$session = self::session();
		$cart    = function_exists( 'WC' ) ? WC()->cart : null;
		if ( ! $session || ! $cart || $cart->is_empty() || ! Cartback_Settings::is_configured() ) {
			return;
		}
		$contact = (array) $session->get( self::CONTACT, array() );
		if ( empty( $contact['phone'] ) && empty( $contact['email'] ) ) {
			return;
		}
		// The cart that just became an order: the order's own webhooks speak for it now.
		if ( $session->get( self::ORDER_CART ) === $cart->get_cart_hash() ) {
			return;
		}
		$cart_id = (string) $session->get( self::CART_ID, '' );
		if ( '' === $cart_id ) {
			$cart_id = cartback_new_cart_id();
			$session->set( self::CART_ID, $cart_id );
		}
		list( $seconds, $microseconds ) = cartback_now();
		$payload                        = cartback_cart_updated_payload( self::describe( $cart, $cart_id, $contact, $session ), $seconds, $microseconds );
		$hash                           = cartback_content_hash( $payload );
		if ( $session->get( self::SENT_HASH ) === $hash ) {
			return;
		}
		if ( self::post( 'cart.updated', $payload ) ) {
			$session->set( self::SENT_HASH, $hash );
			$session->set( self::REPORTED, $cart_id );
		}
	}

	/**
	 * The cart as cartback_cart_updated_payload() takes it.
	 *
	 * @param WC_Cart    $cart    The cart.
	 * @param string     $cart_id The session's cart id.
	 * @param array      $contact What the shopper typed.
	 * @param WC_Session $session The session.
	 * @return array
	 */
	private static function describe( $cart, $cart_id, array $contact, $session ) {
		$with_tax = $cart->display_prices_including_tax();
		$items    = array();
		foreach ( $cart->get_cart() as $item ) {
			$product  = isset( $item['data'] ) ? $item['data'] : null;
			$quantity = isset( $item['quantity'] ) ? (int) $item['quantity'] : 0;
			if ( ! $product instanceof WC_Product || $quantity < 1 ) {
				continue;
			}
			$line    = (float) $item['line_subtotal'] + ( $with_tax ? (float) $item['line_subtotal_tax'] : 0 );
			$items[] = array(
				'product_id'   => $item['product_id'],
				'variation_id' => $item['variation_id'],
				'name'         => wp_strip_all_tags( $product->get_title() ),
				'variation'    => self::variation_text( $item ),
				'quantity'     => $quantity,
				'price'        => $line / $quantity,
				'image'        => (string) wp_get_attachment_image_url( $product->get_image_id(), 'woocommerce_thumbnail' ),
			);
		}
		return array(
			'cart_id'        => $cart_id,
			'currency'       => get_woocommerce_currency(),
			'decimals'       => wc_get_price_decimals(),
			'subtotal'       => $cart->get_displayed_subtotal(),
			'total'          => $cart->get_total( 'edit' ),
			'items'          => $items,
			'customer'       => $contact + array( 'customer_id' => get_current_user_id() ),
			'whatsapp_optin' => 'yes' === $session->get( self::OPT_IN ),
			'optin_text'     => Cartback_Optin::consent_text(),
			'checkout'       => (string) $session->get( self::CHECKOUT, 'classic' ),
			'checkout_url'   => wc_get_checkout_url(),
		);
	}

	/**
	 * "Size: M, Colour: Indigo" for a variation, "" otherwise.
	 *
	 * @param array $item A cart item.
	 * @return string
	 */
	private static function variation_text( array $item ) {
		$parts = array();
		foreach ( (array) $item['variation'] as $name => $value ) {
			if ( '' === (string) $value ) {
				continue;
			}
			$attribute = str_replace( 'attribute_', '', urldecode( $name ) );
			if ( taxonomy_exists( $attribute ) ) {
				$term  = get_term_by( 'slug', $value, $attribute );
				$value = $term ? $term->name : $value;
			}
			$parts[] = wc_attribute_label( $attribute, $item['data'] ) . ': ' . $value;
		}
		return wp_strip_all_tags( implode( ', ', $parts ) );
	}

	/**
	 * The cart was emptied: report it at the end of the request if it is still empty then (a
	 * checkout link or "order again" empties the cart and fills it straight back).
	 *
	 * @param bool $clear_persistent_cart False when WooCommerce empties it after an order or at logout.
	 */
	public static function cart_emptied( $clear_persistent_cart = true ) {
		$session = self::session();
		if ( $session ) {
			// Whatever became an order is gone from the cart: the next cart is the shopper's again.
			$session->set( self::ORDER_CART, null );
		}
		if ( $clear_persistent_cart ) {
			self::$emptied = true;
		}
	}

	/**
	 * The shopper removed the last item.
	 *
	 * @param string  $cart_item_key The removed item.
	 * @param WC_Cart $cart          The cart.
	 */
	public static function item_removed( $cart_item_key, $cart ) {
		if ( $cart->is_empty() ) {
			self::$emptied = true;
		}
	}

	/**
	 * Send cart.emptied for a reported cart that ended this request empty.
	 */
	public static function report_emptied() {
		if ( ! self::$emptied ) {
			return;
		}
		self::$emptied = false;
		$session       = self::session();
		if ( ! $session || ! WC()->cart || ! WC()->cart->is_empty() ) {
			return;
		}
		$cart_id = (string) $session->get( self::CART_ID, '' );
		if ( '' === $cart_id || $session->get( self::REPORTED ) !== $cart_id || ! Cartback_Settings::is_configured() ) {
			return;
		}
		list( $seconds, $microseconds ) = cartback_now();
		self::post( 'cart.emptied', cartback_cart_emptied_payload( $cart_id, get_woocommerce_currency(), $seconds, $microseconds ) );
		// The same id filled again is the same cart again.
		$session->set( self::REPORTED, null );
		$session->set( self::SENT_HASH, null );
	}

	/**
	 * An order was placed from the cart: it carries the cart's id, and the session starts a new cart.
	 *
	 * @param WC_Order $order The new order.
	 */
	public static function order_created( $order ) {
		$session = self::session();
		if ( ! $session || ! $order instanceof WC_Order ) {
			return;
		}
		$cart_id = (string) $session->get( self::CART_ID, '' );
		// A resumed order keeps the id it was first placed with.
		if ( '' !== $cart_id && '' === (string) $order->get_meta( self::META_CART_ID ) ) {
			$order->update_meta_data( self::META_CART_ID, $cart_id );
			$order->save_meta_data();
		}
		$session->set( self::ORDER_CART, WC()->cart ? WC()->cart->get_cart_hash() : null );
		$session->set( self::CART_ID, null );
		$session->set( self::SENT_HASH, null );
		$session->set( self::REPORTED, null );
	}

	/**
	 * POST a signed delivery to cartback without waiting for the answer.
	 *
	 * @param string $topic   "cart.updated" or "cart.emptied".
	 * @param array  $payload The body.
	 * @return bool Whether it was sent.
	 */
	private static function post( $topic, array $payload ) {
		$request = cartback_signed_request( $topic, $payload, Cartback_Settings::secret(), home_url( '/' ), wp_generate_uuid4() );
		if ( null === $request ) {
			return false;
		}
		wp_remote_post(
			Cartback_Settings::endpoint(),
			array(
				'body'     => $request['body'],
				'headers'  => $request['headers'],
				'timeout'  => 3,
				'blocking' => false,
			)
		);
		return true;
	}

	/**
	 * The shopper's WooCommerce session, when there is one.
	 *
	 * @return WC_Session|null
	 */
	private static function session() {
		return function_exists( 'WC' ) && WC()->session ? WC()->session : null;
	}
}
