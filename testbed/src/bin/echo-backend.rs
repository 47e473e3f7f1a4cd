//! `echo-backend --listen IP:PORT --name NAME`: a demo and test backend.

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Name to answer with.
    #[arg(long)]
    name: String,
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
    testbed::echo::run(args.listen, args.name, behaviour).await
}
