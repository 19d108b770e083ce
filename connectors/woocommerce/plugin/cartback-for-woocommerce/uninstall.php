<?php
/**
 * Uninstall: remove the plugin's options.
 *
 * @package Cartback
 */

defined( 'ABSPATH' ) || exit;
defined( 'WP_UNINSTALL_PLUGIN' ) || exit;

delete_option( 'cartback_endpoint' );
delete_option( 'cartback_secret' );
