//! What a downstream address may be, in one place: configured entries are
//! parsed into [`Endpoint`]s when the settings load, and the pools dial
//! every replica (configured or discovered) through [`endpoint_uri`].

use std::fmt;

/// `host:port`, `http://host:port` or (with `tls`) `https://host:port` as
/// a URI, `https` when `tls`; the reason otherwise.
pub fn endpoint_uri(addr: &str, tls: bool) -> Result<http::Uri, String> {
    let a = addr.trim();
    let scheme = if tls { "https" } else { "http" };
    let full = if a.contains("://") {
        a.to_owned()
    } else {
        format!("{scheme}://{a}")
    };
    let uri: http::Uri = full
        .parse()
        .map_err(|e| format!("{addr:?} is not an address like 127.0.0.1:50051: {e}"))?;
    if uri.host().is_none() || uri.port_u16().is_none() {
        return Err(format!(
            "{addr:?} needs a host and a port, like 127.0.0.1:50051"
        ));
    }
    if uri.scheme_str() != Some(scheme) {
        return Err(if tls {
            format!("{addr:?}: downstream.tls is set, so calls are https://")
        } else {
            format!("{addr:?}: only http:// (plaintext gRPC) without downstream.tls.ca_file")
        });
    }
    Ok(uri)
}

/// One entry of a `downstream.*` list, parsed at load: `host:port`,
/// `http://host:port` or `https://host:port` (static discovery), or
/// `<service>:<port name or number>` (kubernetes discovery). Which forms
/// are allowed depends on `downstream.discovery` and `downstream.tls`,
/// checked with the rest of the settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint(String);

impl Endpoint {
    /// Parses one entry; the reason when it is no address of any form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = |why: &str| {
            Err(format!(
                "{s:?} {why}; expected host:port, http(s)://host:port, or <service>:<port> with kubernetes discovery"
            ))
        };
        let rest = match s.split_once("://") {
            Some(("http" | "https", rest)) => rest,
            Some(_) => return bad("has a scheme other than http:// or https://"),
            None => s,
        };
        let Some((host, port)) = rest.rsplit_once(':') else {
            return bad("has no port");
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return bad("has no host");
        }
        if port.is_empty() || !port.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return bad("has no port number or name");
        }
        Ok(Self(s.to_owned()))
    }

    /// The entry as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URI a statically listed replica is dialled at.
    pub fn uri(&self, tls: bool) -> Result<http::Uri, String> {
        endpoint_uri(&self.0, tls)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for Endpoint {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl serde::Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Endpoint {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Endpoint".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string" })
    }
}

/// Endpoints from literals known to be valid (defaults, tests).
pub fn endpoints<S: AsRef<str>>(list: &[S]) -> Vec<Endpoint> {
    list.iter()
        .filter_map(|s| Endpoint::parse(s.as_ref()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_parsed_at_load() {
        for ok in [
            "127.0.0.1:50051",
            "http://svc.ns:50051",
            "https://svc:1",
            "mlmesh-embedding:grpc",
            "[::1]:50051",
        ] {
            assert_eq!(
                Endpoint::parse(ok).map(|e| e.to_string()),
                Ok(ok.to_owned())
            );
        }
        for bad in [
            "",
            "svc",
            "not a uri:1",
            "ftp://x:1",
            "x:",
            ":1",
            "x:1/path",
            "a:b c",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uris_need_host_and_port() {
        assert!(endpoint_uri("127.0.0.1:50051", false).is_ok());
        assert!(endpoint_uri("http://svc.ns:50051", false).is_ok());
        assert!(endpoint_uri("svc", false).is_err());
        assert!(endpoint_uri("https://svc:1", false).is_err());
        assert!(endpoint_uri("not a uri", false).is_err());
        assert_eq!(
            endpoint_uri("svc.ns:50051", true).map(|u| u.to_string()),
            Ok("https://svc.ns:50051/".to_owned())
        );
        assert!(endpoint_uri("http://svc:1", true).is_err());
    }
}
