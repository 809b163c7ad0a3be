//! Result callbacks: a submission with `callback_url` gets its result POSTed there once it is
//! published (Judge0 users rely on this). Delivery is tried three times with backoff; the result
//! stays available through GET and server-sent events whatever happens to the callback.
//!
//! A callback is a request Kiln makes on a stranger's behalf, from inside the operator's network:
//! aimed inward (loopback, link-local such as a cloud's metadata service, private and
//! unique-local networks) it would let anyone reach services that trust that network. So every
//! address a callback's host resolves to is checked against `Targets`, at submission (a refused
//! URL is a 422 then, not a silent failure later) and again at every connection, redirects
//! included (a name may resolve elsewhere by then). Operators who want internal targets list
//! their networks in `callback_allowed_networks`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;

/// A network in CIDR form, e.g. `10.1.0.0/16` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(text: &str) -> Result<Network, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let base: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or a network like 10.0.0.0/8"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Network { base, prefix })
    }
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, unmap(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is the IPv4 address.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why an address is no place for a callback unless the operator allows it; `None` for a public
/// address.
pub fn inward(ip: IpAddr) -> Option<&'static str> {
    match unmap(ip) {
        IpAddr::V4(v4) => inward_v4(v4),
        IpAddr::V6(v6) => inward_v6(v6),
    }
}

fn inward_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address (where cloud metadata services live)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if a == 0 || ip.is_broadcast() || ip.is_multicast() || a >= 240 || (a, b) == (192, 0) {
        Some("a reserved, multicast or broadcast address")
    } else {
        None
    }
}

fn inward_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some("a reserved or multicast address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a unique-local (private) address")
    } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
        Some("a link-local address")
    } else if ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64: the IPv4 address it reaches is what counts.
        let [.., c, d] = ip.segments();
        inward_v4(Ipv4Addr::from((u32::from(c) << 16) | u32::from(d)))
    } else {
        None
    }
}

/// Where callbacks may go: anywhere public, plus the networks the operator allows.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    pub allowed: Vec<Network>,
}

impl Targets {
    /// From `callback_allowed_networks`.
    pub fn from_settings(networks: &[String]) -> Result<Targets, String> {
        let allowed = networks
            .iter()
            .map(|n| {
                n.parse()
                    .map_err(|e| format!("callback_allowed_networks: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Targets { allowed })
    }

    /// Refuses `addr` when it is inward and not allowed, saying which it is and what to set.
    pub fn check(&self, addr: IpAddr) -> Result<(), Inward> {
        match inward(addr) {
            Some(what) if !self.allowed.iter().any(|n| n.contains(addr)) => {
                Err(Inward { addr, what })
            }
            _ => Ok(()),
        }
    }

    /// Resolves `host:port` and checks every address (one refused address refuses the name: it
    /// could be the one connected to).
    fn resolve_checked(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
        for a in &addrs {
            self.check(a.ip()).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{netloc} resolves to {e}"),
                )
            })?;
        }
        Ok(addrs)
    }

    /// Checks a submission's callback URL before it is accepted: its host must resolve, and only
    /// to addresses a callback may reach.
    pub async fn check_url(&self, url: &str) -> Result<(), CallbackError> {
        let parsed = url::Url::parse(url)?;
        let refused = |host: Option<&str>, inward| CallbackError::Refused {
            url: url.to_string(),
            host: host.map(str::to_string),
            inward,
        };
        let host = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => {
                return self.check(IpAddr::V4(ip)).map_err(|e| refused(None, e))
            }
            Some(url::Host::Ipv6(ip)) => {
                return self.check(IpAddr::V6(ip)).map_err(|e| refused(None, e))
            }
            Some(url::Host::Domain(d)) => d.to_string(),
            None => return Err(CallbackError::NoHost),
        };
        let port = parsed.port_or_known_default().unwrap_or(80);
        let lookup = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await;
        let addrs: Vec<SocketAddr> = match lookup {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => {
                return Err(CallbackError::Unresolved {
                    host: host.clone(),
                    error: e.to_string(),
                })
            }
            Err(_) => return Err(CallbackError::SlowToResolve { host: host.clone() }),
        };
        for a in addrs {
            self.check(a.ip()).map_err(|e| refused(Some(&host), e))?;
        }
        Ok(())
    }
}

/// An address a callback may not reach: inward, and not among the operator's networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{addr} is {what}: Kiln does not send callbacks into its own host or private networks \
     unless the operator lists them in callback_allowed_networks"
)]
pub struct Inward {
    pub addr: IpAddr,
    /// Which kind of inward address ("a loopback address", "a private network address", ...).
    pub what: &'static str,
}

/// Why a submission's `callback_url` is refused (a 422 at submission).
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("callback_url: {0}")]
    Url(#[from] url::ParseError),
    #[error("callback_url has no host")]
    NoHost,
    #[error("callback_url: {host} does not resolve ({error})")]
    Unresolved { host: String, error: String },
    #[error("callback_url: resolving {host} took over 5 s")]
    SlowToResolve { host: String },
    /// The URL's address, or one its host resolves to, is inward.
    #[error("callback_url {url}: {}{inward}", host.as_ref().map(|h| format!("{h} resolves to ")).unwrap_or_default())]
    Refused {
        url: String,
        host: Option<String>,
        inward: Inward,
    },
}

/// Attempts per callback, and the wait before the second and third.
const BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];

/// How a result is sent: Kiln's result POSTed, or Judge0's submission PUT.
pub fn body_for(
    result: &crate::result::RunResult,
    format: crate::submission::CallbackFormat,
) -> (&'static str, serde_json::Value) {
    match format {
        crate::submission::CallbackFormat::Kiln => (
            "POST",
            serde_json::to_value(result.view()).unwrap_or_default(),
        ),
        crate::submission::CallbackFormat::Judge0 => ("PUT", crate::judge0::callback_body(result)),
    }
}

/// Sends `body` to `url` (with `method`) on a blocking thread; never blocks the caller. Every
/// connection, redirects included, goes only to addresses `targets` allows.
pub fn deliver(
    url: String,
    id: String,
    (method, body): (&'static str, serde_json::Value),
    metrics: Arc<Metrics>,
    targets: Arc<Targets>,
) {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .resolver(move |netloc: &str| targets.resolve_checked(netloc))
            .build();
        let mut last_error = String::new();
        for attempt in 0..=BACKOFF.len() {
            if attempt > 0 {
                std::thread::sleep(BACKOFF[attempt - 1]);
            }
            match agent.request(method, &url).send_json(&body) {
                Ok(_) => {
                    metrics.callbacks.with_label_values(&["delivered"]).inc();
                    return;
                }
                Err(ureq::Error::Status(code, _)) => {
                    last_error = format!("the target answered {code}")
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        metrics.callbacks.with_label_values(&["failed"]).inc();
        tracing::warn!(%id, %url, error = %last_error, "callback not delivered after 3 attempts; the result stays available through GET");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn inward_addresses_are_refused_and_public_ones_pass() {
        let targets = Targets::default();
        for inward in [
            "127.0.0.1",
            "127.9.9.9",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(targets.check(ip(inward)).is_err(), "{inward}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            assert!(targets.check(ip(public)).is_ok(), "{public}");
        }
    }

    #[test]
    fn allowed_networks_open_exactly_themselves() {
        let targets =
            Targets::from_settings(&["127.0.0.1/32".into(), "fd00:1::/32".into()]).unwrap();
        assert!(targets.check(ip("127.0.0.1")).is_ok());
        assert!(targets.check(ip("::ffff:127.0.0.1")).is_ok());
        assert!(targets.check(ip("127.0.0.2")).is_err());
        assert!(targets.check(ip("fd00:1::5")).is_ok());
        assert!(targets.check(ip("fd00:2::5")).is_err());
        assert!(Targets::from_settings(&["10.0.0.0/33".into()]).is_err());
        assert!(Targets::from_settings(&["intranet".into()]).is_err());
    }

    #[tokio::test]
    async fn a_refused_callback_url_says_why_by_its_variant() {
        let targets = Targets::default();
        let e = targets
            .check_url("http://127.0.0.1:9/hook")
            .await
            .unwrap_err();
        let CallbackError::Refused { host, inward, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!((host.as_deref(), inward.addr), (None, ip("127.0.0.1")));
        assert_eq!(inward.what, "a loopback address");
        assert!(e
            .to_string()
            .starts_with("callback_url http://127.0.0.1:9/hook: 127.0.0.1 is a loopback address"));
        let e = targets
            .check_url("http://localhost:9/hook")
            .await
            .unwrap_err();
        assert!(
            matches!(&e, CallbackError::Refused { host: Some(h), .. } if h == "localhost"),
            "{e:?}"
        );
        assert!(e.to_string().contains(": localhost resolves to "), "{e}");
        assert!(matches!(
            targets.check_url("not a url").await,
            Err(CallbackError::Url(_))
        ));
        assert!(matches!(
            targets.check_url("unix:/run/socket").await,
            Err(CallbackError::NoHost)
        ));
        assert!(targets.check_url("http://93.184.216.34/hook").await.is_ok());
    }
}
