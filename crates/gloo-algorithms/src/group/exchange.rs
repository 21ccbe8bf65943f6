//! The collectives that exchange blocks without reducing: allgather and alltoall (and
//! their v and in-place forms).

use super::*;

impl<C: Communicator> Group<C> {
    // -----------------------------------------------------------------------------------
    // Allgather
    // -----------------------------------------------------------------------------------

    /// Gather every rank's `input` (all the same length) into every rank's `output`
    /// (`size × input.len()`, rank order).
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options};
    /// use gloo_transport::loopback::{LoopbackConfig, group};
    /// let out = gloo_transport::threads::run_ranks(group(3, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let mut all = [0u16; 3];
    ///     g.allgather(&[g.rank().0 as u16 * 10], &mut all, &Options::new()).unwrap();
    ///     all
    /// });
    /// assert_eq!(out, vec![[0, 10, 20]; 3]);
    /// ```
    pub fn allgather<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Allgather;
        let n = self.n();
        let want =
            input.len().checked_mul(n).ok_or_else(|| Error::invalid(c, "input: too long"))?;
        check_len(c, "output", output.len(), want, "size × input")?;
        self.allgather_run(Some(input), output, input.len(), opts)
    }

    /// Allgather in place: `buf` is `size × block` elements and this rank's block (at
    /// `rank × block`) already holds its part.
    pub fn allgather_in_place<T: Element>(&self, buf: &mut [T], opts: &Options) -> Result<()> {
        let block = check_split(Collective::Allgather, "buf", buf.len(), self.n())?;
        self.allgather_run(None, buf, block, opts)
    }

    /// Allgather into `buf`, with this rank's block taken from `input`, or already in place.
    fn allgather_run<T: Element>(
        &self,
        input: Option<&[T]>,
        buf: &mut [T],
        block: usize,
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Allgather;
        let n = self.n();
        let me = self.rank().index();
        let algorithm = self.algorithm(c, std::mem::size_of_val(buf), opts)?;
        let seg = segment(opts, es::<T>());
        let param = if algorithm == Algorithm::Ring { seg_param(seg) } else { 0 };
        let call = Call { count: block, param, ..Call::new::<T>(c, algorithm) };
        let ctx = self.begin(call, opts)?;
        let blocks = even_ranges(n, block * es::<T>());
        match (input, algorithm) {
            (Some(input), Algorithm::Ring) if n > 1 => {
                s::allgather_ring_into(&ctx, as_bytes(input), as_bytes_mut(buf), &blocks, seg)
            }
            _ => {
                if let Some(input) = input {
                    buf[me * block..(me + 1) * block].copy_from_slice(input);
                }
                if n == 1 {
                    return Ok(());
                }
                let b = as_bytes_mut(buf);
                match algorithm {
                    Algorithm::Bruck => s::allgather_bruck(&ctx, b, block * es::<T>()),
                    _ => s::allgather_ring(&ctx, b, &blocks, seg),
                }
            }
        }
    }

    /// Gather `counts[q]` elements from each rank `q` into every rank's `output`, in rank
    /// order. Every rank passes the same `counts`; `input.len()` must be `counts[rank]`.
    pub fn allgatherv<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        counts: &[usize],
        opts: &Options,
    ) -> Result<()> {
        let own = ("input", input.len());
        let whole = ("output", output.len(), "the sum of the counts");
        self.check_blocks(Collective::Allgatherv, counts, Some(own), Some(whole))?;
        self.allgatherv_run(Some(input), output, counts, opts)
    }

    /// Allgatherv in place: `buf` holds the blocks in rank order and this rank's block is
    /// already filled.
    pub fn allgatherv_in_place<T: Element>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        opts: &Options,
    ) -> Result<()> {
        let whole = ("buf", buf.len(), "the sum of the counts");
        self.check_blocks(Collective::Allgatherv, counts, None, Some(whole))?;
        self.allgatherv_run(None, buf, counts, opts)
    }

    /// Allgatherv into `buf` (checked), with this rank's block taken from `input`, or
    /// already in place.
    fn allgatherv_run<T: Element>(
        &self,
        input: Option<&[T]>,
        buf: &mut [T],
        counts: &[usize],
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Allgatherv;
        let total = buf.len();
        let algorithm = self.algorithm(c, total * es::<T>(), opts)?;
        let seg = segment(opts, es::<T>());
        let param = hash_counts(counts) ^ seg_param(seg);
        let call = Call { count: total, param, ..Call::new::<T>(c, algorithm) };
        let ctx = self.begin(call, opts)?;
        let blocks = byte_ranges(counts, es::<T>());
        match input {
            Some(input) if self.n() > 1 => {
                s::allgather_ring_into(&ctx, as_bytes(input), as_bytes_mut(buf), &blocks, seg)
            }
            _ => {
                if let Some(input) = input {
                    let mine = blocks[self.rank().index()].clone();
                    as_bytes_mut(buf)[mine].copy_from_slice(as_bytes(input));
                }
                if self.n() == 1 {
                    return Ok(());
                }
                s::allgather_ring(&ctx, as_bytes_mut(buf), &blocks, seg)
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Alltoall
    // -----------------------------------------------------------------------------------

    /// Send block `q` of `input` to rank `q`, which stores it as block `rank` of its
    /// `output` (both `size × block` elements).
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options};
    /// use gloo_transport::loopback::{LoopbackConfig, group};
    /// let out = gloo_transport::threads::run_ranks(group(2, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let r = g.rank().0 as u8;
    ///     let mut got = [0u8; 2];
    ///     g.alltoall(&[r * 10, r * 10 + 1], &mut got, &Options::new()).unwrap();
    ///     got
    /// });
    /// assert_eq!(out, vec![[0, 10], [1, 11]]);
    /// ```
    pub fn alltoall<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Alltoall;
        let n = self.n();
        check_len(c, "output", output.len(), input.len(), "the input's length")?;
        let block = check_split(c, "input", input.len(), n)?;
        let algorithm = self.algorithm(c, std::mem::size_of_val(input), opts)?;
        let seg = segment(opts, es::<T>());
        let call = Call { count: block, param: seg_param(seg), ..Call::new::<T>(c, algorithm) };
        let ctx = self.begin(call, opts)?;
        let blocks = even_ranges(n, block * es::<T>());
        let fp = ctx.fp;
        s::alltoall_pairwise(
            &ctx,
            as_bytes(input),
            &blocks,
            as_bytes_mut(output),
            &blocks,
            seg,
            &|_, _| (fp, fp),
        )
    }

    /// Send `send_counts[q]` elements (blocks of `input` in rank order) to each rank `q`, and
    /// receive `recv_counts[q]` elements from each rank `q` into `output` (rank order).
    /// Rank `a`'s `send_counts[b]` must equal rank `b`'s `recv_counts[a]`; a disagreement is
    /// a [`Mismatch`](Error::Mismatch) naming both counts.
    pub fn alltoallv<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        send_counts: &[usize],
        recv_counts: &[usize],
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Alltoallv;
        let n = self.n();
        let st = check_counts(c, "send_counts", send_counts, n)?;
        let rt = check_counts(c, "recv_counts", recv_counts, n)?;
        check_len(c, "input", input.len(), st, "the sum of send_counts")?;
        check_len(c, "output", output.len(), rt, "the sum of recv_counts")?;
        let me = self.rank().index();
        if send_counts[me] != recv_counts[me] {
            return Err(Error::invalid(
                c,
                format!(
                    "send_counts[{me}] = {} but recv_counts[{me}] = {} (this rank's block to itself)",
                    send_counts[me], recv_counts[me]
                ),
            ));
        }
        let algorithm = self.algorithm(c, std::mem::size_of_val(input), opts)?;
        let seg = segment(opts, es::<T>());
        let call = Call { param: seg_param(seg), ..Call::new::<T>(c, algorithm) };
        let ctx = self.begin(call, opts)?;
        // Per-pair fingerprints carry each pair's count, so that a disagreement is a
        // Mismatch naming both counts; every pair exchanges directly, so no watch is needed.
        ctx.without_watch();
        let info = CallInfo::decode(&ctx.fp);
        let with_count = |k: usize| {
            let mut i = info;
            i.count = k as u64;
            i.encode()
        };
        let fps =
            |to: usize, from: usize| (with_count(send_counts[to]), with_count(recv_counts[from]));
        s::alltoall_pairwise(
            &ctx,
            as_bytes(input),
            &byte_ranges(send_counts, es::<T>()),
            as_bytes_mut(output),
            &byte_ranges(recv_counts, es::<T>()),
            seg,
            &fps,
        )
    }
}
