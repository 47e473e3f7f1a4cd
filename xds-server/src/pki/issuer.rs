//! The certificate endpoint's rules, without sockets: who a caller is (a verified client
//! certificate being renewed, or a Kubernetes ServiceAccount token checked with a
//! TokenReview), which identities may be issued at all (never the control plane's, and
//! only one with a pod in the model), what the caller's certificate request must ask for,
//! and the JSON exchanged with the proxy agent. The agent sends a PKCS#10 request for a
//! key it made itself and gets back only a certificate. [`super::ca_service`] is the
//! HTTPS shell around it.

use ca::SpiffeId;
use k8s_openapi::api::authentication::v1::TokenReviewStatus;
use serde::{Deserialize, Serialize};

use crate::runtime::CONTROL_PLANE_NS;

/// The one path of the endpoint (POST).
pub const PATH: &str = "/v1/certificate";
/// The audience a ServiceAccount token must be minted for.
pub(crate) const TOKEN_AUDIENCE: &str = "rudder";
/// Longest `Authorization` header accepted, in bytes (projected tokens are ~1 KiB).
pub(crate) const MAX_AUTH_BYTES: usize = 8 << 10;
/// Largest request body accepted, in bytes (a P-256 request is under 1 KiB).
pub(crate) const MAX_BODY_BYTES: usize = 16 << 10;
/// The TokenReview `extra` key naming the pod a bound ServiceAccount token belongs to.
pub(crate) const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// What the agent sends: a certificate request for a key it made itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRequest {
    /// PKCS#10, PEM, naming the caller's SPIFFE ID as its only name.
    pub csr: String,
}

/// What the endpoint answers: a certificate for the caller's own key, and the trust
/// bundle. Never a private key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`.
    pub spiffe_id: String,
    /// The certificate chain (leaf first), PEM.
    pub cert_chain_pem: String,
    /// Every root the mesh trusts now, PEM.
    pub trust_bundle_pem: String,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: u64,
}

/// Reads the request body: JSON with the certificate request.
pub(crate) fn parse_request(body: &[u8]) -> Result<CertRequest, Refusal> {
    if body.len() > MAX_BODY_BYTES {
        return Err(refuse(
            413,
            "body_too_large",
            format!("the request body is over {MAX_BODY_BYTES} bytes"),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        refuse(
            400,
            "bad_request",
            format!(
                "the body must be JSON {{\"csr\": PEM}} with a PKCS#10 request for a key you made: {}",
                crds::text::clip(&e.to_string(), 200)
            ),
        )
    })
}

/// Checks the certificate request against the identity the caller proved.
pub(crate) fn check_request(
    request: &CertRequest,
    id: &SpiffeId,
) -> Result<ca::csr::CheckedRequest, Refusal> {
    ca::csr::check(&request.csr, id).map_err(|e| {
        let (status, reason) = match e {
            ca::csr::CsrError::Identity { .. } | ca::csr::CsrError::AsksForCa => {
                (403, "csr_identity")
            }
            _ => (400, "bad_csr"),
        };
        refuse(status, reason, e.to_string())
    })
}

/// Who a TokenReview vouched for: the identity, and the pod a bound token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reviewed {
    /// The ServiceAccount's SPIFFE ID.
    pub id: SpiffeId,
    /// The pod the token is bound to, if the API server says.
    pub pod: Option<String>,
}

/// Liveness: a certificate is issued only for an identity that runs somewhere. `pods`
/// are the (name, service account) of the pods in the identity's namespace; with a
/// token bound to a pod, that pod must be one of them and run as the identity.
pub fn live<'a>(
    id: &SpiffeId,
    bound_pod: Option<&str>,
    mut pods: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<(), Refusal> {
    let found = match bound_pod {
        Some(name) => pods.any(|(p, sa)| p == name && sa == id.service_account),
        None => pods.any(|(_, sa)| sa == id.service_account),
    };
    if found {
        return Ok(());
    }
    Err(refuse(
        403,
        "no_live_pod",
        match bound_pod {
            Some(name) => format!(
                "pod {}/{} running as service account {} is not known (deleted, or not yet seen)",
                id.namespace,
                crds::text::clip(name, 253),
                id.service_account
            ),
            None => format!(
                "no pod runs as service account {}/{}: certificates are issued only to identities with a pod",
                id.namespace, id.service_account
            ),
        },
    ))
}

/// A refusal: HTTP status, a metric label and a message for the caller and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Metric label.
    pub reason: &'static str,
    /// What went wrong.
    pub message: String,
}

fn refuse(status: u16, reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason,
        message: message.into(),
    }
}

/// What to do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Issue for this identity (the caller's verified certificate).
    Issue(SpiffeId),
    /// Check this token with a TokenReview first.
    Review(String),
    /// Refuse.
    Refuse(Refusal),
}

/// Decides from the request line, the `Authorization` header and the verified client
/// certificate's identity. Where tokens are checked (cluster mode) every issuance needs
/// one, so a stolen certificate cannot renew itself after its ServiceAccount is gone;
/// elsewhere (manifest mode) a valid certificate renews its own identity.
pub(crate) fn decide(
    method: &str,
    path: &str,
    authorization: Option<&[u8]>,
    certificate: Option<&SpiffeId>,
    trust_domain: &str,
    tokens_enabled: bool,
) -> Decision {
    if path != PATH {
        return Decision::Refuse(refuse(
            404,
            "not_found",
            format!("no such path; use {PATH}"),
        ));
    }
    if method != "POST" {
        return Decision::Refuse(refuse(405, "method", "use POST"));
    }
    if let (Some(id), false) = (certificate, tokens_enabled) {
        return match may_issue(id, trust_domain) {
            Ok(()) => Decision::Issue(id.clone()),
            Err(r) => Decision::Refuse(r),
        };
    }
    let Some(auth) = authorization else {
        return Decision::Refuse(refuse(
            401,
            "unauthenticated",
            "present a client certificate to renew, or a ServiceAccount token (Authorization: Bearer)",
        ));
    };
    if auth.len() > MAX_AUTH_BYTES {
        return Decision::Refuse(refuse(
            400,
            "token_too_large",
            format!("the Authorization header is over {MAX_AUTH_BYTES} bytes"),
        ));
    }
    let token = std::str::from_utf8(auth)
        .ok()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()));
    let Some(token) = token else {
        return Decision::Refuse(refuse(
            400,
            "bad_authorization",
            "the Authorization header is not `Bearer TOKEN`",
        ));
    };
    if !tokens_enabled {
        return Decision::Refuse(refuse(
            401,
            "tokens_disabled",
            "tokens are checked only when watching Kubernetes; renew with a client certificate",
        ));
    }
    Decision::Review(token.to_string())
}

/// Identities the endpoint never issues: another trust domain's, and any in the control
/// plane's namespace (the control plane's own identity authenticates it to every proxy,
/// and that namespace may read every proxy's config over CSDS).
pub(crate) fn may_issue(id: &SpiffeId, trust_domain: &str) -> Result<(), Refusal> {
    if id.trust_domain != trust_domain {
        return Err(refuse(
            403,
            "other_trust_domain",
            format!("{id} is not in trust domain {trust_domain}"),
        ));
    }
    if id.namespace == CONTROL_PLANE_NS {
        return Err(refuse(
            403,
            "control_plane_namespace",
            format!("identities in namespace {CONTROL_PLANE_NS} are not issued here"),
        ));
    }
    Ok(())
}

/// The identity a TokenReview vouches for: the token must be authenticated, minted for
/// our audience, and belong to a ServiceAccount.
pub(crate) fn identity_from_review(
    status: Option<&TokenReviewStatus>,
    trust_domain: &str,
) -> Result<Reviewed, Refusal> {
    let Some(s) = status.filter(|s| s.authenticated == Some(true)) else {
        let why = status
            .and_then(|s| s.error.as_deref())
            .map(|e| crds::text::clip(e, 256))
            .unwrap_or_else(|| "not authenticated".into());
        return Err(refuse(
            401,
            "token_rejected",
            format!("the token was refused: {why}"),
        ));
    };
    if !s.audiences.iter().flatten().any(|a| a == TOKEN_AUDIENCE) {
        return Err(refuse(
            401,
            "token_audience",
            format!("the token is not for audience {TOKEN_AUDIENCE:?}"),
        ));
    }
    let user = s
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or_default();
    let Some((ns, sa)) = user
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    else {
        return Err(refuse(
            403,
            "not_a_service_account",
            format!(
                "{} is not a ServiceAccount",
                crds::text::quote(&crds::text::clip(user, 256))
            ),
        ));
    };
    let id = SpiffeId::new(trust_domain, ns, sa)
        .map_err(|e| refuse(403, "bad_identity", e.to_string()))?;
    may_issue(&id, trust_domain)?;
    let pod = s
        .user
        .as_ref()
        .and_then(|u| u.extra.as_ref())
        .and_then(|x| x.get(POD_NAME_EXTRA))
        .and_then(|v| v.first())
        .cloned();
    Ok(Reviewed { id, pod })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    fn id(ns: &str, sa: &str) -> SpiffeId {
        SpiffeId::new("cluster.local", ns, sa).expect("valid")
    }

    fn reason(d: Decision) -> &'static str {
        match d {
            Decision::Refuse(r) => r.reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_verified_certificate_renews_its_own_identity_only() {
        let me = id("shop", "cart");
        assert_eq!(
            decide("POST", PATH, None, Some(&me), "cluster.local", false),
            Decision::Issue(me.clone())
        );
        // Where tokens are checked, a certificate alone is not enough: the token decides.
        assert_eq!(
            reason(decide("POST", PATH, None, Some(&me), "cluster.local", true)),
            "unauthenticated"
        );
        assert_eq!(
            decide(
                "POST",
                PATH,
                Some(b"Bearer x"),
                Some(&me),
                "cluster.local",
                true
            ),
            Decision::Review("x".into())
        );
        let cp = id(CONTROL_PLANE_NS, "rudder");
        assert_eq!(
            reason(decide(
                "POST",
                PATH,
                None,
                Some(&cp),
                "cluster.local",
                false
            )),
            "control_plane_namespace"
        );
        let other = SpiffeId::new("other.local", "shop", "cart").expect("valid");
        assert_eq!(
            reason(decide(
                "POST",
                PATH,
                None,
                Some(&other),
                "cluster.local",
                false
            )),
            "other_trust_domain"
        );
    }

    #[test]
    fn requests_without_a_credential_or_with_a_bad_one_are_refused() {
        let d = |m: &str, p: &str, a: Option<&[u8]>, tokens: bool| {
            decide(m, p, a, None, "cluster.local", tokens)
        };
        assert_eq!(reason(d("POST", PATH, None, true)), "unauthenticated");
        assert_eq!(reason(d("GET", PATH, None, true)), "method");
        assert_eq!(reason(d("POST", "/", None, true)), "not_found");
        assert_eq!(
            reason(d("POST", PATH, Some(b"Basic abc"), true)),
            "bad_authorization"
        );
        assert_eq!(
            reason(d("POST", PATH, Some(b"Bearer "), true)),
            "bad_authorization"
        );
        assert_eq!(
            reason(d("POST", PATH, Some(b"Bearer a b"), true)),
            "bad_authorization"
        );
        let huge = format!("Bearer {}", "a".repeat(MAX_AUTH_BYTES));
        assert_eq!(
            reason(d("POST", PATH, Some(huge.as_bytes()), true)),
            "token_too_large"
        );
        assert_eq!(
            reason(d("POST", PATH, Some(b"Bearer abc"), false)),
            "tokens_disabled"
        );
        assert_eq!(
            d("POST", PATH, Some(b"Bearer abc.def"), true),
            Decision::Review("abc.def".into())
        );
    }

    fn status(auth: bool, audiences: &[&str], user: &str) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(auth),
            audiences: Some(audiences.iter().map(|s| s.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(user.into()),
                ..Default::default()
            }),
            error: (!auth).then(|| "token expired".into()),
        }
    }

    #[test]
    fn a_token_review_yields_the_service_account_identity() {
        let ok = status(true, &["rudder"], "system:serviceaccount:shop:cart");
        assert_eq!(
            identity_from_review(Some(&ok), "cluster.local"),
            Ok(Reviewed {
                id: id("shop", "cart"),
                pod: None
            })
        );
        let mut bound = ok.clone();
        if let Some(u) = bound.user.as_mut() {
            u.extra = Some(
                [(POD_NAME_EXTRA.to_string(), vec!["cart-1".to_string()])]
                    .into_iter()
                    .collect(),
            );
        }
        assert_eq!(
            identity_from_review(Some(&bound), "cluster.local").map(|r| r.pod),
            Ok(Some("cart-1".into()))
        );
        let why = |s: TokenReviewStatus| {
            identity_from_review(Some(&s), "cluster.local")
                .expect_err("refused")
                .reason
        };
        assert_eq!(
            why(status(
                false,
                &["rudder"],
                "system:serviceaccount:shop:cart"
            )),
            "token_rejected"
        );
        assert_eq!(
            why(status(
                true,
                &["https://kubernetes.default.svc"],
                "system:serviceaccount:shop:cart"
            )),
            "token_audience"
        );
        assert_eq!(
            why(status(true, &["rudder"], "alice")),
            "not_a_service_account"
        );
        assert_eq!(
            why(status(
                true,
                &["rudder"],
                "system:serviceaccount:rudder-system:rudder"
            )),
            "control_plane_namespace"
        );
        assert_eq!(
            why(status(true, &["rudder"], "system:serviceaccount:Shop:x")),
            "bad_identity"
        );
        assert_eq!(
            identity_from_review(None, "cluster.local")
                .expect_err("no status")
                .reason,
            "token_rejected"
        );
    }

    #[test]
    fn certificates_go_only_to_identities_with_a_pod() {
        let me = id("shop", "cart");
        let pods = [("cart-1", "cart"), ("web-1", "web")];
        assert!(live(&me, None, pods.iter().copied()).is_ok());
        assert!(live(&me, Some("cart-1"), pods.iter().copied()).is_ok());
        // The pod the token is bound to is gone, or runs as another account.
        let r = live(&me, Some("cart-2"), pods.iter().copied()).expect_err("gone");
        assert_eq!((r.status, r.reason), (403, "no_live_pod"));
        assert!(r.message.contains("shop/cart-2"), "{}", r.message);
        assert!(live(&me, Some("web-1"), pods.iter().copied()).is_err());
        // No pod of the account at all.
        let r = live(&id("shop", "ghost"), None, pods.iter().copied()).expect_err("none");
        assert!(r.message.contains("shop/ghost"), "{}", r.message);
    }

    #[test]
    fn the_body_is_a_request_for_exactly_the_callers_identity() {
        let me = id("shop", "cart");
        let made = ca::csr::KeyAndRequest::generate(&me).expect("request");
        let body = serde_json::to_vec(&CertRequest {
            csr: made.csr_pem.clone(),
        })
        .expect("json");
        let request = parse_request(&body).expect("parses");
        assert!(check_request(&request, &me).is_ok());
        let r = check_request(&request, &id("shop", "admin")).expect_err("not mine");
        assert_eq!((r.status, r.reason), (403, "csr_identity"));
        let r = parse_request(b"{}").expect_err("no csr");
        assert_eq!((r.status, r.reason), (400, "bad_request"));
        let r = parse_request(&vec![b' '; MAX_BODY_BYTES + 1]).expect_err("large");
        assert_eq!(r.status, 413);
        let junk = CertRequest { csr: "x".into() };
        assert_eq!(
            check_request(&junk, &me).expect_err("junk").reason,
            "bad_csr"
        );
    }
}
