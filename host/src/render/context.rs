//! The variables a template sees, and the names behind undefined-value errors.
//!
//! In: the render request and the locale used. Out: the context root of the
//! template contract (`shop`, `customer`, `order`, `shipment`, `event`,
//! `data`, `locale`, `now`), built field by field from an allowlist so that
//! nothing else — above all the customer's email address and phone number —
//! can reach a template. Timestamps are RFC 3339 strings, money is
//! `{minor, currency}`.
//!
//! minijinja reports a strict-undefined error without saying which variable
//! was undefined. The context's maps and lists therefore record the lookups
//! that found nothing (`data.tracking_url`), and [`TemplateContext::undefined_on`]
//! picks the one that belongs to the failing line. Nothing here fails.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use serde_json::json;
use tidings_sdk::types::Customer;

use super::RenderRequest;

/// The context root of one render and the lookups that failed in it.
pub(super) struct TemplateContext {
    root: Value,
    misses: Arc<Misses>,
}

impl TemplateContext {
    /// The context for `req` rendered in `locale`. `globals` are the
    /// environment's global names (`range`, ...): minijinja looks them up in
    /// the context first, so they are not failed lookups.
    pub(super) fn new(
        req: &RenderRequest<'_>,
        locale: &str,
        globals: impl IntoIterator<Item = String>,
    ) -> Self {
        let misses = Arc::new(Misses {
            recent: Mutex::new(VecDeque::new()),
            globals: globals.into_iter().collect(),
        });
        let root = tracked(context_json(req, locale), String::new(), &misses);
        TemplateContext { root, misses }
    }

    /// The value to render templates with.
    pub(super) fn root(&self) -> Value {
        self.root.clone()
    }

    /// The variable behind an undefined-value error on the template line
    /// `line`: the latest failed lookup whose last name appears on it.
    pub(super) fn undefined_on(&self, line: &str) -> Option<String> {
        self.misses.latest_on(line)
    }
}

/// The template context, built field by field so that nothing else — above
/// all the customer's email and phone — reaches a template.
fn context_json(req: &RenderRequest<'_>, locale: &str) -> serde_json::Value {
    let event = req.event;
    let order = &event.order;
    let customer = customer_json(&order.customer);
    json!({
        "shop": req.shop,
        "customer": customer,
        "order": {
            "id": order.id,
            "number": order.number,
            "created_at": order.created_at.to_string(),
            "total": order.total,
            "items": order.items,
            "shipments": order.shipments,
            "customer": customer,
            "tags": order.tags,
            "attributes": order.attributes,
        },
        "shipment": event.shipment,
        "event": {
            "id": event.id,
            "kind": event.kind.as_str(),
            "occurred_at": event.occurred_at.to_string(),
            "attributes": event.attributes,
        },
        "data": req.data,
        "locale": locale,
        "now": req.now.to_string(),
    })
}

fn customer_json(customer: &Customer) -> serde_json::Value {
    json!({
        "first_name": customer.first_name,
        "locale": customer.locale,
        "timezone": customer.timezone,
    })
}

/// Lookups that found nothing, newest last, so that an undefined-value error
/// (which minijinja reports without a name) can name its variable.
#[derive(Debug)]
struct Misses {
    recent: Mutex<VecDeque<String>>,
    /// Top-level names minijinja finds among its globals (`range`, ...).
    globals: Vec<String>,
}

impl Misses {
    const KEPT: usize = 32;

    fn record(&self, path: String) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == Self::KEPT {
                recent.pop_front();
            }
            recent.push_back(path);
        }
    }

    fn latest_on(&self, line: &str) -> Option<String> {
        let recent = self.recent.lock().ok()?;
        recent
            .iter()
            .rev()
            .find(|path| {
                let leaf = path.rsplit('.').next().unwrap_or(path);
                let leaf = leaf.split('[').next().unwrap_or(leaf);
                !leaf.is_empty() && line.contains(leaf)
            })
            .cloned()
    }
}

/// `json` as a template value whose maps and lists record failed lookups,
/// named by their path from the context root (`data.tracking_url`).
fn tracked(json: serde_json::Value, path: String, misses: &Arc<Misses>) -> Value {
    match json {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            (None, None) => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::from(s),
        serde_json::Value::Array(items) => {
            let items = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| child(item, || format!("{path}[{i}]"), misses))
                .collect();
            Value::from_object(TrackedList {
                path,
                items,
                misses: Arc::clone(misses),
            })
        }
        serde_json::Value::Object(map) => {
            let entries = map
                .into_iter()
                .map(|(key, item)| {
                    let joined = || match path.is_empty() {
                        true => key.clone(),
                        false => format!("{path}.{key}"),
                    };
                    let value = child(item, joined, misses);
                    (key, value)
                })
                .collect();
            Value::from_object(TrackedMap {
                path,
                entries,
                misses: Arc::clone(misses),
            })
        }
    }
}

/// A map's or list's item. Its path is worked out (a string of its own)
/// only if it is a map or list itself, since only those record lookups;
/// most of a context's values are strings and numbers.
fn child(json: serde_json::Value, path: impl FnOnce() -> String, misses: &Arc<Misses>) -> Value {
    let path = match &json {
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => path(),
        _ => String::new(),
    };
    tracked(json, path, misses)
}

#[derive(Debug)]
struct TrackedMap {
    path: String,
    entries: BTreeMap<String, Value>,
    misses: Arc<Misses>,
}

impl Object for TrackedMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let found = key.as_str().and_then(|k| self.entries.get(k)).cloned();
        if found.is_none() {
            let name = key.to_string();
            if self.path.is_empty() {
                if !self.misses.globals.contains(&name) {
                    self.misses.record(name);
                }
            } else {
                self.misses.record(format!("{}.{name}", self.path));
            }
        }
        found
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(
            self.entries
                .keys()
                .map(|k| Value::from(k.as_str()))
                .collect(),
        )
    }
}

#[derive(Debug)]
struct TrackedList {
    path: String,
    items: Vec<Value>,
    misses: Arc<Misses>,
}

impl Object for TrackedList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let found = key.as_usize().and_then(|i| self.items.get(i)).cloned();
        if found.is_none() {
            self.misses.record(format!("{}[{key}]", self.path));
        }
        found
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.items.len())
    }
}
