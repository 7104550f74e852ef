//! The egress guard: every outbound connection the gateway makes for a tenant (a job's
//! downstream request and each of its redirects, a webhook delivery) goes through [`Egress`].
//!
//! A destination is resolved once; every address it resolves to is checked against the
//! [`EgressPolicy`]; the connection is then made to those checked addresses and no others (the
//! client is pinned to them), so a second lookup that DNS rebinding could answer differently is
//! never made. Refused by default: loopback, unspecified, link-local (every cloud metadata
//! address), private, shared (CGNAT), unique-local, multicast, broadcast, documentation and
//! reserved ranges, IPv4 addresses embedded in IPv6 (mapped, compatible, NAT64, 6to4), and the
//! gateway's own listen address. The operator opens chosen internal destinations with an
//! allowlist of networks and host names. HTTPS uses rustls with the web PKI roots, plus any CA
//! the operator adds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::Url;
use rustls::pki_types::CertificateDer;

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressDenied {
    /// Not `http` or `https`.
    #[error("scheme `{0}` is not allowed (http and https only)")]
    Scheme(String),
    /// No host in the URL.
    #[error("the URL has no host")]
    NoHost,
    /// An address in a refused range.
    #[error("{addr} is {range}, which the egress guard refuses")]
    Address {
        /// The address.
        addr: IpAddr,
        /// Which range (`loopback`, `private`, `link-local`, …).
        range: &'static str,
    },
    /// The gateway's own listen address.
    #[error("{0} is the gateway's own address")]
    OwnAddress(SocketAddr),
    /// The host did not resolve.
    #[error("`{host}` did not resolve: {reason}")]
    Unresolved {
        /// The host name.
        host: String,
        /// Why.
        reason: String,
    },
}

/// What the guard lets through.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Networks opened by the operator (e.g. `10.1.2.0/24`, `127.0.0.1/32` for tests).
    pub allow_nets: Vec<IpNet>,
    /// Host names opened by the operator (exact, case-insensitive, without a trailing dot):
    /// any address they resolve to is allowed.
    pub allow_hosts: Vec<String>,
    /// The gateway's own listen addresses: refused even where the allowlist opens their range.
    pub own: Vec<SocketAddr>,
}

/// The range a refused address falls in, or `None` for a public unicast address.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() || a == 0 {
        "unspecified"
    } else if ip.is_link_local() {
        "link-local"
    } else if ip.is_private() {
        "private"
    } else if a == 100 && (64..128).contains(&b) {
        "shared address space (CGNAT)"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_documentation() {
        "documentation"
    } else if a == 192 && b == 0 && c == 0 {
        "IETF protocol assignments"
    } else if a == 198 && (18..20).contains(&b) {
        "benchmarking"
    } else if a >= 240 {
        "reserved"
    } else {
        return None;
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if let Some(v4) = embedded_v4(ip) {
        // The same checks as the IPv4 address it reaches.
        return refused_v4(v4).or(Some("an IPv4 address embedded in IPv6"));
    }
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if segments[0] & 0xffc0 == 0xfe80 {
        "link-local"
    } else if segments[0] & 0xffc0 == 0xfec0 {
        "site-local"
    } else if segments[0] & 0xfe00 == 0xfc00 {
        "unique-local"
    } else if ip.is_multicast() {
        "multicast"
    } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
        "documentation"
    } else if segments[0] == 0x0100 && segments[1..4] == [0, 0, 0] {
        "discard-only"
    } else {
        return None;
    })
}

/// The IPv4 address an IPv6 one reaches: mapped (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

impl EgressPolicy {
    /// Checks one address a destination resolved to (with the port it will be reached on).
    pub fn check_addr(&self, addr: SocketAddr) -> Result<(), EgressDenied> {
        let ip = canonical(addr.ip());
        if self.own.iter().any(|own| {
            own.port() == addr.port() && (own.ip().is_unspecified() || canonical(own.ip()) == ip)
        }) {
            return Err(EgressDenied::OwnAddress(addr));
        }
        if self.allow_nets.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match refused_range(ip) {
            Some(range) => Err(EgressDenied::Address { addr: ip, range }),
            None => Ok(()),
        }
    }

    /// Whether the operator opened host `name` by name.
    fn allows_host(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        self.allow_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Checks what can be checked of `url` without resolving it: the scheme, and the host when
    /// it is an address (however it was spelled: the URL parser has normalized
    /// `http://2130706433/` and `http://0x7f.1/` to `127.0.0.1`). A configuration put calls
    /// this to refuse a literal destination at once.
    pub fn check_url(&self, url: &Url) -> Result<(), EgressDenied> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EgressDenied::Scheme(url.scheme().to_owned()));
        }
        let port = url.port_or_known_default().unwrap_or(0);
        match url.host() {
            None => Err(EgressDenied::NoHost),
            Some(url::Host::Ipv4(ip)) => self.check_addr(SocketAddr::new(ip.into(), port)),
            Some(url::Host::Ipv6(ip)) => self.check_addr(SocketAddr::new(ip.into(), port)),
            Some(url::Host::Domain(_)) => Ok(()),
        }
    }

    /// Resolves `url`'s host once and checks every address; returns the addresses to connect
    /// to. A name the operator opened skips the range checks (not the own-address check).
    pub async fn resolve(&self, url: &Url) -> Result<Vec<SocketAddr>, EgressDenied> {
        self.check_url(url)?;
        let port = url.port_or_known_default().unwrap_or(0);
        let host = match url.host() {
            // `name.` is the same name, written fully qualified.
            Some(url::Host::Domain(host)) => host.trim_end_matches('.').to_owned(),
            Some(url::Host::Ipv4(ip)) => return Ok(vec![SocketAddr::new(ip.into(), port)]),
            Some(url::Host::Ipv6(ip)) => return Ok(vec![SocketAddr::new(ip.into(), port)]),
            None => return Err(EgressDenied::NoHost),
        };
        let unresolved = |reason: String| EgressDenied::Unresolved {
            host: host.clone(),
            reason,
        };
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|_| unresolved("timed out".into()))?
        .map_err(|e| unresolved(e.to_string()))?
        .collect();
        if addrs.is_empty() {
            return Err(unresolved("no addresses".into()));
        }
        let by_name = self.allows_host(&host);
        for addr in &addrs {
            if by_name {
                if self.own.iter().any(|own| own == addr) {
                    return Err(EgressDenied::OwnAddress(*addr));
                }
            } else {
                // Every address must pass: a name that also resolves inward is refused whole.
                self.check_addr(*addr)?;
            }
        }
        Ok(addrs)
    }
}

/// `ip` with an IPv4-mapped IPv6 address written as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// How outbound requests are made: the policy, TLS roots, and limits.
#[derive(Clone)]
pub struct Egress {
    policy: Arc<EgressPolicy>,
    /// One TLS configuration (the web PKI roots and the operator's) for every hop's client, so
    /// the roots are parsed once, not per request.
    tls: Arc<rustls::ClientConfig>,
}

/// An outbound request failed.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The guard refused the destination.
    #[error("egress_denied: {0}")]
    Denied(#[from] EgressDenied),
    /// The request failed (connection, TLS, timeout, body).
    #[error("{0}")]
    Http(String),
    /// A redirect that may not be followed.
    #[error("redirect refused: {0}")]
    Redirect(String),
}

/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;

/// What an outbound request is.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// HTTP method.
    pub method: reqwest::Method,
    /// Where.
    pub url: Url,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body.
    pub body: Option<Vec<u8>>,
    /// Time to connect.
    pub connect_timeout: Duration,
    /// Time for the whole request, each hop.
    pub timeout: Duration,
    /// Same-origin redirects followed at most (at most [`MAX_REDIRECTS`]); a redirect past
    /// them, or to another origin, is answered as it is.
    pub redirects: usize,
}

impl Egress {
    /// A guard enforcing `policy`, trusting the web PKI roots and `extra_roots` (DER); an
    /// extra root that is not a CA certificate rustls accepts is an error.
    pub fn new(
        policy: EgressPolicy,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for root in extra_roots {
            roots.add(root.clone())?;
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            policy: Arc::new(policy),
            tls: Arc::new(tls),
        })
    }

    /// The policy.
    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// Sends `request`, following redirects to the same origin (at most `request.redirects`),
    /// each hop resolved, checked and connected to only at its checked addresses. A redirect
    /// to another origin is not followed: it is the answer (credentials never leave the origin).
    pub async fn send(&self, mut request: Outbound) -> Result<reqwest::Response, EgressError> {
        let hops = request.redirects.min(MAX_REDIRECTS);
        for hop in 0..=hops {
            let addrs = self.policy.resolve(&request.url).await?;
            let client = self.client_for(&request, &addrs)?;
            let mut builder = client
                .request(request.method.clone(), request.url.clone())
                .headers(request.headers.clone());
            if let Some(body) = &request.body {
                builder = builder.body(body.clone());
            }
            let response = builder
                .send()
                .await
                .map_err(|e| EgressError::Http(describe(&e)))?;
            if !response.status().is_redirection() || hop == hops {
                return Ok(response);
            }
            let Some(location) = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
            else {
                return Ok(response);
            };
            let next = request
                .url
                .join(location)
                .map_err(|e| EgressError::Redirect(format!("bad Location: {e}")))?;
            if next.origin() != request.url.origin() {
                return Ok(response);
            }
            if matches!(response.status().as_u16(), 301..=303) {
                request.method = reqwest::Method::GET;
                request.body = None;
            }
            request.url = next;
        }
        unreachable!("the last hop returns")
    }

    /// A client pinned to `addrs` for the request's host, following no redirect itself.
    fn client_for(
        &self,
        request: &Outbound,
        addrs: &[SocketAddr],
    ) -> Result<reqwest::Client, EgressError> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(request.connect_timeout)
            .timeout(request.timeout)
            .pool_max_idle_per_host(0);
        if let Some(url::Host::Domain(host)) = request.url.host() {
            builder = builder.resolve_to_addrs(host, addrs);
        }
        builder
            .use_preconfigured_tls(self.tls.as_ref().clone())
            .build()
            .map_err(|e| EgressError::Http(format!("building the client: {e}")))
    }
}

/// An error with its causes, for the job's `executionError`.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Parses the operator's allowlist: comma-separated CIDRs, addresses and host names.
pub fn parse_allowlist(spec: &str) -> Result<(Vec<IpNet>, Vec<String>), String> {
    let mut nets = Vec::new();
    let mut hosts = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Ok(net) = item.parse::<IpNet>() {
            nets.push(net);
        } else if let Ok(ip) = item.parse::<IpAddr>() {
            nets.push(IpNet::from(ip));
        } else if item
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            hosts.push(item.trim_end_matches('.').to_ascii_lowercase());
        } else {
            return Err(format!(
                "`{item}` is neither a network, an address nor a host name"
            ));
        }
    }
    Ok((nets, hosts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> Option<EgressDenied> {
        EgressPolicy::default()
            .check_url(&Url::parse(url).unwrap())
            .err()
    }

    #[test]
    fn every_internal_range_is_refused_at_the_decision_point() {
        for url in [
            "http://127.0.0.1/",
            "http://127.9.9.9:8080/",
            "http://0.0.0.0/",
            "http://169.254.169.254/latest/api/token",
            "http://169.254.170.2/",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://100.127.255.254/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[::1]/",
            "http://[::]/",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://[fc00::1]/",
            "http://[ff02::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::]/",
        ] {
            assert!(
                matches!(refused(url), Some(EgressDenied::Address { .. })),
                "{url} was not refused"
            );
        }
    }

    #[test]
    fn odd_spellings_of_loopback_are_the_same_address() {
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::ffff:7f00:1]/",
        ] {
            assert_eq!(
                refused(url),
                Some(EgressDenied::Address {
                    addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    range: "loopback"
                }),
                "{url}"
            );
        }
    }

    #[test]
    fn public_addresses_and_names_pass_the_literal_check() {
        for url in [
            "https://93.184.215.14/",
            "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/",
            "https://api.github.com/repos",
            "http://100.128.0.1/",
            "http://172.32.0.1/",
        ] {
            assert_eq!(refused(url), None, "{url}");
        }
    }

    #[test]
    fn only_http_and_https_are_allowed() {
        for url in [
            "file:///etc/passwd",
            "gopher://example.com/",
            "ftp://example.com/",
        ] {
            assert!(
                matches!(refused(url), Some(EgressDenied::Scheme(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn the_allowlist_opens_a_network_but_never_the_gateways_own_address() {
        let own: SocketAddr = "127.0.0.1:4587".parse().unwrap();
        let policy = EgressPolicy {
            allow_nets: vec!["127.0.0.1/32".parse().unwrap()],
            allow_hosts: Vec::new(),
            own: vec![own],
        };
        assert_eq!(policy.check_addr("127.0.0.1:9000".parse().unwrap()), Ok(()));
        assert!(
            policy
                .check_addr("127.0.0.2:9000".parse().unwrap())
                .is_err()
        );
        assert_eq!(policy.check_addr(own), Err(EgressDenied::OwnAddress(own)));
        assert!(matches!(
            policy.check_addr("[::ffff:127.0.0.1]:4587".parse().unwrap()),
            Err(EgressDenied::OwnAddress(_))
        ));
        let any = EgressPolicy {
            own: vec!["0.0.0.0:4587".parse().unwrap()],
            allow_nets: vec!["10.0.0.0/8".parse().unwrap()],
            ..EgressPolicy::default()
        };
        assert!(matches!(
            any.check_addr("10.1.2.3:4587".parse().unwrap()),
            Err(EgressDenied::OwnAddress(_))
        ));
        assert_eq!(any.check_addr("10.1.2.3:443".parse().unwrap()), Ok(()));
    }

    #[tokio::test]
    async fn a_name_is_resolved_once_and_refused_if_it_reaches_inward() {
        let policy = EgressPolicy::default();
        let denied = policy
            .resolve(&Url::parse("http://localhost./").unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(
                denied,
                EgressDenied::Address {
                    range: "loopback",
                    ..
                }
            ),
            "{denied}"
        );
        let opened = EgressPolicy {
            allow_hosts: vec!["localhost".into()],
            ..EgressPolicy::default()
        };
        let addrs = opened
            .resolve(&Url::parse("http://LOCALHOST.:8080/").unwrap())
            .await
            .unwrap();
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080)
        );
    }

    #[test]
    fn the_allowlist_takes_networks_addresses_and_names() {
        let (nets, hosts) =
            parse_allowlist("127.0.0.1/32, ::1, internal.example., 10.0.0.0/8").unwrap();
        assert_eq!(nets.len(), 3);
        assert_eq!(hosts, vec!["internal.example".to_owned()]);
        assert!(parse_allowlist("http://x/").is_err());
    }
}
