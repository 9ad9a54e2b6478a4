//! Values crossing between JSON and Rhai: parameters, the trigger, plugin inputs and outputs,
//! `parse_json`/`to_json`, and the run's output.

use rhai::{Array, Dynamic, Map};
use serde_json::{Number, Value};

/// Deeper nesting is refused, not walked: the conversion recurses on the script's
/// stack. serde_json stops parsing at the same depth, so real plugin output never hits it.
const MAX_DEPTH: usize = 128;

/// A JSON value as a Rhai value: `null` → `()`, integers that fit 64 bits → integers, other
/// numbers → floats, objects → maps.
pub(super) fn from_json(value: &Value) -> Result<Dynamic, String> {
    from_json_at(value, 0)
}

/// A JSON object as a Rhai map, converted as [`from_json`] converts its values.
pub(super) fn from_json_object(fields: &serde_json::Map<String, Value>) -> Result<Dynamic, String> {
    object_at(fields, 0)
}

fn from_json_at(value: &Value, depth: usize) -> Result<Dynamic, String> {
    Ok(match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => n
                .as_f64()
                .map(Dynamic::from_float)
                .ok_or_else(|| format!("the number {n} does not fit a float"))?,
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => {
            check_depth(depth)?;
            let items = items
                .iter()
                .map(|item| from_json_at(item, depth + 1))
                .collect::<Result<Array, _>>()?;
            Dynamic::from_array(items)
        }
        Value::Object(fields) => object_at(fields, depth)?,
    })
}

fn object_at(fields: &serde_json::Map<String, Value>, depth: usize) -> Result<Dynamic, String> {
    check_depth(depth)?;
    let mut map = Map::new();
    for (key, value) in fields {
        map.insert(key.as_str().into(), from_json_at(value, depth + 1)?);
    }
    Ok(Dynamic::from_map(map))
}

/// A Rhai value as JSON: `()` → `null`, characters → strings, BLOBs → arrays of bytes.
/// Functions, timestamps and other host types have no JSON form.
pub(super) fn to_json(value: &Dynamic) -> Result<Value, String> {
    to_json_at(value, 0)
}

fn to_json_at(value: &Dynamic, depth: usize) -> Result<Value, String> {
    // Variables captured by closures are shared; read through the lock.
    if value.is_shared() {
        return to_json_at(&value.flatten_clone(), depth);
    }
    if value.is_unit() {
        Ok(Value::Null)
    } else if let Ok(b) = value.as_bool() {
        Ok(Value::Bool(b))
    } else if let Ok(i) = value.as_int() {
        Ok(Value::Number(i.into()))
    } else if let Ok(f) = value.as_float() {
        Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("the number {f} has no JSON form"))
    } else if let Ok(c) = value.as_char() {
        Ok(Value::String(c.to_string()))
    } else if let Ok(s) = value.as_immutable_string_ref() {
        Ok(Value::String(s.to_string()))
    } else if let Ok(items) = value.as_array_ref() {
        check_depth(depth)?;
        items
            .iter()
            .map(|item| to_json_at(item, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    } else if let Ok(bytes) = value.as_blob_ref() {
        Ok(Value::Array(bytes.iter().map(|&b| b.into()).collect()))
    } else if let Ok(fields) = value.as_map_ref() {
        check_depth(depth)?;
        let mut object = serde_json::Map::with_capacity(fields.len());
        for (key, field) in fields.iter() {
            object.insert(key.to_string(), to_json_at(field, depth + 1)?);
        }
        Ok(Value::Object(object))
    } else {
        Err(format!(
            "a value of type `{}` has no JSON form",
            value.type_name()
        ))
    }
}

fn check_depth(depth: usize) -> Result<(), String> {
    if depth >= MAX_DEPTH {
        Err(format!(
            "values nested more than {MAX_DEPTH} levels deep are refused"
        ))
    } else {
        Ok(())
    }
}
