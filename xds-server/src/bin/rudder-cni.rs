//! `rudder-cni`: Rudder's chained CNI plugin and its node installer (see
//! `xds_server::cni`).

fn main() -> std::process::ExitCode {
    xds_server::cni::main()
}
