//! Typed runbook parameters: checking values from files, the command line and the API, and
//! resolving a run's complete parameter set (defaults filled, required ones present).

use super::model::ParamType;
use serde_json::{Map, Value};

/// A declared parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: ParamType,
    /// What it means.
    pub description: Option<String>,
    /// Value when none is given.
    pub default: Option<Value>,
    /// Whether a run needs a value.
    pub required: bool,
    /// The only accepted values, if restricted.
    pub allowed: Option<Vec<Value>>,
}

impl ParamType {
    /// The name used in `runbook.toml`.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Bool => "bool",
            ParamType::Duration => "duration",
            ParamType::List => "list",
        }
    }

    /// Check a JSON value against the type, normalising where the type allows (a duration is
    /// kept as written once it parses).
    pub fn check(self, value: &Value) -> Result<Value, String> {
        let wrong = || format!("expected {}, got {value}", self.describe());
        match (self, value) {
            (ParamType::String, Value::String(_)) => Ok(value.clone()),
            (ParamType::Int, Value::Number(n)) if n.is_i64() => Ok(value.clone()),
            (ParamType::Bool, Value::Bool(_)) => Ok(value.clone()),
            (ParamType::Duration, Value::String(s)) => {
                crate::config::parse_duration(s)?;
                Ok(value.clone())
            }
            (ParamType::List, Value::Array(items)) if items.iter().all(Value::is_string) => {
                Ok(value.clone())
            }
            _ => Err(wrong()),
        }
    }

    /// Parse a command-line value (`-p name=value`).
    pub fn parse_cli(self, text: &str) -> Result<Value, String> {
        let value = match self {
            ParamType::String | ParamType::Duration => Value::String(text.to_string()),
            ParamType::Int => Value::from(
                text.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("expected a whole number, got `{text}`"))?,
            ),
            ParamType::Bool => Value::Bool(match text.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => true,
                "false" | "no" | "off" | "0" => false,
                _ => return Err(format!("expected true or false, got `{text}`")),
            }),
            ParamType::List => Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_string()))
                    .collect(),
            ),
        };
        self.check(&value)
    }

    fn describe(self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Int => "a whole number",
            ParamType::Bool => "true or false",
            ParamType::Duration => "a duration such as \"30s\"",
            ParamType::List => "a list of strings",
        }
    }
}

/// A TOML value as JSON (dates become strings).
pub fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

impl Parameter {
    /// Check a value for this parameter: its type, then the allowed values.
    pub fn check(&self, value: &Value) -> Result<Value, String> {
        let value = self.kind.check(value)?;
        if let Some(allowed) = &self.allowed
            && !allowed.contains(&value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(format!(
                "{value} is not allowed (allowed: {})",
                list.join(", ")
            ));
        }
        Ok(value)
    }
}

/// The complete parameters of a run: each given value checked, defaults filled in, and every
/// problem reported (unknown names, bad values, missing required parameters).
pub fn resolve(
    declared: &[Parameter],
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<String>> {
    let mut errors = Vec::new();
    let mut out = Map::new();
    for name in given.keys() {
        if !declared.iter().any(|p| &p.name == name) {
            let known: Vec<&str> = declared.iter().map(|p| p.name.as_str()).collect();
            errors.push(if known.is_empty() {
                format!("unknown parameter `{name}` (this runbook takes none)")
            } else {
                format!("unknown parameter `{name}` (known: {})", known.join(", "))
            });
        }
    }
    for p in declared {
        match given.get(&p.name) {
            Some(v) => match p.check(v) {
                Ok(v) => {
                    out.insert(p.name.clone(), v);
                }
                Err(e) => errors.push(format!("parameter `{}`: {e}", p.name)),
            },
            None => match &p.default {
                Some(d) => {
                    out.insert(p.name.clone(), d.clone());
                }
                None if p.required => errors.push(format!(
                    "parameter `{}` ({}) is required",
                    p.name,
                    p.kind.name()
                )),
                None => {}
            },
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param(name: &str, kind: ParamType) -> Parameter {
        Parameter {
            name: name.into(),
            kind,
            description: None,
            default: None,
            required: false,
            allowed: None,
        }
    }

    #[test]
    fn cli_values_parse_by_type() {
        assert_eq!(ParamType::Int.parse_cli("42").unwrap(), json!(42));
        assert!(ParamType::Int.parse_cli("4.2").is_err());
        assert_eq!(ParamType::Bool.parse_cli("yes").unwrap(), json!(true));
        assert!(ParamType::Bool.parse_cli("maybe").is_err());
        assert_eq!(ParamType::Duration.parse_cli("5m").unwrap(), json!("5m"));
        assert!(ParamType::Duration.parse_cli("soon").is_err());
        assert_eq!(
            ParamType::List.parse_cli("a, b,,c").unwrap(),
            json!(["a", "b", "c"])
        );
    }

    #[test]
    fn resolve_fills_defaults_and_reports_every_problem() {
        let mut path = param("path", ParamType::String);
        path.default = Some(json!("/var/tmp"));
        let mut count = param("count", ParamType::Int);
        count.required = true;
        let mut mode = param("mode", ParamType::String);
        mode.allowed = Some(vec![json!("fast"), json!("safe")]);
        let declared = vec![path, count, mode];

        let ok = resolve(&declared, json!({"count": 3}).as_object().unwrap()).unwrap();
        assert_eq!(Value::Object(ok), json!({"path": "/var/tmp", "count": 3}));

        let errors = resolve(
            &declared,
            json!({"mode": "yolo", "colour": "red"})
                .as_object()
                .unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "unknown parameter `colour` (known: path, count, mode)",
                "parameter `count` (int) is required",
                "parameter `mode`: \"yolo\" is not allowed (allowed: \"fast\", \"safe\")",
            ]
        );
    }
}
