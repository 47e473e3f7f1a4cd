//! Unit tests of conversion details: field paths, RE2 substitutions, mirror fractions,
//! header append modes, redirects, the terminal filters' refusals and the connection
//! manager's path transformations.

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::route::v3::{
    RedirectAction, RouteConfiguration, redirect_action, route_action::RequestMirrorPolicy,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter,
    http_connection_manager::{PathWithEscapedSlashesAction, RouteSpecifier},
    http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier, tcp_proxy::WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher};
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use prost::{Message, Name};

use super::action::{mirror, re2_substitution, redirect};
use super::check::Path;
use super::headers::header_add;
use super::network::terminal;
use crate::config::listener::{EscapedSlashes, PathNormalization, Terminal};
use crate::config::route::{Action, AppendAction, RedirectPath};

fn any<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

#[test]
fn paths_name_fields_and_entries() {
    let p = Path::root()
        .f("filter_chains")
        .i(1)
        .f("filters")
        .i(0)
        .f("typed_config");
    assert_eq!(p.err("x").path, "filter_chains[1].filters[0].typed_config");
    assert_eq!(Path::root().f("m").key("k").err("x").path, "m[\"k\"]");
}

#[test]
fn re2_substitutions_in_regex_crate_syntax() {
    assert_eq!(re2_substitution(r"/v2/\1/\2"), "/v2/${1}/${2}");
    assert_eq!(re2_substitution("$HOME"), "$$HOME");
    assert_eq!(re2_substitution(r"a\\b"), r"a\b");
    let r = RedirectAction {
        path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::RegexRewrite(
            RegexMatchAndSubstitute {
                pattern: Some(RegexMatcher {
                    regex: "^/old/([^/]+)".into(),
                    ..Default::default()
                }),
                substitution: r"/new/\1".into(),
            },
        )),
        response_code: redirect_action::RedirectResponseCode::PermanentRedirect as i32,
        ..Default::default()
    };
    let Ok(Action::Redirect(d)) = redirect(&Path::root(), &r) else {
        panic!("redirect refused");
    };
    assert_eq!(d.status, 308);
    let RedirectPath::Regex(re, sub) = &d.path else {
        panic!("not a regex rewrite");
    };
    assert_eq!(re.replace_all("/old/x/y", sub.as_str()), "/new/x/y");
}

#[test]
fn mirror_fractions_per_million() {
    let m = |numerator, denominator| RequestMirrorPolicy {
        cluster: "shadow".into(),
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator,
                denominator,
            }),
            runtime_key: String::new(),
        }),
        ..Default::default()
    };
    let per_million = |p: RequestMirrorPolicy| {
        mirror(&Path::root(), &p)
            .map(|m| m.per_million)
            .expect("converts")
    };
    assert_eq!(per_million(m(50, 0)), 500_000);
    assert_eq!(per_million(m(25, 1)), 2_500);
    assert_eq!(per_million(m(7, 2)), 7);
    assert_eq!(per_million(m(300, 0)), 1_000_000);
    let all = RequestMirrorPolicy {
        cluster: "shadow".into(),
        ..Default::default()
    };
    assert_eq!(per_million(all), 1_000_000);
}

#[test]
fn header_append_modes() {
    let opt = |append: Option<bool>, action: i32| HeaderValueOption {
        header: Some(HeaderValue {
            key: "x-a".into(),
            value: "1".into(),
            ..Default::default()
        }),
        append: append.map(|value| BoolValue { value }),
        append_action: action,
        ..Default::default()
    };
    let mode = |o: HeaderValueOption| header_add(&Path::root(), &o).map(|h| h.append);
    assert_eq!(mode(opt(None, 0)), Ok(AppendAction::AppendIfExistsOrAdd));
    assert_eq!(mode(opt(None, 1)), Ok(AppendAction::AddIfAbsent));
    assert_eq!(mode(opt(None, 2)), Ok(AppendAction::OverwriteIfExistsOrAdd));
    assert_eq!(mode(opt(None, 3)), Ok(AppendAction::OverwriteIfExists));
    assert_eq!(
        mode(opt(Some(true), 0)),
        Ok(AppendAction::AppendIfExistsOrAdd)
    );
    assert_eq!(
        mode(opt(Some(false), 0)),
        Ok(AppendAction::OverwriteIfExistsOrAdd)
    );
    let both = mode(opt(Some(true), 2)).expect_err("both set");
    assert_eq!(both.path, "append");
    assert_eq!(
        mode(opt(None, 9)).expect_err("unknown").path,
        "append_action"
    );
}

fn tcp(spec: ClusterSpecifier) -> Filter {
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&TcpProxy {
            stat_prefix: "db".into(),
            cluster_specifier: Some(spec),
            ..Default::default()
        }))),
    }
}

#[test]
fn tcp_proxy_to_one_cluster_only() {
    let p = Path::root().f("filters").i(0);
    let ok = terminal(&p, &tcp(ClusterSpecifier::Cluster("db".into()))).expect("converts");
    assert!(matches!(ok, Terminal::Tcp(t) if t.cluster == "db" && t.idle_timeout.is_none()));
    let e = terminal(
        &p,
        &tcp(ClusterSpecifier::WeightedClusters(
            WeightedCluster::default(),
        )),
    )
    .expect_err("weighted refused");
    assert_eq!(e.path, "filters[0].typed_config.weighted_clusters");
    let unknown = Filter {
        name: "envoy.filters.network.redis_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(Any {
            type_url:
                "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"
                    .into(),
            value: Vec::new(),
        })),
    };
    let e = terminal(&p, &unknown).expect_err("unknown refused");
    assert_eq!(e.path, "filters[0]");
    assert!(
        e.message.contains("envoy.filters.network.redis_proxy"),
        "{e:?}"
    );
}

#[test]
fn a_cluster_binds_one_source_address_per_family() {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::{
        BindConfig, ExtraSourceAddress, SocketAddress, socket_address::PortSpecifier,
    };
    let socket = |a: &str, port: u32| SocketAddress {
        address: a.into(),
        port_specifier: Some(PortSpecifier::PortValue(port)),
        ..Default::default()
    };
    let cluster = |source: SocketAddress, extra: Vec<SocketAddress>| Cluster {
        name: "inbound|8080".into(),
        upstream_bind_config: Some(BindConfig {
            source_address: Some(source),
            extra_source_addresses: extra
                .into_iter()
                .map(|a| ExtraSourceAddress {
                    address: Some(a),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let c = super::cluster::cluster(&cluster(socket("127.0.0.6", 0), vec![socket("::6", 0)]))
        .expect("accepted");
    let v4: std::net::IpAddr = "10.1.1.1".parse().expect("ip");
    let v6: std::net::IpAddr = "fd00::1".parse().expect("ip");
    assert_eq!(c.source_for(v4), Some("127.0.0.6".parse().expect("ip")));
    assert_eq!(c.source_for(v6), Some("::6".parse().expect("ip")));
    let refused = |c: Cluster| {
        super::cluster::cluster(&c)
            .map(|_| ())
            .expect_err("refused")
    };
    let e = refused(cluster(socket("127.0.0.6", 15), vec![]));
    assert_eq!(e.path, "upstream_bind_config.source_address.port_value");
    let e = refused(cluster(
        socket("127.0.0.6", 0),
        vec![socket("127.0.0.7", 0)],
    ));
    assert_eq!(e.path, "upstream_bind_config.extra_source_addresses[0]");
}

fn hcm_filter(m: &HttpConnectionManager) -> Filter {
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(m))),
    }
}

fn inline_hcm() -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: "inbound_8080".into(),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: "inbound".into(),
            ..Default::default()
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                any(&Router::default()),
            )),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn path_of(m: &HttpConnectionManager) -> PathNormalization {
    match terminal(&Path::root(), &hcm_filter(m)) {
        Ok(Terminal::Http(h)) => h.path,
        other => panic!("not converted: {other:?}"),
    }
}

#[test]
fn the_path_transformations_convert_with_envoys_defaults() {
    assert_eq!(path_of(&inline_hcm()), PathNormalization::default());
    let mut m = inline_hcm();
    m.normalize_path = Some(BoolValue { value: true });
    m.merge_slashes = true;
    m.path_with_escaped_slashes_action = PathWithEscapedSlashesAction::UnescapeAndForward as i32;
    assert_eq!(
        path_of(&m),
        PathNormalization {
            escaped_slashes: EscapedSlashes::UnescapeAndForward,
            normalize: true,
            merge_slashes: true,
        }
    );
    m.normalize_path = Some(BoolValue { value: false });
    assert!(!path_of(&m).normalize);
    for (action, want) in [
        (
            PathWithEscapedSlashesAction::ImplementationSpecificDefault,
            EscapedSlashes::Keep,
        ),
        (
            PathWithEscapedSlashesAction::KeepUnchanged,
            EscapedSlashes::Keep,
        ),
        (
            PathWithEscapedSlashesAction::RejectRequest,
            EscapedSlashes::Reject,
        ),
        (
            PathWithEscapedSlashesAction::UnescapeAndRedirect,
            EscapedSlashes::UnescapeAndRedirect,
        ),
    ] {
        m.path_with_escaped_slashes_action = action as i32;
        assert_eq!(path_of(&m).escaped_slashes, want, "{action:?}");
    }
}

#[test]
fn an_unknown_escaped_slashes_action_and_the_options_message_are_refused_by_path() {
    let p = Path::root().f("filters").i(0);
    let mut m = inline_hcm();
    m.path_with_escaped_slashes_action = 9;
    let e = terminal(&p, &hcm_filter(&m)).expect_err("unknown value refused");
    assert_eq!(
        e.path,
        "filters[0].typed_config.path_with_escaped_slashes_action"
    );
    assert!(e.message.contains("unknown enum value 9"), "{e:?}");
    let mut m = inline_hcm();
    m.path_normalization_options = Some(Default::default());
    let e = terminal(&p, &hcm_filter(&m)).expect_err("options refused");
    assert_eq!(e.path, "filters[0].typed_config.path_normalization_options");
}
