//! Short-lived copies of what the pipeline reads for every event and
//! message and merchants rarely change: a tenant's row, installs, channel
//! settings and templates.
//!
//! A write through this process's [`Store`](super::Store) forgets the
//! tenant's copies at once; a write by another process (several `tidings`
//! on one PostgreSQL) is seen within [`TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a copy is used before it is read again.
pub const TTL: Duration = Duration::from_secs(1);

/// Copies of `V` by tenant and key within the tenant.
#[derive(Debug)]
pub(super) struct TenantCache<V> {
    tenants: Mutex<HashMap<String, Copies<V>>>,
}

#[derive(Debug)]
struct Copies<V> {
    /// When the tenant's copies were last forgotten: a copy read before
    /// that is not kept.
    forgotten: Option<Instant>,
    keys: HashMap<String, (Instant, V)>,
}

impl<V> Default for TenantCache<V> {
    fn default() -> Self {
        Self {
            tenants: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> TenantCache<V> {
    /// The copy of `tenant`'s `key`, if it is fresh.
    pub(super) fn get(&self, tenant: &str, key: &str) -> Option<V> {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let (at, value) = tenants.get(tenant)?.keys.get(key)?;
        (at.elapsed() < TTL).then(|| value.clone())
    }

    /// Keep `value` as `tenant`'s `key`, read from the database at `read`
    /// (taken before the query was sent).
    pub(super) fn put(&self, tenant: &str, key: &str, read: Instant, value: V) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if tenants.len() >= 4096 && !tenants.contains_key(tenant) {
            // Drop what has gone stale rather than grow with every tenant
            // ever seen.
            tenants.retain(|_, copies| {
                copies.keys.retain(|_, (at, _)| at.elapsed() < TTL);
                !copies.keys.is_empty() || copies.forgotten.is_some_and(|f| f.elapsed() < TTL)
            });
        }
        let copies = tenants.entry(tenant.to_owned()).or_insert_with(|| Copies {
            forgotten: None,
            keys: HashMap::new(),
        });
        if copies.forgotten.is_some_and(|forgotten| read <= forgotten) {
            // Written meanwhile: this copy may be older than the write.
            return;
        }
        copies.keys.insert(key.to_owned(), (read, value));
    }

    /// The fresh copy of `tenant`'s `key`, or what `read` reads (kept).
    pub(super) async fn get_or_read<E, F>(&self, tenant: &str, key: &str, read: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.get(tenant, key) {
            return Ok(value);
        }
        let at = Instant::now();
        let value = read.await?;
        self.put(tenant, key, at, value.clone());
        Ok(value)
    }

    /// Forget every copy of `tenant`'s (it has just been written).
    pub(super) fn forget(&self, tenant: &str) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants.insert(
            tenant.to_owned(),
            Copies {
                forgotten: Some(Instant::now()),
                keys: HashMap::new(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_kept_until_the_tenant_is_written() {
        let cache = TenantCache::default();
        let read = Instant::now();
        cache.put("ten_a", "row", read, 1);
        cache.put("ten_b", "row", read, 2);
        assert_eq!(cache.get("ten_a", "row"), Some(1));
        cache.forget("ten_a");
        assert_eq!(cache.get("ten_a", "row"), None);
        assert_eq!(
            cache.get("ten_b", "row"),
            Some(2),
            "other tenants keep theirs"
        );
    }

    #[test]
    fn a_copy_read_before_a_write_is_not_kept() {
        let cache = TenantCache::default();
        let read = Instant::now();
        cache.forget("ten_a");
        cache.put("ten_a", "row", read, 1);
        assert_eq!(cache.get("ten_a", "row"), None);
        cache.put("ten_a", "row", Instant::now(), 2);
        assert_eq!(cache.get("ten_a", "row"), Some(2));
    }
}
