//! Transparent interception: the iptables rules the injected init container installs in
//! the pod's network namespace (as `iptables-restore` input, so they apply at once or
//! not at all). Inbound TCP goes to Envoy's inbound port, outbound TCP to its outbound
//! port, except:
//! - traffic of the proxy's own UID (Envoy and the agent: no loops, and the agent reaches
//!   the control plane directly);
//! - loopback destinations (the sidecar's hop to the app);
//! - the configured ports and CIDRs, and inbound the agent's status port.

use std::net::IpAddr;

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
pub(crate) fn rules_v6(i: &Interception) -> String {
    rules_for(i, true)
}

fn rules_for(i: &Interception, v6: bool) -> String {
    let loopback = if v6 { "::1/128" } else { "127.0.0.1/32" };
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
    let mut inbound_skip: Vec<u16> = vec![i.agent_status_port];
    inbound_skip.extend(&i.exclude_inbound_ports);
    inbound_skip.sort_unstable();
    inbound_skip.dedup();
    for p in inbound_skip {
        r.push(format!("-A RUDDER_INBOUND -p tcp --dport {p} -j RETURN"));
    }
    r.push("-A RUDDER_INBOUND -p tcp -j RUDDER_IN_REDIRECT".into());
    r.push("-A OUTPUT -p tcp -j RUDDER_OUTPUT".into());
    r.push(format!(
        "-A RUDDER_OUTPUT -m owner --uid-owner {} -j RETURN",
        i.proxy_uid
    ));
    r.push(format!("-A RUDDER_OUTPUT -d {loopback} -j RETURN"));
    let mut ports = i.exclude_outbound_ports.clone();
    ports.sort_unstable();
    ports.dedup();
    for p in ports {
        r.push(format!("-A RUDDER_OUTPUT -p tcp --dport {p} -j RETURN"));
    }
    for (ip, len) in i.exclude_cidrs.iter().filter(|(ip, _)| ip.is_ipv6() == v6) {
        r.push(format!("-A RUDDER_OUTPUT -d {ip}/{len} -j RETURN"));
    }
    r.push("-A RUDDER_OUTPUT -j RUDDER_REDIRECT".into());
    r.push("COMMIT".into());
    r.join("\n") + "\n"
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

    #[test]
    fn cidrs_are_checked() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129", "10.0.0.0/-1"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
