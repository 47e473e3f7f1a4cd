//! A fake converter for the machine tests: a resource's bytes are a small text
//! (`NAME`, `NAME|rds=A,B|agent=default|ads=ROOTCA`, `NAME|eds=SVC`, `bad:NAME`) so the
//! tests do not depend on the real conversion.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::google::protobuf::Any;
use xds_types::XdsType;

use crate::config::cluster::{
    Cluster, Discovery, LbPolicy, LoadAssignment, Transport, UpstreamProtocol,
};
use crate::config::listener::{
    ChainMatch, DownstreamTls, FilterChain, ForwardClientCert, HttpManager, Listener, RouteSource,
    SecretRef, SecretSource, Terminal, Validation,
};
use crate::config::route::RouteConfig;
use crate::config::secret::{Secret, TrustBundle};
use crate::convert::{ConvertError, Converted};

/// An `Any` of `ty` holding `text`.
pub(crate) fn any(ty: XdsType, text: &str) -> Any {
    Any {
        type_url: ty.type_url().to_string(),
        value: text.as_bytes().to_vec(),
    }
}

/// Converts the text forms above.
pub(crate) fn convert(ty: XdsType, any: &Any) -> Result<(String, Converted), ConvertError> {
    let text = String::from_utf8_lossy(&any.value).into_owned();
    if let Some(name) = text.strip_prefix("bad:") {
        return Err(ConvertError {
            resource: name.to_string(),
            path: "field".into(),
            message: "refused".into(),
        });
    }
    let mut parts = text.split('|');
    let name = parts.next().unwrap_or_default().to_string();
    let mut opts = std::collections::BTreeMap::new();
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            opts.insert(k.to_string(), v.to_string());
        }
    }
    let list = |k: &str| -> Vec<String> {
        opts.get(k)
            .map(|v| v.split(',').map(String::from).collect())
            .unwrap_or_default()
    };
    let value = match ty {
        XdsType::Listener => {
            Converted::Listener(listener(&name, &list("rds"), &list("agent"), &list("ads")))
        }
        XdsType::Cluster => Converted::Cluster(cluster(&name, opts.get("eds").cloned())),
        XdsType::Route => Converted::Route(RouteConfig {
            name: name.clone(),
            virtual_hosts: Vec::new(),
        }),
        XdsType::Endpoint => Converted::Endpoints(LoadAssignment {
            name: name.clone(),
            localities: Vec::new(),
        }),
        XdsType::Secret => Converted::Secret(Secret::Bundle(Arc::new(TrustBundle {
            anchors: Vec::new(),
        }))),
        XdsType::VirtualHost => {
            return Err(ConvertError {
                resource: name,
                path: String::new(),
                message: "never held".into(),
            });
        }
    };
    Ok((name, value))
}

fn listener(name: &str, rds: &[String], agent: &[String], ads: &[String]) -> Listener {
    let tls = agent.first().map(|cert| DownstreamTls {
        certificate: SecretRef {
            name: cert.clone(),
            source: SecretSource::AgentCluster("rudder-agent-sds".into()),
        },
        validation: ads.first().map(|trust| Validation {
            trust: SecretRef {
                name: trust.clone(),
                source: SecretSource::Ads,
            },
            uri_sans: Vec::new(),
        }),
        require_client_certificate: true,
        alpn: Vec::new(),
    });
    let chains = rds
        .iter()
        .map(|r| FilterChain {
            name: r.clone(),
            matcher: ChainMatch::default(),
            tls: tls.clone(),
            filters: Vec::new(),
            terminal: Terminal::Http(Arc::new(HttpManager {
                stat_prefix: format!("{name}_http"),
                routes: RouteSource::Rds(r.clone()),
                connect: false,
                forward_client_cert: ForwardClientCert::default(),
                filters: Vec::new(),
                max_request_headers_bytes: 60 << 10,
                idle_timeout: None,
                path: Default::default(),
            })),
        })
        .collect();
    Listener {
        name: name.to_string(),
        address: "127.0.0.1:0".parse().expect("an address"),
        original_dst: false,
        tls_inspector: false,
        chains,
        default_chain: None,
    }
}

fn cluster(name: &str, eds: Option<String>) -> Cluster {
    Cluster {
        name: name.to_string(),
        discovery: match eds {
            Some(service_name) => Discovery::Eds { service_name },
            None => Discovery::Static(LoadAssignment::default()),
        },
        lb: LbPolicy::RoundRobin,
        connect_timeout: Duration::from_secs(5),
        transport: Transport::Plain,
        transport_matches: Vec::new(),
        protocol: UpstreamProtocol::Http1,
        retry_budget: None,
        max_requests_per_connection: None,
        source: Vec::new(),
    }
}
