//! The rooted collectives: reduce, broadcast, gather and scatter (and their v forms).

use super::*;

impl<C: Communicator> Group<C> {
    // -----------------------------------------------------------------------------------
    // Rooted collectives
    // -----------------------------------------------------------------------------------

    /// Reduce `buf` across all ranks into `root`'s `buf`; other ranks' buffers are left as
    /// they were.
    pub fn reduce<T: Element>(
        &self,
        buf: &mut [T],
        root: Rank,
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        let root = check_root(Collective::Reduce, root, self.n())?;
        if self.rank().index() == root {
            self.reduce_run(Part::Root(&mut *buf), root, op, opts)?;
            if let ReduceOp::Average = op
                && !T::INTEGER
            {
                divide_bytes::<T>(as_bytes_mut(buf), self.size());
            }
            Ok(())
        } else {
            self.reduce_run(Part::Other(buf), root, op, opts)
        }
    }

    /// Reduce `input` across all ranks into `root`'s `output`, leaving `input` alone.
    ///
    /// `output` is the root's buffer, as long as `input`: the root passes `Some`, the other
    /// ranks `None` (a buffer they pass anyway is left untouched).
    ///
    /// ```
    /// # use gloo_algorithms::{Group, Options, ReduceOp};
    /// # use gloo_transport::{Rank, loopback::{LoopbackConfig, group}};
    /// # let ranks: Vec<_> = group(3, LoopbackConfig::default()).into_iter().map(|c| {
    /// #     std::thread::spawn(move || {
    /// #         let g = Group::new(c).unwrap();
    /// let root = Rank(0);
    /// let mine = [g.rank().0 + 1; 2];
    /// if g.rank() == root {
    ///     let mut total = [0u32; 2];
    ///     g.reduce_into(&mine, Some(&mut total), root, ReduceOp::Sum, &Options::new())?;
    ///     assert_eq!(total, [6, 6]);
    /// } else {
    ///     g.reduce_into(&mine, None, root, ReduceOp::Sum, &Options::new())?;
    /// }
    /// #         Ok::<(), gloo_algorithms::Error>(())
    /// #     })
    /// # }).collect();
    /// # for r in ranks { r.join().unwrap().unwrap(); }
    /// ```
    pub fn reduce_into<T: Element>(
        &self,
        input: &[T],
        output: Option<&mut [T]>,
        root: Rank,
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Reduce;
        let r = check_root(c, root, self.n())?;
        if self.rank().index() == r {
            let output = at_root(c, "output", output)?;
            check_len(c, "output", output.len(), input.len(), "the input's length (at the root)")?;
            output.copy_from_slice(input);
            self.reduce(output, root, op, opts)
        } else {
            self.reduce_run(Part::Other(input), r, op, opts)
        }
    }

    /// A reduce to `root`, this rank's part being `mine` (for an exact integer average the
    /// root's buffer receives the mean; for a float average it receives the sum, which the
    /// caller divides).
    fn reduce_run<T: Element>(
        &self,
        mine: Part<'_, T>,
        root: usize,
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Reduce;
        let n = self.n();
        let count = match &mine {
            Part::Root(b) => b.len(),
            Part::Other(b) => b.len(),
        };
        let algorithm = self.algorithm(c, count * es::<T>(), opts)?;
        let seg = segment(opts, es::<T>());
        let call =
            Call { op: op.id(), count, param: seg_param(seg), ..Call::new::<T>(c, algorithm) }
                .rooted(root);
        let ctx = self.begin(call, opts)?;
        if matches!(op, ReduceOp::Average) && T::INTEGER {
            // Exact: quotient and remainder records (see `average`).
            let (rec, nn) = (average::record::<T>(), n as u32);
            let mut records = ctx.scratch(count * rec);
            let values: &[T] = match &mine {
                Part::Root(b) => b,
                Part::Other(b) => b,
            };
            average::pack_into(values, &[], nn, records.bytes());
            if n > 1 {
                let part = match &mine {
                    Part::Root(_) => s::Mine::Root(records.bytes()),
                    Part::Other(_) => s::Mine::Other(records.bytes()),
                };
                s::reduce_tree(&ctx, part, root, &average::sum::<T>, segment(opts, rec))?;
            }
            ctx.finish_agreement()?;
            if let Part::Root(b) = mine {
                average::unpack(records.bytes(), b, nn, 1);
            }
            return Ok(());
        }
        let f = |d: &mut [u8], s: &[u8]| op.apply_bytes(d, s);
        if n > 1 {
            let part = match mine {
                Part::Root(b) => s::Mine::Root(as_bytes_mut(b)),
                Part::Other(b) => s::Mine::Other(as_bytes(b)),
            };
            s::reduce_tree(&ctx, part, root, &f, seg)?;
        }
        ctx.finish_agreement()
    }

    /// Send `root`'s `buf` to every rank's `buf`.
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options};
    /// use gloo_transport::{loopback::{LoopbackConfig, group}, Rank};
    /// let out = gloo_transport::threads::run_ranks(group(3, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let mut v = if g.rank() == Rank(2) { [7u8, 8] } else { [0, 0] };
    ///     g.broadcast(&mut v, Rank(2), &Options::new()).unwrap();
    ///     v
    /// });
    /// assert_eq!(out, vec![[7, 8]; 3]);
    /// ```
    pub fn broadcast<T: Element>(&self, buf: &mut [T], root: Rank, opts: &Options) -> Result<()> {
        let c = Collective::Broadcast;
        let n = self.n();
        let root = check_root(c, root, n)?;
        let algorithm = self.algorithm(c, std::mem::size_of_val(buf), opts)?;
        let seg = segment(opts, es::<T>());
        let param = match algorithm {
            Algorithm::ScatterAllgather | Algorithm::Chain => seg_param(seg),
            _ => 0,
        };
        let call = Call { count: buf.len(), param, ..Call::new::<T>(c, algorithm) }.rooted(root);
        let ctx = self.begin(call, opts)?;
        if n > 1 {
            let b = as_bytes_mut(buf);
            match algorithm {
                Algorithm::ScatterAllgather => {
                    s::broadcast_scatter_allgather(&ctx, b, es::<T>(), root, seg)?
                }
                Algorithm::Chain => s::broadcast_chain(&ctx, b, root, seg)?,
                _ => s::broadcast_binomial(&ctx, b, root)?,
            }
        }
        ctx.finish_agreement()
    }

    /// Gather every rank's `input` (all the same length) into `root`'s `output`, in rank
    /// order.
    ///
    /// `output` is the root's buffer of `size × input.len()` elements: the root passes
    /// `Some`, the other ranks `None` (a buffer they pass anyway is left untouched).
    ///
    /// ```
    /// # use gloo_algorithms::{Group, Options};
    /// # use gloo_transport::{Rank, loopback::{LoopbackConfig, group}};
    /// # let ranks: Vec<_> = group(3, LoopbackConfig::default()).into_iter().map(|c| {
    /// #     std::thread::spawn(move || {
    /// #         let g = Group::new(c).unwrap();
    /// let root = Rank(1);
    /// let mine = [g.rank().0 as u8 * 10];
    /// // Only the root holds a buffer for the result.
    /// let mut all = (g.rank() == root).then(|| vec![0u8; g.size() as usize]);
    /// g.gather(&mine, all.as_deref_mut(), root, &Options::new())?;
    /// if let Some(all) = all {
    ///     assert_eq!(all, [0, 10, 20]);
    /// }
    /// #         Ok::<(), gloo_algorithms::Error>(())
    /// #     })
    /// # }).collect();
    /// # for r in ranks { r.join().unwrap().unwrap(); }
    /// ```
    pub fn gather<T: Element>(
        &self,
        input: &[T],
        output: Option<&mut [T]>,
        root: Rank,
        opts: &Options,
    ) -> Result<()> {
        let n = self.n();
        self.gather_impl(Collective::Gather, input, output, &vec![input.len(); n], root, opts)
    }

    /// Gather `counts[q]` elements from each rank `q` into `root`'s `output`, in rank order.
    /// Every rank passes the same `counts`; `input.len()` must be `counts[rank]`. `output`
    /// (the sum of the counts) is the root's, as in [`gather`](Self::gather).
    pub fn gatherv<T: Element>(
        &self,
        input: &[T],
        output: Option<&mut [T]>,
        counts: &[usize],
        root: Rank,
        opts: &Options,
    ) -> Result<()> {
        self.gather_impl(Collective::Gatherv, input, output, counts, root, opts)
    }

    fn gather_impl<T: Element>(
        &self,
        c: Collective,
        input: &[T],
        output: Option<&mut [T]>,
        counts: &[usize],
        root: Rank,
        opts: &Options,
    ) -> Result<()> {
        let own = ("input", input.len());
        let output = self.root_buffer(c, root, "output", output)?;
        let whole = ("output", output.len(), "the sum of the counts (at the root)");
        let (ctx, root, sizes, algorithm) =
            self.start_rooted::<T>(c, counts, root, own, whole, opts)?;
        let out = as_bytes_mut(output);
        match algorithm {
            Algorithm::Direct => {
                let seg = segment(opts, 1);
                s::gather_direct(&ctx, as_bytes(input), out, &sizes, root, seg)?
            }
            _ => s::gather_binomial(&ctx, as_bytes(input), out, &sizes, root)?,
        }
        ctx.finish_agreement()
    }

    /// Split `root`'s `input` into equal blocks and give block `q` to rank `q`'s `output`.
    ///
    /// `input` is the root's `size × output.len()` elements: the root passes `Some`, the
    /// other ranks `None` (a buffer they pass anyway is not read).
    ///
    /// ```
    /// # use gloo_algorithms::{Group, Options};
    /// # use gloo_transport::{Rank, loopback::{LoopbackConfig, group}};
    /// # let ranks: Vec<_> = group(2, LoopbackConfig::default()).into_iter().map(|c| {
    /// #     std::thread::spawn(move || {
    /// #         let g = Group::new(c).unwrap();
    /// let root = Rank(0);
    /// let mut mine = [0i16; 2];
    /// if g.rank() == root {
    ///     g.scatter(Some(&[1, 2, 3, 4]), &mut mine, root, &Options::new())?;
    /// } else {
    ///     g.scatter(None, &mut mine, root, &Options::new())?;
    /// }
    /// assert_eq!(mine, if g.rank() == root { [1, 2] } else { [3, 4] });
    /// #         Ok::<(), gloo_algorithms::Error>(())
    /// #     })
    /// # }).collect();
    /// # for r in ranks { r.join().unwrap().unwrap(); }
    /// ```
    pub fn scatter<T: Element>(
        &self,
        input: Option<&[T]>,
        output: &mut [T],
        root: Rank,
        opts: &Options,
    ) -> Result<()> {
        let n = self.n();
        self.scatter_impl(Collective::Scatter, input, output, &vec![output.len(); n], root, opts)
    }

    /// Give `counts[q]` elements of `root`'s `input` (blocks in rank order) to rank `q`'s
    /// `output`. Every rank passes the same `counts`; `output.len()` must be
    /// `counts[rank]`. `input` (the sum of the counts) is the root's, as in
    /// [`scatter`](Self::scatter).
    pub fn scatterv<T: Element>(
        &self,
        input: Option<&[T]>,
        output: &mut [T],
        counts: &[usize],
        root: Rank,
        opts: &Options,
    ) -> Result<()> {
        self.scatter_impl(Collective::Scatterv, input, output, counts, root, opts)
    }

    fn scatter_impl<T: Element>(
        &self,
        c: Collective,
        input: Option<&[T]>,
        output: &mut [T],
        counts: &[usize],
        root: Rank,
        opts: &Options,
    ) -> Result<()> {
        let own = ("output", output.len());
        let input: &[T] = self.root_buffer(c, root, "input", input)?;
        let whole = ("input", input.len(), "size × output (at the root)");
        let (ctx, root, sizes, algorithm) =
            self.start_rooted::<T>(c, counts, root, own, whole, opts)?;
        let inp = as_bytes(input);
        match algorithm {
            Algorithm::Direct => s::scatter_direct(&ctx, inp, as_bytes_mut(output), &sizes, root)?,
            _ => s::scatter_binomial(&ctx, inp, as_bytes_mut(output), &sizes, root)?,
        }
        ctx.finish_agreement()
    }
}
