//! The settings reference, generated from the settings types themselves:
//! every key a service reads, its environment variable, its compiled
//! default and the doc comment of its field. `--help` and
//! `docs/configuration/<service>.md` are both rendered from it, and a test
//! per service checks the committed page is current, so neither can drift
//! from the code (a setting added to a struct shows up in both).
//!
//! The keys and docs come from the type's JSON Schema (`schemars`, which
//! reads the doc comments and serde's renames); the defaults from
//! serializing `Default::default()`, so a default computed in code (a
//! service's own ports, say) is the one shown.

use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

use super::ENV_PREFIX;

/// One setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Dotted key, as in the TOML file: `server.tls.cert_file`.
    pub key: String,
    /// Its environment variable: `MLMESH_SERVER__TLS__CERT_FILE`.
    pub env: String,
    /// The compiled default, as it would be written (`unset` for none).
    pub default: String,
    /// What it is: its doc comment, on one line.
    pub doc: String,
    /// Its values: `integer`, `string`, `boolean`, `list`, `table`, or the
    /// words an enum takes (`pretty | json`).
    pub kind: String,
}

/// Every setting of `S`, in declaration order.
pub fn entries<S: JsonSchema + Default + Serialize>() -> Vec<Entry> {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<S>();
    let root = schema.as_value().clone();
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let defaults = serde_json::to_value(S::default()).unwrap_or(Value::Null);
    let mut out = Vec::new();
    walk(&root, &defs, &mut Vec::new(), Some(&defaults), &mut out);
    out
}

/// `schema` resolved through `$ref` (one level of indirection per call).
fn resolve<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    let mut s = schema;
    for _ in 0..16 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix("#/$defs/").and_then(|n| defs.get(n)) {
                Some(d) => s = d,
                None => return s,
            },
            None => return s,
        }
    }
    s
}

/// The struct (object with properties) a schema is, also through an
/// `Option` (`anyOf [T, null]`).
fn as_section<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> Option<&'a Value> {
    let s = resolve(schema, defs);
    if s.get("properties").is_some() {
        return Some(s);
    }
    let branches = s.get("anyOf").or_else(|| s.get("oneOf"))?.as_array()?;
    let mut structs = branches
        .iter()
        .map(|b| resolve(b, defs))
        .filter(|b| b.get("properties").is_some());
    let only = structs.next()?;
    structs.next().is_none().then_some(only)
}

fn walk(
    schema: &Value,
    defs: &Map<String, Value>,
    path: &mut Vec<String>,
    default: Option<&Value>,
    out: &mut Vec<Entry>,
) {
    let Some(section) = as_section(schema, defs) else {
        return;
    };
    let Some(props) = section.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, prop) in props {
        path.push(name.clone());
        let value = default.and_then(|d| d.get(name));
        if as_section(prop, defs).is_some() {
            walk(prop, defs, path, value, out);
        } else {
            let doc = prop
                .get("description")
                .or_else(|| resolve(prop, defs).get("description"))
                .and_then(Value::as_str)
                .unwrap_or("");
            out.push(Entry {
                key: path.join("."),
                env: format!(
                    "{ENV_PREFIX}_{}",
                    path.iter()
                        .map(|p| p.to_uppercase())
                        .collect::<Vec<_>>()
                        .join("__")
                ),
                default: show(value.unwrap_or(&Value::Null)),
                doc: one_line(doc),
                kind: kind(prop, defs),
            });
        }
        path.pop();
    }
}

/// A default as a person would write it.
fn show(v: &Value) -> String {
    match v {
        Value::Null => "unset".into(),
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            a.iter().map(show).collect::<Vec<_>>().join(",")
        }
        Value::Object(o) if o.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

fn one_line(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What values a setting takes, from its schema.
fn kind(schema: &Value, defs: &Map<String, Value>) -> String {
    let s = resolve(schema, defs);
    // An enum of words: `enum: [...]` or `oneOf` of `const`s.
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return e.iter().map(show).collect::<Vec<_>>().join(" | ");
    }
    if let Some(branches) = s
        .get("oneOf")
        .or_else(|| s.get("anyOf"))
        .and_then(Value::as_array)
    {
        let mut words = Vec::new();
        for b in branches {
            let b = resolve(b, defs);
            if let Some(c) = b.get("const") {
                words.push(show(c));
            } else if let Some(e) = b.get("enum").and_then(Value::as_array) {
                words.extend(e.iter().map(show));
            } else if b.get("type").and_then(Value::as_str) == Some("null") {
                continue;
            } else {
                words.clear();
                break;
            }
        }
        if !words.is_empty() {
            return words.join(" | ");
        }
        // `Option<T>`: the kind of T.
        let non_null: Vec<&Value> = branches
            .iter()
            .filter(|b| resolve(b, defs).get("type").and_then(Value::as_str) != Some("null"))
            .collect();
        if let [one] = non_null.as_slice() {
            return kind(one, defs);
        }
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("value")
            .to_owned(),
        _ => "value".into(),
    };
    match ty.as_str() {
        "array" => "list".into(),
        "object" => "table".into(),
        "number" => "number".into(),
        other => other.into(),
    }
}

/// `--help`'s settings section: every key with its variable and default,
/// and the first sentence of its doc.
pub fn help(entries: &[Entry], doc_page: &str) -> String {
    let mut s = format!(
        "Settings (file key = default, then its environment variable; the full reference is {doc_page}):\n"
    );
    for e in entries {
        let _ = writeln!(s, "  {} = {}", e.key, e.default);
        let _ = writeln!(s, "      {}  ({})", e.env, e.kind);
        if !e.doc.is_empty() {
            let _ = writeln!(s, "      {}", first_sentence(&e.doc));
        }
    }
    s.push_str("\nTrace export: OTEL_EXPORTER_OTLP_ENDPOINT (off when unset), OTEL_SERVICE_NAME.");
    s
}

fn first_sentence(doc: &str) -> &str {
    // Up to the first ". " not inside backticks or parentheses.
    let (mut ticks, mut parens) = (false, 0i32);
    for (i, c) in doc.char_indices() {
        match c {
            '`' => ticks = !ticks,
            '(' => parens += 1,
            ')' => parens -= 1,
            '.' if !ticks && parens <= 0 && doc[i + 1..].starts_with(' ') => {
                return &doc[..=i];
            }
            _ => {}
        }
    }
    doc
}

/// The Markdown page of one service's settings.
pub fn markdown(service: &str, about: &str, entries: &[Entry]) -> String {
    let mut s = format!(
        "# `{service}` settings\n\n\
         <!-- Generated from the settings types by `MLMESH_BLESS=1 cargo test -p {service} settings_reference`; do not edit. -->\n\n\
         {about}\n\n\
         Layered: compiled defaults, then the TOML file given by `--config` (or `MLMESH_CONFIG`), \
         then the environment variables (`MLMESH_<SECTION>__<KEY>`; lists are comma-separated). \
         A value that does not fit fails start naming its key.\n\n\
         | key | environment variable | default | values | meaning |\n|---|---|---|---|---|\n"
    );
    for e in entries {
        let _ = writeln!(
            s,
            "| `{}` | `{}` | {} | {} | {} |",
            e.key,
            e.env,
            cell(&format!("`{}`", e.default)),
            cell(&e.kind),
            cell(&e.doc)
        );
    }
    s
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Compares `docs/configuration/<service>.md` (under `repo`) with what the
/// settings types generate; with `MLMESH_BLESS=1` rewrites it instead.
/// For a test in each service.
pub fn check_page(repo: &std::path::Path, service: &str, generated: &str) -> Result<(), String> {
    let path = repo
        .join("docs/configuration")
        .join(format!("{service}.md"));
    if std::env::var_os("MLMESH_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap_or(repo)).map_err(|e| e.to_string())?;
        return std::fs::write(&path, generated).map_err(|e| e.to_string());
    }
    let committed = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (generate it with MLMESH_BLESS=1)", path.display()))?;
    if committed != generated {
        return Err(format!(
            "{} is not what the settings types generate; run `MLMESH_BLESS=1 cargo test -p {service} settings_reference` and commit it",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A section.
    #[derive(Serialize, serde::Deserialize, JsonSchema)]
    #[serde(default)]
    struct Inner {
        /// How many. Really.
        count: u32,
        /// Maybe an address.
        addr: Option<String>,
        mode: Mode,
    }

    impl Default for Inner {
        fn default() -> Self {
            Self {
                count: 7,
                addr: None,
                mode: Mode::Fast,
            }
        }
    }

    #[derive(Serialize, serde::Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        /// Quick.
        Fast,
        Slow,
    }

    #[derive(Default, Serialize, serde::Deserialize, JsonSchema)]
    #[serde(default)]
    struct Top {
        /// The inner section.
        inner: Inner,
        /// Names, a list.
        names: Vec<String>,
        nested: Option<Inner>,
    }

    #[test]
    fn keys_env_defaults_docs_and_kinds_come_from_the_type() {
        let e = entries::<Top>();
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "inner.count",
                "inner.addr",
                "inner.mode",
                "names",
                "nested.count",
                "nested.addr",
                "nested.mode"
            ]
        );
        assert_eq!(e[0].env, "MLMESH_INNER__COUNT");
        assert_eq!(e[0].default, "7");
        assert_eq!(e[0].doc, "How many. Really.");
        assert_eq!(e[0].kind, "integer");
        assert_eq!(e[1].default, "unset");
        assert_eq!(e[1].kind, "string");
        // (schemars lists documented variants apart: the words, in any order)
        let mut words: Vec<&str> = e[2].kind.split(" | ").collect();
        words.sort();
        assert_eq!(words, ["fast", "slow"]);
        assert_eq!(e[2].default, "fast");
        assert_eq!(e[3].kind, "list");
        assert_eq!(e[3].default, "[]");
        assert_eq!(e[4].default, "unset", "an unset optional section");
        let h = help(&e, "docs/x.md");
        assert!(
            h.contains("  inner.count = 7\n      MLMESH_INNER__COUNT  (integer)\n      How many.")
        );
        assert!(!h.contains("Really"), "help shows the first sentence: {h}");
        let md = markdown("demo", "A demo.", &e);
        assert!(md.contains("| `inner.mode` | `MLMESH_INNER__MODE` | `fast` | "));
    }
}
