//! The command line's own checks.

use super::*;

#[test]
fn a_relative_cert_dir_is_made_absolute_for_the_bootstrap() {
    let dir = absolute_cert_dir(std::path::Path::new("rudder-certs")).expect("absolute");
    assert!(dir.is_absolute(), "{}", dir.display());
    assert!(dir.ends_with("rudder-certs"), "{}", dir.display());
    // What the app's bootstrap names: a path, not an authority `rudder-certs`.
    let uri = format!("unix://{}", crate::agent::xds_proxy::socket(&dir).display());
    assert!(uri.starts_with("unix:///"), "{uri}");
    assert!(uri.ends_with("/rudder-certs/.agent/xds.sock"), "{uri}");
    let unchanged = absolute_cert_dir(std::path::Path::new("/var/run/rudder")).expect("abs");
    assert_eq!(unchanged, PathBuf::from("/var/run/rudder"));
}
