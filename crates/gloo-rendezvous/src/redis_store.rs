//! [`RedisStore`]: a store in a Redis server (feature `redis`).

use std::time::{Duration, Instant};

use redis::{Client, Connection, RedisError, Value};

use crate::error::{Error, Result};
use crate::pool::{Pool, Retry};
use crate::store::{Backoff, CompareSet, MAX_VALUE_LEN, Store, check_key, check_value};

/// Polling back-off cap for waits (see [`RedisStore`] for why waits poll).
const POLL_CAP: Duration = Duration::from_millis(20);

/// The shortest time budget for a call whose deadline already passed: one quick attempt.
const MIN_BUDGET: Duration = Duration::from_millis(100);

/// Set `KEYS[1]` to `ARGV[3]` if it holds `ARGV[2]` (`ARGV[1]` = "1") or is absent
/// (`ARGV[1]` = "0"); `ARGV[4]` is the expiry in milliseconds ("0": none). Returns `{1}` when
/// swapped, `{0}` when absent, `{0, current}` otherwise. Runs atomically in the server.
const CAS_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
local ok
if ARGV[1] == '1' then ok = (cur == ARGV[2]) else ok = (cur == false) end
if ok then
  if ARGV[4] ~= '0' then redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  else redis.call('SET', KEYS[1], ARGV[3]) end
  return {1}
end
if cur == false then return {0} end
return {0, cur}
";

/// Append `ARGV[1]` to `KEYS[1]` unless the result would exceed `ARGV[2]` bytes (then return
/// -1), refreshing the expiry `ARGV[3]` ms ("0": none). Atomic in the server.
const APPEND_SCRIPT: &str = r"
local n = redis.call('STRLEN', KEYS[1])
if n + string.len(ARGV[1]) > tonumber(ARGV[2]) then return -1 end
local len = redis.call('APPEND', KEYS[1], ARGV[1])
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return len
";

/// For each key: nil when absent, the value when it is a string of at most `ARGV[1]` bytes,
/// else `{type}` or `{"string", length}`: a key of another type or an oversized value is a
/// corrupt entry to report at once (`MGET` would answer nil, as for a missing key, and the
/// caller would wait out its deadline), and an oversized value is never sent.
const READ_SCRIPT: &str = r"
local out = {}
for i, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k)['ok']
  if t == 'none' then out[i] = false
  elseif t ~= 'string' then out[i] = {t}
  else
    local n = redis.call('STRLEN', k)
    if n > tonumber(ARGV[1]) then out[i] = {'string', n} else out[i] = redis.call('GET', k) end
  end
end
return out
";

/// Settings of a [`RedisStore`].
///
/// TLS (feature `redis-tls`) is chosen by the URL's scheme, `rediss://`; the `tls_*` fields
/// only say whom to trust and who we are, and setting any of them with a plain `redis://` URL
/// is a configuration error rather than a silent plaintext connection.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Prepended (with a `/`) to every key, so jobs can share one Redis.
    pub prefix: Vec<u8>,
    /// Expiry set on every key written, so a job that crashes leaves nothing behind for
    /// long. `None`: keys never expire. Default: 24 hours.
    pub ttl: Option<Duration>,
    /// For `rediss://` URLs: the CA certificate(s) (PEM) that signed the server's
    /// certificate, for a private CA; only these are trusted then. `None`: the system's
    /// trusted roots.
    pub tls_root_cert: Option<Vec<u8>>,
    /// For `rediss://` URLs to a server that asks for client certificates
    /// (`tls-auth-clients yes`): this client's certificate chain (PEM). Needs
    /// [`tls_client_key`](Self::tls_client_key) too.
    pub tls_client_cert: Option<Vec<u8>>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of
    /// [`tls_client_cert`](Self::tls_client_cert). Never shown by `Debug` or in errors.
    pub tls_client_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Certificates are public but long; the key is a secret. Say only which are set.
        let set = |o: &Option<Vec<u8>>| if o.is_some() { "set" } else { "none" };
        f.debug_struct("RedisOptions")
            .field("prefix", &self.prefix.escape_ascii().to_string())
            .field("ttl", &self.ttl)
            .field("tls_root_cert", &set(&self.tls_root_cert))
            .field("tls_client_cert", &set(&self.tls_client_cert))
            .field("tls_client_key", &set(&self.tls_client_key))
            .finish()
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: Vec::new(),
            ttl: Some(Duration::from_secs(24 * 3600)),
            tls_root_cert: None,
            tls_client_cert: None,
            tls_client_key: None,
        }
    }
}

impl RedisOptions {
    /// The defaults with keys scoped under `prefix`.
    pub fn with_prefix(prefix: impl AsRef<[u8]>) -> Self {
        RedisOptions { prefix: prefix.as_ref().to_vec(), ..Self::default() }
    }

    /// Whether any TLS setting is given.
    fn wants_tls(&self) -> bool {
        self.tls_root_cert.is_some()
            || self.tls_client_cert.is_some()
            || self.tls_client_key.is_some()
    }
}

/// A store in a Redis server, through the `redis` crate's synchronous API.
///
/// The URL is `redis://[:password@]host:port/db` (AUTH is sent when a password is given) or,
/// with the `redis-tls` feature, `rediss://...` for TLS (rustls with the `ring` provider):
/// the server's certificate is checked against the system's roots, or only against
/// [`RedisOptions::tls_root_cert`] for a private CA, and a client certificate is presented
/// when [`RedisOptions::tls_client_cert`] is set. A certificate that is not trusted, either
/// way, fails the call at once with [`Error::Auth`] (retrying cannot fix it). Every key
/// written gets the configured expiry. Concurrent calls use separate pooled connections; a call that loses its
/// connection reconnects until its deadline (non-idempotent calls only if they were not sent).
///
/// Waits (`get`, `wait`, `multi_get`) poll with a short back-off (1 ms doubling to 20 ms)
/// rather than blocking in the server: `BLPOP` wakes one waiter per pushed element, so a
/// writer would have to know how many ranks wait on a key, and keyspace notifications need
/// `notify-keyspace-events` set in the server's configuration (often not allowed on managed
/// Redis) plus a dedicated subscriber connection per client. Polling needs nothing from the
/// server, and one `MGET` per back-off step from each rank is little load for Redis.
pub struct RedisStore {
    client: Client,
    endpoint: String,
    opts: RedisOptions,
    pool: Pool<Connection>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.opts.prefix.escape_ascii().to_string())
            .field("ttl", &self.opts.ttl)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connect to the Redis at `url` (retrying until `deadline` while it is not up yet).
    pub fn connect(url: &str, opts: RedisOptions, deadline: Instant) -> Result<Self> {
        let client = open_client(url, &opts)
            .map_err(|e| Error::Config { detail: format!("Redis URL {}: {e}", redact(url)) })?;
        let store = RedisStore { client, endpoint: redact(url), opts, pool: Pool::default() };
        let conn = store.open(deadline)?;
        store.pool.put_back(conn);
        Ok(store)
    }

    fn scoped(&self, key: &[u8]) -> Vec<u8> {
        if self.opts.prefix.is_empty() {
            return key.to_vec();
        }
        let mut k = Vec::with_capacity(self.opts.prefix.len() + 1 + key.len());
        k.extend_from_slice(&self.opts.prefix);
        k.push(b'/');
        k.extend_from_slice(key);
        k
    }

    fn ttl_ms(&self) -> u64 {
        self.opts.ttl.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
    }

    fn open(&self, deadline: Instant) -> Result<Connection> {
        let start = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(200));
        loop {
            let budget = deadline.saturating_duration_since(Instant::now()).max(MIN_BUDGET);
            let err = match self.connect_within(budget.min(Duration::from_secs(5))) {
                Ok(c) => return Ok(c),
                Err(e) => e,
            };
            if !transient(&err) {
                return Err(self.fatal(&err));
            }
            if !backoff.sleep(deadline) {
                return Err(self.unreachable(&err, start));
            }
        }
    }

    /// A new connection within `budget`. The `redis` crate applies its timeout to each read of
    /// the connection's set-up commands, not to the whole, so a frozen server would hold the
    /// caller for a multiple of it; the set-up runs on a helper thread instead, and a late one
    /// is abandoned (it ends by itself at the crate's timeout, dropping its connection).
    fn connect_within(&self, budget: Duration) -> redis::RedisResult<Connection> {
        let client = self.client.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned =
            std::thread::Builder::new().name("gloo-redis-connect".into()).spawn(move || {
                let _ = tx.send(client.get_connection_with_timeout(budget));
            });
        if let Err(e) = spawned {
            return Err(e.into());
        }
        match rx.recv_timeout(budget) {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer to the connection's set-up before the deadline",
            )
            .into()),
        }
    }

    /// The error for a server that stayed unreachable since `start`, `err` the last failure.
    fn unreachable(&self, err: &RedisError, start: Instant) -> Error {
        let mut detail = "the last attempt failed".to_string();
        if self.endpoint.starts_with("rediss://") && !err.is_connection_refusal() {
            // A plain (non-TLS) Redis reads a TLS client hello as a command line: it waits for
            // a line end that may never come, or closes the connection on the garbage. Either
            // way the handshake only times out or breaks; say the likely cause.
            detail.push_str(" (the server is listening: does it speak TLS there?)");
        }
        let last = crate::error::Failure::io(detail, redis_io(err, redis_kind(err)));
        Error::unreachable(&self.endpoint, last, start.elapsed())
    }

    fn fatal(&self, e: &RedisError) -> Error {
        #[cfg(feature = "redis-tls")]
        if let Some(tls) = tls_failure(e) {
            return if is_certificate_failure(tls) {
                Error::Auth {
                    detail: format!(
                        "TLS with Redis at {}: {tls} (does RedisOptions::tls_root_cert hold the \
                         CA of the server's certificate, and tls_client_cert/tls_client_key a \
                         certificate the server trusts?)",
                        self.endpoint
                    ),
                }
            } else {
                Error::Protocol {
                    detail: format!(
                        "TLS with Redis at {}: {tls} (does the server speak TLS on that port?)",
                        self.endpoint
                    ),
                }
            };
        }
        let text = e.to_string();
        if text.contains("NOAUTH") || text.contains("WRONGPASS") || text.contains("uthentication") {
            Error::Auth { detail: format!("Redis at {}: {text}", self.endpoint) }
        } else {
            Error::Protocol { detail: format!("Redis at {}: {text}", self.endpoint) }
        }
    }

    /// Run `f` on a connection, reconnecting on connection failures until the deadline; an
    /// error names `keys` (the call's keys, as the caller named them).
    fn with_conn<T>(
        &self,
        retry: Retry,
        keys: &[&[u8]],
        deadline: Instant,
        f: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        self.with_conn_unnamed(retry, deadline, f).map_err(|e| name_keys(e, keys))
    }

    fn with_conn_unnamed<T>(
        &self,
        retry: Retry,
        deadline: Instant,
        mut f: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let start = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(200));
        loop {
            let mut conn = match self.pool.take() {
                Some(c) => c,
                None => self.open(deadline)?,
            };
            let budget = deadline.saturating_duration_since(Instant::now()).max(MIN_BUDGET);
            let _ = conn.set_read_timeout(Some(budget));
            let _ = conn.set_write_timeout(Some(budget));
            let err = match f(&mut conn) {
                Ok(v) => {
                    self.pool.put_back(conn);
                    return Ok(v);
                }
                Err(e) => e,
            };
            if !transient(&err) {
                // A server-side error (wrong type, script error): the connection is fine.
                self.pool.put_back(conn);
                return Err(self.fatal(&err));
            }
            drop(conn);
            if retry == Retry::OnlyIfUnsent {
                let doing = format!(
                    "connection to Redis at {} failed during a non-idempotent call; whether it \
                     took effect is unknown",
                    self.endpoint
                );
                let e = redis_io(&err, std::io::ErrorKind::ConnectionAborted);
                return Err(Error::io(None, doing, e));
            }
            if !backoff.sleep(deadline) {
                return Err(self.unreachable(&err, start));
            }
        }
    }

    /// The values of `keys` (scoped as `scoped`) now, `None` for a missing key; a key of
    /// another Redis type or over the size limit is a [`Error::Protocol`] naming it.
    fn read(
        &self,
        keys: &[&[u8]],
        scoped: &[Vec<u8>],
        deadline: Instant,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let reply: Vec<Value> = self.with_conn(Retry::Always, keys, deadline, |c| {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(READ_SCRIPT).arg(scoped.len());
            for k in scoped {
                cmd.arg(k.as_slice());
            }
            cmd.arg(MAX_VALUE_LEN).query(c)
        })?;
        read_reply(keys, reply, &self.endpoint)
    }

    /// Poll until every key exists; `None` entries are missing keys.
    fn poll(&self, keys: &[&[u8]], deadline: Instant) -> Result<Vec<Vec<u8>>> {
        for k in keys {
            check_key(k)?;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let scoped: Vec<Vec<u8>> = keys.iter().map(|k| self.scoped(k)).collect();
        let start = Instant::now();
        let mut backoff = Backoff::new(POLL_CAP);
        loop {
            let values = self.read(keys, &scoped, deadline)?;
            if values.iter().all(Option::is_some) {
                return Ok(values.into_iter().map(Option::unwrap_or_default).collect());
            }
            if !backoff.sleep(deadline) {
                let missing = keys
                    .iter()
                    .zip(&values)
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| k.to_vec())
                    .collect();
                return Err(Error::Timeout { keys: missing, waited: start.elapsed() });
            }
        }
    }
}

/// What the read script answered for `keys` (untrusted: the server's bytes, decoded by the
/// `redis` crate): per key its value, `None` for a missing key, and for a key of another type
/// or over the size limit a [`Error::Protocol`] naming it.
fn read_reply(keys: &[&[u8]], reply: Vec<Value>, endpoint: &str) -> Result<Vec<Option<Vec<u8>>>> {
    if reply.len() != keys.len() {
        return Err(Error::Protocol {
            detail: format!("a read of {} keys returned {} values", keys.len(), reply.len()),
        });
    }
    let corrupt = |key: &[u8], what: String| Error::Protocol {
        detail: format!(
            "key {} in Redis at {endpoint} is corrupt: it {what}",
            crate::error::KeyDisplay(key),
        ),
    };
    keys.iter()
        .zip(reply)
        .map(|(key, v)| match v {
            Value::Nil => Ok(None),
            Value::BulkString(b) if b.len() <= MAX_VALUE_LEN => Ok(Some(b)),
            Value::BulkString(b) => Err(corrupt(
                key,
                format!("holds {} bytes, over the limit of {MAX_VALUE_LEN}", b.len()),
            )),
            Value::Array(items) => Err(match items.as_slice() {
                [_, Value::Int(n)] => {
                    corrupt(key, format!("holds {n} bytes, over the limit of {MAX_VALUE_LEN}"))
                }
                [Value::BulkString(t)] => {
                    corrupt(key, format!("is a Redis {}, not a string", String::from_utf8_lossy(t)))
                }
                other => corrupt(key, format!("reads as {}", shown(other))),
            }),
            other => Err(corrupt(key, format!("reads as {}", shown(&[other])))),
        })
        .collect()
}

/// What the compare-and-set script answered (untrusted, like every reply).
fn compare_set_reply(reply: Vec<Value>) -> Result<CompareSet> {
    match reply.as_slice() {
        [Value::Int(1)] => Ok(CompareSet::Swapped),
        [Value::Int(0)] => Ok(CompareSet::Mismatch { current: None }),
        [Value::Int(0), Value::BulkString(cur)] if cur.len() <= MAX_VALUE_LEN => {
            Ok(CompareSet::Mismatch { current: Some(cur.clone()) })
        }
        other => Err(Error::Protocol {
            detail: format!("unexpected compare_set script answer {}", shown(other)),
        }),
    }
}

/// An unexpected reply for an error message: its first bytes only, whatever the server sent.
fn shown(v: &[Value]) -> String {
    let mut s = format!("{v:?}");
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// The `redis_reply` fuzz target: `data` is a RESP reply as a server would send it, parsed
/// by the `redis` crate and interpreted as the answer to a read of three keys and to a
/// compare-and-set.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_reply(data: &[u8]) {
    let keys: [&[u8]; 3] = [b"a", b"b", b"c"];
    let Ok(value) = redis::parse_redis_value(data) else { return };
    if let Ok(reply) = redis::from_redis_value::<Vec<Value>>(value.clone()) {
        if let Ok(values) = read_reply(&keys, reply.clone(), "fuzz") {
            assert_eq!(values.len(), keys.len());
            assert!(values.iter().flatten().all(|v| v.len() <= MAX_VALUE_LEN));
        }
        let _ = compare_set_reply(reply);
    }
    let _ = redis::from_redis_value::<i64>(value);
}

/// `e` with the call's keys named (an unreachable server's error says which keys the call
/// was for; an I/O error carries the first).
fn name_keys(e: Error, keys: &[&[u8]]) -> Error {
    let Some(first) = keys.first() else { return e };
    let shown: Vec<String> =
        keys.iter().take(4).map(|k| crate::error::KeyDisplay(k).to_string()).collect();
    let more = if keys.len() > 4 { format!(" and {} more", keys.len() - 4) } else { String::new() };
    match e {
        Error::Unreachable { endpoint, detail, waited, source } => Error::Unreachable {
            endpoint,
            detail: format!("{detail} (keys {}{more})", shown.join(", ")),
            waited,
            source,
        },
        Error::Io { key: None, doing, source } => {
            Error::Io { key: Some(first.to_vec()), doing, source }
        }
        other => other,
    }
}

/// Build the client for `url`, checking that the TLS options fit the URL; the error says
/// what to change.
fn open_client(url: &str, opts: &RedisOptions) -> std::result::Result<Client, String> {
    let tls_url = url.starts_with("rediss://");
    if !tls_url && opts.wants_tls() {
        return Err("TLS options (tls_root_cert, tls_client_cert, tls_client_key) are set but \
                    the URL is not rediss://; use rediss:// for TLS"
            .to_owned());
    }
    if opts.tls_client_cert.is_some() != opts.tls_client_key.is_some() {
        return Err("tls_client_cert and tls_client_key must be given together".to_owned());
    }
    if tls_url { open_tls_client(url, opts) } else { Client::open(url).map_err(|e| e.to_string()) }
}

#[cfg(feature = "redis-tls")]
fn open_tls_client(url: &str, opts: &RedisOptions) -> std::result::Result<Client, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    // rustls needs a process-wide crypto provider; the workspace uses ring. An error means
    // one is installed already (by the application or gloo-tls), which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The `redis` crate takes PEM text with no certificate in it as an empty trust store, and
    // every server would then fail as "unknown issuer"; say what is wrong instead.
    for (what, pem) in
        [("tls_root_cert", &opts.tls_root_cert), ("tls_client_cert", &opts.tls_client_cert)]
    {
        if let Some(pem) = pem {
            let certs: std::result::Result<Vec<_>, _> =
                CertificateDer::pem_slice_iter(pem).collect();
            match certs {
                Ok(c) if !c.is_empty() => {}
                Ok(_) => return Err(format!("{what} holds no PEM certificate")),
                Err(e) => return Err(format!("{what} is not valid PEM: {e}")),
            }
        }
    }
    if let Some(key) = &opts.tls_client_key {
        // Checked here, where the caller can be told which option is wrong; the `redis` crate
        // would report it only when connecting, as a protocol error.
        let der = rustls::pki_types::PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| format!("tls_client_key is not a PEM private key: {e}"))?;
        rustls::crypto::ring::sign::any_supported_type(&der).map_err(|_| {
            "tls_client_key is not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519)"
                .to_owned()
        })?;
    }
    if opts.tls_root_cert.is_none() && opts.tls_client_cert.is_none() {
        return Client::open(url).map_err(|e| e.to_string());
    }
    let client_tls = match (&opts.tls_client_cert, &opts.tls_client_key) {
        (Some(cert), Some(key)) => {
            Some(redis::ClientTlsConfig { client_cert: cert.clone(), client_key: key.clone() })
        }
        _ => None,
    };
    Client::build_with_tls(
        url,
        redis::TlsCertificates { client_tls, root_cert: opts.tls_root_cert.clone() },
    )
    // The key's bytes never reach this message: the `redis` crate reports only what failed.
    .map_err(|e| e.to_string())
}

#[cfg(not(feature = "redis-tls"))]
fn open_tls_client(_url: &str, _opts: &RedisOptions) -> std::result::Result<Client, String> {
    Err("TLS to Redis (rediss://) needs the `redis-tls` feature of gloo-rendezvous".to_owned())
}

/// The TLS failure behind `e`, if the connection failed in TLS (a certificate not trusted, a
/// handshake refused): retrying cannot fix that, so it is reported at once.
#[cfg(feature = "redis-tls")]
fn tls_failure(e: &RedisError) -> Option<&rustls::Error> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    // The `redis` crate keeps an I/O error behind an `Arc` and returns that `Arc` as the
    // source; rustls puts its error inside the I/O error. Look through both, and through any
    // further sources, bounded so a cyclic chain cannot loop.
    let mut next = std::error::Error::source(e);
    for _ in 0..8 {
        let cur = next?;
        let inner: &(dyn std::error::Error + 'static) = match cur.downcast_ref::<Shared>() {
            Some(shared) => &**shared,
            None => cur,
        };
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = inner.source();
    }
    None
}

/// Whether a TLS failure is about certificates (an authentication failure of either side).
#[cfg(feature = "redis-tls")]
fn is_certificate_failure(e: &rustls::Error) -> bool {
    use rustls::AlertDescription as A;
    match e {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => true,
        rustls::Error::AlertReceived(a) => matches!(
            a,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::CertificateRequired
        ),
        _ => false,
    }
}

/// Whether an error is about the connection (retry elsewhere) rather than the command.
/// The kind of `io::Error` a failed connection to Redis is.
fn redis_kind(e: &RedisError) -> std::io::ErrorKind {
    use std::io::ErrorKind as K;
    if e.is_timeout() {
        K::TimedOut
    } else if e.is_connection_refusal() {
        K::ConnectionRefused
    } else if e.is_connection_dropped() {
        K::ConnectionReset
    } else {
        K::Other
    }
}

/// The Redis client's error as an `io::Error` of `kind` (its `Display` is the client's, and
/// `get_ref` gives the `RedisError` back), for the `source` of our errors.
fn redis_io(e: &RedisError, kind: std::io::ErrorKind) -> std::io::Error {
    std::io::Error::new(kind, e.clone())
}

fn transient(e: &RedisError) -> bool {
    #[cfg(feature = "redis-tls")]
    if tls_failure(e).is_some() {
        return false;
    }
    e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout()
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl Store for RedisStore {
    fn set(&self, key: &[u8], value: &[u8], deadline: Instant) -> Result<()> {
        check_value(key, value.len())?;
        let k = self.scoped(key);
        let ttl = self.ttl_ms();
        self.with_conn(Retry::Always, &[key], deadline, |c| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(k.as_slice()).arg(value);
            if ttl > 0 {
                cmd.arg("PX").arg(ttl);
            }
            cmd.query::<()>(c)
        })
    }

    fn try_get(&self, key: &[u8], deadline: Instant) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        let mut values = self.read(&[key], &[self.scoped(key)], deadline)?;
        Ok(values.pop().flatten())
    }

    fn wait(&self, keys: &[&[u8]], deadline: Instant) -> Result<()> {
        self.poll(keys, deadline).map(drop)
    }

    fn add(&self, key: &[u8], delta: i64, deadline: Instant) -> Result<i64> {
        check_key(key)?;
        let k = self.scoped(key);
        let ttl = self.ttl_ms();
        let r = self.with_conn(Retry::OnlyIfUnsent, &[key], deadline, |c| {
            let mut p = redis::pipe();
            p.atomic().cmd("INCRBY").arg(k.as_slice()).arg(delta);
            if ttl > 0 {
                p.cmd("PEXPIRE").arg(k.as_slice()).arg(ttl).ignore();
            }
            p.query::<(i64,)>(c)
        });
        match r {
            Ok((v,)) => Ok(v),
            Err(Error::Protocol { detail }) => Err(Error::InvalidArgument {
                key: Some(key.to_vec()),
                what: format!(
                    "add on a key that is not a decimal i64 counter, or an overflow: {detail}"
                ),
            }),
            Err(e) => Err(e),
        }
    }

    fn compare_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
        deadline: Instant,
    ) -> Result<CompareSet> {
        check_value(key, new.len())?;
        let k = self.scoped(key);
        let ttl = self.ttl_ms();
        let reply: Vec<Value> = self.with_conn(Retry::OnlyIfUnsent, &[key], deadline, |c| {
            redis::cmd("EVAL")
                .arg(CAS_SCRIPT)
                .arg(1)
                .arg(k.as_slice())
                .arg(if expected.is_some() { "1" } else { "0" })
                .arg(expected.unwrap_or(b""))
                .arg(new)
                .arg(ttl)
                .query(c)
        })?;
        compare_set_reply(reply)
    }

    fn multi_get(&self, keys: &[&[u8]], deadline: Instant) -> Result<Vec<Vec<u8>>> {
        self.poll(keys, deadline)
    }

    fn multi_set(&self, pairs: &[(&[u8], &[u8])], deadline: Instant) -> Result<()> {
        for (k, v) in pairs {
            check_value(k, v.len())?;
        }
        if pairs.is_empty() {
            return Ok(());
        }
        let ttl = self.ttl_ms();
        let scoped: Vec<Vec<u8>> = pairs.iter().map(|(k, _)| self.scoped(k)).collect();
        self.with_conn(
            Retry::Always,
            &pairs.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            deadline,
            |c| {
                let mut p = redis::pipe();
                p.atomic();
                for (k, (_, v)) in scoped.iter().zip(pairs) {
                    let cmd = p.cmd("SET").arg(k.as_slice()).arg(*v);
                    if ttl > 0 {
                        cmd.arg("PX").arg(ttl);
                    }
                    cmd.ignore();
                }
                p.query::<()>(c)
            },
        )
    }

    fn append(&self, key: &[u8], value: &[u8], deadline: Instant) -> Result<()> {
        check_value(key, value.len())?;
        let k = self.scoped(key);
        let ttl = self.ttl_ms();
        let len: i64 = self.with_conn(Retry::OnlyIfUnsent, &[key], deadline, |c| {
            redis::cmd("EVAL")
                .arg(APPEND_SCRIPT)
                .arg(1)
                .arg(k.as_slice())
                .arg(value)
                .arg(MAX_VALUE_LEN)
                .arg(ttl)
                .query(c)
        })?;
        if len < 0 {
            return Err(Error::InvalidArgument {
                key: Some(key.to_vec()),
                what: format!(
                    "append would grow the value past the limit of {MAX_VALUE_LEN} bytes"
                ),
            });
        }
        Ok(())
    }

    fn delete(&self, key: &[u8], deadline: Instant) -> Result<bool> {
        check_key(key)?;
        let k = self.scoped(key);
        let n: i64 = self.with_conn(Retry::Always, &[key], deadline, |c| {
            redis::cmd("DEL").arg(k.as_slice()).query(c)
        })?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            super::redact("redis://:secret@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(super::redact("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
    }
}
