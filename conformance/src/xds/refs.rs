//! The names the held listeners and clusters reference, as Envoy subscribes to them:
//! route configurations (`rds`), endpoints (EDS clusters), secrets over ADS and secrets
//! from the agent; and the stat prefixes that count each route configuration's updates.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::cluster::{Cluster, Discovery, Transport};
use crate::config::listener::{
    DownstreamTls, FilterChain, Listener, RouteSource, SecretRef, SecretSource, Terminal,
};

/// Everything the listeners and clusters name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Refs {
    /// RDS names.
    pub(crate) routes: BTreeSet<String>,
    /// EDS service names.
    pub(crate) endpoints: BTreeSet<String>,
    /// Secrets over ADS.
    pub(crate) ads_secrets: BTreeSet<String>,
    /// Secrets from the agent.
    pub(crate) agent_secrets: BTreeSet<String>,
    /// RDS name -> the stat prefixes of the connection managers naming it.
    pub(crate) route_prefixes: BTreeMap<String, BTreeSet<String>>,
    /// EDS service name -> the clusters using it.
    pub(crate) endpoint_clusters: BTreeMap<String, BTreeSet<String>>,
}

impl Refs {
    /// The references of `listeners` and `clusters`.
    pub(crate) fn of<'a>(
        listeners: impl Iterator<Item = &'a Listener>,
        clusters: impl Iterator<Item = &'a Cluster>,
    ) -> Refs {
        let mut r = Refs::default();
        for l in listeners {
            for chain in l.chains.iter().chain(l.default_chain.iter()) {
                r.chain(chain);
            }
        }
        for c in clusters {
            if let Discovery::Eds { service_name } = &c.discovery {
                r.endpoints.insert(service_name.clone());
                r.endpoint_clusters
                    .entry(service_name.clone())
                    .or_default()
                    .insert(c.name.clone());
            }
            let transports = std::iter::once(&c.transport)
                .chain(c.transport_matches.iter().map(|m| &m.transport));
            for t in transports {
                if let Transport::Tls(tls) = t {
                    if let Some(cert) = &tls.certificate {
                        r.secret(cert);
                    }
                    r.secret(&tls.validation.trust);
                }
            }
        }
        r
    }

    fn chain(&mut self, chain: &FilterChain) {
        if let Some(DownstreamTls {
            certificate,
            validation,
            ..
        }) = &chain.tls
        {
            self.secret(certificate);
            if let Some(v) = validation {
                self.secret(&v.trust);
            }
        }
        if let Terminal::Http(hcm) = &chain.terminal
            && let RouteSource::Rds(name) = &hcm.routes
        {
            self.routes.insert(name.clone());
            self.route_prefixes
                .entry(name.clone())
                .or_default()
                .insert(hcm.stat_prefix.clone());
        }
    }

    fn secret(&mut self, s: &SecretRef) {
        match &s.source {
            SecretSource::Ads => self.ads_secrets.insert(s.name.clone()),
            SecretSource::AgentCluster(_) => self.agent_secrets.insert(s.name.clone()),
        };
    }
}
