//! `xds-server`: the Rudder control plane binary.

fn main() -> anyhow::Result<()> {
    xds_server::cli::Args::parse_and_run()
}
