//! A replicated record body in two parts: what lasts (the body with its erasable items
//! emptied) and the erasable items themselves (the fields a catalog can restrict, which a
//! grant that ends erases), so that each part is sealed under a key of its own and the key of
//! the items can be destroyed without touching the rest.

use serde_json::{Map, Value};

use crate::domain::{RESTRICTABLE_FIELDS, RecordKind};

/// The fields of `kind` a catalog can restrict that hold no other such field (`contact.name`
/// and `contact.phone`, not `contact`): what a store sealed in clear before puts apart, not
/// knowing which of them the owner's catalog made conditional.
pub fn restrictable_leaves(kind: RecordKind) -> Vec<String> {
    let of_kind = || {
        RESTRICTABLE_FIELDS
            .iter()
            .filter(move |(k, _)| *k == kind)
            .map(|(_, f)| *f)
    };
    of_kind()
        .filter(|path| {
            !of_kind()
                .any(|other| other.len() > path.len() && other.starts_with(&format!("{path}.")))
        })
        .map(str::to_string)
        .collect()
}

/// `body` without the items at `paths`, and those items (a JSON object of path to value);
/// `None` when none of them holds a value that is not empty (or `body` is not JSON).
pub fn split(body: &str, paths: &[String]) -> Option<(String, String)> {
    if paths.is_empty() {
        return None;
    }
    let mut value: Value = serde_json::from_str(body).ok()?;
    let mut items = Map::new();
    for path in paths {
        let Some(slot) = at(&mut value, path) else {
            continue;
        };
        if is_empty(slot) {
            continue;
        }
        let empty = emptied(slot);
        items.insert(path.clone(), std::mem::replace(slot, empty));
    }
    if items.is_empty() {
        return None;
    }
    Some((value.to_string(), Value::Object(items).to_string()))
}

/// The paths of a part of items.
pub fn paths_of(items: &str) -> Vec<String> {
    match serde_json::from_str::<Value>(items) {
        Ok(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// `lasting` with `items` put back at their paths.
pub fn merge(lasting: &str, items: &str) -> Result<String, String> {
    let mut value: Value = serde_json::from_str(lasting).map_err(|e| e.to_string())?;
    let Value::Object(items) = serde_json::from_str::<Value>(items).map_err(|e| e.to_string())?
    else {
        return Err("the items are not a JSON object".into());
    };
    for (path, item) in items {
        match at(&mut value, &path) {
            Some(slot) => *slot = item,
            None => return Err(format!("no field `{path}` to put an item back into")),
        }
    }
    Ok(value.to_string())
}

fn at<'a>(value: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.')
        .try_fold(value, |v, segment| v.get_mut(segment))
}

fn is_empty(v: &Value) -> bool {
    *v == emptied(v)
}

/// The empty value of `v`'s type (as the sharing rules empty a withheld field).
pub fn emptied(v: &Value) -> Value {
    match v {
        Value::String(_) => Value::String(String::new()),
        Value::Number(_) => Value::from(0),
        Value::Bool(_) => Value::Bool(false),
        Value::Array(_) => Value::Array(Vec::new()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), emptied(v))).collect())
        }
        Value::Null => Value::Null,
    }
}
