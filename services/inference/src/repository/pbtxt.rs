//! A reader for Triton's `config.pbtxt` (protobuf text format) into
//! [`pb::ModelConfig`]. It knows the fields mlmesh serves and skips any
//! other field with a warning, so a repository written for Triton (with
//! `optimization`, `model_warmup`, …) loads as is.

use mlmesh_proto::inference as pb;

/// A parsed value: a scalar token or a nested message.
#[derive(Debug, Clone)]
enum Value {
    Scalar(String),
    Message(Vec<(String, Value)>),
}

/// Largest `config.pbtxt` read (a real one is a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Deepest nesting of messages (Triton's own configs nest 4 or 5 deep);
/// the parser recurses per level, so this bounds its stack.
pub const MAX_DEPTH: usize = 32;

struct Lexer<'a> {
    s: &'a [u8],
    at: usize,
    depth: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(u8),
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            s: text.as_bytes(),
            at: 0,
            depth: 0,
        }
    }

    fn line(&self) -> usize {
        1 + self.s[..self.at.min(self.s.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
    }

    fn skip_space(&mut self) {
        while self.at < self.s.len() {
            match self.s[self.at] {
                b'#' => {
                    while self.at < self.s.len() && self.s[self.at] != b'\n' {
                        self.at += 1;
                    }
                }
                c if c.is_ascii_whitespace() => self.at += 1,
                _ => break,
            }
        }
    }

    fn peek(&mut self) -> Result<Option<Tok>, String> {
        let save = self.at;
        let t = self.next();
        self.at = save;
        t
    }

    fn next(&mut self) -> Result<Option<Tok>, String> {
        self.skip_space();
        let Some(&c) = self.s.get(self.at) else {
            return Ok(None);
        };
        if c == b'"' || c == b'\'' {
            self.at += 1;
            let mut out = Vec::new();
            loop {
                let Some(&b) = self.s.get(self.at) else {
                    return Err(format!("line {}: unterminated string", self.line()));
                };
                self.at += 1;
                match b {
                    b'\\' => {
                        let Some(&e) = self.s.get(self.at) else {
                            return Err(format!("line {}: unterminated string", self.line()));
                        };
                        self.at += 1;
                        out.push(match e {
                            b'n' => b'\n',
                            b't' => b'\t',
                            b'r' => b'\r',
                            other => other,
                        });
                    }
                    b if b == c => break,
                    b => out.push(b),
                }
            }
            return String::from_utf8(out)
                .map(|s| Some(Tok::Str(s)))
                .map_err(|_| format!("line {}: string is not UTF-8", self.line()));
        }
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'+' || c == b'.' {
            let start = self.at;
            while self.at < self.s.len()
                && (self.s[self.at].is_ascii_alphanumeric()
                    || matches!(self.s[self.at], b'_' | b'-' | b'+' | b'.'))
            {
                self.at += 1;
            }
            let word = String::from_utf8_lossy(&self.s[start..self.at]).into_owned();
            return Ok(Some(Tok::Ident(word)));
        }
        self.at += 1;
        Ok(Some(Tok::Punct(c)))
    }
}

/// Parses fields until `end` (`}` / `>`) or the end of input.
fn parse_fields(lx: &mut Lexer<'_>, end: Option<u8>) -> Result<Vec<(String, Value)>, String> {
    let mut fields = Vec::new();
    loop {
        match lx.next()? {
            None if end.is_none() => return Ok(fields),
            None => return Err(format!("line {}: missing closing brace", lx.line())),
            Some(Tok::Punct(c)) if Some(c) == end => return Ok(fields),
            Some(Tok::Punct(b',' | b';')) => continue,
            Some(Tok::Ident(name)) => {
                let mut t = lx.peek()?;
                if t == Some(Tok::Punct(b':')) {
                    lx.next()?;
                    t = lx.peek()?;
                }
                if t == Some(Tok::Punct(b'[')) {
                    lx.next()?;
                    loop {
                        match lx.peek()? {
                            Some(Tok::Punct(b']')) => {
                                lx.next()?;
                                break;
                            }
                            Some(Tok::Punct(b',')) => {
                                lx.next()?;
                            }
                            _ => fields.push((name.clone(), parse_value(lx)?)),
                        }
                    }
                } else {
                    fields.push((name, parse_value(lx)?));
                }
            }
            Some(t) => return Err(format!("line {}: unexpected {t:?}", lx.line())),
        }
    }
}

fn parse_value(lx: &mut Lexer<'_>) -> Result<Value, String> {
    match lx.next()? {
        Some(Tok::Punct(open @ (b'{' | b'<'))) => {
            lx.depth += 1;
            if lx.depth > MAX_DEPTH {
                return Err(format!(
                    "line {}: messages nested more than {MAX_DEPTH} deep",
                    lx.line()
                ));
            }
            let close = if open == b'{' { b'}' } else { b'>' };
            let fields = parse_fields(lx, Some(close))?;
            lx.depth -= 1;
            Ok(Value::Message(fields))
        }
        Some(Tok::Ident(s)) => Ok(Value::Scalar(s)),
        Some(Tok::Str(mut s)) => {
            // Adjacent string literals concatenate.
            while let Some(Tok::Str(more)) = lx.peek()? {
                lx.next()?;
                s.push_str(&more);
            }
            Ok(Value::Scalar(s))
        }
        other => Err(format!(
            "line {}: expected a value, found {other:?}",
            lx.line()
        )),
    }
}

/// Typed access to one message's fields, collecting unknown names.
struct Fields<'a> {
    path: String,
    items: &'a [(String, Value)],
    warnings: &'a mut Vec<String>,
}

impl Fields<'_> {
    fn scalar<T: std::str::FromStr>(&self, v: &Value, name: &str) -> Result<T, String> {
        match v {
            Value::Scalar(s) => s
                .parse()
                .map_err(|_| format!("{}{name}: {s:?} is not a valid value", self.path)),
            Value::Message(_) => Err(format!(
                "{}{name}: expected a value, found a message",
                self.path
            )),
        }
    }

    fn message<'b>(&self, v: &'b Value, name: &str) -> Result<&'b [(String, Value)], String> {
        match v {
            Value::Message(m) => Ok(m),
            Value::Scalar(s) => Err(format!(
                "{}{name}: expected {{ … }}, found {s:?}",
                self.path
            )),
        }
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "t" | "1" => Some(true),
        "false" | "False" | "f" | "0" => Some(false),
        _ => None,
    }
}

/// Runs `each(name, value)` over a message's fields; unknown ones are
/// reported by returning `false`.
fn walk(
    f: &mut Fields<'_>,
    mut each: impl FnMut(&str, &Value, &Fields<'_>) -> Result<bool, String>,
) -> Result<(), String> {
    let items = f.items;
    let mut unknown = Vec::new();
    for (name, v) in items {
        if !each(name, v, f)? {
            unknown.push(format!("{}{name}", f.path));
        }
    }
    f.warnings.extend(unknown);
    Ok(())
}

fn data_type(s: &str, path: &str) -> Result<i32, String> {
    pb::DataType::from_str_name(s)
        .map(|d| d as i32)
        .ok_or_else(|| {
            format!("{path}: unknown data type {s:?} (TYPE_FP32, TYPE_INT64, TYPE_STRING, …)")
        })
}

/// Parses `text`; returns the config and the names of fields it skipped.
pub fn parse(text: &str) -> Result<(pb::ModelConfig, Vec<String>), String> {
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "{} bytes; a config.pbtxt may have at most {MAX_CONFIG_BYTES}",
            text.len()
        ));
    }
    let mut lx = Lexer::new(text);
    let items = parse_fields(&mut lx, None)?;
    let mut warnings = Vec::new();
    let mut cfg = pb::ModelConfig::default();
    let mut root = Fields {
        path: String::new(),
        items: &items,
        warnings: &mut warnings,
    };
    let mut nested: Vec<String> = Vec::new();
    walk(&mut root, |name, v, f| {
        match name {
            "name" => cfg.name = f.scalar(v, name)?,
            "platform" => cfg.platform = f.scalar(v, name)?,
            "backend" => cfg.backend = f.scalar(v, name)?,
            "max_batch_size" => cfg.max_batch_size = f.scalar(v, name)?,
            "default_model_filename" => cfg.default_model_filename = f.scalar(v, name)?,
            "input" => cfg.input.push(input(f.message(v, name)?, &mut nested)?),
            "output" => cfg.output.push(output(f.message(v, name)?, &mut nested)?),
            "instance_group" => {
                let mut g = pb::ModelInstanceGroup::default();
                for (k, x) in f.message(v, name)? {
                    match k.as_str() {
                        "name" => g.name = f.scalar(x, k)?,
                        "count" => g.count = f.scalar(x, k)?,
                        "kind" => {
                            let s: String = f.scalar(x, k)?;
                            g.kind = pb::model_instance_group::Kind::from_str_name(&s)
                                .map(|k| k as i32)
                                .ok_or_else(|| {
                                    format!("instance_group.kind: unknown kind {s:?}")
                                })?;
                        }
                        other => nested.push(format!("instance_group.{other}")),
                    }
                }
                cfg.instance_group.push(g);
            }
            "version_policy" => cfg.version_policy = Some(version_policy(f.message(v, name)?)?),
            "dynamic_batching" => {
                cfg.dynamic_batching = Some(dynamic_batching(f.message(v, name)?, &mut nested)?)
            }
            "parameters" => {
                let m = f.message(v, name)?;
                let mut key = None;
                let mut value = String::new();
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("key", Value::Scalar(s)) => key = Some(s.clone()),
                        ("value", Value::Message(inner)) => {
                            for (ik, iv) in inner {
                                if let ("string_value", Value::Scalar(s)) = (ik.as_str(), iv) {
                                    value = s.clone();
                                }
                            }
                        }
                        _ => {
                            return Err(
                                "parameters: expected { key: … value: { string_value: … } }".into(),
                            );
                        }
                    }
                }
                let key = key.ok_or("parameters: missing key")?;
                cfg.parameters.insert(
                    key,
                    pb::ModelParameter {
                        string_value: value,
                    },
                );
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    warnings.extend(nested);
    Ok((cfg, warnings))
}

fn dims(v: &Value, path: &str, out: &mut Vec<i64>) -> Result<(), String> {
    match v {
        Value::Scalar(s) => {
            out.push(
                s.parse()
                    .map_err(|_| format!("{path}: {s:?} is not an integer"))?,
            );
            Ok(())
        }
        Value::Message(_) => Err(format!("{path}: expected an integer")),
    }
}

fn reshape(m: &[(String, Value)], path: &str) -> Result<pb::ModelTensorReshape, String> {
    let mut r = pb::ModelTensorReshape::default();
    for (k, v) in m {
        if k == "shape" {
            dims(v, path, &mut r.shape)?;
        }
    }
    Ok(r)
}

fn message<'a>(v: &'a Value, path: &str) -> Result<&'a [(String, Value)], String> {
    match v {
        Value::Message(m) => Ok(m),
        Value::Scalar(s) => Err(format!("{path}: expected {{ … }}, found {s:?}")),
    }
}

fn scalar(v: &Value, path: &str) -> Result<String, String> {
    match v {
        Value::Scalar(s) => Ok(s.clone()),
        Value::Message(_) => Err(format!("{path}: expected a value, found a message")),
    }
}

fn number<T: std::str::FromStr>(v: &Value, path: &str) -> Result<T, String> {
    let s = scalar(v, path)?;
    s.parse()
        .map_err(|_| format!("{path}: {s:?} is not a number"))
}

fn input(m: &[(String, Value)], skipped: &mut Vec<String>) -> Result<pb::ModelInput, String> {
    let mut i = pb::ModelInput::default();
    for (k, v) in m {
        let path = format!("input.{k}");
        match k.as_str() {
            "name" => i.name = scalar(v, &path)?,
            "data_type" => i.data_type = data_type(&scalar(v, &path)?, &path)?,
            "dims" => dims(v, &path, &mut i.dims)?,
            "reshape" => i.reshape = Some(reshape(message(v, &path)?, &path)?),
            "optional" => {
                i.optional = parse_bool(&scalar(v, &path)?).ok_or(format!("{path}: not a bool"))?
            }
            "format" => {
                i.format = pb::model_input::Format::from_str_name(&scalar(v, &path)?)
                    .map(|f| f as i32)
                    .ok_or(format!("{path}: unknown format"))?
            }
            _ => skipped.push(path),
        }
    }
    Ok(i)
}

fn output(m: &[(String, Value)], skipped: &mut Vec<String>) -> Result<pb::ModelOutput, String> {
    let mut o = pb::ModelOutput::default();
    for (k, v) in m {
        let path = format!("output.{k}");
        match k.as_str() {
            "name" => o.name = scalar(v, &path)?,
            "data_type" => o.data_type = data_type(&scalar(v, &path)?, &path)?,
            "dims" => dims(v, &path, &mut o.dims)?,
            "reshape" => o.reshape = Some(reshape(message(v, &path)?, &path)?),
            "label_filename" => o.label_filename = scalar(v, &path)?,
            _ => skipped.push(path),
        }
    }
    Ok(o)
}

fn version_policy(m: &[(String, Value)]) -> Result<pb::ModelVersionPolicy, String> {
    use pb::model_version_policy::{All, Latest, PolicyChoice, Specific};
    let mut p = pb::ModelVersionPolicy::default();
    for (k, v) in m {
        let path = format!("version_policy.{k}");
        let inner = message(v, &path)?;
        p.policy_choice = Some(match k.as_str() {
            "latest" => {
                let mut l = Latest { num_versions: 1 };
                for (ik, iv) in inner {
                    if ik == "num_versions" {
                        l.num_versions = number(iv, &path)?;
                    }
                }
                PolicyChoice::Latest(l)
            }
            "all" => PolicyChoice::All(All {}),
            "specific" => {
                let mut s = Specific::default();
                for (ik, iv) in inner {
                    if ik == "versions" {
                        dims(iv, &path, &mut s.versions)?;
                    }
                }
                PolicyChoice::Specific(s)
            }
            other => {
                return Err(format!(
                    "version_policy: unknown policy {other:?} (latest, all, specific)"
                ));
            }
        });
    }
    Ok(p)
}

fn dynamic_batching(
    m: &[(String, Value)],
    skipped: &mut Vec<String>,
) -> Result<pb::ModelDynamicBatching, String> {
    let mut d = pb::ModelDynamicBatching::default();
    for (k, v) in m {
        let path = format!("dynamic_batching.{k}");
        match k.as_str() {
            "preferred_batch_size" => d.preferred_batch_size.push(number(v, &path)?),
            "max_queue_delay_microseconds" => d.max_queue_delay_microseconds = number(v, &path)?,
            "preserve_ordering" => {
                d.preserve_ordering =
                    parse_bool(&scalar(v, &path)?).ok_or(format!("{path}: not a bool"))?
            }
            "priority_levels" => d.priority_levels = number(v, &path)?,
            "default_priority_level" => d.default_priority_level = number(v, &path)?,
            "default_queue_policy" => {
                let mut q = pb::ModelQueuePolicy::default();
                for (ik, iv) in message(v, &path)? {
                    let p = format!("{path}.{ik}");
                    match ik.as_str() {
                        "timeout_action" => {
                            q.timeout_action = pb::model_queue_policy::TimeoutAction::from_str_name(
                                &scalar(iv, &p)?,
                            )
                            .map(|a| a as i32)
                            .ok_or(format!("{p}: REJECT or DELAY"))?
                        }
                        "default_timeout_microseconds" => {
                            q.default_timeout_microseconds = number(iv, &p)?
                        }
                        "allow_timeout_override" => {
                            q.allow_timeout_override =
                                parse_bool(&scalar(iv, &p)?).ok_or(format!("{p}: not a bool"))?
                        }
                        "max_queue_size" => q.max_queue_size = number(iv, &p)?,
                        _ => skipped.push(p),
                    }
                }
                d.default_queue_policy = Some(q);
            }
            _ => skipped.push(path),
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_configs_are_bounded() {
        // Deep nesting would recurse without end: refused, no stack overflow.
        let deep = format!("{}{}", "a { ".repeat(100_000), "}".repeat(100_000));
        let e = parse(&deep).expect_err("deep");
        assert!(e.contains("nested more than 32"), "{e}");
        let big = format!("name: \"{}\"", "x".repeat(2 * 1024 * 1024));
        let e = parse(&big).expect_err("big");
        assert!(e.contains("at most"), "{e}");
        let ok = format!("{}{}", "a { ".repeat(10), "}".repeat(10));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn reads_a_triton_config_and_skips_what_it_does_not_serve() {
        let text = r#"
name: "densenet"   # a comment
platform: "onnxruntime_onnx"
max_batch_size : 8
input [
  {
    name: "data_0"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
  }
]
output [ { name: "prob" data_type: TYPE_FP32 dims: [ 1000 ] label_filename: "labels.txt" } ]
instance_group [ { count: 2, kind: KIND_CPU } ]
version_policy: { specific: { versions: [1, 3] } }
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  default_queue_policy { max_queue_size: 16 allow_timeout_override: true }
}
optimization { execution_accelerators { cpu_execution_accelerator : [ { name : "openvino" } ] } }
parameters { key: "k" value: { string_value: "v" } }
"#;
        let (c, skipped) = parse(text).expect("parses");
        assert_eq!(c.name, "densenet");
        assert_eq!(c.max_batch_size, 8);
        assert_eq!(c.input[0].dims, vec![3, 224, 224]);
        assert_eq!(c.input[0].data_type, pb::DataType::TypeFp32 as i32);
        assert_eq!(c.output[0].label_filename, "labels.txt");
        assert_eq!(c.instance_group[0].count, 2);
        let db = c.dynamic_batching.expect("batching");
        assert_eq!(db.preferred_batch_size, vec![4, 8]);
        assert_eq!(db.default_queue_policy.expect("policy").max_queue_size, 16);
        assert!(matches!(
            c.version_policy.and_then(|p| p.policy_choice),
            Some(pb::model_version_policy::PolicyChoice::Specific(s)) if s.versions == vec![1, 3]
        ));
        assert_eq!(c.parameters["k"].string_value, "v");
        assert_eq!(skipped, vec!["optimization".to_string()]);
    }

    #[test]
    fn errors_name_the_line_or_field() {
        let e = parse("name: \"x\"\ninput [ { data_type: TYPE_NOPE } ]").expect_err("bad type");
        assert!(
            e.contains("input.data_type") && e.contains("TYPE_NOPE"),
            "{e}"
        );
        let e = parse("name: \"x\n").expect_err("unterminated");
        assert!(e.contains("line"), "{e}");
        let e = parse("max_batch_size: lots").expect_err("not a number");
        assert!(e.contains("max_batch_size"), "{e}");
    }
}
