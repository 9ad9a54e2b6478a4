//! `{{ path }}` templates in trigger parameters and lock keys, e.g. `"{{ labels.instance }}"`,
//! `"disk {{ params.path }} on {{ labels.exported_instance }}"`. A path is looked up in a JSON
//! context (`labels`, `annotations`, `params`, `body`, …); a missing value renders as `""`.

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Path(Vec<String>),
}

impl Template {
    /// Parse `text`. Each `{{ … }}` must hold a dotted path whose first segment is one of
    /// `roots`.
    pub fn parse(text: &str, roots: &[&str]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("`{text}`: `{{{{` without a closing `}}}}`"))?;
            let path: Vec<String> = after[..end].trim().split('.').map(str::to_string).collect();
            if path.iter().any(|p| {
                p.is_empty()
                    || !p
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            }) {
                return Err(format!(
                    "`{text}`: `{}` is not a dotted name like `labels.instance`",
                    after[..end].trim()
                ));
            }
            if !roots.contains(&path[0].as_str()) {
                return Err(format!(
                    "`{text}`: `{}` is not available here (use one of: {})",
                    path[0],
                    roots.join(", ")
                ));
            }
            parts.push(Part::Path(path));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Whether the template has any `{{ … }}`.
    pub fn is_dynamic(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Path(_)))
    }

    /// Render against `context` (a JSON object).
    pub fn render(&self, context: &Value) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Path(path) => {
                    let mut v = context;
                    for key in path {
                        v = v.get(key.as_str()).unwrap_or(&Value::Null);
                    }
                    match v {
                        Value::Null => {}
                        Value::String(s) => out.push_str(s),
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        out
    }
}

/// The template in its canonical written form, `{{ labels.instance }}`.
impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(t) => f.write_str(t)?,
                Part::Path(path) => write!(f, "{{{{ {} }}}}", path.join("."))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_paths_and_text() {
        let t = Template::parse(
            "{{ labels.mountpoint }} on {{labels.exported_instance}}",
            &["labels"],
        )
        .unwrap();
        let ctx = json!({"labels": {"mountpoint": "/var", "exported_instance": "web-1"}});
        assert_eq!(t.render(&ctx), "/var on web-1");
        assert_eq!(
            t.to_string(),
            "{{ labels.mountpoint }} on {{ labels.exported_instance }}"
        );
        assert!(t.is_dynamic());
        let missing = Template::parse("x{{ labels.nope }}y", &["labels"]).unwrap();
        assert_eq!(missing.render(&ctx), "xy");
        assert!(!Template::parse("plain", &["labels"]).unwrap().is_dynamic());
    }

    #[test]
    fn rejects_unknown_roots_and_bad_syntax() {
        let e = Template::parse("{{ secrets.x }}", &["labels", "params"]).unwrap_err();
        assert!(
            e.contains("`secrets` is not available here (use one of: labels, params)"),
            "{e}"
        );
        assert!(
            Template::parse("{{ labels.x", &["labels"])
                .unwrap_err()
                .contains("without a closing")
        );
        assert!(
            Template::parse("{{ labels x }}", &["labels"])
                .unwrap_err()
                .contains("not a dotted name")
        );
    }
}
