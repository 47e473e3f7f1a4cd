//! Who sees which Services: a Service's `rudder.dev/export-to` annotation says which
//! client namespaces may reach it (default every one), and a Pod's `rudder.dev/egress`
//! annotation names the Services its proxy needs (default every one it may reach). A
//! proxy is sent the clusters, endpoints and routes of exactly the Services both allow:
//! by default everything, so the default is always correct.

use std::collections::BTreeSet;
use std::sync::Arc;

use crds::text::quote;

use super::names::NameRule;

/// Service annotation: the client namespaces that may reach it (`*`, `.` for its own,
/// or a comma-separated list of namespaces).
pub const EXPORT_ANNOTATION: &str = "rudder.dev/export-to";
/// Pod annotation: the Services its proxy needs (comma-separated `NAMESPACE/NAME`, either
/// part may be `*`; `.` stands for the pod's namespace).
pub const EGRESS_ANNOTATION: &str = "rudder.dev/egress";

/// Where a Service is visible.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Export {
    /// Every namespace (the default).
    #[default]
    All,
    /// Only these namespaces.
    To(BTreeSet<String>),
}

impl Export {
    /// Parses the annotation of a Service in `namespace`.
    pub fn parse(value: &str, namespace: &str) -> Result<Self, String> {
        let mut out = BTreeSet::new();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "*" => return Ok(Export::All),
                "." => {
                    out.insert(namespace.to_string());
                }
                ns => {
                    NameRule::Label
                        .check(ns)
                        .map_err(|m| format!("{}: {m}", quote(ns)))?;
                    out.insert(ns.to_string());
                }
            }
        }
        if out.is_empty() {
            return Err("names no namespace (use \"*\", \".\" or namespaces)".into());
        }
        Ok(Export::To(out))
    }

    /// Whether clients in `namespace` may reach the Service.
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Export::All => true,
            Export::To(set) => set.contains(namespace),
        }
    }
}

/// What a proxy needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Egress {
    /// Every Service it may reach (the default).
    #[default]
    All,
    /// Services matching one of these (namespace, name) rules; `*` matches any.
    Only(Arc<BTreeSet<(String, String)>>),
}

impl Egress {
    /// Parses the annotation of a pod in `namespace`.
    pub fn parse(value: &str, namespace: &str) -> Result<Self, String> {
        let mut out = BTreeSet::new();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "*" || part == "*/*" {
                return Ok(Egress::All);
            }
            let (ns, name) = part
                .split_once('/')
                .ok_or_else(|| format!("{} is not NAMESPACE/NAME", quote(part)))?;
            let ns = if ns == "." { namespace } else { ns };
            for (what, v) in [("namespace", ns), ("name", name)] {
                if v != "*" {
                    NameRule::Label
                        .check(v)
                        .map_err(|m| format!("{}: {what} {m}", quote(part)))?;
                }
            }
            out.insert((ns.to_string(), name.to_string()));
        }
        if out.is_empty() {
            return Err("names no Service (use NAMESPACE/NAME, with * for any)".into());
        }
        Ok(Egress::Only(Arc::new(out)))
    }
}

/// The set of Services one group of proxies is sent: proxies in `namespace` whose pods
/// declare `egress`. Proxies with the same view share its resources.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViewKey {
    /// The client namespace (short names resolve in it; exports are checked against it).
    pub namespace: String,
    /// What the proxies declared they need.
    pub egress: Egress,
    /// Proxyless gRPC clients: the same Services in the resource shapes gRPC accepts.
    pub grpc: bool,
    /// Envoys that take the outbound table's virtual hosts apart, over VHDS
    /// ([`ProxyIdentity::vhds`](crate::identity::ProxyIdentity::vhds)).
    pub vhds: bool,
    /// A variant of the view for the proxies of one certificate identity (its SPIFFE ID):
    /// the same Services, but it may leave out policy objects those proxies rejected (the
    /// server's containment). None: the view every other proxy of the group shares.
    pub variant: Option<Arc<str>>,
}

impl ViewKey {
    /// The view itself, without a variant.
    pub fn base(&self) -> ViewKey {
        ViewKey {
            variant: None,
            ..self.clone()
        }
    }

    /// The view's variant for the proxies of `identity`.
    pub fn variant_for(&self, identity: &str) -> ViewKey {
        ViewKey {
            variant: Some(identity.into()),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::MeshService;

    #[test]
    fn annotations_parse_and_refuse_what_is_not_a_name() {
        assert_eq!(Export::parse("*", "a"), Ok(Export::All));
        assert_eq!(
            Export::parse(".,shop", "a"),
            Ok(Export::To(["a".to_string(), "shop".to_string()].into()))
        );
        assert!(Export::parse("Not_A_Namespace", "a").is_err());
        assert!(Export::parse(" , ", "a").is_err());
        let e = Egress::parse("./web, shop/*, */ratings", "app").expect("valid");
        let svc = |ns: &str, name: &str| MeshService {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: None,
            ports: Vec::new(),
            selector: None,
            export: Export::All,
            external_name: None,
            headless: false,
            upstream_tls: Default::default(),
        };
        assert!(e.wants(&svc("app", "web")));
        assert!(e.wants(&svc("shop", "cart")));
        assert!(e.wants(&svc("x", "ratings")));
        assert!(!e.wants(&svc("x", "web")));
        assert!(Egress::parse("web", "app").is_err());
    }
}
