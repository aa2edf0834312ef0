//! What a downstream address may be, in one place: the settings check the
//! configured ones with it at load, and the pools dial every replica
//! (configured or discovered) through it.

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

#[cfg(test)]
mod tests {
    use super::*;

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
