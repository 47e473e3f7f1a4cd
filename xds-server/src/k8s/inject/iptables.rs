//! Transparent interception: the iptables rules the injected init container installs in
//! the pod's network namespace (as `iptables-restore` input, so they apply at once or
//! not at all). Inbound TCP goes to Envoy's inbound port, outbound TCP to its outbound
//! port, except:
//! - traffic of the proxy's own UID (Envoy and the agent: no loops, and the agent reaches
//!   the control plane directly), but not when the proxy connects to its own pod (a pod
//!   calling itself through its Service or its own address): that goes to the inbound
//!   port, as a peer's call would, so the app never receives mTLS bytes;
//! - the sidecar's hop to its app, from the inbound source address (127.0.0.6, `::6`):
//!   the sidecar forwards inbound to the pod's address, never to the loopback, so an app
//!   listening only on the pod IP is reachable and one listening only on localhost is
//!   not reachable from the mesh;
//! - an app's connections to its own pod (loopback or pod IP): no sidecar between a pod
//!   and itself;
//! - the configured ports and CIDRs, and inbound the agent's status port.
//!
//! IPv6 gets the same rules (`ip6tables`); the init container fails when a pod with
//! IPv6 cannot get them, so IPv6 never bypasses the sidecar (see `xds-server iptables`).

use std::net::IpAddr;

use translator::identity::{INBOUND_SOURCE_V4, INBOUND_SOURCE_V6};

/// Interception settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interception {
    /// Envoy's outbound (original destination) port.
    pub outbound_port: u16,
    /// Envoy's inbound port.
    pub inbound_port: u16,
    /// The UID Envoy and the agent run as.
    pub proxy_uid: u32,
    /// The agent's status port (probed by the kubelet, not intercepted).
    pub agent_status_port: u16,
    /// Outbound destination ports left alone.
    pub exclude_outbound_ports: Vec<u16>,
    /// Inbound ports left alone.
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination networks left alone (`10.0.0.0/8`, `fd00::/8`).
    pub exclude_cidrs: Vec<(IpAddr, u8)>,
}

impl Default for Interception {
    fn default() -> Self {
        Interception {
            outbound_port: 15001,
            inbound_port: 15006,
            proxy_uid: 1337,
            agent_status_port: 15021,
            exclude_outbound_ports: Vec::new(),
            exclude_inbound_ports: Vec::new(),
            exclude_cidrs: Vec::new(),
        }
    }
}

/// The init container's arguments: `xds-server iptables --apply` with these settings
/// (it computes [`rules`] itself, so what runs is what the tests check).
pub fn init_args(i: &Interception) -> Vec<String> {
    let mut a = vec![
        "iptables".to_string(),
        "--apply".into(),
        "--outbound-port".into(),
        i.outbound_port.to_string(),
        "--inbound-port".into(),
        i.inbound_port.to_string(),
        "--proxy-uid".into(),
        i.proxy_uid.to_string(),
        "--agent-status-port".into(),
        i.agent_status_port.to_string(),
    ];
    for p in &i.exclude_outbound_ports {
        a.extend(["--exclude-outbound-port".into(), p.to_string()]);
    }
    for p in &i.exclude_inbound_ports {
        a.extend(["--exclude-inbound-port".into(), p.to_string()]);
    }
    for (ip, len) in &i.exclude_cidrs {
        a.extend(["--exclude-cidr".into(), format!("{ip}/{len}")]);
    }
    a
}

/// Parses `ADDR/LEN` (IPv4 or IPv6).
pub(crate) fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not ADDR/LEN"))?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("{len:?} is not a prefix length"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("/{len} is longer than {max}"));
    }
    Ok((ip, len))
}

/// The `iptables-restore` input for IPv4 (IPv6 networks in `exclude_cidrs` are skipped
/// here; `ip6tables` gets the same rules with them).
pub fn rules(i: &Interception) -> String {
    rules_for(i, false)
}

/// The `ip6tables-restore` input.
pub fn rules_v6(i: &Interception) -> String {
    rules_for(i, true)
}

fn rules_for(i: &Interception, v6: bool) -> String {
    let mut r = vec![
        "*nat".to_string(),
        ":RUDDER_INBOUND - [0:0]".into(),
        ":RUDDER_IN_REDIRECT - [0:0]".into(),
        ":RUDDER_OUTPUT - [0:0]".into(),
        ":RUDDER_REDIRECT - [0:0]".into(),
        format!(
            "-A RUDDER_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            i.inbound_port
        ),
        format!(
            "-A RUDDER_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            i.outbound_port
        ),
        "-A PREROUTING -p tcp -j RUDDER_INBOUND".into(),
    ];
    inbound(i, &mut r);
    r.push("-A OUTPUT -p tcp -j RUDDER_OUTPUT".into());
    own_pod(i, v6, &mut r);
    outbound_exclusions(i, v6, &mut r);
    r.push("-A RUDDER_OUTPUT -j RUDDER_REDIRECT".into());
    r.push("COMMIT".into());
    r.join("\n") + "\n"
}

/// Inbound: everything to the inbound port but the agent's status port and the
/// excluded ports.
fn inbound(i: &Interception, r: &mut Vec<String>) {
    let mut inbound_skip: Vec<u16> = vec![i.agent_status_port];
    inbound_skip.extend(&i.exclude_inbound_ports);
    inbound_skip.sort_unstable();
    inbound_skip.dedup();
    for p in inbound_skip {
        r.push(format!("-A RUDDER_INBOUND -p tcp --dport {p} -j RETURN"));
    }
    r.push("-A RUDDER_INBOUND -p tcp -j RUDDER_IN_REDIRECT".into());
}

/// Connections inside the pod (leaving on `lo`), first in `RUDDER_OUTPUT`, in this
/// order:
/// 1. from the inbound source address: the sidecar's hop to its app, straight through;
/// 2. the proxy's to a local address other than the loopback's: the pod calling itself
///    through the mesh (its own Service, or its own address as a peer): the outbound
///    side's mTLS connection goes back to the inbound port, whose hop to the app is (1);
/// 3. an app's: it calls itself by a local address, straight through (as on the
///    loopback, no sidecar between a pod and itself);
/// 4. the proxy's other connections (to the control plane, out of the pod): out.
fn own_pod(i: &Interception, v6: bool, r: &mut Vec<String>) {
    let (loopback, source) = if v6 {
        ("::1/128", format!("{INBOUND_SOURCE_V6}/128"))
    } else {
        ("127.0.0.1/32", format!("{INBOUND_SOURCE_V4}/32"))
    };
    let uid = i.proxy_uid;
    r.push(format!("-A RUDDER_OUTPUT -s {source} -o lo -j RETURN"));
    r.push(format!(
        "-A RUDDER_OUTPUT ! -d {loopback} -o lo -m owner --uid-owner {uid} -j RUDDER_IN_REDIRECT"
    ));
    r.push(format!(
        "-A RUDDER_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN"
    ));
    r.push(format!(
        "-A RUDDER_OUTPUT -m owner --uid-owner {uid} -j RETURN"
    ));
    r.push(format!("-A RUDDER_OUTPUT -d {loopback} -j RETURN"));
}

/// The excluded destination ports and networks (of this family).
fn outbound_exclusions(i: &Interception, v6: bool, r: &mut Vec<String>) {
    let mut ports = i.exclude_outbound_ports.clone();
    ports.sort_unstable();
    ports.dedup();
    for p in ports {
        r.push(format!("-A RUDDER_OUTPUT -p tcp --dport {p} -j RETURN"));
    }
    for (ip, len) in i.exclude_cidrs.iter().filter(|(ip, _)| ip.is_ipv6() == v6) {
        r.push(format!("-A RUDDER_OUTPUT -d {ip}/{len} -j RETURN"));
    }
}

/// Installs `rules` with `iptables-restore --noflush` (the init container's job).
pub fn apply(rules: &str, v6: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let bin = if v6 {
        "ip6tables-restore"
    } else {
        "iptables-restore"
    };
    let mut child = std::process::Command::new(bin)
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {bin}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(rules.as_bytes())
        .with_context(|| format!("writing rules to {bin}"))?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "{bin} failed: {status}");
    Ok(())
}

/// Adds the IPv6 inbound source address (`::6/128`) to the pod's loopback, so the
/// sidecar can connect to an IPv6 app from it (IPv4's 127.0.0.6 is the loopback's
/// already). Done with an ioctl: the init container's image has no `ip`.
pub fn add_inbound_source_v6() -> anyhow::Result<()> {
    let lo = c"lo";
    // SAFETY: a NUL-terminated name; if_nametoindex reads it only.
    let index = unsafe { libc::if_nametoindex(lo.as_ptr()) };
    anyhow::ensure!(
        index != 0,
        "no loopback interface: {}",
        std::io::Error::last_os_error()
    );
    let req = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr {
            s6_addr: INBOUND_SOURCE_V6.octets(),
        },
        ifr6_prefixlen: 128,
        ifr6_ifindex: libc::c_int::try_from(index)?,
    };
    // SAFETY: a socket we own and close; the request lives across the call and is the
    // in6_ifreq SIOCSIFADDR takes on an AF_INET6 socket.
    let result = unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            let rc = libc::ioctl(fd, libc::SIOCSIFADDR, &req);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if rc < 0 { Err(err) } else { Ok(()) }
        }
    };
    match result {
        Ok(()) => Ok(()),
        // Already there (a restarted init container).
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("adding {INBOUND_SOURCE_V6}/128 to lo: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_traffic_loopback_and_exclusions_are_not_redirected() {
        let i = Interception {
            exclude_outbound_ports: vec![5432, 5432],
            exclude_inbound_ports: vec![9090],
            exclude_cidrs: vec![
                parse_cidr("169.254.169.254/32").expect("cidr"),
                parse_cidr("fd00::/8").expect("cidr"),
            ],
            ..Default::default()
        };
        let r = rules(&i);
        let pos = |s: &str| r.find(s).unwrap_or_else(|| panic!("{s} missing in\n{r}"));
        // Every exception comes before the catch-all redirect.
        let redirect = pos("-A RUDDER_OUTPUT -j RUDDER_REDIRECT");
        for s in [
            "--uid-owner 1337 -j RETURN",
            "-d 127.0.0.1/32 -j RETURN",
            "--dport 5432 -j RETURN",
            "-d 169.254.169.254/32 -j RETURN",
        ] {
            assert!(pos(s) < redirect, "{s}");
        }
        assert_eq!(r.matches("--dport 5432").count(), 1);
        assert!(!r.contains("fd00::"), "IPv6 networks go to ip6tables only");
        assert!(rules_v6(&i).contains("-d fd00::/8 -j RETURN"));
        assert!(
            pos("-A RUDDER_INBOUND -p tcp --dport 15021 -j RETURN")
                < pos("-A RUDDER_INBOUND -p tcp -j RUDDER_IN_REDIRECT")
        );
        assert!(r.contains("--dport 9090 -j RETURN"));
        assert!(r.contains("REDIRECT --to-ports 15001") && r.contains("REDIRECT --to-ports 15006"));
        assert!(r.starts_with("*nat\n") && r.ends_with("COMMIT\n"));
    }

    /// The `RUDDER_OUTPUT` rules, in order.
    fn output_chain(r: &str) -> Vec<&str> {
        r.lines()
            .filter_map(|l| l.strip_prefix("-A RUDDER_OUTPUT "))
            .collect()
    }

    #[test]
    fn the_pod_calling_itself_goes_through_the_inbound_port_without_a_loop() {
        let i = Interception {
            exclude_outbound_ports: vec![5432],
            ..Default::default()
        };
        for (r, loopback, source) in [
            (rules(&i), "127.0.0.1/32", "127.0.0.6/32"),
            (rules_v6(&i), "::1/128", "::6/128"),
        ] {
            assert_eq!(
                output_chain(&r),
                [
                    // The sidecar's hop to its app, first: nothing after may catch it.
                    format!("-s {source} -o lo -j RETURN").as_str(),
                    // The proxy to its own pod: to the inbound port, before the proxy's
                    // RETURN.
                    &format!(
                        "! -d {loopback} -o lo -m owner --uid-owner 1337 -j RUDDER_IN_REDIRECT"
                    ),
                    // An app to its own pod: straight through, before the redirect.
                    "-o lo -m owner ! --uid-owner 1337 -j RETURN",
                    "-m owner --uid-owner 1337 -j RETURN",
                    &format!("-d {loopback} -j RETURN"),
                    "-p tcp --dport 5432 -j RETURN",
                    "-j RUDDER_REDIRECT",
                ],
                "{r}"
            );
            assert!(r.contains("-A OUTPUT -p tcp -j RUDDER_OUTPUT"));
        }
    }

    #[test]
    fn cidrs_are_checked() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129", "10.0.0.0/-1"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
