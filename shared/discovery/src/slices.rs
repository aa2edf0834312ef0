//! From EndpointSlice events to the addresses that may get new calls.
//!
//! A Service's endpoints are spread over one or more slices; each slice
//! lists addresses with conditions and the ports they serve. An endpoint
//! counts when `ready` is true or unset (the API's "nil means ready") and
//! `terminating` is not true: a pod being deleted turns `ready` false and
//! `terminating` true at once, so it gets no new calls while the calls it
//! already has finish (the caller holds their connection).

use std::collections::BTreeMap;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;

/// Which Service and which of its ports: `name:port`, the port by name
/// (`grpc`, as the Service names it) or by number (the endpoints' port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    pub port: PortRef,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    Name(String),
    Number(u16),
}

impl Target {
    /// Parses `service:port`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let Some((service, port)) = s.rsplit_once(':') else {
            return Err(format!(
                "{s:?}: expected <service>:<port name or number>, e.g. mlmesh-embedding:grpc"
            ));
        };
        let dns_label = |v: &str| {
            !v.is_empty()
                && v.len() <= 63
                && v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !v.starts_with('-')
                && !v.ends_with('-')
        };
        if !dns_label(service) {
            return Err(format!(
                "{s:?}: {service:?} is not a Service name (lowercase letters, digits, '-', at most 63)"
            ));
        }
        let port = match port.parse::<u16>() {
            Ok(0) => return Err(format!("{s:?}: port 0")),
            Ok(n) => PortRef::Number(n),
            Err(_) if dns_label(port) => PortRef::Name(port.to_owned()),
            Err(_) => {
                return Err(format!(
                    "{s:?}: {port:?} is neither a port number nor a port name"
                ));
            }
        };
        Ok(Self {
            service: service.to_owned(),
            port,
        })
    }

    /// The label selector of this Service's EndpointSlices.
    pub fn selector(&self) -> String {
        format!("kubernetes.io/service-name={}", self.service)
    }
}

/// The slices of one Service as last seen, and the addresses they give.
#[derive(Debug)]
pub struct SliceSet {
    target: Target,
    /// Slice name → its usable addresses.
    slices: BTreeMap<String, Vec<String>>,
    /// Slices of a list in progress (after `Init`, until `InitDone`).
    relisting: Option<BTreeMap<String, Vec<String>>>,
    current: Vec<String>,
}

impl SliceSet {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            slices: BTreeMap::new(),
            relisting: None,
            current: Vec::new(),
        }
    }

    /// The addresses that may get new calls (`host:port`, sorted).
    pub fn addresses(&self) -> &[String] {
        &self.current
    }

    /// Applies one watcher event; returns the new address list when it
    /// changed. A re-list replaces everything at once when it completes,
    /// so a slice deleted while the watch was broken is dropped then.
    pub fn apply(&mut self, event: Event<EndpointSlice>) -> Option<Vec<String>> {
        match event {
            Event::Init => {
                self.relisting = Some(BTreeMap::new());
                return None;
            }
            Event::InitApply(slice) => {
                let (name, addrs) = self.usable(&slice);
                match &mut self.relisting {
                    Some(buffer) => {
                        buffer.insert(name, addrs);
                        return None;
                    }
                    None => {
                        self.slices.insert(name, addrs);
                    }
                }
            }
            Event::InitDone => {
                if let Some(buffer) = self.relisting.take() {
                    self.slices = buffer;
                }
            }
            Event::Apply(slice) => {
                let (name, addrs) = self.usable(&slice);
                self.slices.insert(name, addrs);
            }
            Event::Delete(slice) => {
                let name = slice.metadata.name.unwrap_or_default();
                self.slices.remove(&name);
            }
        }
        let mut all: Vec<String> = self.slices.values().flatten().cloned().collect();
        all.sort();
        all.dedup();
        if all == self.current {
            return None;
        }
        self.current = all.clone();
        Some(all)
    }

    /// A slice's name and the addresses of its usable endpoints on the
    /// target port (none when the slice does not serve that port).
    fn usable(&self, slice: &EndpointSlice) -> (String, Vec<String>) {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = match &self.target.port {
            PortRef::Name(want) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(want.as_str()))
                .and_then(|p| p.port),
            PortRef::Number(n) => ports
                .iter()
                .find(|p| p.port == Some(i32::from(*n)))
                .and_then(|p| p.port),
        };
        let Some(port) = port else {
            return (name, Vec::new());
        };
        let ipv6 = slice.address_type == "IPv6";
        let addrs = slice
            .endpoints
            .iter()
            .filter(|e| {
                let c = e.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                ready && !terminating
            })
            .flat_map(|e| e.addresses.iter())
            .map(|a| {
                if ipv6 {
                    format!("[{a}]:{port}")
                } else {
                    format!("{a}:{port}")
                }
            })
            .collect();
        (name, addrs)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;

    fn slice(
        name: &str,
        port: (&str, i32),
        endpoints: &[(&str, Option<bool>, Option<bool>)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: endpoints
                .iter()
                .map(|(ip, ready, terminating)| Endpoint {
                    addresses: vec![(*ip).into()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        serving: *ready,
                        terminating: *terminating,
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some(port.0.into()),
                port: Some(port.1),
                ..Default::default()
            }]),
        }
    }

    fn set() -> SliceSet {
        SliceSet::new(Target::parse("emb:grpc").expect("target"))
    }

    #[test]
    fn targets_parse_and_bad_ones_are_named() {
        assert_eq!(
            Target::parse("mlmesh-embedding:grpc").expect("ok").port,
            PortRef::Name("grpc".into())
        );
        assert_eq!(
            Target::parse("e:50051").expect("ok").port,
            PortRef::Number(50051)
        );
        for bad in ["emb", "Emb:grpc", "emb:", ":grpc", "emb:0", "emb:g_rpc"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Target::parse("emb:grpc").expect("ok").selector(),
            "kubernetes.io/service-name=emb"
        );
    }

    #[test]
    fn only_ready_and_not_terminating_endpoints_on_the_named_port() {
        let mut s = set();
        assert_eq!(s.apply(Event::Init), None);
        assert_eq!(
            s.apply(Event::InitApply(slice(
                "a",
                ("grpc", 50051),
                &[
                    ("10.0.0.1", Some(true), None),
                    ("10.0.0.2", None, None),
                    ("10.0.0.3", Some(false), None)
                ]
            ))),
            None,
            "nothing is published before the list completes"
        );
        assert_eq!(
            s.apply(Event::InitDone),
            Some(vec!["10.0.0.1:50051".into(), "10.0.0.2:50051".into()])
        );
        // Another port name: not this target's.
        assert_eq!(
            s.apply(Event::Apply(slice(
                "m",
                ("metrics", 9051),
                &[("10.0.0.9", Some(true), None)]
            ))),
            None
        );
        // Scale up in a second slice.
        assert_eq!(
            s.apply(Event::Apply(slice(
                "b",
                ("grpc", 50051),
                &[("10.0.1.1", Some(true), None)]
            ))),
            Some(vec![
                "10.0.0.1:50051".into(),
                "10.0.0.2:50051".into(),
                "10.0.1.1:50051".into()
            ])
        );
        // 10.0.0.1 starts terminating (ready false, serving true).
        assert_eq!(
            s.apply(Event::Apply(slice(
                "a",
                ("grpc", 50051),
                &[
                    ("10.0.0.1", Some(false), Some(true)),
                    ("10.0.0.2", None, None)
                ]
            ))),
            Some(vec!["10.0.0.2:50051".into(), "10.0.1.1:50051".into()])
        );
        // The same again changes nothing.
        assert_eq!(
            s.apply(Event::Apply(slice(
                "b",
                ("grpc", 50051),
                &[("10.0.1.1", Some(true), None)]
            ))),
            None
        );
        assert_eq!(
            s.apply(Event::Delete(slice("b", ("grpc", 50051), &[]))),
            Some(vec!["10.0.0.2:50051".into()])
        );
    }

    #[test]
    fn a_relist_replaces_everything_when_it_completes() {
        let mut s = set();
        s.apply(Event::Init);
        s.apply(Event::InitApply(slice(
            "a",
            ("grpc", 1),
            &[("10.0.0.1", None, None)],
        )));
        s.apply(Event::InitApply(slice(
            "b",
            ("grpc", 1),
            &[("10.0.0.2", None, None)],
        )));
        assert_eq!(s.apply(Event::InitDone).map(|v| v.len()), Some(2));
        // The watch broke; "b" was deleted meanwhile; the re-list lacks it.
        assert_eq!(s.apply(Event::Init), None);
        assert_eq!(
            s.apply(Event::InitApply(slice(
                "a",
                ("grpc", 1),
                &[("10.0.0.1", None, None)]
            ))),
            None
        );
        assert_eq!(
            s.addresses().len(),
            2,
            "the old list serves until the new one is whole"
        );
        assert_eq!(s.apply(Event::InitDone), Some(vec!["10.0.0.1:1".into()]));
    }

    #[test]
    fn ipv6_addresses_are_bracketed_and_ports_match_by_number() {
        let mut s = SliceSet::new(Target::parse("emb:50051").expect("target"));
        let mut sl = slice("a", ("grpc", 50051), &[("fd00::1", Some(true), None)]);
        sl.address_type = "IPv6".into();
        assert_eq!(
            s.apply(Event::Apply(sl)),
            Some(vec!["[fd00::1]:50051".into()])
        );
    }
}
