//! The listener manager driven by snapshots: a real `listen::run` with `tcp_proxy`
//! chains forwarding through `upstream::connect` to STATIC clusters of a local TCP
//! echo.

mod net_support;

use std::sync::Arc;

use conformance::data::listen::stat_prefix;
use net_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_tcp_proxy_chain_forwards_both_ways_and_passes_the_half_close() {
    let echo = echo_server().await;
    let proxy = Proxy::start();
    proxy.route_tcp_to(echo);
    let addr = free_addr();
    proxy.set_listeners(vec![tcp_listener("tcp", addr)]);
    let mut c = connect_when_up(addr).await;
    assert_eq!(roundtrip(&mut c, b"hello").await.unwrap(), b"hello");
    c.write_all(b" world").await.unwrap();
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert_eq!(
        rest, b" world",
        "the echo answers after our EOF, then closes"
    );
    assert!(proxy.counter(&format!("{}.downstream_cx_total", stat_prefix(addr))) >= 1);
    assert_eq!(
        proxy
            .ctx
            .stats
            .gauge("listener_manager.total_listeners_active")
            .get(),
        1
    );
    proxy.stop().await;
    wait_refused(addr).await;
}

#[tokio::test]
async fn listeners_follow_the_snapshot_and_removed_ones_let_open_connections_finish() {
    let echo = echo_server().await;
    let proxy = Proxy::start();
    proxy.route_tcp_to(echo);
    let (a, b) = (free_addr(), free_addr());
    proxy.set_listeners(vec![tcp_listener("a", a), tcp_listener("b", b)]);
    let mut open_a = connect_when_up(a).await;
    assert_eq!(roundtrip(&mut open_a, b"1").await.unwrap(), b"1");
    let _ = connect_when_up(b).await;

    // Remove `a`: it refuses new connections, the open one keeps working; `b` stays.
    proxy.set_listeners(vec![tcp_listener("b", b)]);
    wait_refused(a).await;
    assert_eq!(roundtrip(&mut open_a, b"still").await.unwrap(), b"still");
    let mut on_b = connect_when_up(b).await;
    assert_eq!(roundtrip(&mut on_b, b"b").await.unwrap(), b"b");

    // Move `b` to another address: the old one refuses, the new one serves, and the
    // connection opened on the old socket finishes its work.
    let b2 = free_addr();
    proxy.set_listeners(vec![tcp_listener("b", b2)]);
    wait_refused(b).await;
    let mut on_b2 = connect_when_up(b2).await;
    assert_eq!(roundtrip(&mut on_b2, b"b2").await.unwrap(), b"b2");
    assert_eq!(roundtrip(&mut on_b, b"old").await.unwrap(), b"old");

    // A changed configuration at the same address keeps the socket and applies to new
    // connections: a listener with no chain closes them.
    let mut closed = tcp_listener("b", b2);
    closed.chains.clear();
    proxy.set_listeners(vec![closed]);
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut c = connect_when_up(b2).await;
        if roundtrip(&mut c, b"x").await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the new config never applied"
        );
    }
    assert!(proxy.counter(&format!("{}.no_filter_chain_match", stat_prefix(b2))) >= 1);
    // a and b added; a removed (b re-sent unchanged: no update, as Envoy); b moved; b
    // changed in place.
    assert_eq!(proxy.counter("listener_manager.listener_added"), 2);
    assert_eq!(proxy.counter("listener_manager.listener_removed"), 1);
    assert_eq!(proxy.counter("listener_manager.listener_modified"), 2);
    assert_eq!(roundtrip(&mut on_b2, b"kept").await.unwrap(), b"kept");
    proxy.stop().await;
}

#[tokio::test]
async fn a_port_in_use_is_reported_and_the_other_listeners_serve() {
    let echo = echo_server().await;
    let proxy = Proxy::start();
    proxy.route_tcp_to(echo);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let good = free_addr();
    proxy.set_listeners(vec![tcp_listener("busy", busy), tcp_listener("good", good)]);
    let mut c = connect_when_up(good).await;
    assert_eq!(roundtrip(&mut c, b"ok").await.unwrap(), b"ok");
    let errors = proxy.ctx.listener_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].listener, "busy");
    assert_eq!(errors[0].address, busy);
    assert!(errors[0].to_string().contains("busy"), "{}", errors[0]);
    assert_eq!(proxy.counter("listener_manager.listener_create_failure"), 1);

    // Freeing the port and changing only endpoints does not touch listeners: the
    // failed one is retried only when its own configuration changes.
    drop(taken);
    proxy.update(|s| s.endpoints = Arc::new(Default::default()));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(proxy.ctx.listener_errors().len(), 1);
    assert_eq!(proxy.counter("listener_manager.listener_create_failure"), 1);

    proxy.set_listeners(vec![tcp_listener("busy", busy), tcp_listener("good", good)]);
    let mut c = connect_when_up(busy).await;
    assert_eq!(roundtrip(&mut c, b"now").await.unwrap(), b"now");
    assert!(proxy.ctx.listener_errors().is_empty());
    assert_eq!(
        proxy
            .ctx
            .stats
            .gauge("listener_manager.total_listeners_active")
            .get(),
        2
    );
    proxy.stop().await;
}

#[tokio::test]
async fn garbage_after_the_inspector_is_closed_without_affecting_others() {
    let echo = echo_server().await;
    let proxy = Proxy::start();
    proxy.route_tcp_to(echo);
    let addr = free_addr();
    let mut l = tcp_listener("inspected", addr);
    l.tls_inspector = true;
    l.chains[0].matcher.transport_protocol = Some("tls".into());
    proxy.set_listeners(vec![l]);
    let mut garbage = connect_when_up(addr).await;
    garbage
        .write_all(b"\x16\x03\x01\x00\x05\x02\xff\xff\xff\xff")
        .await
        .unwrap();
    assert_closed(&mut garbage).await;
    let mut plain = connect_when_up(addr).await;
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_closed(&mut plain).await;
    proxy.stop().await;
}

#[tokio::test]
async fn an_original_destination_cluster_needs_a_restored_destination() {
    use conformance::config::cluster::Discovery;
    let echo = echo_server().await;
    let proxy = Proxy::start();
    let mut pass_cluster = static_cluster("cluster-pass", echo);
    pass_cluster.discovery = Discovery::OriginalDst { header: None };
    proxy.add_cluster(pass_cluster);
    proxy.add_cluster(static_cluster("cluster-eds", echo));
    let (pass, eds) = (free_addr(), free_addr());
    // An intercepting listener reached directly (no NAT entry): nothing to restore.
    let mut l = tcp_listener("pass", pass);
    l.original_dst = true;
    proxy.set_listeners(vec![l, tcp_listener("eds", eds)]);
    let mut c = connect_when_up(eds).await;
    assert_eq!(roundtrip(&mut c, b"eds").await.unwrap(), b"eds");
    let mut p = connect_when_up(pass).await;
    assert_closed(&mut p).await;
    assert_eq!(proxy.counter("cluster.cluster-eds.upstream_cx_total"), 1);
    assert_eq!(
        proxy.counter("cluster.cluster-pass.upstream_cx_total"),
        0,
        "the passthrough cluster never connects (to the listener itself) without an \
         original destination"
    );
    assert_eq!(
        proxy.counter("tcp.pass.downstream_cx_total"),
        1,
        "counted though no upstream was found"
    );
    assert_eq!(
        proxy.counter("cluster.cluster-pass.upstream_cx_none_healthy"),
        1
    );
    proxy.stop().await;
}

#[tokio::test]
async fn http_to_an_original_destination_cluster_without_a_restored_destination_has_no_host() {
    use conformance::config::cluster::Discovery;
    use conformance::config::listener::{ForwardClientCert, Terminal};
    let echo = echo_server().await;
    let proxy = Proxy::start();
    let mut pass_cluster = static_cluster("passthrough", echo);
    pass_cluster.discovery = Discovery::OriginalDst { header: None };
    proxy.add_cluster(pass_cluster);
    let addr = free_addr();
    let mut l = tcp_listener("http", addr);
    l.original_dst = true;
    l.chains[0].terminal = Terminal::Http(Arc::new(http_manager(
        "passthrough",
        ForwardClientCert::Sanitize,
    )));
    proxy.set_listeners(vec![l]);
    let mut c = connect_when_up(addr).await;
    c.write_all(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), c.read_to_end(&mut got))
        .await
        .expect("the reply ends")
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.ends_with("no healthy upstream"), "{got}");
    assert_eq!(
        proxy.counter("cluster.passthrough.upstream_cx_total"),
        0,
        "no connection to the listener's own address"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn without_an_inspector_the_transport_is_raw_buffer() {
    let echo = echo_server().await;
    let proxy = Proxy::start();
    proxy.route_tcp_to(echo);
    let addr = free_addr();
    let mut l = tcp_listener("raw", addr);
    l.chains[0].matcher.transport_protocol = Some("raw_buffer".into());
    proxy.set_listeners(vec![l]);
    let mut c = connect_when_up(addr).await;
    assert_eq!(roundtrip(&mut c, b"raw").await.unwrap(), b"raw");
    proxy.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_listener_limit_are_closed_and_counted() {
    let echo = echo_server().await;
    let proxy = Proxy::start();
    proxy.route_tcp_to(echo);
    proxy
        .ctx
        .listeners
        .set_limits(conformance::data::listen::Limits {
            max_connections: 1,
            ..Default::default()
        });
    let addr = free_addr();
    proxy.set_listeners(vec![tcp_listener("one", addr)]);
    let mut first = connect_when_up(addr).await;
    assert_eq!(roundtrip(&mut first, b"1").await.unwrap(), b"1");
    let mut second = connect_when_up(addr).await;
    assert_closed(&mut second).await;
    assert_eq!(
        proxy.counter(&format!("{}.downstream_cx_overflow", stat_prefix(addr))),
        1
    );
    assert_eq!(roundtrip(&mut first, b"still").await.unwrap(), b"still");
    drop(first);
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut again = connect_when_up(addr).await;
        if roundtrip(&mut again, b"again").await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the slot was never freed"
        );
    }
    proxy.stop().await;
}
