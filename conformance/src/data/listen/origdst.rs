//! The original destination of a redirected connection (`SO_ORIGINAL_DST` for IPv4,
//! `IP6T_SO_ORIGINAL_DST` for IPv6): the address the client dialled before iptables'
//! REDIRECT sent it to this listener.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// `SO_ORIGINAL_DST` and `IP6T_SO_ORIGINAL_DST` (both 80 in the kernel headers).
const SO_ORIGINAL_DST: libc::c_int = 80;

/// The original destination of `sock`, whose local address is `local` (the family to
/// ask for). An error when the connection was not redirected (`ENOENT`) or the socket
/// cannot say.
pub fn original_dst(sock: &impl AsRawFd, local: SocketAddr) -> io::Result<SocketAddr> {
    let fd = sock.as_raw_fd();
    match local {
        SocketAddr::V4(_) => {
            // SAFETY: `addr` is a properly sized, writable sockaddr_in and `len` its
            // size; the kernel writes at most `len` bytes.
            let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut len = socklen::<libc::sockaddr_in>();
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_IP,
                    SO_ORIGINAL_DST,
                    (&raw mut addr).cast(),
                    &mut len,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(addr.sin_port),
            )))
        }
        SocketAddr::V6(_) => {
            // SAFETY: as above, with sockaddr_in6.
            let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            let mut len = socklen::<libc::sockaddr_in6>();
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_IPV6,
                    SO_ORIGINAL_DST,
                    (&raw mut addr).cast(),
                    &mut len,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(addr.sin6_port),
                addr.sin6_flowinfo,
                addr.sin6_scope_id,
            )))
        }
    }
}

fn socklen<T>() -> libc::socklen_t {
    // A sockaddr is a few dozen bytes: it fits.
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_that_was_not_redirected_has_no_original_destination() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        let err = original_dst(&s, s.local_addr().unwrap()).unwrap_err();
        // ENOENT without a NAT entry (ENOPROTOOPT when conntrack is not loaded).
        assert!(
            matches!(
                err.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ENOPROTOOPT)
            ),
            "{err}"
        );
    }

    #[test]
    fn a_closed_descriptor_is_an_error_not_a_crash() {
        struct Bad;
        impl AsRawFd for Bad {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                -1
            }
        }
        let local: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(
            original_dst(&Bad, local).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }
}
