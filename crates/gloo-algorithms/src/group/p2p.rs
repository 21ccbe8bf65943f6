//! Barrier, send and recv.

use super::*;

impl<C: Communicator> Group<C> {
    // -----------------------------------------------------------------------------------
    // Barrier and point-to-point
    // -----------------------------------------------------------------------------------

    /// Return once every rank has entered the barrier.
    pub fn barrier(&self, opts: &Options) -> Result<()> {
        let c = Collective::Barrier;
        let algorithm = self.algorithm(c, 0, opts)?;
        let ctx = self.begin(Call::untyped(c, algorithm), opts)?;
        s::barrier_dissemination(&ctx)
    }

    fn p2p_ctx(&self, peer: Rank, sending: bool, dtype: DType, opts: &Options) -> Result<Ctx<'_>> {
        let c = Collective::SendRecv;
        let n = self.n();
        let what = if sending { "to" } else { "from" };
        if peer.index() >= n {
            return Err(Error::invalid(
                c,
                format!("{what}: {peer} is not a rank of this group of {n}"),
            ));
        }
        if peer == self.rank() {
            return Err(Error::invalid(c, format!("{what}: {peer} is this rank")));
        }
        if let Some(a) = opts.algorithm
            && a != Algorithm::Direct
        {
            return Err(Error::UnknownAlgorithm {
                collective: c,
                source: "Options::algorithm".to_string(),
                name: a.name().to_string(),
                valid: c.algorithm_names(),
            });
        }
        let busy = self.hold(c)?;
        let epoch = {
            let mut tags = self.shared.tags();
            let e = tags.entry(self.tag).or_default().p2p.entry((peer.0, sending)).or_insert(0);
            let v = *e;
            *e += 1;
            v
        };
        let mut info = CallInfo::new(c, Some(dtype), 0, Algorithm::Direct, None, 0, self.tag, 0);
        info.epoch = epoch | P2P_EPOCH;
        let mut ctx = self.ctx(c, info.encode(), opts);
        ctx.set_busy(busy);
        Ok(ctx)
    }

    /// Send `buf` to rank `to` (matched by the `n`-th [`recv`](Self::recv) from this rank on
    /// the same tag there).
    pub fn send<T: Element>(&self, to: Rank, buf: &[T], opts: &Options) -> Result<()> {
        let ctx = self.p2p_ctx(to, true, T::DTYPE, opts)?;
        let mut ops = Ops::new();
        ops.push(ctx.send(to.index(), STEP_P2P, as_bytes(buf)));
        ctx.run(ops)
    }

    /// Receive one message from rank `from` into `buf` (which may be longer than the message);
    /// returns the number of elements received.
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options};
    /// use gloo_transport::{loopback::{LoopbackConfig, group}, Rank};
    /// let out = gloo_transport::threads::run_ranks(group(2, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let mut buf = [0f64; 4];
    ///     if g.rank() == Rank(0) {
    ///         g.send(Rank(1), &[1.5, 2.5], &Options::new()).unwrap();
    ///         0
    ///     } else {
    ///         g.recv(Rank(0), &mut buf, &Options::new()).unwrap()
    ///     }
    /// });
    /// assert_eq!(out, vec![0, 2]);
    /// ```
    pub fn recv<T: Element>(&self, from: Rank, buf: &mut [T], opts: &Options) -> Result<usize> {
        let ctx = self.p2p_ctx(from, false, T::DTYPE, opts)?;
        let mut ops = [ctx.recv(from.index(), STEP_P2P, as_bytes_mut(buf))];
        if let Err(e) = ctx.comm.run(&mut ops, ctx.deadline) {
            return Err(ctx.fail(e));
        }
        let len = ops[0].completed().map_or(0, |(_, len)| len);
        if len % es::<T>() != 0 {
            return Err(Error::LengthMismatch {
                collective: Collective::SendRecv,
                peer: self.comm_rank(from.index()),
                slot: ctx.slot(STEP_P2P),
                expected: len.next_multiple_of(es::<T>()),
                received: len,
            });
        }
        Ok(len / es::<T>())
    }
}
