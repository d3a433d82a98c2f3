//! Shopify webhooks (being written).
