/**
 * cartback for WooCommerce: classic checkout.
 *
 * WooCommerce refreshes the order review (and so cartback's capture) when the address changes,
 * not when the phone, email or WhatsApp opt-in do. Ask for a refresh when one of those settles.
 */
( function ( $ ) {
	'use strict';

	var fields = '#billing_phone, #billing_email, #cartback_whatsapp_optin';
	var timer = null;
	var last = '';

	function current() {
		return [
			$( '#billing_phone' ).val(),
			$( '#billing_email' ).val(),
			$( '#cartback_whatsapp_optin' ).is( ':checked' )
		].join( '\n' );
	}

	function refresh() {
		var now = current();
		if ( now !== last ) {
			last = now;
			$( document.body ).trigger( 'update_checkout' );
		}
	}

	function changed() {
		window.clearTimeout( timer );
		timer = window.setTimeout( refresh, 1000 );
	}

	$( function () {
		last = current();
		$( 'form.checkout' ).on( 'input change', fields, changed );
	} );
}( jQuery ) );
