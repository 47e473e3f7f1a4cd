//! `rudder-proxy`: see the crate documentation.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("rudder-proxy: not wired yet")
}
