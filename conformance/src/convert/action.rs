//! Route actions: forwarding (a cluster or weighted clusters, timeout, retries, mirrors,
//! rewrites), redirects and direct responses.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, RedirectAction, RetryPolicy as PbRetry, RouteAction as PbAction,
    WeightedCluster as PbWeighted, redirect_action, route_action,
    route_action::RequestMirrorPolicy,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;

use super::check::{
    Path, R, duration, each, enumerated, must_be_default, name, opt_duration, shorten,
};
use super::headers::header_edits;
use super::limits::{MAX_LIST, MAX_NAME};
use super::matchers::{regex_matcher, regex_unanchored};
use crate::config::route::{
    Action, Backoff, Destination, Mirror, Redirect, RedirectPath, RetryOn, RetryPolicy, Rewrite,
    RouteAction, WeightedCluster,
};

/// Envoy's default route timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest direct response body accepted (Envoy's default limit is 4 KiB).
const MAX_BODY: usize = 4096;

/// `route` action.
pub(crate) fn route_action(path: &Path, a: &PbAction) -> R<Action> {
    must_be_default!(
        path,
        a,
        metadata_match,
        path_rewrite_policy,
        path_rewrite,
        append_x_forwarded_host,
        idle_timeout,
        flush_timeout,
        early_data_policy,
        retry_policy_typed_config,
        priority,
        rate_limits,
        include_vh_rate_limits,
        hash_policy,
        cors,
        max_grpc_timeout,
        grpc_timeout_offset,
        internal_redirect_policy,
        internal_redirect_action,
        max_internal_redirects,
        hedge_policy,
    );
    let destination = match &a.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => {
            Destination::Cluster(name(&path.f("cluster"), c)?)
        }
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
            Destination::Weighted(weighted(&path.f("weighted_clusters"), w)?)
        }
        Some(route_action::ClusterSpecifier::ClusterHeader(_)) => {
            return Err(path.f("cluster_header").unsupported());
        }
        Some(_) => return Err(path.f("cluster_specifier_plugin").unsupported()),
        None => return Err(path.err("a cluster or weighted_clusters is required")),
    };
    let timeout = match &a.timeout {
        None => Some(DEFAULT_TIMEOUT),
        Some(t) => Some(duration(&path.f("timeout"), t)?).filter(|t| !t.is_zero()),
    };
    let rewrite = match (a.prefix_rewrite.is_empty(), &a.regex_rewrite) {
        (true, None) => None,
        (false, None) => Some(Rewrite::Prefix(bounded(
            &path.f("prefix_rewrite"),
            &a.prefix_rewrite,
        )?)),
        (true, Some(r)) => {
            let (re, sub) = substitution(&path.f("regex_rewrite"), r)?;
            Some(Rewrite::Regex(re, sub))
        }
        (false, Some(_)) => {
            return Err(path
                .f("regex_rewrite")
                .err("prefix_rewrite and regex_rewrite are both set"));
        }
    };
    let host_rewrite = match &a.host_rewrite_specifier {
        None => None,
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => {
            Some(name(&path.f("host_rewrite_literal"), h)?)
        }
        Some(_) => return Err(path.f("host_rewrite_specifier").unsupported()),
    };
    let max_stream_duration = match &a.max_stream_duration {
        None => None,
        Some(m) => {
            let mp = path.f("max_stream_duration");
            must_be_default!(mp, m, grpc_timeout_header_offset);
            match (&m.max_stream_duration, &m.grpc_timeout_header_max) {
                (Some(d), _) => Some(duration(&mp.f("max_stream_duration"), d)?),
                (None, Some(d)) => Some(duration(&mp.f("grpc_timeout_header_max"), d)?),
                (None, None) => None,
            }
            .filter(|d| !d.is_zero())
        }
    };
    let mut connect = false;
    let up = path.f("upgrade_configs");
    for (i, u) in super::check::list(&up, &a.upgrade_configs)?
        .iter()
        .enumerate()
    {
        let p = up.i(i);
        if !u.upgrade_type.eq_ignore_ascii_case("CONNECT") {
            return Err(p.f("upgrade_type").err(format!(
                "unsupported upgrade {:?} (only CONNECT)",
                shorten(&u.upgrade_type)
            )));
        }
        if let Some(c) = &u.connect_config {
            must_be_default!(p.f("connect_config"), c, proxy_protocol_config, allow_post);
        }
        connect = u.enabled.is_none_or(|e| e.value);
    }
    let np = path.f("cluster_not_found_response_code");
    let cluster_not_found_status = match enumerated::<route_action::ClusterNotFoundResponseCode>(
        &np,
        a.cluster_not_found_response_code,
    )? {
        route_action::ClusterNotFoundResponseCode::ServiceUnavailable => 503,
        route_action::ClusterNotFoundResponseCode::NotFound => 404,
        route_action::ClusterNotFoundResponseCode::InternalServerError => 500,
    };
    Ok(Action::Route(Arc::new(RouteAction {
        destination,
        timeout,
        retry: a
            .retry_policy
            .as_ref()
            .map(|r| retry_policy(&path.f("retry_policy"), r).map(Arc::new))
            .transpose()?,
        mirrors: each(
            &path.f("request_mirror_policies"),
            &a.request_mirror_policies,
            MAX_LIST,
            mirror,
        )?,
        rewrite,
        host_rewrite,
        max_stream_duration,
        connect,
        cluster_not_found_status,
    })))
}

fn bounded(path: &Path, s: &str) -> R<String> {
    if s.len() > MAX_NAME {
        return Err(path.err(format!("longer than {MAX_NAME} bytes")));
    }
    Ok(s.to_string())
}

fn substitution(path: &Path, r: &RegexMatchAndSubstitute) -> R<(Arc<regex::Regex>, String)> {
    let pattern = r
        .pattern
        .as_ref()
        .ok_or_else(|| path.f("pattern").err("a pattern is required"))?;
    let pp = path.f("pattern");
    // The matcher's checks (engine, length), then an unanchored compile for replacing.
    regex_matcher(&pp, pattern)?;
    let re = regex_unanchored(&pp.f("regex"), &pattern.regex)?;
    // RE2 writes groups as \1; the regex crate as ${1}.
    let sub = bounded(&path.f("substitution"), &r.substitution)?;
    Ok((re, re2_substitution(&sub)))
}

/// RE2's substitution (`\1`, `\\`) in the regex crate's syntax (`${1}`, `$$` for `$`).
pub(crate) fn re2_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    chars.next();
                    out.push_str(&format!("${{{d}}}"));
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

fn weighted(path: &Path, w: &PbWeighted) -> R<Vec<WeightedCluster>> {
    must_be_default!(
        path,
        w,
        total_weight,
        runtime_key_prefix,
        random_value_specifier
    );
    let clusters = each(&path.f("clusters"), &w.clusters, MAX_LIST, |p, c| {
        must_be_default!(
            p,
            c,
            cluster_header,
            metadata_match,
            typed_per_filter_config,
            host_rewrite_specifier,
        );
        Ok(WeightedCluster {
            name: name(&p.f("name"), &c.name)?,
            weight: c.weight.map_or(0, |w| w.value),
            headers: header_edits(
                p,
                &c.request_headers_to_add,
                &c.request_headers_to_remove,
                &c.response_headers_to_add,
                &c.response_headers_to_remove,
            )?,
        })
    })?;
    let total: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
    if clusters.is_empty() || total == 0 || total > u64::from(u32::MAX) {
        return Err(path
            .f("clusters")
            .err("weighted clusters need a total weight from 1 to 2^32-1"));
    }
    Ok(clusters)
}

/// `retry_policy` (of a route or a virtual host).
pub(crate) fn retry_policy(path: &Path, r: &PbRetry) -> R<RetryPolicy> {
    must_be_default!(
        path,
        r,
        per_try_idle_timeout,
        retry_priority,
        retry_host_predicate,
        retry_options_predicates,
        host_selection_retry_max_attempts,
        rate_limited_retry_back_off,
        retriable_headers,
        retriable_request_headers,
        refresh_cluster_on_retry,
    );
    let op = path.f("retry_on");
    let mut on = RetryOn::default();
    for token in r
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let flag = match token {
            "5xx" => &mut on.five_xx,
            "gateway-error" => &mut on.gateway_error,
            "reset" => &mut on.reset,
            "reset-before-request" => &mut on.reset_before_request,
            "connect-failure" => &mut on.connect_failure,
            "refused-stream" => &mut on.refused_stream,
            "retriable-status-codes" => &mut on.retriable_status_codes,
            "retriable-4xx" => &mut on.retriable_4xx,
            "cancelled" => &mut on.grpc.cancelled,
            "deadline-exceeded" => &mut on.grpc.deadline_exceeded,
            "resource-exhausted" => &mut on.grpc.resource_exhausted,
            "internal" => &mut on.grpc.internal,
            "unavailable" => &mut on.grpc.unavailable,
            other => {
                return Err(op.err(format!("unsupported retry condition {:?}", shorten(other))));
            }
        };
        *flag = true;
    }
    let backoff = match &r.retry_back_off {
        None => Backoff::default(),
        Some(b) => {
            let bp = path.f("retry_back_off");
            let base = b
                .base_interval
                .as_ref()
                .ok_or_else(|| bp.f("base_interval").err("a base interval is required"))?;
            let base = duration(&bp.f("base_interval"), base)?;
            if base < Duration::from_millis(1) {
                return Err(bp.f("base_interval").err("at least 1ms"));
            }
            let max = opt_duration(&bp.f("max_interval"), b.max_interval.as_ref())?
                .unwrap_or(base.saturating_mul(10));
            if max < base {
                return Err(bp.f("max_interval").err("less than the base interval"));
            }
            Backoff { base, max }
        }
    };
    let sp = path.f("retriable_status_codes");
    let retriable_status_codes = each(&sp, &r.retriable_status_codes, MAX_LIST, |p, c| {
        u16::try_from(*c)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| p.err("not an HTTP status"))
    })?;
    Ok(RetryPolicy {
        on,
        num_retries: r.num_retries.map_or(1, |n| n.value),
        per_try_timeout: opt_duration(&path.f("per_try_timeout"), r.per_try_timeout.as_ref())?
            .filter(|d| !d.is_zero()),
        backoff,
        retriable_status_codes,
    })
}

pub(crate) fn mirror(path: &Path, m: &RequestMirrorPolicy) -> R<Mirror> {
    must_be_default!(
        path,
        m,
        cluster_header,
        trace_sampled,
        disable_shadow_host_suffix_append,
        request_headers_mutations,
        host_rewrite_literal,
    );
    let per_million = match &m.runtime_fraction {
        None => 1_000_000,
        Some(f) => {
            let fp = path.f("runtime_fraction").f("default_value");
            let d = f.default_value.unwrap_or_default();
            let scale: u64 =
                match enumerated::<DenominatorType>(&fp.f("denominator"), d.denominator)? {
                    DenominatorType::Hundred => 10_000,
                    DenominatorType::TenThousand => 100,
                    DenominatorType::Million => 1,
                };
            // Envoy caps a fraction above 1 at all requests.
            u32::try_from((u64::from(d.numerator) * scale).min(1_000_000)).unwrap_or(1_000_000)
        }
    };
    Ok(Mirror {
        cluster: name(&path.f("cluster"), &m.cluster)?,
        per_million,
    })
}

/// `redirect` action.
pub(crate) fn redirect(path: &Path, r: &RedirectAction) -> R<Action> {
    let scheme = match &r.scheme_rewrite_specifier {
        None => None,
        Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".into()),
        Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(false)) => None,
        Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) => {
            let s = s.to_ascii_lowercase();
            if s != "http" && s != "https" {
                return Err(path.f("scheme_redirect").err("only http or https"));
            }
            Some(s)
        }
    };
    let port = match r.port_redirect {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| path.f("port_redirect").err("port out of range"))?),
    };
    let redirect_path = match &r.path_rewrite_specifier {
        None => RedirectPath::Keep,
        Some(redirect_action::PathRewriteSpecifier::PathRedirect(p)) => {
            RedirectPath::Full(bounded(&path.f("path_redirect"), p)?)
        }
        Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(p)) => {
            RedirectPath::Prefix(bounded(&path.f("prefix_rewrite"), p)?)
        }
        Some(redirect_action::PathRewriteSpecifier::RegexRewrite(s)) => {
            let (re, sub) = substitution(&path.f("regex_rewrite"), s)?;
            RedirectPath::Regex(re, sub)
        }
        Some(redirect_action::PathRewriteSpecifier::PathRewrite(_)) => {
            return Err(path.f("path_rewrite").unsupported());
        }
    };
    let status = match enumerated::<redirect_action::RedirectResponseCode>(
        &path.f("response_code"),
        r.response_code,
    )? {
        redirect_action::RedirectResponseCode::MovedPermanently => 301,
        redirect_action::RedirectResponseCode::Found => 302,
        redirect_action::RedirectResponseCode::SeeOther => 303,
        redirect_action::RedirectResponseCode::TemporaryRedirect => 307,
        redirect_action::RedirectResponseCode::PermanentRedirect => 308,
    };
    let host = (!r.host_redirect.is_empty())
        .then(|| name(&path.f("host_redirect"), &r.host_redirect))
        .transpose()?;
    Ok(Action::Redirect(Arc::new(Redirect {
        scheme,
        host,
        port,
        path: redirect_path,
        status,
        strip_query: r.strip_query,
    })))
}

/// `direct_response` action.
pub(crate) fn direct_response(path: &Path, d: &DirectResponseAction) -> R<Action> {
    must_be_default!(path, d, body_format);
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .ok_or_else(|| path.f("status").err("must be 200 to 599"))?;
    let body = match &d.body {
        None => None,
        Some(b) => {
            let bp = path.f("body");
            must_be_default!(bp, b, watched_directory);
            let bytes = match &b.specifier {
                Some(Specifier::InlineString(s)) => s.clone().into_bytes(),
                Some(Specifier::InlineBytes(b)) => b.clone(),
                Some(_) => return Err(bp.err("only inline_string or inline_bytes")),
                None => Vec::new(),
            };
            if bytes.len() > MAX_BODY {
                return Err(bp.err(format!("longer than {MAX_BODY} bytes")));
            }
            Some(bytes::Bytes::from(bytes))
        }
    };
    Ok(Action::Direct { status, body })
}
