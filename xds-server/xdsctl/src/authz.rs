//! `xdsctl authz check`: asks the control plane whether a caller may make a request to
//! a Service (`rudder.authz.v1.Authz/Check`), and prints the answer per destination
//! service account with what decided it.

use anyhow::Context;
use clap::Subcommand;
use translator::policy::authz::{CheckRequest, CheckResponse};

/// The check's gRPC path.
const CHECK_PATH: &str = "/rudder.authz.v1.Authz/Check";

#[derive(Subcommand)]
pub(crate) enum AuthzCmd {
    /// Whether `--from` may call `--to`: allow or deny per service account behind the
    /// Service, and the objects that decided. Exit code 4 when any answer is deny.
    Check {
        /// The caller: NAMESPACE/SERVICE_ACCOUNT.
        #[arg(long, required_unless_present = "plain_text")]
        from: Option<String>,
        /// Ask for a plain-text caller (no certificate), from this namespace's view.
        #[arg(long)]
        plain_text: bool,
        /// The Service: `[NAMESPACE/]SERVICE[:PORT]` (the caller's namespace and the
        /// Service's default port when left out).
        #[arg(long)]
        to: String,
        /// The HTTP method (GET by default; ignored on TCP ports).
        method: Option<String>,
        /// The HTTP path (`/` by default).
        path: Option<String>,
        /// A request header, `NAME:VALUE` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
    },
}

/// `NS/NAME` split; `default_ns` when there is no `/`.
fn ns_name<'a>(s: &'a str, default_ns: &'a str) -> (&'a str, &'a str) {
    s.split_once('/').unwrap_or((default_ns, s))
}

/// The request a `check` asks.
fn request(
    from: Option<&str>,
    to: &str,
    method: Option<&str>,
    path: Option<&str>,
    headers: &[String],
) -> anyhow::Result<CheckRequest> {
    if let Some(h) = headers.iter().find(|h| !h.contains(':')) {
        anyhow::bail!("--header {h:?}: expected NAME:VALUE");
    }
    let (from_ns, from_sa) = match from {
        Some(f) => {
            let (ns, sa) = f
                .split_once('/')
                .with_context(|| format!("--from {f:?}: expected NAMESPACE/SERVICE_ACCOUNT"))?;
            (ns.to_string(), sa.to_string())
        }
        None => ("default".to_string(), String::new()),
    };
    let (target, port) = match to.rsplit_once(':') {
        Some((t, p)) => (
            t,
            p.parse::<u16>()
                .with_context(|| format!("--to {to:?}: {p:?} is not a port"))?,
        ),
        None => (to, 0),
    };
    let (to_ns, to_svc) = ns_name(target, &from_ns);
    Ok(CheckRequest {
        from_namespace: from_ns.clone(),
        from_service_account: from_sa,
        to_namespace: to_ns.to_string(),
        to_service: to_svc.to_string(),
        port: u32::from(port),
        method: method.unwrap_or_default().to_string(),
        path: path.unwrap_or_default().to_string(),
        headers: headers.to_vec(),
    })
}

/// The answers as a table.
fn table(r: &CheckResponse) -> String {
    let mut out = String::from("DESTINATION\tPORT\tPROTOCOL\tDECISION\tDRY RUN\tDECIDED BY\n");
    for a in &r.answers {
        let dry = match a.dry_run_allowed {
            None => "-",
            Some(true) => "allow",
            Some(false) => "deny",
        };
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            a.service_account,
            a.pod_port,
            a.protocol,
            if a.allowed { "allow" } else { "deny" },
            dry,
            a.by.join("; ")
        ));
    }
    out
}

/// Runs an `authz` command; the exit code.
pub(crate) async fn run(channel: tonic::transport::Channel, cmd: &AuthzCmd) -> anyhow::Result<u8> {
    let AuthzCmd::Check {
        from,
        plain_text,
        to,
        method,
        path,
        headers,
    } = cmd;
    let from = if *plain_text { None } else { from.as_deref() };
    let req = request(from, to, method.as_deref(), path.as_deref(), headers)?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| anyhow::anyhow!("the control plane is not ready: {e}"))?;
    let codec = tonic_prost::ProstCodec::<CheckRequest, CheckResponse>::default();
    let answer = grpc
        .unary(
            tonic::Request::new(req),
            http::uri::PathAndQuery::from_static(CHECK_PATH),
            codec,
        )
        .await
        .map_err(|s| anyhow::anyhow!("authz check: {}", s.message()))?
        .into_inner();
    print!("{}", table(&answer));
    Ok(if answer.answers.iter().all(|a| a.allowed) {
        0
    } else {
        4
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_become_the_request() {
        let r = request(
            Some("shop/web"),
            "api:8080",
            Some("POST"),
            Some("/items"),
            &["x-env:prod".into()],
        )
        .expect("valid");
        assert_eq!(
            (r.to_namespace.as_str(), r.to_service.as_str(), r.port),
            ("shop", "api", 8080)
        );
        assert_eq!(r.from_service_account, "web");
        assert_eq!(r.headers, ["x-env:prod"]);
        assert!(request(Some("shop/web"), "api", None, None, &["x-env".into()]).is_err());
        let r = request(None, "other/api", None, None, &[]).expect("valid");
        assert_eq!((r.to_namespace.as_str(), r.port), ("other", 0));
        assert!(r.from_service_account.is_empty(), "plain text");
        assert!(request(Some("web"), "api", None, None, &[]).is_err());
        assert!(request(Some("a/b"), "api:http", None, None, &[]).is_err());
    }
}
