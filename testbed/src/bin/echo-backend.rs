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
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    testbed::echo::run(args.listen, args.name).await
}
