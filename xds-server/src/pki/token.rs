//! What the certificate endpoint checks in a ServiceAccount token before it spends a
//! TokenReview on it, without sockets: the token must be a JWT minted for audience
//! `rudder`, valid now (`exp`, `nbf`, with the API server's minute of leeway) and of a
//! ServiceAccount the endpoint may issue for. The signature is not checked here: the
//! TokenReview stays the authority and the last word. A token the review refused is
//! remembered for a short while ([`NegativeCache`], by hash, bounded), so the same token
//! is not reviewed again.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine;
use ca::SpiffeId;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::issuer::{Refusal, TOKEN_AUDIENCE, may_issue};

/// The clock skew the API server allows on `exp` and `nbf` (go-jose's default leeway):
/// nothing it would accept is refused here.
pub(crate) const LEEWAY_SECS: u64 = 60;

/// What a token claims (unverified until the TokenReview).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claims {
    /// The identity its `sub` names.
    pub(crate) identity: SpiffeId,
}

fn refuse(reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status: 401,
        reason,
        message: message.into(),
    }
}

fn part(s: &str, what: &str) -> Result<Value, Refusal> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| {
            refuse(
                "token_malformed",
                format!("the token's {what} is not base64url"),
            )
        })?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| refuse("token_malformed", format!("the token's {what} is not JSON")))?;
    if !v.is_object() {
        return Err(refuse(
            "token_malformed",
            format!("the token's {what} is not a JSON object"),
        ));
    }
    Ok(v)
}

/// Checks `token` at `now` (seconds since the Unix epoch) for `trust_domain`: the claims
/// of a token worth a TokenReview, or why not.
pub(crate) fn precheck(token: &str, trust_domain: &str, now: u64) -> Result<Claims, Refusal> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(refuse(
            "token_malformed",
            "the token is not a JWT (three dot-separated parts)",
        ));
    };
    let header = part(header, "header")?;
    if signature.is_empty()
        || header["alg"]
            .as_str()
            .is_none_or(|a| a.eq_ignore_ascii_case("none"))
    {
        return Err(refuse("token_malformed", "the token is not signed"));
    }
    let claims = part(payload, "payload")?;
    let audiences: Vec<&str> = match &claims["aud"] {
        Value::String(a) => vec![a.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&TOKEN_AUDIENCE) {
        return Err(refuse(
            "token_audience",
            format!("the token is not for audience {TOKEN_AUDIENCE:?}"),
        ));
    }
    let Some(expires) = claims["exp"].as_u64() else {
        return Err(refuse("token_expired", "the token has no expiry (exp)"));
    };
    if now >= expires.saturating_add(LEEWAY_SECS) {
        return Err(refuse(
            "token_expired",
            format!("the token expired at {expires} (now {now})"),
        ));
    }
    if let Some(nbf) = claims["nbf"].as_u64()
        && nbf > now.saturating_add(LEEWAY_SECS)
    {
        return Err(refuse(
            "token_not_yet_valid",
            format!("the token is not valid before {nbf} (now {now})"),
        ));
    }
    let sub = claims["sub"].as_str().unwrap_or_default();
    let Some((ns, sa)) = sub
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    else {
        return Err(Refusal {
            status: 403,
            reason: "not_a_service_account",
            message: format!(
                "the token's subject {} is not a ServiceAccount",
                crds::text::quote(&crds::text::clip(sub, 256))
            ),
        });
    };
    let identity = SpiffeId::new(trust_domain, ns, sa).map_err(|e| Refusal {
        status: 403,
        reason: "bad_identity",
        message: e.to_string(),
    })?;
    may_issue(&identity, trust_domain)?;
    Ok(Claims { identity })
}

/// Tokens a TokenReview refused, by SHA-256, for `ttl`; at most `capacity` of them (the
/// oldest go first). All entries live equally long, so insertion order is expiry order.
#[derive(Debug)]
pub(crate) struct NegativeCache {
    ttl: Duration,
    capacity: usize,
    refused: HashMap<[u8; 32], (Instant, Refusal)>,
    order: VecDeque<([u8; 32], Instant)>,
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl NegativeCache {
    /// An empty cache.
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        NegativeCache {
            ttl,
            capacity: capacity.max(1),
            refused: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((k, at)) = self.order.front().copied() {
            if now.duration_since(at) < self.ttl && self.order.len() <= self.capacity {
                break;
            }
            self.order.pop_front();
            // Only the entry this order slot inserted (a token refused again has a newer one).
            if self.refused.get(&k).is_some_and(|(t, _)| *t == at) {
                self.refused.remove(&k);
            }
        }
    }

    /// The refusal remembered for `token`, if it is still fresh at `now`.
    pub(crate) fn get(&mut self, token: &str, now: Instant) -> Option<Refusal> {
        self.expire(now);
        let (at, r) = self.refused.get(&key(token))?;
        (now.duration_since(*at) < self.ttl).then(|| r.clone())
    }

    /// Remembers that `token` was refused with `r` at `now`.
    pub(crate) fn insert(&mut self, token: &str, r: Refusal, now: Instant) {
        let k = key(token);
        self.refused.insert(k, (now, r));
        self.order.push_back((k, now));
        self.expire(now);
    }

    /// Tokens remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.refused.len()
    }

    /// Whether none is.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.refused.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn jwt(header: &Value, claims: &Value) -> String {
        let e = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!("{}.{}.c2lnbmF0dXJl", e(header), e(claims))
    }

    fn claims() -> Value {
        json!({"aud": ["rudder"], "exp": NOW + 3600, "nbf": NOW - 10, "iat": NOW - 10,
               "iss": "https://kubernetes.default.svc",
               "sub": "system:serviceaccount:shop:cart"})
    }

    fn with(k: &str, v: Value) -> String {
        let mut c = claims();
        c[k] = v;
        jwt(&json!({"alg": "RS256"}), &c)
    }

    fn reason(token: &str) -> &'static str {
        precheck(token, "cluster.local", NOW)
            .expect_err(token)
            .reason
    }

    #[test]
    fn a_projected_token_for_rudder_passes_with_its_identity() {
        let c = precheck(&with("aud", json!("rudder")), "cluster.local", NOW).expect("passes");
        assert_eq!(
            c.identity.to_string(),
            "spiffe://cluster.local/ns/shop/sa/cart"
        );
        assert!(
            precheck(
                &jwt(&json!({"alg": "RS256"}), &claims()),
                "cluster.local",
                NOW
            )
            .is_ok()
        );
        // Within the API server's leeway either side.
        assert!(precheck(&with("exp", json!(NOW - 30)), "cluster.local", NOW).is_ok());
        assert!(precheck(&with("nbf", json!(NOW + 30)), "cluster.local", NOW).is_ok());
    }

    #[test]
    fn what_is_not_a_jwt_or_not_for_us_or_not_now_is_refused_locally() {
        assert_eq!(reason("not-a-token"), "token_malformed");
        assert_eq!(reason("a.b"), "token_malformed");
        assert_eq!(reason("a.b.c.d"), "token_malformed");
        assert_eq!(reason("!!.??.sig"), "token_malformed");
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        assert_eq!(
            reason(&format!("{}.{}.sig", e("{}"), e("[1]"))),
            "token_malformed"
        );
        // Unsigned.
        assert_eq!(
            reason(&jwt(&json!({"alg": "none"}), &claims())),
            "token_malformed"
        );
        let unsigned = jwt(&json!({"alg": "RS256"}), &claims());
        let cut = &unsigned[..unsigned.rfind('.').expect("dot") + 1];
        assert_eq!(reason(cut), "token_malformed");
        // Another audience, or none.
        assert_eq!(
            reason(&with("aud", json!(["api", "vault"]))),
            "token_audience"
        );
        assert_eq!(reason(&with("aud", json!(null))), "token_audience");
        // Expired, with no expiry, not yet valid.
        assert_eq!(reason(&with("exp", json!(NOW - 61))), "token_expired");
        assert_eq!(reason(&with("exp", json!(null))), "token_expired");
        assert_eq!(reason(&with("nbf", json!(NOW + 61))), "token_not_yet_valid");
        // Not a ServiceAccount, or one never issued for.
        assert_eq!(
            reason(&with("sub", json!("alice"))),
            "not_a_service_account"
        );
        assert_eq!(
            reason(&with(
                "sub",
                json!("system:serviceaccount:rudder-system:rudder")
            )),
            "control_plane_namespace"
        );
        assert_eq!(
            reason(&with("sub", json!("system:serviceaccount:Bad_NS:x"))),
            "bad_identity"
        );
    }

    #[test]
    fn refused_tokens_are_remembered_briefly_and_in_bounded_number() {
        let t0 = Instant::now();
        let mut c = NegativeCache::new(Duration::from_secs(30), 3);
        let r = refuse("token_rejected", "no");
        c.insert("a", r.clone(), t0);
        assert_eq!(c.get("a", t0 + Duration::from_secs(29)), Some(r.clone()));
        assert_eq!(c.get("b", t0), None);
        assert_eq!(c.get("a", t0 + Duration::from_secs(30)), None, "expired");
        assert!(c.is_empty());
        // Full: the oldest goes.
        for (i, t) in ["a", "b", "c", "d"].iter().enumerate() {
            c.insert(t, r.clone(), t0 + Duration::from_secs(i as u64));
        }
        assert_eq!(c.len(), 3);
        let at = t0 + Duration::from_secs(4);
        assert_eq!(c.get("a", at), None);
        assert!(c.get("d", at).is_some() && c.get("b", at).is_some());
        // Refused again: the newer entry counts.
        c.insert("b", r.clone(), t0 + Duration::from_secs(20));
        assert!(c.get("b", t0 + Duration::from_secs(40)).is_some());
        assert_eq!(c.get("c", t0 + Duration::from_secs(40)), None);
    }
}
