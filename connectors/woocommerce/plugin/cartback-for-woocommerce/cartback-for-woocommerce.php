<?php
/**
 * Plugin Name:          cartback for WooCommerce
 * Description:          Wins back abandoned carts over WhatsApp: a WhatsApp opt-in at checkout, the checkout's cart and contact sent to cartback before any order exists, and verified payment links from cartback's reminders.
 * Version:              1.0.0
 * Requires at least:    6.3
 * Requires PHP:         7.4
 * Requires Plugins:     woocommerce
 * WC requires at least: 8.9
 * WC tested up to:      9.9
 * License:              GPLv2 or later
 * License URI:          https://www.gnu.org/licenses/gpl-2.0.html
 * Text Domain:          cartback
 *
 * @package Cartback
 */

defined( 'ABSPATH' ) || exit;

define( 'CARTBACK_VERSION', '1.0.0' );
define( 'CARTBACK_FILE', __FILE__ );

require_once __DIR__ . '/includes/cartback-signing.php';
require_once __DIR__ . '/includes/class-cartback-settings.php';
require_once __DIR__ . '/includes/class-cartback-optin.php';
require_once __DIR__ . '/includes/class-cartback-capture.php';
require_once __DIR__ . '/includes/class-cartback-pay-link.php';

add_action( 'before_woocommerce_init', 'cartback_declare_compatibility' );
add_action( 'plugins_loaded', 'cartback_init' );

/**
 * Tell WooCommerce the plugin works with order tables (HPOS) and the block checkout.
 */
function cartback_declare_compatibility() {
	if ( class_exists( '\Automattic\WooCommerce\Utilities\FeaturesUtil' ) ) {
		\Automattic\WooCommerce\Utilities\FeaturesUtil::declare_compatibility( 'custom_order_tables', CARTBACK_FILE, true );
		\Automattic\WooCommerce\Utilities\FeaturesUtil::declare_compatibility( 'cart_checkout_blocks', CARTBACK_FILE, true );
	}
}

/**
 * Start, when WooCommerce is active.
 */
function cartback_init() {
	if ( ! class_exists( 'WooCommerce' ) ) {
		return;
	}
	Cartback_Settings::init();
	Cartback_Optin::init();
	Cartback_Capture::init();
	Cartback_Pay_Link::init();
}
