//! The `run` flags that bound what peers of the xDS port may open, send and make the
//! control plane hold.

use std::time::Duration;

use crate::config::{BudgetConfig, ConnLimits, Limits, StreamLimits};

/// Limits on what peers of the xDS port may open and send. Refusals are answered with a
/// gRPC status where the peer can still hear one, logged, and counted in
/// `rudder_xds_refusals_total{limit}`.
#[derive(Clone, Debug, clap::Args)]
pub(super) struct LimitArgs {
    /// Longest a TLS handshake on the xDS port may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    tls_handshake_timeout: Duration,
    /// TCP keepalive idle time on xDS connections (0s: off).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    tcp_keepalive: Duration,
    /// Connections open at once on the xDS port, in all.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Connections open at once from one IP address.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections_per_peer: u64,
    /// An xDS connection older than this (give or take a tenth) is closed gracefully and
    /// its proxy reconnects, so proxies spread over replicas again after one restarts
    /// (0s: never; at least 1s otherwise, and every proxy re-syncs once per age).
    #[arg(long, default_value = "30m", value_parser = parse_connection_age)]
    max_connection_age: Duration,
    /// First syncs (a stream's first responses) running at once; more wait their turn,
    /// half of them at most for one identity. Synced streams never wait.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(2..))]
    max_first_syncs: u64,
    /// Longest a first sync keeps its turn while its proxy has not answered.
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration)]
    first_sync_hold: Duration,
    /// ADS streams open at once on one connection.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    max_streams_per_connection: u64,
    /// Largest request message the server decodes, in bytes.
    #[arg(long, default_value_t = 4 << 20, value_parser = clap::value_parser!(u64).range(1024..=(256 << 20)))]
    max_message_bytes: u64,
    /// Resource names one stream may subscribe to, per type.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_subscribed_names: u64,
    /// Bytes of resource names one stream may subscribe to, over every type.
    #[arg(long, default_value_t = 4 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    max_subscribed_bytes: u64,
    /// Longest a request message may take from its first byte to its last; the stream
    /// ends when it runs out.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    message_timeout: Duration,
    /// Memory the xDS port may hold for its peers in all: connections, streams, request
    /// buffers and subscribed names (bytes, or with a Ki, Mi or Gi suffix).
    #[arg(long, default_value = "512Mi", value_parser = parse_bytes)]
    xds_memory_budget: u64,
    /// What one identity (a certificate's SPIFFE ID) may hold of that budget.
    #[arg(long, default_value = "16Mi", value_parser = parse_bytes)]
    identity_memory_share: u64,
    /// What an identity may hold in addition per live pod of its service account (never
    /// more than half of --xds-memory-budget in all).
    #[arg(long, default_value = "1Mi", value_parser = parse_bytes)]
    identity_memory_per_pod: u64,
}

impl From<LimitArgs> for Limits {
    fn from(args: LimitArgs) -> Self {
        let LimitArgs {
            tls_handshake_timeout,
            tcp_keepalive,
            max_connections,
            max_connections_per_peer,
            max_connection_age,
            max_first_syncs,
            first_sync_hold,
            max_streams_per_connection,
            max_message_bytes,
            max_subscribed_names,
            max_subscribed_bytes,
            message_timeout,
            xds_memory_budget,
            identity_memory_share,
            identity_memory_per_pod,
        } = args;
        let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Limits {
            conn: ConnLimits {
                handshake_timeout: tls_handshake_timeout,
                keepalive: (!tcp_keepalive.is_zero()).then_some(tcp_keepalive),
                max_connections: n(max_connections),
                max_connections_per_peer: n(max_connections_per_peer),
                max_age: (!max_connection_age.is_zero()).then_some(max_connection_age),
            },
            stream: StreamLimits {
                streams_per_connection: n(max_streams_per_connection),
                subscribed_names: n(max_subscribed_names),
                subscribed_bytes: n(max_subscribed_bytes),
                message_timeout,
                first_syncs: n(max_first_syncs),
                first_sync_hold,
            },
            message_bytes: n(max_message_bytes),
            budget: BudgetConfig {
                total: n(xds_memory_budget),
                share: n(identity_memory_share),
                per_pod: n(identity_memory_per_pod),
            },
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crds::duration::parse(s)
}

fn parse_connection_age(s: &str) -> Result<Duration, String> {
    let d = crds::duration::parse(s)?;
    if !d.is_zero() && d < Duration::from_secs(1) {
        return Err(format!(
            "{s} is shorter than 1s: proxies would reconnect without pause (0s turns it off)"
        ));
    }
    Ok(d)
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = crds::duration::parse(s)?;
    if d.is_zero() {
        return Err(format!("{s} must be longer than 0s"));
    }
    Ok(d)
}

/// Bytes: a number, or one with a `Ki`, `Mi` or `Gi` suffix.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        _ => return Err(format!("{s:?}: expected bytes, e.g. 536870912 or 512Mi")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected bytes, e.g. 536870912 or 512Mi"))?;
    n.checked_mul(1 << shift)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_take_binary_suffixes() {
        assert_eq!(parse_bytes("536870912"), Ok(512 << 20));
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("64Ki"), Ok(64 << 10));
        assert_eq!(parse_bytes("2Gi"), Ok(2 << 30));
        for bad in ["", "0", "12MB", "Mi", "-1", "99999999999Gi"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_positive_duration("10s"), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn a_connection_age_is_off_or_at_least_a_second() {
        assert_eq!(parse_connection_age("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_connection_age("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_connection_age("500ms").is_err());
    }
}
