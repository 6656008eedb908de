//! Moving JSON values in and out of automerge documents. Records are serde types in `model`; this module is the
//! only place that knows how they are laid out as automerge objects.

use automerge::transaction::Transactable;
use automerge::{ObjType, ScalarValue, hydrate};
use serde_json::Value;

/// Writes `value` under `key` of map `obj`: objects and arrays become automerge maps and lists.
pub fn put(
    tx: &mut impl Transactable,
    obj: &automerge::ObjId,
    key: &str,
    value: &Value,
) -> Result<(), automerge::AutomergeError> {
    match value {
        Value::Object(map) => {
            let child = tx.put_object(obj, key, ObjType::Map)?;
            for (k, v) in map {
                put(tx, &child, k, v)?;
            }
        }
        Value::Array(items) => {
            let child = tx.put_object(obj, key, ObjType::List)?;
            for (index, item) in items.iter().enumerate() {
                insert(tx, &child, index, item)?;
            }
        }
        scalar => tx.put(obj, key, to_scalar(scalar))?,
    }
    Ok(())
}

fn insert(
    tx: &mut impl Transactable,
    list: &automerge::ObjId,
    index: usize,
    value: &Value,
) -> Result<(), automerge::AutomergeError> {
    match value {
        Value::Object(map) => {
            let child = tx.insert_object(list, index, ObjType::Map)?;
            for (k, v) in map {
                put(tx, &child, k, v)?;
            }
        }
        Value::Array(items) => {
            let child = tx.insert_object(list, index, ObjType::List)?;
            for (i, item) in items.iter().enumerate() {
                insert(tx, &child, i, item)?;
            }
        }
        scalar => tx.insert(list, index, to_scalar(scalar))?,
    }
    Ok(())
}

fn to_scalar(value: &Value) -> ScalarValue {
    match value {
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                ScalarValue::Uint(u)
            } else {
                ScalarValue::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => ScalarValue::Str(s.as_str().into()),
        _ => ScalarValue::Null,
    }
}

/// Converts a hydrated automerge value to JSON (maps keep sorted keys).
pub fn to_json(value: &hydrate::Value) -> Value {
    match value {
        hydrate::Value::Scalar(scalar) => scalar_to_json(scalar),
        hydrate::Value::Map(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), to_json(&v.value)))
                .collect(),
        ),
        hydrate::Value::List(list) => {
            Value::Array(list.iter().map(|v| to_json(&v.value)).collect())
        }
        hydrate::Value::Text(text) => Value::String(String::from(text)),
    }
}

fn scalar_to_json(scalar: &ScalarValue) -> Value {
    match scalar {
        ScalarValue::Str(s) => Value::String(s.to_string()),
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Value::from(*i),
        ScalarValue::Uint(u) => Value::from(*u),
        ScalarValue::F64(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        ScalarValue::Counter(c) => Value::from(i64::from(c)),
        ScalarValue::Boolean(b) => Value::Bool(*b),
        ScalarValue::Bytes(bytes) => Value::String(hex::encode(bytes)),
        ScalarValue::Unknown { .. } | ScalarValue::Null => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::{Automerge, ROOT};

    #[test]
    fn json_round_trips_through_a_document() {
        let value = serde_json::json!({
            "a": 1, "b": -2.5, "c": "text", "d": true, "e": null,
            "f": [1, {"g": "h"}, [2, 3]], "i": {"j": {"k": 18446744073709551615u64}}
        });
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        put(&mut tx, &ROOT, "record", &value).expect("put");
        tx.commit();
        let json = to_json(&doc.hydrate(None));
        assert_eq!(json["record"], value);
    }
}
