//! `echo-backend --listen IP:PORT --name NAME [--namespace NS]`: a demo and test backend.

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Name to answer with (the pod's).
    #[arg(long)]
    name: String,
    /// The pod's namespace, reported as `Namespace=`.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Answer 503 to every Nth request (1: all).
    #[arg(long, default_value_t = 0)]
    fail_every: u64,
    /// Delay every answer by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let behaviour = testbed::echo::Behaviour {
        fail_every: args.fail_every,
        delay_ms: args.delay_ms,
    };
    let who = testbed::echo::Who {
        name: args.name,
        namespace: args.namespace,
    };
    testbed::echo::run(args.listen, who, behaviour).await
}
