//! The reducing collectives on every rank: allreduce (in place, into an output, over many
//! buffers) and reduce-scatter.

use super::*;

impl<C: Communicator> Group<C> {
    // -----------------------------------------------------------------------------------
    // Allreduce
    // -----------------------------------------------------------------------------------

    /// Reduce `buf` across all ranks, in place: afterwards every rank holds the same
    /// (bitwise-identical) result.
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options, ReduceOp};
    /// use gloo_transport::loopback::{LoopbackConfig, group};
    /// let out = gloo_transport::threads::run_ranks(group(4, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let mut v = [g.rank().0 as i64, 1];
    ///     g.allreduce(&mut v, ReduceOp::Max, &Options::new()).unwrap();
    ///     v
    /// });
    /// assert_eq!(out, vec![[3, 1]; 4]);
    /// ```
    pub fn allreduce<T: Element>(
        &self,
        buf: &mut [T],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        self.allreduce_parts(buf, &mut [], op, opts)
    }

    /// Allreduce of `first` with this rank's `rest` reduced into it first (the rest are not
    /// written).
    fn allreduce_parts<T: Element>(
        &self,
        first: &mut [T],
        rest: &mut [&mut [T]],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Allreduce;
        let n = self.n();
        let bytes = std::mem::size_of_val(first);
        let algorithm = self.algorithm(c, bytes, opts)?;
        let seg = segment(opts, es::<T>());
        let param = match algorithm {
            Algorithm::Ring => seg_param(seg),
            Algorithm::Bcube => opts.bcube_base,
            _ => 0,
        };
        let call = Call { op: op.id(), count: first.len(), param, ..Call::new::<T>(c, algorithm) };
        let ctx = self.begin(call, opts)?;
        let run = |b: &mut [u8], es: usize, f: &dyn Fn(&mut [u8], &[u8])| -> Result<()> {
            match algorithm {
                Algorithm::Ring => s::allreduce_ring(&ctx, b, es, f, segment(opts, es)),
                Algorithm::HalvingDoubling => s::allreduce_halving_doubling(&ctx, b, es, f),
                Algorithm::Bcube => s::allreduce_bcube(&ctx, b, es, f, opts.bcube_base as usize),
                _ => s::allreduce_recursive_doubling(&ctx, b, f),
            }
        };
        if matches!(op, ReduceOp::Average) && T::INTEGER {
            // Exact: quotient and remainder records (see `average`).
            if average::divisor(n as u32, 1 + rest.len()).is_none() {
                return Err(Error::invalid(c, "bufs: too many buffers for an exact average"));
            }
            let mut records = ctx.scratch(first.len() * average::record::<T>());
            average::pack_into(first, rest, n as u32, records.bytes());
            if n > 1 {
                run(records.bytes(), average::record::<T>(), &average::sum::<T>)?;
            }
            average::unpack(records.bytes(), first, n as u32, 1 + rest.len());
            return Ok(());
        }
        for b in rest.iter() {
            op.apply(first, b);
        }
        let f = |d: &mut [u8], s: &[u8]| op.apply_bytes(d, s);
        let b = as_bytes_mut(first);
        if n > 1 {
            run(b, es::<T>(), &f)?;
        }
        if let ReduceOp::Average = op {
            divide_bytes::<T>(b, n as u32);
        }
        Ok(())
    }

    /// Reduce `input` across all ranks into `output` (same length), leaving `input` alone.
    pub fn allreduce_into<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        check_len(
            Collective::Allreduce,
            "output",
            output.len(),
            input.len(),
            "the input's length",
        )?;
        output.copy_from_slice(input);
        self.allreduce(output, op, opts)
    }

    /// Reduce several buffers per rank: this rank's buffers are first reduced locally (in
    /// order), then across ranks, and the result is written to every buffer.
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options, ReduceOp};
    /// use gloo_transport::loopback::{LoopbackConfig, group};
    /// let out = gloo_transport::threads::run_ranks(group(2, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let (mut a, mut b) = ([1u32, 2], [10u32, 20]);
    ///     g.allreduce_many(&mut [&mut a, &mut b], ReduceOp::Sum, &Options::new()).unwrap();
    ///     (a, b)
    /// });
    /// assert_eq!(out, vec![([22, 44], [22, 44]); 2]);
    /// ```
    pub fn allreduce_many<T: Element>(
        &self,
        bufs: &mut [&mut [T]],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Allreduce;
        let Some((first, rest)) = bufs.split_first_mut() else {
            return Err(Error::invalid(c, "bufs: at least one buffer is needed"));
        };
        for (i, b) in rest.iter().enumerate() {
            check_len(c, &format!("bufs[{}]", i + 1), b.len(), first.len(), "bufs[0]'s length")?;
        }
        self.allreduce_parts(first, rest, op, opts)?;
        for b in rest.iter_mut() {
            b.copy_from_slice(first);
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Reduce-scatter
    // -----------------------------------------------------------------------------------

    /// Reduce `input` (`size × output.len()` elements) across ranks and give block `rank` of
    /// the result to `output`. Bandwidth-optimal (ring).
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options, ReduceOp};
    /// use gloo_transport::loopback::{LoopbackConfig, group};
    /// let out = gloo_transport::threads::run_ranks(group(2, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let mut mine = [0i32; 2];
    ///     g.reduce_scatter(&[1, 2, 3, 4], &mut mine, ReduceOp::Sum, &Options::new()).unwrap();
    ///     mine
    /// });
    /// assert_eq!(out, vec![[2, 4], [6, 8]]);
    /// ```
    pub fn reduce_scatter<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::ReduceScatter;
        let n = self.n();
        let block = check_split(c, "input", input.len(), n)?;
        self.reduce_scatter_impl(c, input, output, &vec![block; n], op, opts)
    }

    /// Reduce `input` (the sum of `counts` elements) across ranks and give the `counts[rank]`
    /// elements of block `rank` to `output`.
    pub fn reduce_scatterv<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        counts: &[usize],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        self.reduce_scatter_impl(Collective::ReduceScatterv, input, output, counts, op, opts)
    }

    fn reduce_scatter_impl<T: Element>(
        &self,
        c: Collective,
        input: &[T],
        output: &mut [T],
        counts: &[usize],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        let own = ("output", output.len());
        let whole = ("input", input.len(), "the sum of the counts (size × output)");
        self.check_blocks(c, counts, Some(own), Some(whole))?;
        let (ctx, seg, range) = self.reduce_scatter_begin::<T>(c, input.len(), counts, op, opts)?;
        let n = ctx.size;
        if matches!(op, ReduceOp::Average) && T::INTEGER {
            // Exact: quotient and remainder records (see `average`), reduced in place in
            // scratch.
            let (rec, nn) = (average::record::<T>(), n as u32);
            let mut records = ctx.scratch(input.len() * rec);
            average::pack_into(input, &[], nn, records.bytes());
            if n > 1 {
                let blocks = byte_ranges(counts, rec);
                s::reduce_scatter_ring(
                    &ctx,
                    records.bytes(),
                    &blocks,
                    &average::sum::<T>,
                    segment(opts, rec),
                )?;
            }
            average::unpack(&records.bytes()[bytes_of(&range, rec)], output, nn, 1);
            return Ok(());
        }
        let f = |d: &mut [u8], s: &[u8]| op.apply_bytes(d, s);
        let blocks = byte_ranges(counts, es::<T>());
        s::reduce_scatter_ring_into(&ctx, as_bytes(input), as_bytes_mut(output), &blocks, &f, seg)?;
        if let ReduceOp::Average = op {
            divide_bytes::<T>(as_bytes_mut(output), n as u32);
        }
        Ok(())
    }

    /// Start a reduce-scatter of `len` elements split by `counts`: the context, the ring's
    /// segment and the element range of this rank's block.
    fn reduce_scatter_begin<T: Element>(
        &self,
        c: Collective,
        len: usize,
        counts: &[usize],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<(Ctx<'_>, usize, Range<usize>)> {
        let algorithm = self.algorithm(c, len * es::<T>(), opts)?;
        let seg = segment(opts, es::<T>());
        let (count, param) = if c == Collective::ReduceScatter {
            (counts[0], seg_param(seg))
        } else {
            (len, hash_counts(counts) ^ seg_param(seg))
        };
        let call = Call { op: op.id(), count, param, ..Call::new::<T>(c, algorithm) };
        let ctx = self.begin(call, opts)?;
        let me = ctx.rank;
        let start: usize = counts[..me].iter().sum();
        Ok((ctx, seg, start..start + counts[me]))
    }

    /// Reduce-scatter in place over equal blocks (`buf.len()` divisible by the size); returns
    /// the element range of `buf` that holds this rank's result (the rest is clobbered).
    pub fn reduce_scatter_in_place<T: Element>(
        &self,
        buf: &mut [T],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<Range<usize>> {
        let c = Collective::ReduceScatter;
        let n = self.n();
        let block = check_split(c, "buf", buf.len(), n)?;
        self.reduce_scatter_run(c, buf, &vec![block; n], op, opts)
    }

    /// Reduce-scatter in place with per-rank counts; returns the element range of `buf` that
    /// holds this rank's result (the rest is clobbered).
    pub fn reduce_scatterv_in_place<T: Element>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<Range<usize>> {
        let c = Collective::ReduceScatterv;
        self.check_blocks(c, counts, None, Some(("buf", buf.len(), "the sum of the counts")))?;
        self.reduce_scatter_run(c, buf, counts, op, opts)
    }

    fn reduce_scatter_run<T: Element>(
        &self,
        c: Collective,
        buf: &mut [T],
        counts: &[usize],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<Range<usize>> {
        let (ctx, seg, range) = self.reduce_scatter_begin::<T>(c, buf.len(), counts, op, opts)?;
        let n = ctx.size;
        if matches!(op, ReduceOp::Average) && T::INTEGER {
            // Exact: quotient and remainder records (see `average`).
            let (rec, nn) = (average::record::<T>(), n as u32);
            let mut records = ctx.scratch(buf.len() * rec);
            average::pack_into(buf, &[], nn, records.bytes());
            if n > 1 {
                let blocks = byte_ranges(counts, rec);
                s::reduce_scatter_ring(
                    &ctx,
                    records.bytes(),
                    &blocks,
                    &average::sum::<T>,
                    segment(opts, rec),
                )?;
            }
            average::unpack(
                &records.bytes()[bytes_of(&range, rec)],
                &mut buf[range.clone()],
                nn,
                1,
            );
            return Ok(range);
        }
        let f = |d: &mut [u8], s: &[u8]| op.apply_bytes(d, s);
        let b = as_bytes_mut(buf);
        if n > 1 {
            let blocks = byte_ranges(counts, es::<T>());
            s::reduce_scatter_ring(&ctx, b, &blocks, &f, seg)?;
        }
        if let ReduceOp::Average = op {
            divide_bytes::<T>(&mut b[bytes_of(&range, es::<T>())], n as u32);
        }
        Ok(range)
    }
}
