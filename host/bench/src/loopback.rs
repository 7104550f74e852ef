//! The loopback guard: the bench only ever talks to this machine.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::{BenchError, Result};

/// Parses `http://host:port` and resolves it, refusing anything but loopback.
pub fn loopback_addr(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| BenchError::Invalid(format!("`{url}`: only http:// URLs are supported")))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .map_err(|e| BenchError::Invalid(format!("`{url}`: {e}")))?
        .collect();
    match addrs.iter().find(|a| is_loopback(a.ip())) {
        Some(addr) if addrs.iter().all(|a| is_loopback(a.ip())) => Ok(*addr),
        _ => Err(BenchError::NotLoopback(authority.to_owned())),
    }
}

pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// An HTTP client for the gateway on loopback: never through a proxy the environment names.
pub(crate) fn loopback_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| BenchError::Setup(format!("an HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        assert!(loopback_addr("http://127.0.0.1:4587").is_ok());
        assert!(loopback_addr("http://[::1]:4587/v1").is_ok());
        assert!(loopback_addr("http://localhost:4587").is_ok());
        assert!(matches!(
            loopback_addr("http://10.1.2.3:80"),
            Err(BenchError::NotLoopback(_))
        ));
        assert!(loopback_addr("https://127.0.0.1:4587").is_err());
    }
}
