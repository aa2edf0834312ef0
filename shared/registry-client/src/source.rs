//! What a `registry://` source names: `registry://<model>@<alias>` follows
//! an alias, `registry://<model>@<version>` serves a fixed version; a
//! trailing ` as <name>` serves it under another name (a `candidate` alias
//! beside `production` of the same model, for a shadow to compare). A
//! setting holding a source is parsed when the settings load (serde goes
//! through [`Source::parse`]), so a bad one stops the service at start,
//! naming the key.

use std::{fmt, str::FromStr};

use mlmesh_proto::registry::v1 as pb;

use crate::names;

/// A model and which of its versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub model: String,
    pub selector: Selector,
    /// The name to serve it under (` as <name>`); none: the model's.
    pub serve_as: Option<String>,
}

/// An alias (followed as it moves) or a fixed version number (≥ 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Alias(String),
    Version(i64),
}

impl Selector {
    /// `3` → version 3, `@production` → that alias (the CLI's form).
    pub fn from_arg(v: &str) -> Result<Self, String> {
        if let Some(alias) = v.strip_prefix('@') {
            names::check(alias).map_err(|why| format!("alias {alias:?} {why}: {}", names::RULE))?;
            return Ok(Self::Alias(alias.to_owned()));
        }
        match v.parse::<i64>() {
            Ok(n) if n > 0 => Ok(Self::Version(n)),
            Ok(_) => Err(format!("{v:?}: versions start at 1")),
            Err(_) => Err(format!("{v:?}: a version number or @alias")),
        }
    }

    /// As `GetVersion` takes it.
    pub fn to_get(&self) -> pb::get_version_request::Selector {
        use pb::get_version_request::Selector as S;
        match self {
            Self::Alias(a) => S::Alias(a.clone()),
            Self::Version(v) => S::Version(*v),
        }
    }
}

impl Source {
    /// `registry://<model>@<alias>` or `registry://<model>@<version>`,
    /// optionally followed by ` as <name>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (source, serve_as) = match s.trim().split_once(" as ") {
            Some((src, name)) => {
                let name = name.trim();
                names::check(name)
                    .map_err(|why| format!("{s:?}: name {name:?} {why}: {}", names::RULE))?;
                (src.trim(), Some(name.to_owned()))
            }
            None => (s.trim(), None),
        };
        let s = source;
        let rest = s
            .strip_prefix("registry://")
            .ok_or_else(|| format!("{s:?} does not start with registry://"))?;
        let (model, at) = rest
            .split_once('@')
            .ok_or_else(|| format!("{s:?}: expected registry://<model>@<alias or version>"))?;
        for (what, name) in [("model", model), ("alias", at)] {
            if let Err(why) = names::check(name) {
                return Err(format!("{s:?}: {what} {name:?} {why}: {}", names::RULE));
            }
        }
        let selector = match at.parse::<i64>() {
            Ok(v) if v > 0 => Selector::Version(v),
            Ok(_) => return Err(format!("{s:?}: versions start at 1")),
            Err(_) => Selector::Alias(at.to_owned()),
        };
        Ok(Self {
            model: model.to_owned(),
            selector,
            serve_as,
        })
    }

    /// The name the version is served under.
    pub fn served_name(&self) -> &str {
        self.serve_as.as_deref().unwrap_or(&self.model)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Alias(a) => write!(f, "registry://{}@{a}", self.model)?,
            Selector::Version(v) => write!(f, "registry://{}@{v}", self.model)?,
        }
        match &self.serve_as {
            Some(n) => write!(f, " as {n}"),
            None => Ok(()),
        }
    }
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl serde::Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(s.trim()).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Source {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RegistrySource".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^registry://[A-Za-z0-9_][A-Za-z0-9._-]*@[A-Za-z0-9_][A-Za-z0-9._-]*( as [A-Za-z0-9_][A-Za-z0-9._-]*)?$",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(
            Source::parse("registry://iris@production"),
            Ok(Source {
                model: "iris".into(),
                selector: Selector::Alias("production".into()),
                serve_as: None,
            })
        );
        let shadow = Source::parse("registry://iris@candidate as iris-candidate").expect("as");
        assert_eq!(shadow.served_name(), "iris-candidate");
        assert_eq!(shadow.model, "iris");
        assert_eq!(
            shadow.to_string(),
            "registry://iris@candidate as iris-candidate"
        );
        assert_eq!(
            Source::parse("registry://iris@3").map(|s| s.selector),
            Ok(Selector::Version(3))
        );
        for bad in [
            "iris@prod",
            "registry://iris",
            "registry://@x",
            "registry://a/b@x",
            "registry://a@0",
            "registry://a@-1",
            "registry://.a@x",
            "registry://a@x as ../b",
            "registry://a@x as ",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_source_is_a_string_in_settings() {
        let s: Source = serde_json::from_str("\"registry://iris@production\"").expect("parses");
        assert_eq!(
            serde_json::to_string(&s).expect("serializes"),
            "\"registry://iris@production\""
        );
        let e = serde_json::from_str::<Source>("\"iris@production\"").expect_err("refused");
        assert!(e.to_string().contains("registry://"), "{e}");
    }

    #[test]
    fn cli_selectors() {
        assert_eq!(Selector::from_arg("3"), Ok(Selector::Version(3)));
        assert_eq!(
            Selector::from_arg("@production"),
            Ok(Selector::Alias("production".into()))
        );
        for bad in ["0", "x", "@", "@a/b"] {
            assert!(Selector::from_arg(bad).is_err(), "{bad}");
        }
    }
}
