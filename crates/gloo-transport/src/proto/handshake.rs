//! The connection handshake: `Hello` both ways, then HMAC-SHA256 `Auth` both ways.
//!
//! In insecure mode (no token) the eager handshake still ends with the two `Auth` frames,
//! keyed with the empty key: they authenticate nothing, but they make the connector speak
//! last, so the acceptor completes only once the connector has completed too. Without them
//! an acceptor was done as soon as it had sent its `Hello`, and could keep (and report as
//! connected) a connection whose connector had already given up on it and dialled again.

use ring::hmac;
use ring::rand::SecureRandom;

use super::frame::{AUTH_LEN, FrameReader, HEADER_LEN, HELLO_LEN, Header, Opcode, Step};
use crate::{Error, Rank, Result};

/// The length of a handshake nonce.
pub const NONCE_LEN: usize = 32;

/// The shortest job token accepted (the transport's `Security::Token`, `GLOO_AUTH_TOKEN`, and
/// the TCP store): 16 bytes (128 bits) is the least that resists guessing, where a 1-byte
/// token falls to 256 tries.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why `token` cannot be a job token, if it cannot: shorter than [`MIN_TOKEN_LEN`]. The text
/// says how to make a good one.
pub fn weak_token(token: &[u8]) -> Option<String> {
    (token.len() < MIN_TOKEN_LEN).then(|| {
        format!(
            "the job token is {} bytes; it must be at least {MIN_TOKEN_LEN} bytes of secret \
             (make one with `export GLOO_AUTH_TOKEN=$(head -c 32 /dev/urandom | base64)` and \
             give every rank the same)",
            token.len()
        )
    })
}
/// `Hello` flag bit: the sender authenticates with a token.
pub const HELLO_TOKEN: u32 = 1;
/// `Hello` flag bit: the sender connects lazily (either rank of a pair may dial, and the
/// acceptor ends the handshake with a verdict; see [`Handshake::lazy`]).
pub(crate) const HELLO_LAZY: u32 = 2;
/// `Hello` flag bit: the sender checks the integrity of every data-phase frame (each carries
/// a [check block](super::CHECK_LEN)); see [`Handshake::integrity`]. Both sides must set it,
/// or neither.
pub const HELLO_INTEGRITY: u32 = 4;

/// The SHA-256 of a job id, as carried in `Hello`.
pub fn job_hash(job: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, job.as_bytes());
    let mut h = [0u8; 32];
    h.copy_from_slice(d.as_ref());
    h
}

/// A fresh nonce from the operating system's generator.
pub fn fresh_nonce() -> Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| Error::Config { detail: "the system random generator failed".into() })?;
    Ok(n)
}

/// The contents of a `Hello` frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// [`job_hash`] of the job id.
    pub job: [u8; 32],
    /// The sender's rank.
    pub from: Rank,
    /// The rank the sender believes it is talking to.
    pub to: Rank,
    /// The group size.
    pub size: u32,
    /// Flag bits ([`HELLO_TOKEN`]).
    pub flags: u32,
    /// Fresh per connection.
    pub nonce: [u8; NONCE_LEN],
}

impl Hello {
    /// The whole frame (header and payload): `HEADER_LEN + HELLO_LEN` bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN + HELLO_LEN as usize] {
        let mut b = [0u8; HEADER_LEN + HELLO_LEN as usize];
        b[..HEADER_LEN].copy_from_slice(&Header::new(Opcode::Hello, 0, HELLO_LEN, 0).encode());
        let p = &mut b[HEADER_LEN..];
        p[0..32].copy_from_slice(&self.job);
        p[32..36].copy_from_slice(&self.from.0.to_le_bytes());
        p[36..40].copy_from_slice(&self.to.0.to_le_bytes());
        p[40..44].copy_from_slice(&self.size.to_le_bytes());
        p[44..48].copy_from_slice(&self.flags.to_le_bytes());
        p[48..80].copy_from_slice(&self.nonce);
        b
    }

    /// Decode a `Hello` payload.
    pub fn decode(p: &[u8; HELLO_LEN as usize]) -> Hello {
        let u32_at = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let mut job = [0u8; 32];
        job.copy_from_slice(&p[0..32]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&p[48..80]);
        Hello {
            job,
            from: Rank(u32_at(32)),
            to: Rank(u32_at(36)),
            size: u32_at(40),
            flags: u32_at(44),
            nonce,
        }
    }
}

/// What both ends of a connection must agree on.
#[derive(Clone)]
pub struct HandshakeConfig {
    /// [`job_hash`] of the job id.
    pub job: [u8; 32],
    /// This rank.
    pub me: Rank,
    /// The group size.
    pub size: u32,
    /// The shared token, or `None` for insecure mode.
    pub token: Option<Vec<u8>>,
}

impl std::fmt::Debug for HandshakeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never print it.
        f.debug_struct("HandshakeConfig")
            .field("me", &self.me)
            .field("size", &self.size)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The MAC one side sends: HMAC-SHA256 over `label || connector Hello || acceptor Hello`
/// (both whole frames, header included).
pub fn transcript_mac(token: &[u8], label: &[u8], conn_hello: &[u8], acc_hello: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(label);
    ctx.update(conn_hello);
    ctx.update(acc_hello);
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn verify_mac(token: &[u8], label: &[u8], conn_hello: &[u8], acc_hello: &[u8], mac: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token);
    let mut msg = Vec::with_capacity(label.len() + conn_hello.len() + acc_hello.len());
    msg.extend_from_slice(label);
    msg.extend_from_slice(conn_hello);
    msg.extend_from_slice(acc_hello);
    // `hmac::verify` compares in constant time.
    hmac::verify(&key, &msg, mac).is_ok()
}

/// MAC label of the acceptor's `Auth`.
pub const LABEL_ACCEPTOR: &[u8] = b"acceptor";
/// MAC label of the connector's `Auth`.
pub const LABEL_CONNECTOR: &[u8] = b"connector";
/// MAC label of a lazy acceptor's verdict that keeps the connection.
const LABEL_ACCEPT: &[u8] = b"verdict: accept";
/// MAC label of a lazy acceptor's verdict that declines the connection.
const LABEL_DECLINE: &[u8] = b"verdict: decline";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Connector,
    Acceptor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the peer's `Hello` frame.
    Hello,
    /// Waiting for the peer's `Auth` frame.
    Auth,
    /// Lazy acceptor: authenticated, waiting for the local decision ([`Handshake::decide`]).
    Decide,
    /// Lazy connector: authenticated, waiting for the acceptor's verdict.
    Verdict,
    Done,
}

/// One side of the handshake as a sans-io state machine.
///
/// Write [`output`](Handshake::output) to the peer (then call
/// [`consumed_output`](Handshake::consumed_output)), [`feed`](Handshake::feed) what arrives,
/// until [`done`](Handshake::done) returns the authenticated rank. `feed` stops at the end of the
/// handshake, so bytes after it are left for the data phase.
#[derive(Debug)]
pub struct Handshake {
    cfg: HandshakeConfig,
    role: Role,
    state: State,
    reader: FrameReader,
    in_frame: Option<(Opcode, [u8; HELLO_LEN as usize], usize)>,
    conn_hello: Vec<u8>,
    acc_hello: Vec<u8>,
    my_nonce: [u8; NONCE_LEN],
    out: Vec<u8>,
    peer: Option<Rank>,
    expect: Option<Rank>,
    lazy: bool,
    integrity: bool,
    verdict: Option<bool>,
    /// The peer's first two bytes, to tell a TLS peer from a garbled one.
    head: [u8; 2],
    /// How many of `head` arrived.
    seen: usize,
}

impl Handshake {
    fn my_flags(cfg: &HandshakeConfig, lazy: bool, integrity: bool) -> u32 {
        let token = if cfg.token.is_some() { HELLO_TOKEN } else { 0 };
        token | if lazy { HELLO_LAZY } else { 0 } | if integrity { HELLO_INTEGRITY } else { 0 }
    }

    /// The connector's `Hello` frame.
    fn connector_hello(
        cfg: &HandshakeConfig,
        to: Rank,
        nonce: [u8; NONCE_LEN],
        lazy: bool,
        integrity: bool,
    ) -> Vec<u8> {
        Hello {
            job: cfg.job,
            from: cfg.me,
            to,
            size: cfg.size,
            flags: Self::my_flags(cfg, lazy, integrity),
            nonce,
        }
        .encode()
        .to_vec()
    }

    /// The connecting side, which dials `to` and speaks first.
    pub fn connector(cfg: HandshakeConfig, to: Rank, nonce: [u8; NONCE_LEN]) -> Handshake {
        let hello = Self::connector_hello(&cfg, to, nonce, false, false);
        Handshake {
            role: Role::Connector,
            state: State::Hello,
            reader: FrameReader::new(Some(to)),
            in_frame: None,
            conn_hello: hello.clone(),
            acc_hello: Vec::new(),
            my_nonce: nonce,
            out: hello,
            peer: None,
            expect: Some(to),
            lazy: false,
            integrity: false,
            verdict: None,
            head: [0; 2],
            seen: 0,
            cfg,
        }
    }

    /// The accepting side, which waits for the connector's `Hello`.
    pub fn acceptor(cfg: HandshakeConfig, nonce: [u8; NONCE_LEN]) -> Handshake {
        Handshake {
            role: Role::Acceptor,
            state: State::Hello,
            reader: FrameReader::new(None),
            in_frame: None,
            conn_hello: Vec::new(),
            acc_hello: Vec::new(),
            my_nonce: nonce,
            out: Vec::new(),
            peer: None,
            expect: None,
            lazy: false,
            integrity: false,
            verdict: None,
            head: [0; 2],
            seen: 0,
            cfg,
        }
    }

    /// Switch this (fresh) side to the lazy handshake, for groups that connect each pair on
    /// its first use.
    ///
    /// Either rank of a pair may dial, so the direction check is off, and two ranks may dial
    /// each other at the same moment. To end with exactly one connection per pair, the
    /// handshake gains a last frame: once the connector is authenticated, the acceptor's
    /// owner [`decide`](Handshake::decide)s whether to keep the connection, and sends the
    /// verdict as an `Auth` frame whose MAC (keyed with the token; with an empty key in
    /// insecure mode) covers the transcript under an "accept" or "decline" label. The
    /// connector reads it and reports it through [`accepted`](Handshake::accepted). Both
    /// sides must be lazy: a `Hello` whose lazy flag differs from ours is refused.
    pub fn lazy(mut self) -> Handshake {
        self.lazy = true;
        self.rebuild_hello();
        self
    }

    /// Switch this (fresh) side to the integrity-checked data phase: its `Hello` says so
    /// ([`HELLO_INTEGRITY`]), and a peer whose `Hello` says otherwise is refused, naming the
    /// difference (the connector gets [`Error::Config`] at once). After the handshake every
    /// frame each way carries a check block (see [`CHECK_LEN`](super::CHECK_LEN)); the
    /// handshake's own frames do not (in token mode their MACs cover them).
    pub fn integrity(mut self) -> Handshake {
        self.integrity = true;
        self.rebuild_hello();
        self
    }

    /// A connector's `Hello` after its mode changed (it is the first thing it sends).
    fn rebuild_hello(&mut self) {
        if self.role == Role::Connector {
            let to = self.expect.expect("a connector always knows whom it dials");
            let hello =
                Self::connector_hello(&self.cfg, to, self.my_nonce, self.lazy, self.integrity);
            self.conn_hello = hello.clone();
            self.out = hello;
        }
    }

    /// A lazy acceptor whose connector has authenticated: the connector's rank, until
    /// [`decide`](Handshake::decide) is called.
    pub fn pending_verdict(&self) -> Option<Rank> {
        (self.state == State::Decide).then_some(self.peer).flatten()
    }

    /// A lazy acceptor's decision: keep this connection (`true`) or decline it. Queues the
    /// verdict in [`output`](Handshake::output) and completes this side. Does nothing unless
    /// [`pending_verdict`](Handshake::pending_verdict) is set.
    pub fn decide(&mut self, accept: bool) {
        if self.state != State::Decide {
            return;
        }
        let label = if accept { LABEL_ACCEPT } else { LABEL_DECLINE };
        let key = self.cfg.token.clone().unwrap_or_default();
        let mac = transcript_mac(&key, label, &self.conn_hello, &self.acc_hello);
        self.push_auth(&mac);
        self.verdict = Some(accept);
        self.state = State::Done;
    }

    /// Whether the connection is kept: for the eager handshake, always once done; for the
    /// lazy one, the acceptor's verdict (on either side) once it is known.
    pub fn accepted(&self) -> Option<bool> {
        if self.lazy { self.verdict } else { self.done().map(|_| true) }
    }

    /// Bytes to send to the peer now.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Record that `n` bytes of [`output`](Handshake::output) were sent.
    pub fn consumed_output(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    /// The peer's authenticated rank once the handshake is complete (this side's part is
    /// complete when, in addition, [`output`](Handshake::output) is empty).
    pub fn done(&self) -> Option<Rank> {
        (self.state == State::Done).then_some(self.peer).flatten()
    }

    /// The rank the peer claims, once its `Hello` arrived (for error messages).
    pub fn claimed(&self) -> Option<Rank> {
        self.peer.or(self.expect)
    }

    /// Feed bytes from the peer; returns how many were used. Stops after the last handshake
    /// frame, leaving later bytes to the caller.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize> {
        if self.seen < self.head.len() {
            let n = (self.head.len() - self.seen).min(input.len());
            self.head[self.seen..self.seen + n].copy_from_slice(&input[..n]);
            self.seen += n;
            if self.seen == self.head.len() && is_tls_record(self.head) {
                return Err(self.speaks_tls());
            }
        }
        let mut used = 0;
        // A lazy acceptor waiting for its owner's decision takes nothing more: the connector
        // has nothing to say until it hears the verdict.
        while !matches!(self.state, State::Done | State::Decide) && used < input.len() {
            let (n, step) = self.reader.feed(&input[used..])?;
            used += n;
            match step {
                Step::NeedMore => {}
                Step::Header(h, _) => {
                    let want = match self.state {
                        State::Hello => Opcode::Hello,
                        _ => Opcode::Auth,
                    };
                    if h.opcode != want {
                        return Err(Error::Protocol {
                            peer: self.claimed(),
                            detail: format!(
                                "expected {want:?} during the handshake, got {:?}",
                                h.opcode
                            ),
                        });
                    }
                    self.in_frame = Some((h.opcode, [0; HELLO_LEN as usize], 0));
                }
                Step::Payload(p) => {
                    let Some((op, buf, have)) = self.in_frame.as_mut() else {
                        return Err(Error::Protocol {
                            peer: self.claimed(),
                            detail: "payload outside a handshake frame".into(),
                        });
                    };
                    // The header check bounded payloads to HELLO_LEN or AUTH_LEN bytes.
                    buf[*have..*have + p.len()].copy_from_slice(p);
                    *have += p.len();
                    let op = *op;
                    if self.reader.payload_left() == 0 {
                        let (_, buf, have) = self.in_frame.take().expect("set above");
                        self.on_frame(op, &buf[..have])?;
                    }
                }
            }
        }
        Ok(used)
    }

    /// The peer opened with a TLS record (its ClientHello, or a TLS server's alert about our
    /// `Hello`): it is a rank with TLS and this one has none. No retry can change that, so
    /// the connector's error is final at once ([`Error::Auth`]: the peer demands an
    /// authentication this rank cannot give). The acceptor answers with its own `Hello` in
    /// the clear, so that a TLS dialler sees at once that this rank has no TLS instead of
    /// retrying until its deadline; nothing secret is in a `Hello`.
    fn speaks_tls(&mut self) -> Error {
        let detail = "speaks TLS (a TLS record where its Hello should be) and this rank does \
                      not: every rank of a job needs the job's TLS files (GLOO_TLS_CA, \
                      GLOO_TLS_CERT, GLOO_TLS_KEY) or none";
        match self.role {
            Role::Connector => {
                Error::Auth { peer: self.claimed(), detail: format!("the peer {detail}") }
            }
            Role::Acceptor => {
                let mine = Hello {
                    job: self.cfg.job,
                    from: self.cfg.me,
                    // Whom it dialled is not known (its Hello is inside the TLS session).
                    to: Rank(u32::MAX),
                    size: self.cfg.size,
                    flags: Self::my_flags(&self.cfg, self.lazy, self.integrity),
                    nonce: self.my_nonce,
                };
                self.out.extend_from_slice(&mine.encode());
                Error::Protocol { peer: None, detail: format!("a peer {detail}") }
            }
        }
    }

    fn on_frame(&mut self, op: Opcode, payload: &[u8]) -> Result<()> {
        match op {
            Opcode::Hello => {
                let mut p = [0u8; HELLO_LEN as usize];
                p.copy_from_slice(payload);
                let hello = Hello::decode(&p);
                if let Err(e) = self.check_hello(&hello) {
                    // A dialler of another job, group size or security mode is misconfigured
                    // (or dialled a stale address): answer with our own `Hello` before
                    // closing, so that it can name the mismatch at once instead of retrying
                    // until its deadline. Nothing secret is in a `Hello`.
                    let theirs_token = hello.flags & HELLO_TOKEN != 0;
                    let theirs_integrity = hello.flags & HELLO_INTEGRITY != 0;
                    let config = hello.job != self.cfg.job
                        || hello.size != self.cfg.size
                        || theirs_token != self.cfg.token.is_some()
                        || theirs_integrity != self.integrity;
                    if self.role == Role::Acceptor && config {
                        let mine = Hello {
                            job: self.cfg.job,
                            from: self.cfg.me,
                            to: hello.from,
                            size: self.cfg.size,
                            flags: Self::my_flags(&self.cfg, self.lazy, self.integrity),
                            nonce: self.my_nonce,
                        };
                        self.out.extend_from_slice(&mine.encode());
                    }
                    return Err(e);
                }
                let mut frame = Header::new(Opcode::Hello, 0, HELLO_LEN, 0).encode().to_vec();
                frame.extend_from_slice(payload);
                self.peer = Some(hello.from);
                self.reader.set_peer(hello.from);
                match self.role {
                    Role::Acceptor => {
                        self.conn_hello = frame;
                        let mine = Hello {
                            job: self.cfg.job,
                            from: self.cfg.me,
                            to: hello.from,
                            size: self.cfg.size,
                            flags: Self::my_flags(&self.cfg, self.lazy, self.integrity),
                            nonce: self.my_nonce,
                        }
                        .encode();
                        self.acc_hello = mine.to_vec();
                        self.out.extend_from_slice(&mine);
                        // The eager handshake always exchanges `Auth` frames (with the
                        // empty key in insecure mode; see the module docs); the insecure
                        // lazy one goes straight to its verdict, which the connector must
                        // answer before either side uses the connection anyway.
                        if self.cfg.token.is_some() || !self.lazy {
                            let key = self.cfg.token.clone().unwrap_or_default();
                            let (c, a) = (&self.conn_hello, &self.acc_hello);
                            let mac = transcript_mac(&key, LABEL_ACCEPTOR, c, a);
                            self.push_auth(&mac);
                            self.state = State::Auth;
                        } else {
                            self.state = self.authenticated();
                        }
                    }
                    Role::Connector => {
                        self.acc_hello = frame;
                        self.state = if self.cfg.token.is_some() || !self.lazy {
                            State::Auth
                        } else {
                            self.authenticated()
                        };
                    }
                }
            }
            Opcode::Auth if self.state == State::Verdict => {
                let key = self.cfg.token.clone().unwrap_or_default();
                let (c, a) = (&self.conn_hello, &self.acc_hello);
                self.verdict = if verify_mac(&key, LABEL_ACCEPT, c, a, payload) {
                    Some(true)
                } else if verify_mac(&key, LABEL_DECLINE, c, a, payload) {
                    Some(false)
                } else {
                    return Err(Error::Auth {
                        peer: self.peer,
                        detail: "the acceptor's verdict does not verify".into(),
                    });
                };
                self.state = State::Done;
            }
            Opcode::Auth => {
                let token = self.cfg.token.clone().unwrap_or_default();
                let label = match self.role {
                    Role::Connector => LABEL_ACCEPTOR,
                    Role::Acceptor => LABEL_CONNECTOR,
                };
                if !verify_mac(&token, label, &self.conn_hello, &self.acc_hello, payload) {
                    if self.role == Role::Connector {
                        // Still send ours, so that the acceptor's own check fails too and
                        // it can report the wrong token instead of a connection that just
                        // closed. It gives an acceptor without the token nothing a relay of
                        // a genuine handshake would not.
                        let mac = transcript_mac(
                            &token,
                            LABEL_CONNECTOR,
                            &self.conn_hello,
                            &self.acc_hello,
                        );
                        self.push_auth(&mac);
                    }
                    return Err(Error::Auth {
                        peer: self.peer,
                        detail: "the handshake MAC does not verify (wrong GLOO_AUTH_TOKEN, or a \
                                 replayed handshake)"
                            .into(),
                    });
                }
                if self.role == Role::Connector {
                    let mac =
                        transcript_mac(&token, LABEL_CONNECTOR, &self.conn_hello, &self.acc_hello);
                    self.push_auth(&mac);
                }
                self.state = self.authenticated();
            }
            _ => unreachable!("only Hello and Auth frames reach on_frame"),
        }
        Ok(())
    }

    /// The state after the peer is authenticated: done, or the lazy verdict step.
    fn authenticated(&self) -> State {
        match (self.lazy, self.role) {
            (false, _) => State::Done,
            (true, Role::Acceptor) => State::Decide,
            (true, Role::Connector) => State::Verdict,
        }
    }

    fn push_auth(&mut self, mac: &[u8; 32]) {
        self.out.extend_from_slice(&Header::new(Opcode::Auth, 0, AUTH_LEN, 0).encode());
        self.out.extend_from_slice(mac);
    }

    fn check_hello(&self, h: &Hello) -> Result<()> {
        let claimed = Some(h.from);
        let refuse = |detail: String| Err(Error::Protocol { peer: claimed, detail });
        // A connector learns these from the rank it dialled, at the address published for
        // it: no retry can change them, so they are configuration errors, final at once.
        let dialled = self.role == Role::Connector;
        if h.job != self.cfg.job {
            let detail = "belongs to another job (its job id differs from ours; every rank \
                          must be started with the same job id)";
            if dialled {
                return Err(Error::Config {
                    detail: format!("rank {} at the address published for it {detail}", h.from),
                });
            }
            return refuse(format!("the peer {detail}"));
        }
        if h.size != self.cfg.size {
            let detail = format!(
                "runs a group of {} ranks, this rank one of {} (every rank must be started \
                 with the same world size)",
                h.size, self.cfg.size
            );
            if dialled {
                return Err(Error::Config { detail: format!("rank {} {detail}", h.from) });
            }
            return refuse(format!("the peer {detail}"));
        }
        if h.from.0 >= self.cfg.size {
            return refuse(format!("rank {} out of range for size {}", h.from, self.cfg.size));
        }
        if h.from == self.cfg.me {
            return refuse(format!("the peer claims our own rank {}", h.from));
        }
        if h.to != self.cfg.me {
            return refuse(format!(
                "the peer meant to reach rank {}, this is {}",
                h.to, self.cfg.me
            ));
        }
        if let Some(e) = self.expect
            && e != h.from
        {
            return refuse(format!("dialled rank {e} but rank {} answered", h.from));
        }
        if (h.flags & HELLO_LAZY != 0) != self.lazy {
            let mode = |lazy: bool| if lazy { "lazily" } else { "eagerly (full mesh)" };
            return refuse(format!(
                "connection modes differ: this rank connects {}, the peer {}",
                mode(self.lazy),
                mode(!self.lazy)
            ));
        }
        // Which side connects is derived from the ranks: the higher rank dials the lower. In
        // lazy mode either side may, and the acceptor's verdict settles simultaneous dials.
        let ok_direction = self.lazy
            || match self.role {
                Role::Acceptor => h.from > self.cfg.me,
                Role::Connector => h.from < self.cfg.me,
            };
        if !ok_direction {
            return refuse(format!(
                "rank {} connected in the wrong direction (higher ranks dial lower ones)",
                h.from
            ));
        }
        let theirs = h.flags & HELLO_INTEGRITY != 0;
        if theirs != self.integrity {
            let says = |on: bool| if on { "checks" } else { "does not check" };
            let detail = format!(
                "integrity settings differ: this rank {} the integrity of every frame \
                 (CRC32C), the peer {} (every rank must use the same setting: \
                 TcpConfig::integrity or GLOO_INTEGRITY)",
                says(self.integrity),
                says(theirs)
            );
            if dialled {
                return Err(Error::Config { detail: format!("rank {}: {detail}", h.from) });
            }
            return refuse(detail);
        }
        let theirs = h.flags & HELLO_TOKEN != 0;
        let ours = self.cfg.token.is_some();
        if theirs != ours {
            return Err(Error::Auth {
                peer: claimed,
                detail: format!(
                    "security modes differ: this rank {} a token, the peer {}",
                    if ours { "requires" } else { "has no" },
                    if theirs { "uses one" } else { "has none" }
                ),
            });
        }
        Ok(())
    }
}

/// Whether a stream's first two bytes are a TLS record's: a handshake (22) or alert (21)
/// record of TLS 1.x (major version 3). A gloo frame starts with its magic's first byte, 0x4F.
fn is_tls_record(head: [u8; 2]) -> bool {
    matches!(head, [0x15 | 0x16, 0x03])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(me: u32, token: Option<&[u8]>) -> HandshakeConfig {
        HandshakeConfig {
            job: job_hash("job"),
            me: Rank(me),
            size: 4,
            token: token.map(<[u8]>::to_vec),
        }
    }

    /// Runs both sides to completion, feeding byte by byte to exercise partial input.
    fn run(mut c: Handshake, mut a: Handshake) -> (Result<Rank>, Result<Rank>) {
        for _ in 0..10_000 {
            let out = c.output().to_vec();
            c.consumed_output(out.len());
            for b in out {
                if let Err(e) = a.feed(&[b]) {
                    return (Ok(Rank(99)), Err(e));
                }
            }
            let out = a.output().to_vec();
            a.consumed_output(out.len());
            for b in out {
                if let Err(e) = c.feed(&[b]) {
                    return (Err(e), Ok(Rank(99)));
                }
            }
            if let (Some(x), Some(y)) = (c.done(), a.done())
                && c.output().is_empty()
                && a.output().is_empty()
            {
                return (Ok(x), Ok(y));
            }
        }
        panic!("handshake did not finish");
    }

    /// A `Hello` that arrives as its first byte and then the rest in one piece (the bytes
    /// that tell a TLS peer apart straddle the two reads); the acceptor claims no rank until
    /// the `Hello` is in.
    #[test]
    fn a_hello_split_after_its_first_byte_is_read_whole() {
        let mut c = Handshake::connector(cfg(3, Some(b"t")), Rank(1), [1; 32]);
        let mut a = Handshake::acceptor(cfg(1, Some(b"t")), [2; 32]);
        assert_eq!(a.claimed(), None, "a rank claimed before any Hello");
        let hello = c.output().to_vec();
        c.consumed_output(hello.len());
        a.feed(&hello[..1]).unwrap();
        a.feed(&hello[1..]).unwrap();
        assert_eq!(a.claimed(), Some(Rank(3)));
        let (x, y) = run(c, a);
        assert_eq!((x.unwrap(), y.unwrap()), (Rank(1), Rank(3)));
    }

    /// Nonces (the replay defence of `Auth`) differ from draw to draw.
    #[test]
    fn nonces_are_fresh() {
        let (n1, n2) = (fresh_nonce().unwrap(), fresh_nonce().unwrap());
        assert_ne!(n1, n2);
        assert_ne!(n1, [0; NONCE_LEN]);
    }

    /// A config's `Debug` shows who it is for and whether a token is set, never the token.
    #[test]
    fn a_config_prints_without_its_token() {
        let shown = format!("{:?}", cfg(3, Some(b"s3cret-token-bytes")));
        assert!(shown.contains("rank 3") && shown.contains("<set>"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    /// A wrong token is an `Auth` error on both sides: the connector, which learns first,
    /// still sends its MAC so that the acceptor can name the token too.
    #[test]
    fn a_wrong_token_is_an_auth_error_on_both_sides() {
        let mut c = Handshake::connector(cfg(3, Some(b"t")), Rank(1), [1; 32]);
        let mut a = Handshake::acceptor(cfg(1, Some(b"u")), [2; 32]);
        let out = c.output().to_vec();
        c.consumed_output(out.len());
        a.feed(&out).unwrap();
        let out = a.output().to_vec();
        a.consumed_output(out.len());
        let e = c.feed(&out).unwrap_err();
        assert!(matches!(e, Error::Auth { peer: Some(Rank(1)), .. }), "{e}");
        let out = c.output().to_vec();
        assert!(!out.is_empty(), "the connector sent no MAC");
        let e = a.feed(&out).unwrap_err();
        assert!(matches!(e, Error::Auth { peer: Some(Rank(3)), .. }), "{e}");
        assert!(a.output().is_empty(), "the acceptor answered a failed MAC");
    }

    /// An acceptor of another job answers with its own `Hello` so the dialler can name the
    /// mismatch; the dialler, which already sent its `Hello`, sends nothing more.
    #[test]
    fn only_the_acceptor_answers_a_hello_of_another_job() {
        let mut c = Handshake::connector(cfg(3, None), Rank(1), [1; 32]);
        let mut a = Handshake::acceptor(
            HandshakeConfig { job: job_hash("other"), ..cfg(1, None) },
            [2; 32],
        );
        let out = c.output().to_vec();
        c.consumed_output(out.len());
        assert!(a.feed(&out).is_err());
        let answer = a.output().to_vec();
        assert!(!answer.is_empty(), "the acceptor did not answer");
        assert!(c.feed(&answer).is_err());
        assert!(c.output().is_empty(), "the connector answered a refused Hello");
    }

    #[test]
    fn token_handshake_succeeds_and_names_ranks() {
        let c = Handshake::connector(cfg(3, Some(b"t")), Rank(1), [1; 32]);
        let a = Handshake::acceptor(cfg(1, Some(b"t")), [2; 32]);
        let (x, y) = run(c, a);
        assert_eq!(x.unwrap(), Rank(1));
        assert_eq!(y.unwrap(), Rank(3));
    }

    #[test]
    fn a_tls_peer_is_told_apart_from_garbage_and_answered_in_the_clear() {
        // A TLS server's alert about our Hello (record type 21, TLS 1.2 on the wire), fed
        // byte by byte: the connector's error is final and names the rank it dialled.
        let mut c = Handshake::connector(cfg(2, None), Rank(0), [1; 32]);
        let alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32];
        let e = alert.iter().find_map(|b| c.feed(&[*b]).err()).expect("refused");
        assert!(matches!(e, Error::Auth { peer: Some(Rank(0)), .. }), "{e}");
        assert!(e.to_string().contains("speaks TLS"), "{e}");
        // A TLS client's ClientHello (record type 22, TLS 1.0 in the record header): the
        // acceptor refuses it and queues its own Hello, so the TLS dialler learns at once.
        let mut a = Handshake::acceptor(cfg(0, None), [2; 32]);
        let e = a.feed(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap_err();
        assert!(matches!(e, Error::Protocol { peer: None, .. }), "{e}");
        assert!(e.to_string().contains("speaks TLS"), "{e}");
        assert_eq!(
            a.output()[..4],
            super::super::frame::MAGIC.to_le_bytes(),
            "our Hello, in the clear"
        );
        // Garbage that is no TLS record stays a plain protocol error, with no answer.
        let mut a = Handshake::acceptor(cfg(0, None), [2; 32]);
        let e = a.feed(&[0x16, 0x04].repeat(HEADER_LEN)).unwrap_err();
        assert!(!e.to_string().contains("TLS"), "{e}");
        assert!(a.output().is_empty());
    }

    #[test]
    fn insecure_handshake_succeeds() {
        let c = Handshake::connector(cfg(2, None), Rank(0), [1; 32]);
        let a = Handshake::acceptor(cfg(0, None), [2; 32]);
        let (x, y) = run(c, a);
        assert_eq!((x.unwrap(), y.unwrap()), (Rank(0), Rank(2)));
    }

    #[test]
    fn wrong_token_fails_auth() {
        let c = Handshake::connector(cfg(3, Some(b"t")), Rank(1), [1; 32]);
        let a = Handshake::acceptor(cfg(1, Some(b"u")), [2; 32]);
        let (x, _) = run(c, a);
        assert!(matches!(x, Err(Error::Auth { peer: Some(Rank(1)), .. })), "{x:?}");
    }

    #[test]
    fn integrity_is_agreed_by_both_sides_or_refused_naming_it() {
        for token in [Some(&b"t"[..]), None] {
            let c = Handshake::connector(cfg(3, token), Rank(1), [1; 32]).integrity();
            let a = Handshake::acceptor(cfg(1, token), [2; 32]).integrity();
            let (x, y) = run(c, a);
            assert_eq!((x.unwrap(), y.unwrap()), (Rank(1), Rank(3)));
            // One side checks, the other does not: the connector is told at once which
            // setting differs (a configuration error), the acceptor refuses the peer.
            for connector_checks in [true, false] {
                let mut c = Handshake::connector(cfg(3, token), Rank(1), [1; 32]);
                let mut a = Handshake::acceptor(cfg(1, token), [2; 32]);
                if connector_checks {
                    c = c.integrity();
                } else {
                    a = a.integrity();
                }
                let out = c.output().to_vec();
                let refused = a.feed(&out).unwrap_err();
                assert!(
                    matches!(&refused, Error::Protocol { peer: Some(Rank(3)), detail } if detail.contains("integrity")),
                    "{refused:?}"
                );
                let answer = a.output().to_vec();
                let told = c.feed(&answer).unwrap_err();
                assert!(
                    matches!(&told, Error::Config { detail } if detail.contains("integrity settings differ")),
                    "{told:?}"
                );
            }
        }
    }

    #[test]
    fn acceptor_refuses_bad_hellos() {
        let cases: Vec<(HandshakeConfig, Rank)> = vec![
            (HandshakeConfig { job: job_hash("other"), ..cfg(3, Some(b"t")) }, Rank(1)),
            (HandshakeConfig { size: 5, ..cfg(3, Some(b"t")) }, Rank(1)),
            (cfg(1, Some(b"t")), Rank(1)), // claims the acceptor's own rank
            (cfg(0, Some(b"t")), Rank(1)), // lower rank dialling a higher one
            (cfg(3, None), Rank(1)),       // security mode differs
            (cfg(3, Some(b"t")), Rank(2)), // meant for another rank
        ];
        for (c, to) in cases {
            let c = Handshake::connector(c, to, [1; 32]);
            let a = Handshake::acceptor(cfg(1, Some(b"t")), [2; 32]);
            let (_, y) = run(c, a);
            assert!(y.is_err(), "acceptor accepted {y:?}");
        }
        let mut bad = cfg(9, Some(b"t"));
        bad.size = 4;
        let c = Handshake::connector(bad, Rank(1), [1; 32]);
        let a = Handshake::acceptor(cfg(1, Some(b"t")), [2; 32]);
        assert!(run(c, a).1.is_err(), "rank out of range accepted");
    }

    /// A dialler of another job or group size hears the acceptor's `Hello` before the
    /// connection closes, and names the mismatch as a configuration error.
    #[test]
    fn a_mismatched_dialler_learns_why_it_was_refused() {
        let other_job = HandshakeConfig { job: job_hash("other"), ..cfg(3, None) };
        let other_size = HandshakeConfig { size: 5, ..cfg(3, None) };
        for (c, what) in [(other_job, "another job"), (other_size, "group of 4 ranks")] {
            let mut c = Handshake::connector(c, Rank(1), [1; 32]);
            let mut a = Handshake::acceptor(cfg(1, None), [2; 32]);
            let e = a.feed(c.output()).unwrap_err();
            assert!(matches!(e, Error::Protocol { peer: Some(Rank(3)), .. }), "{e:?}");
            let reply = a.output().to_vec();
            assert!(!reply.is_empty(), "the acceptor answers before closing");
            let e = c.feed(&reply).unwrap_err();
            match e {
                Error::Config { detail } => assert!(detail.contains(what), "{detail}"),
                e => panic!("expected a configuration error naming {what:?}, got {e:?}"),
            }
        }
        // A dialler without the token hears that the acceptor requires one.
        let mut c = Handshake::connector(cfg(3, None), Rank(1), [1; 32]);
        let mut a = Handshake::acceptor(cfg(1, Some(b"t")), [2; 32]);
        assert!(matches!(a.feed(c.output()), Err(Error::Auth { .. })));
        let e = c.feed(a.output()).unwrap_err();
        assert!(matches!(e, Error::Auth { peer: Some(Rank(1)), .. }), "{e:?}");
    }

    #[test]
    fn replayed_connector_auth_fails() {
        // Record a complete connector transcript against one acceptor nonce...
        let mut c = Handshake::connector(cfg(3, Some(b"t")), Rank(1), [1; 32]);
        let mut a = Handshake::acceptor(cfg(1, Some(b"t")), [2; 32]);
        let hello = c.output().to_vec();
        c.consumed_output(hello.len());
        a.feed(&hello).unwrap();
        let reply = a.output().to_vec();
        c.feed(&reply).unwrap();
        let auth = c.output().to_vec();
        // ...and replay it to an acceptor that chose a fresh nonce.
        let mut a2 = Handshake::acceptor(cfg(1, Some(b"t")), [7; 32]);
        let mut replay = hello.clone();
        replay.extend_from_slice(&auth);
        let e = a2.feed(&replay).unwrap_err();
        assert!(matches!(e, Error::Auth { peer: Some(Rank(3)), .. }), "{e:?}");
    }

    /// Runs a lazy pair up to the acceptor's decision, decides, and finishes.
    fn run_lazy(token: Option<&[u8]>, accept: bool) -> (Handshake, Handshake) {
        // In lazy mode the lower rank may dial the higher one.
        let mut c = Handshake::connector(cfg(1, token), Rank(3), [1; 32]).lazy();
        let mut a = Handshake::acceptor(cfg(3, token), [2; 32]).lazy();
        for _ in 0..10 {
            let out = c.output().to_vec();
            c.consumed_output(out.len());
            assert_eq!(a.feed(&out).unwrap(), out.len());
            if a.pending_verdict().is_some() {
                break;
            }
            let out = a.output().to_vec();
            a.consumed_output(out.len());
            assert_eq!(c.feed(&out).unwrap(), out.len());
        }
        assert_eq!(a.pending_verdict(), Some(Rank(1)));
        assert_eq!((a.done(), c.done()), (None, None), "done before the verdict");
        a.decide(accept);
        let mut out = a.output().to_vec();
        out.extend_from_slice(b"data");
        let used = c.feed(&out).unwrap();
        assert_eq!(&out[used..], b"data", "the connector reads past the verdict");
        (c, a)
    }

    #[test]
    fn lazy_verdicts_reach_the_connector() {
        for token in [Some(&b"t"[..]), None] {
            for accept in [true, false] {
                let (c, a) = run_lazy(token, accept);
                assert_eq!(c.done(), Some(Rank(3)));
                assert_eq!(a.done(), Some(Rank(1)));
                assert_eq!(c.accepted(), Some(accept), "token {token:?}");
                assert_eq!(a.accepted(), Some(accept));
            }
        }
    }

    #[test]
    fn a_forged_verdict_fails_authentication() {
        let mut c = Handshake::connector(cfg(1, Some(b"t")), Rank(3), [1; 32]).lazy();
        let mut a = Handshake::acceptor(cfg(3, Some(b"t")), [2; 32]).lazy();
        let out = c.output().to_vec();
        c.consumed_output(out.len());
        a.feed(&out).unwrap();
        let reply = a.output().to_vec();
        a.consumed_output(reply.len());
        c.feed(&reply).unwrap();
        let auth = c.output().to_vec();
        c.consumed_output(auth.len());
        a.feed(&auth).unwrap();
        assert_eq!(a.pending_verdict(), Some(Rank(1)));
        // An Auth frame carrying the right shape but a wrong MAC.
        let mut forged = Header::new(Opcode::Auth, 0, AUTH_LEN, 0).encode().to_vec();
        forged.extend_from_slice(&[0x42; 32]);
        let e = c.feed(&forged).unwrap_err();
        assert!(matches!(e, Error::Auth { peer: Some(Rank(3)), .. }), "{e:?}");
        assert_eq!(c.accepted(), None);
    }

    #[test]
    fn lazy_and_eager_sides_refuse_each_other() {
        let c = Handshake::connector(cfg(3, Some(b"t")), Rank(1), [1; 32]).lazy();
        let a = Handshake::acceptor(cfg(1, Some(b"t")), [2; 32]);
        let (_, y) = run(c, a);
        assert!(
            matches!(&y, Err(Error::Protocol { detail, .. }) if detail.contains("modes")),
            "{y:?}"
        );
        let c = Handshake::connector(cfg(3, Some(b"t")), Rank(1), [1; 32]);
        let a = Handshake::acceptor(cfg(1, Some(b"t")), [2; 32]).lazy();
        let (_, y) = run(c, a);
        assert!(y.is_err(), "a lazy acceptor took an eager connector: {y:?}");
    }

    #[test]
    fn decide_before_authentication_does_nothing() {
        let mut a = Handshake::acceptor(cfg(3, Some(b"t")), [2; 32]).lazy();
        a.decide(true);
        assert!(a.output().is_empty());
        assert_eq!(a.accepted(), None);
    }

    #[test]
    fn feed_stops_at_the_end_of_the_handshake() {
        let mut c = Handshake::connector(cfg(2, None), Rank(0), [1; 32]);
        let mut a = Handshake::acceptor(cfg(0, None), [2; 32]);
        let hello = c.output().to_vec();
        c.consumed_output(hello.len());
        assert_eq!(a.feed(&hello).unwrap(), hello.len());
        let reply = a.output().to_vec();
        a.consumed_output(reply.len());
        assert_eq!(c.feed(&reply).unwrap(), reply.len());
        assert_eq!(c.done(), Some(Rank(0)));
        let mut bytes = c.output().to_vec();
        bytes.extend_from_slice(b"after");
        let used = a.feed(&bytes).unwrap();
        assert_eq!(&bytes[used..], b"after");
        assert_eq!(a.done(), Some(Rank(2)));
    }

    /// An eager acceptor is not done until the connector's last frame arrives, in insecure
    /// mode too: a connector that sends its `Hello` and gives up leaves the acceptor waiting
    /// (and then failing), never holding a connection it believes complete.
    #[test]
    fn an_eager_acceptor_waits_for_the_connector_to_finish() {
        for token in [None, Some(&b"t"[..])] {
            let c = Handshake::connector(cfg(2, token), Rank(0), [1; 32]);
            let mut a = Handshake::acceptor(cfg(0, token), [2; 32]);
            a.feed(c.output()).unwrap();
            assert!(!a.output().is_empty(), "token {token:?}: the acceptor answers");
            assert_eq!(a.done(), None, "token {token:?}: done before the connector finished");
        }
    }
}
