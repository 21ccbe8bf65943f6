//! Configuration of the TCP transport: which address to bind, security, timers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use super::stream::StreamLayer;
use crate::{Error, Rank, Result};

/// The environment variable holding the job's shared secret.
pub const TOKEN_ENV: &str = "GLOO_AUTH_TOKEN";
/// The environment variable naming the interface(s) to bind, in [`TcpConfig::interface`]
/// syntax, when the configuration names none.
pub const IFNAME_ENV: &str = "GLOO_SOCKET_IFNAME";
/// The environment variable that turns the integrity check on (`1`, `true`, `yes`) or off
/// (`0`, `false`, `no`) when the configuration does not say; see [`TcpConfig::integrity`].
pub const INTEGRITY_ENV: &str = "GLOO_INTEGRITY";
/// Whether a configuration that does not say (and `GLOO_INTEGRITY` unset) checks integrity.
pub const DEFAULT_INTEGRITY: bool = false;

/// How connections are authenticated.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Security {
    /// A per-job shared secret: every connection runs an HMAC-SHA256 challenge-response over
    /// its handshake, both ways.
    Token(Vec<u8>),
    /// No authentication: anybody who can reach the port can join as any rank. Only for
    /// networks where that is acceptable; it must be asked for by name.
    Insecure,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        match self {
            Security::Token(_) => f.write_str("Token(<redacted>)"),
            Security::Insecure => f.write_str("Insecure"),
        }
    }
}

#[derive(Clone, Debug)]
enum Bind {
    /// `GLOO_SOCKET_IFNAME`, else the first suitable interface.
    Auto,
    Loopback,
    Addr(SocketAddr),
    Interface(String),
}

/// Configuration of one rank's TCP transport, built in builder style.
///
/// ```
/// use gloo_transport::Rank;
/// use gloo_transport::tcp::{Security, TcpConfig};
/// use std::time::Duration;
///
/// let cfg = TcpConfig::new("job-42", Rank(0), 4)
///     .interface("^docker,lo")
///     .security(Security::Token(b"a secret of 16 bytes or more".to_vec()))
///     .peer_timeout(Duration::from_secs(10));
/// # let _ = cfg;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TcpConfig {
    pub(crate) job: String,
    pub(crate) rank: Rank,
    pub(crate) size: u32,
    bind: Bind,
    security: Option<Security>,
    pub(crate) peer_timeout: Duration,
    pub(crate) busy_poll: Duration,
    pub(crate) spin: Duration,
    pub(crate) layer: Option<Layer>,
    integrity: Option<bool>,
}

/// A [`StreamLayer`] in a configuration.
#[derive(Clone)]
pub(crate) struct Layer(pub(crate) Arc<dyn StreamLayer>);

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamLayer")
    }
}

/// The default busy-poll window; see [`TcpConfig::busy_poll`].
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(50);
/// The default peer timeout; see [`TcpConfig::peer_timeout`].
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(5);

impl TcpConfig {
    /// Rank `rank` of a group of `size` in job `job`, on an automatically chosen interface:
    /// the one named by `GLOO_SOCKET_IFNAME` if set; else the one on `MASTER_ADDR`'s subnet
    /// (loopback if `MASTER_ADDR` is a loopback address); else the first interface that is
    /// neither loopback nor docker; else loopback.
    pub fn new(job: &str, rank: Rank, size: u32) -> TcpConfig {
        TcpConfig {
            job: job.to_string(),
            rank,
            size,
            bind: Bind::Auto,
            security: None,
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            busy_poll: DEFAULT_BUSY_POLL,
            spin: Duration::ZERO,
            layer: None,
            integrity: None,
        }
    }

    /// This rank.
    pub fn rank(&self) -> Rank {
        self.rank
    }

    /// The group's size.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Like [`new`](TcpConfig::new), bound to `127.0.0.1` on an ephemeral port: every rank on
    /// this host, no authentication needed (unless `GLOO_AUTH_TOKEN` is set, then it is used).
    pub fn loopback(job: &str, rank: Rank, size: u32) -> TcpConfig {
        TcpConfig { bind: Bind::Loopback, ..TcpConfig::new(job, rank, size) }
    }

    /// Bind exactly this address (port 0 picks a free port). IPv6 link-local addresses need
    /// their scope id.
    pub fn bind_addr(mut self, addr: SocketAddr) -> TcpConfig {
        self.bind = Bind::Addr(addr);
        self
    }

    /// Choose the interface with NCCL's syntax: a comma-separated list of name prefixes
    /// (`eth0`, `eth,ib`), `^` in front to exclude instead (`^docker,lo`), `=` in front to
    /// match names exactly (`=eth1`); or an IP address of this host. IPv4 addresses are
    /// preferred over IPv6 on the chosen interface.
    pub fn interface(mut self, spec: &str) -> TcpConfig {
        self.bind = Bind::Interface(spec.to_string());
        self
    }

    /// How connections are authenticated. Default: [`Security::Token`] from `GLOO_AUTH_TOKEN`
    /// when that is set; otherwise none on loopback, and binding any other address fails with
    /// [`Error::Config`] until a token is given or [`Security::Insecure`] is chosen.
    pub fn security(mut self, security: Security) -> TcpConfig {
        self.security = Some(security);
        self
    }

    /// How long a peer may stay silent (no data, no heartbeat) before it counts as lost.
    /// Heartbeats go out about every second (or a quarter of this, when shorter). Default 5 s.
    pub fn peer_timeout(mut self, timeout: Duration) -> TcpConfig {
        self.peer_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// How long a waiting call spins on non-blocking I/O before it sleeps in the kernel.
    ///
    /// Spinning saves the wake-up latency of a sleep at the cost of a busy core while
    /// waiting; between tries the spin yields the core, so a peer that needs it still runs.
    /// The default, 50 µs, covers a loopback or LAN round trip of a small message. Measured
    /// on a shared 2-core host (1-byte ping-pong p50, two ranks as threads, load average
    /// about 3): 10–16 µs with the default against 18.3 µs never spinning (a plain socket
    /// spinning without end: 7.6–12.6 µs); yielding less often (every 4th or 16th try) gave
    /// 19 and 31 µs. When ranks outnumber cores (load average 25) spinning 50 µs cost more
    /// than it saved (24 µs against 18 µs never spinning). Set `Duration::ZERO` on
    /// oversubscribed hosts, more for latency-bound jobs on dedicated cores.
    pub fn busy_poll(mut self, window: Duration) -> TcpConfig {
        self.busy_poll = window;
        self
    }

    /// How much of the [busy-poll window](TcpConfig::busy_poll), at its start, spins
    /// without yielding the core between tries. Default zero: the whole window yields,
    /// which is right when ranks may share a core (measured above). A rank bound to a core
    /// of its own (as `gloo-bench` binds the ranks it starts when they fit) gains by
    /// spinning: there, on 2 cores, 2 ranks, the whole window spinning took a 4 B allreduce
    /// from 5.2 to 4.9 us p50 and a 4 KiB one from 7.1 to 6.8 us (one sitting, alternated).
    pub fn spin(mut self, spin: Duration) -> TcpConfig {
        self.spin = spin;
        self
    }

    /// Check the integrity of every frame with a CRC32C of its header and of its payload
    /// (hardware-accelerated), so that bytes corrupted between the ranks by a faulty NIC,
    /// switch or middlebox, which TCP's 16-bit checksum can miss, fail the pair with
    /// [`Error::Protocol`] naming the peer instead of reaching a receive buffer as `Ok`.
    ///
    /// Every rank must use the same setting: the handshake refuses a peer that differs,
    /// naming both settings. Default: `GLOO_INTEGRITY` when set, else
    /// [`DEFAULT_INTEGRITY`]. A TLS [stream layer](TcpConfig::stream_layer) already detects
    /// any change to the bytes (its AEAD), so this adds nothing under TLS. What it detects
    /// and what it does not is in `SECURITY.md`.
    pub fn integrity(mut self, on: bool) -> TcpConfig {
        self.integrity = Some(on);
        self
    }

    /// Whether frames are checked: the setting, else `GLOO_INTEGRITY`, else the default.
    pub(crate) fn integrity_on(&self) -> bool {
        self.integrity.unwrap_or_else(|| match std::env::var(INTEGRITY_ENV) {
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" | "" => false,
                other => {
                    tracing::warn!("{INTEGRITY_ENV}={other:?} is not a boolean; ignored");
                    DEFAULT_INTEGRITY
                }
            },
            Err(_) => DEFAULT_INTEGRITY,
        })
    }

    /// This configuration's integrity mode applied to a fresh handshake.
    pub(crate) fn handshake_mode(&self, hs: crate::proto::Handshake) -> crate::proto::Handshake {
        if self.integrity_on() { hs.integrity() } else { hs }
    }

    /// Put `layer` (TLS) between every connection's socket and the protocol.
    ///
    /// A layer that says it authenticates peers ([`StreamLayer::authenticates_peers`]) lets a
    /// routable address be bound without a token; any other layer leaves the token
    /// requirement as it is. A layer that [wraps the
    /// handshake](StreamLayer::wraps_handshake) (TLS) carries the `Hello` exchange (job,
    /// ranks, size) and the token's MACs inside it; any other layer starts once they are done.
    pub fn stream_layer(mut self, layer: Arc<dyn StreamLayer>) -> TcpConfig {
        self.layer = Some(Layer(layer));
        self
    }

    /// The address this configuration binds, and the security mode, resolved.
    pub(crate) fn resolve(&self) -> Result<(SocketAddr, Option<Vec<u8>>)> {
        if self.size == 0 || self.rank.0 >= self.size {
            return Err(Error::Config {
                detail: format!("rank {} is not in a group of size {}", self.rank, self.size),
            });
        }
        let addr = match &self.bind {
            Bind::Loopback => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            Bind::Addr(a) => *a,
            Bind::Interface(spec) => choose_interface(spec, &interfaces()?)?,
            Bind::Auto => match std::env::var(IFNAME_ENV) {
                Ok(spec) if !spec.is_empty() => choose_interface(&spec, &interfaces()?)?,
                _ => auto_interface(&interfaces()?, master_addr()),
            },
        };
        if addr.ip().is_unspecified() {
            return Err(Error::Config {
                detail: format!(
                    "refusing to bind the wildcard address {addr}: name an interface or an \
                     address of this host"
                ),
            });
        }
        let token = match &self.security {
            Some(Security::Token(t)) => Some(t.clone()),
            Some(Security::Insecure) => None,
            None => match std::env::var(TOKEN_ENV) {
                Ok(t) if !t.is_empty() => Some(t.into_bytes()),
                _ if addr.ip().is_loopback()
                    || self.layer.as_ref().is_some_and(|l| l.0.authenticates_peers()) =>
                {
                    None
                }
                _ => return Err(insecure_refusal(addr)),
            },
        };
        if let Some(why) = token.as_deref().and_then(crate::proto::weak_token) {
            return Err(Error::Config { detail: why });
        }
        Ok((addr, token))
    }
}

fn insecure_refusal(addr: SocketAddr) -> Error {
    Error::Config {
        detail: format!(
            "refusing to listen on the routable address {addr} without authentication: set \
             {TOKEN_ENV} to a secret shared by the job's ranks (or pass \
             TcpConfig::security(Security::Token(..))), or accept unauthenticated connections \
             with TcpConfig::security(Security::Insecure)"
        ),
    }
}

/// An address of an interface, as `if-addrs` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Iface {
    pub(crate) name: String,
    pub(crate) ip: IpAddr,
    pub(crate) index: u32,
    pub(crate) prefix: u8,
}

impl Iface {
    /// Whether `ip` is on this interface's subnet.
    fn has_on_subnet(&self, ip: IpAddr) -> bool {
        match (self.ip, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix.min(32))).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask =
                    u128::MAX.checked_shl(128 - u32::from(self.prefix.min(128))).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

fn interfaces() -> Result<Vec<Iface>> {
    let list = if_addrs::get_if_addrs()
        .map_err(|e| Error::Config { detail: format!("cannot list network interfaces: {e}") })?;
    Ok(list
        .into_iter()
        .map(|i| {
            let prefix = match &i.addr {
                if_addrs::IfAddr::V4(a) => a.prefixlen,
                if_addrs::IfAddr::V6(a) => a.prefixlen,
            };
            Iface { ip: i.ip(), index: i.index.unwrap_or(0), name: i.name, prefix }
        })
        .collect())
}

fn with_scope(i: &Iface) -> SocketAddr {
    match i.ip {
        IpAddr::V4(v4) => SocketAddr::V4(SocketAddrV4::new(v4, 0)),
        IpAddr::V6(v6) => {
            // Link-local addresses mean nothing without the interface they belong to.
            let scope = if is_link_local_v6(&v6) { i.index } else { 0 };
            SocketAddr::V6(SocketAddrV6::new(v6, 0, 0, scope))
        }
    }
}

fn is_link_local_v6(ip: &Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

fn is_docker(name: &str) -> bool {
    name.starts_with("docker") || name.starts_with("veth") || name.starts_with("br-")
}

/// Prefer IPv4, then global IPv6, then link-local IPv6, among `cands` (in list order).
fn best_of(cands: &[&Iface]) -> Option<SocketAddr> {
    let rank = |i: &Iface| match i.ip {
        IpAddr::V4(_) => 0,
        IpAddr::V6(v6) if !is_link_local_v6(&v6) => 1,
        IpAddr::V6(_) => 2,
    };
    cands.iter().min_by_key(|i| rank(i)).map(|i| with_scope(i))
}

/// The environment variable naming the rendezvous host (torchrun's), whose subnet the
/// automatic interface choice prefers.
pub const MASTER_ADDR_ENV: &str = "MASTER_ADDR";

/// `MASTER_ADDR` as an address: an IP, or a host name resolved once.
fn master_addr() -> Option<IpAddr> {
    let v = std::env::var(MASTER_ADDR_ENV).ok()?;
    let v = v.trim().trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    use std::net::ToSocketAddrs;
    (v, 0u16).to_socket_addrs().ok()?.next().map(|a| a.ip())
}

/// The automatic choice: the interface on `master`'s subnet (loopback when the master is
/// this host's loopback), else the first that is neither loopback nor docker, else loopback.
pub(crate) fn auto_interface(list: &[Iface], master: Option<IpAddr>) -> SocketAddr {
    if let Some(m) = master {
        if m.is_loopback() {
            return SocketAddr::new(m, 0);
        }
        let on_subnet: Vec<&Iface> =
            list.iter().filter(|i| i.has_on_subnet(m) && !i.ip.is_loopback()).collect();
        if let Some(i) = on_subnet.first() {
            let same: Vec<&Iface> =
                on_subnet.iter().copied().filter(|j| j.name == i.name).collect();
            if let Some(a) = best_of(&same) {
                // Keep the master's family when the interface has it.
                if let Some(x) = same.iter().find(|j| j.ip.is_ipv4() == m.is_ipv4()) {
                    return with_scope(x);
                }
                return a;
            }
        }
    }
    let first_name =
        list.iter().find(|i| !i.ip.is_loopback() && !is_docker(&i.name)).map(|i| i.name.clone());
    match first_name {
        Some(n) => {
            let cands: Vec<&Iface> = list.iter().filter(|i| i.name == n).collect();
            best_of(&cands).unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        }
        None => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    }
}

/// Apply an NCCL-style interface spec (or an IP address) to `list`.
pub(crate) fn choose_interface(spec: &str, list: &[Iface]) -> Result<SocketAddr> {
    let spec = spec.trim();
    if let Ok(ip) = spec.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return match list.iter().find(|i| i.ip == ip) {
            Some(i) => Ok(with_scope(i)),
            None => Err(Error::Config {
                detail: format!("no interface of this host has the address {ip}"),
            }),
        };
    }
    let (exclude, rest) = match spec.strip_prefix('^') {
        Some(r) => (true, r),
        None => (false, spec),
    };
    let (exact, rest) = match rest.strip_prefix('=') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let names: Vec<&str> = rest.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if names.is_empty() && !exclude {
        return Err(Error::Config { detail: format!("empty interface spec {spec:?}") });
    }
    let hit =
        |i: &Iface| names.iter().any(|n| if exact { i.name == *n } else { i.name.starts_with(n) });
    // Keep the first chosen interface's addresses together, so IPv4 is preferred on it.
    let first = list.iter().find(|i| hit(i) != exclude).map(|i| i.name.clone());
    let Some(first) = first else {
        let have: Vec<&str> = list.iter().map(|i| i.name.as_str()).collect();
        return Err(Error::Config {
            detail: format!("no network interface matches {spec:?} (this host has {have:?})"),
        });
    };
    let cands: Vec<&Iface> = list.iter().filter(|i| i.name == first).collect();
    best_of(&cands)
        .ok_or_else(|| Error::Config { detail: format!("interface {first} has no address") })
}

/// The version byte of [`encode_addr`]'s format.
const ADDR_VERSION: u8 = 1;
const ADDR_MAGIC: &[u8; 4] = b"GTCP";

/// A listener's address as published through a store: `"GTCP"`, a version byte (1), a
/// family byte (4 or 6), the port (u16 LE), the IP (4 or 16 bytes), and for IPv6 the flow
/// info and scope id (u32 LE each).
pub(crate) fn encode_addr(addr: &SocketAddr) -> Vec<u8> {
    let mut b = ADDR_MAGIC.to_vec();
    b.push(ADDR_VERSION);
    match addr {
        SocketAddr::V4(a) => {
            b.push(4);
            b.extend_from_slice(&a.port().to_le_bytes());
            b.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            b.push(6);
            b.extend_from_slice(&a.port().to_le_bytes());
            b.extend_from_slice(&a.ip().octets());
            b.extend_from_slice(&a.flowinfo().to_le_bytes());
            b.extend_from_slice(&a.scope_id().to_le_bytes());
        }
    }
    b
}

/// Parse the address bytes that `rank` published through a store (what
/// [`TcpListener::address_bytes`](crate::Listener::address_bytes) returns), as the
/// bootstrap does before dialling: for tools that show or check a job's published addresses.
///
/// The bytes are untrusted: anything that is not a well-formed address, and an address no
/// rank can be reached at (port 0, unspecified, multicast or broadcast, also IPv4-mapped), is
/// [`Error::Protocol`] naming `rank`; never a panic.
///
/// ```
/// use gloo_transport::tcp::{TcpConfig, TcpListener, parse_address};
/// use gloo_transport::{Listener, Rank};
///
/// let listener = TcpListener::bind(TcpConfig::loopback("doc", Rank(0), 2))?;
/// let published = listener.address_bytes();
/// assert!(parse_address(Rank(0), &published)?.ip().is_loopback());
/// assert!(parse_address(Rank(3), b"garbage").is_err());
/// # Ok::<(), gloo_transport::Error>(())
/// ```
pub fn parse_address(rank: Rank, bytes: &[u8]) -> Result<SocketAddr> {
    decode_addr(rank, bytes)
}

/// Parse address bytes published by `rank` (untrusted: the store may hold anything).
pub(crate) fn decode_addr(rank: Rank, b: &[u8]) -> Result<SocketAddr> {
    let bad = |what: &str| Error::Protocol {
        peer: Some(rank),
        detail: format!("the address rank {rank} published is not a TCP address: {what}"),
    };
    if b.len() < 8 || &b[..4] != ADDR_MAGIC {
        return Err(bad("bad magic or too short"));
    }
    if b[4] != ADDR_VERSION {
        return Err(bad(&format!("address format version {}", b[4])));
    }
    let port = u16::from_le_bytes([b[6], b[7]]);
    let rest = &b[8..];
    let addr = match (b[5], rest.len()) {
        (4, 4) => SocketAddr::from((Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]), port)),
        (6, 24) => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&rest[..16]);
            let flow = u32::from_le_bytes([rest[16], rest[17], rest[18], rest[19]]);
            let scope = u32::from_le_bytes([rest[20], rest[21], rest[22], rest[23]]);
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope))
        }
        (f, n) => return Err(bad(&format!("family {f} with {n} address bytes"))),
    };
    // An IPv4-mapped IPv6 address is judged as the IPv4 address it carries.
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if port == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(bad(&format!("{addr} cannot be dialled")));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_spins_only_for_the_part_of_the_window_asked_for() {
        let cfg = TcpConfig::loopback("job", Rank(0), 2);
        let eng = crate::tcp::comm::engine_config(&cfg);
        assert_eq!((eng.busy_poll_value(), eng.spin_value()), (DEFAULT_BUSY_POLL, Duration::ZERO));
        let us = Duration::from_micros;
        let eng = crate::tcp::comm::engine_config(&cfg.clone().spin(us(20)));
        assert_eq!((eng.busy_poll_value(), eng.spin_value()), (DEFAULT_BUSY_POLL, us(20)));
        // Never more than the window.
        let eng = crate::tcp::comm::engine_config(&cfg.busy_poll(us(10)).spin(us(20)));
        assert_eq!((eng.busy_poll_value(), eng.spin_value()), (us(10), us(10)));
    }

    fn iface(name: &str, ip: &str, index: u32) -> Iface {
        let ip: IpAddr = ip.parse().unwrap();
        Iface { name: name.into(), ip, index, prefix: if ip.is_ipv4() { 16 } else { 64 } }
    }

    fn host() -> Vec<Iface> {
        vec![
            iface("lo", "127.0.0.1", 1),
            iface("lo", "::1", 1),
            iface("docker0", "172.17.0.1", 3),
            iface("eth0", "fe80::1", 2),
            iface("eth0", "10.0.0.5", 2),
            iface("eth1", "2001:db8::7", 4),
            iface("eth10", "10.1.0.5", 5),
        ]
    }

    #[test]
    fn nccl_interface_syntax() {
        let h = host();
        assert_eq!(choose_interface("eth0", &h).unwrap(), "10.0.0.5:0".parse().unwrap());
        // A prefix matches eth0 first; an exact name does not match eth10.
        assert_eq!(choose_interface("eth", &h).unwrap(), "10.0.0.5:0".parse().unwrap());
        assert_eq!(choose_interface("=eth1", &h).unwrap(), "[2001:db8::7]:0".parse().unwrap());
        assert_eq!(choose_interface("^lo,docker", &h).unwrap(), "10.0.0.5:0".parse().unwrap());
        assert_eq!(choose_interface("10.1.0.5", &h).unwrap(), "10.1.0.5:0".parse().unwrap());
        assert_eq!(choose_interface("[::1]", &h).unwrap(), "[::1]:0".parse().unwrap());
        assert!(matches!(choose_interface("ib", &h), Err(Error::Config { .. })));
        assert!(matches!(choose_interface("=eth", &h), Err(Error::Config { .. })));
        assert!(matches!(choose_interface("192.0.2.1", &h), Err(Error::Config { .. })));
    }

    #[test]
    fn link_local_v6_keeps_its_scope() {
        let h = vec![iface("eth0", "fe80::1", 7)];
        match choose_interface("eth0", &h).unwrap() {
            SocketAddr::V6(a) => assert_eq!(a.scope_id(), 7),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn automatic_choice_skips_loopback_and_docker() {
        assert_eq!(auto_interface(&host(), None), "10.0.0.5:0".parse().unwrap());
        let only_local = vec![iface("lo", "127.0.0.1", 1), iface("docker0", "172.17.0.1", 3)];
        assert_eq!(auto_interface(&only_local, None), "127.0.0.1:0".parse().unwrap());
    }

    #[test]
    fn automatic_choice_follows_the_master_address() {
        let h = host();
        // eth10 (10.1.0.5/16) holds 10.1.7.7; eth0 (10.0.0.5/16) does not.
        let m = Some("10.1.7.7".parse().unwrap());
        assert_eq!(auto_interface(&h, m), "10.1.0.5:0".parse().unwrap());
        let m = Some("2001:db8::99".parse().unwrap());
        assert_eq!(auto_interface(&h, m), "[2001:db8::7]:0".parse().unwrap());
        // A local job stays on loopback; an unknown subnet falls back to the first interface.
        assert_eq!(
            auto_interface(&h, Some("127.0.0.1".parse().unwrap())),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            auto_interface(&h, Some("192.0.2.1".parse().unwrap())),
            "10.0.0.5:0".parse().unwrap()
        );
    }

    #[test]
    fn routable_bind_without_token_is_refused_with_advice() {
        // An explicit address avoids depending on this host's interfaces; the token variable
        // is read but this test never sets it (and no test in this crate does).
        if std::env::var(TOKEN_ENV).is_ok() {
            // With a token in the environment the refusal cannot happen; the advice text is
            // still checked directly below.
        } else {
            let cfg = TcpConfig::new("j", Rank(0), 2).bind_addr("10.0.0.5:0".parse().unwrap());
            let e = cfg.resolve().unwrap_err();
            let text = e.to_string();
            assert!(text.contains("GLOO_AUTH_TOKEN"), "{text}");
        }
        let text = insecure_refusal("10.0.0.5:0".parse().unwrap()).to_string();
        assert!(text.contains("GLOO_AUTH_TOKEN") && text.contains("Security::Insecure"), "{text}");
        // Asking by name works, and loopback needs nothing.
        let ok = TcpConfig::new("j", Rank(0), 2)
            .bind_addr("10.0.0.5:0".parse().unwrap())
            .security(Security::Insecure)
            .resolve()
            .unwrap();
        assert_eq!(ok.1, None);
        assert!(TcpConfig::loopback("j", Rank(1), 2).resolve().is_ok());
        assert!(TcpConfig::loopback("j", Rank(2), 2).resolve().is_err(), "rank out of range");
        let wild = TcpConfig::new("j", Rank(0), 2)
            .bind_addr("0.0.0.0:0".parse().unwrap())
            .security(Security::Insecure);
        assert!(matches!(wild.resolve(), Err(Error::Config { .. })), "wildcard bind accepted");
        let empty = TcpConfig::loopback("j", Rank(0), 2).security(Security::Token(Vec::new()));
        assert!(empty.resolve().is_err());
        // A token too short to be a secret is refused, saying how to make one; 16 bytes pass.
        let short = TcpConfig::loopback("j", Rank(0), 2).security(Security::Token(b"y".to_vec()));
        match short.resolve() {
            Err(Error::Config { detail }) => {
                assert!(detail.contains("at least 16") && detail.contains("urandom"), "{detail}")
            }
            other => panic!("a 1-byte token was not refused: {other:?}"),
        }
        let ok = Security::Token(b"0123456789abcdef".to_vec());
        assert!(TcpConfig::loopback("j", Rank(0), 2).security(ok).resolve().is_ok());
    }

    /// A pass-through layer that says whether it authenticates peers.
    struct Claims(bool);

    impl StreamLayer for Claims {
        fn wrap(
            &self,
            _peer: Rank,
            _dialled: bool,
            socket: mio::net::TcpStream,
            _early: Vec<u8>,
        ) -> std::io::Result<Box<dyn super::super::stream::ByteStream>> {
            Ok(Box::new(socket))
        }

        fn authenticates_peers(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn only_a_layer_that_authenticates_peers_waives_the_token_on_a_routable_address() {
        let routable = |layer: bool| {
            TcpConfig::new("j", Rank(0), 2)
                .bind_addr("10.0.0.5:0".parse().unwrap())
                .stream_layer(Arc::new(Claims(layer)))
                .resolve()
        };
        // A token in the environment is used whatever the layer; without one, only the
        // authenticating layer may go without.
        match std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()) {
            Some(t) => {
                assert_eq!(routable(false).unwrap().1, Some(t.clone().into_bytes()));
                assert_eq!(routable(true).unwrap().1, Some(t.into_bytes()));
            }
            None => {
                let e = routable(false).unwrap_err();
                assert!(e.to_string().contains("GLOO_AUTH_TOKEN"), "{e}");
                assert_eq!(routable(true).unwrap().1, None);
            }
        }
    }

    #[test]
    fn address_bytes_round_trip() {
        for a in ["127.0.0.1:4000", "[::1]:5", "[fe80::1%3]:77", "[2001:db8::1]:65535"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(decode_addr(Rank(0), &encode_addr(&a)).unwrap(), a);
        }
    }

    #[test]
    fn garbage_address_bytes_name_the_rank() {
        let good = encode_addr(&"127.0.0.1:4000".parse().unwrap());
        let mut wrong_version = good.clone();
        wrong_version[4] = 9;
        let mut wrong_family = good.clone();
        wrong_family[5] = 5;
        let zero_port = encode_addr(&"127.0.0.1:0".parse().unwrap());
        for b in [
            vec![],
            b"hello world".to_vec(),
            good[..10].to_vec(),
            wrong_version,
            wrong_family,
            zero_port,
        ] {
            let e = decode_addr(Rank(5), &b).unwrap_err();
            assert_eq!(e.peer(), Some(Rank(5)));
            assert!(e.to_string().contains("rank 5"), "{e}");
        }
    }
}
