<?php
/**
 * WooCommerce → Settings → Advanced → cartback: where to send captures, and the secret.
 *
 * @package Cartback
 */

defined( 'ABSPATH' ) || exit;

/**
 * The plugin's two options.
 */
class Cartback_Settings {

	const SECTION  = 'cartback';
	const ENDPOINT = 'cartback_endpoint';
	const SECRET   = 'cartback_secret';

	/**
	 * Hook into the Advanced settings tab.
	 */
	public static function init() {
		add_filter( 'woocommerce_get_sections_advanced', array( __CLASS__, 'add_section' ) );
		add_filter( 'woocommerce_get_settings_advanced', array( __CLASS__, 'section_settings' ), 10, 2 );
	}

	/**
	 * Add the "cartback" section.
	 *
	 * @param array $sections Section id => label.
	 * @return array
	 */
	public static function add_section( $sections ) {
		$sections[ self::SECTION ] = __( 'cartback', 'cartback' );
		return $sections;
	}

	/**
	 * The fields of the "cartback" section.
	 *
	 * @param array  $settings   The section's settings so far.
	 * @param string $section_id The section being shown or saved.
	 * @return array
	 */
	public static function section_settings( $settings, $section_id ) {
		if ( self::SECTION !== $section_id ) {
			return $settings;
		}
		return array(
			array(
				'id'    => 'cartback_options',
				'type'  => 'title',
				'title' => __( 'cartback', 'cartback' ),
				'desc'  => __( 'Paste the endpoint and secret that cartback showed when you connected this store. Until both are set, nothing is sent.', 'cartback' ),
			),
			array(
				'id'          => self::ENDPOINT,
				'type'        => 'url',
				'title'       => __( 'Endpoint', 'cartback' ),
				'placeholder' => 'https://…/webhooks/woocommerce',
				'default'     => '',
				'css'         => 'min-width:400px;',
			),
			array(
				'id'      => self::SECRET,
				'type'    => 'password',
				'title'   => __( 'Secret', 'cartback' ),
				'desc'    => __( 'Signs every capture and proves the links in cartback’s reminders.', 'cartback' ),
				'default' => '',
				'css'     => 'min-width:400px;',
			),
			array(
				'id'   => 'cartback_options',
				'type' => 'sectionend',
			),
		);
	}

	/**
	 * The endpoint, when it is an http(s) URL.
	 *
	 * @return string
	 */
	public static function endpoint() {
		return esc_url_raw( trim( (string) get_option( self::ENDPOINT, '' ) ), array( 'http', 'https' ) );
	}

	/**
	 * The secret.
	 *
	 * @return string
	 */
	public static function secret() {
		return trim( (string) get_option( self::SECRET, '' ) );
	}

	/**
	 * Whether captures can be sent.
	 *
	 * @return bool
	 */
	public static function is_configured() {
		return '' !== self::endpoint() && '' !== self::secret();
	}
}
