//! WooCommerce webhooks (being written).
