//! `rudder-proxy`: see the crate documentation.

fn main() -> anyhow::Result<()> {
    conformance::run::main()
}
