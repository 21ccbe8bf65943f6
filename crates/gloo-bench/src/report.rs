//! What a run found, and how it is printed: a table for people, CSV for programs, JSON with
//! everything (the same fields plus the limits).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::cli::Format;
use crate::error::{Error, Result};
use crate::limits::Limits;

/// Everything one run measured. Rank 0 builds it; a local launcher receives it as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Report {
    /// Tool name and version.
    pub(crate) tool: String,
    /// `sweep`, `transport` or `limits`.
    pub(crate) mode: String,
    /// The command line that produced the report.
    #[serde(default)]
    pub(crate) command: String,
    /// Host name of rank 0.
    pub(crate) host: String,
    /// CPUs available to rank 0.
    pub(crate) cpus: usize,
    /// The transport between ranks.
    pub(crate) transport: String,
    /// How the transport waits (spin window, then sleep).
    pub(crate) waiting: String,
    /// Where the ranks ran (`--bind`).
    #[serde(default)]
    pub(crate) placement: String,
    /// World size.
    pub(crate) ranks: u32,
    /// The store ranks met through.
    pub(crate) store: String,
    /// The operation swept, in sweep mode.
    pub(crate) collective: Option<String>,
    /// Limits measured in this run.
    pub(crate) limits: Limits,
    /// One row per message size (sweep mode), operation after operation.
    pub(crate) rows: Vec<Row>,
    /// With `--collective all`: each operation at its largest size.
    #[serde(default)]
    pub(crate) summary: Vec<Summary>,
    /// One row per figure (transport mode).
    pub(crate) figures: Vec<Figure>,
    /// One row per message size (`--overlap`).
    #[serde(default)]
    pub(crate) overlap: Vec<OverlapRow>,
    /// Definitions a reader needs (e.g. what busbw means for this operation).
    pub(crate) notes: Vec<String>,
}

/// One message size of a sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    /// The operation.
    #[serde(default)]
    pub(crate) collective: String,
    /// Message size in bytes (see the notes for which buffer).
    pub(crate) bytes: u64,
    /// Elements in that buffer.
    pub(crate) elements: u64,
    /// Element type.
    pub(crate) dtype: String,
    /// Reduction, or `-`.
    pub(crate) op: String,
    /// Algorithm that ran.
    pub(crate) algorithm: String,
    /// Timed iterations.
    pub(crate) iters: u64,
    /// Fastest iteration (slowest rank of each iteration), µs.
    pub(crate) min_us: f64,
    /// Median iteration, µs.
    pub(crate) p50_us: f64,
    /// 99th-percentile iteration, µs.
    pub(crate) p99_us: f64,
    /// bytes / p50 time, GB/s (1e9 B/s); none for operations without data.
    pub(crate) algbw_gbps: Option<f64>,
    /// algbw × the nccl-tests factor of the operation, GB/s.
    pub(crate) busbw_gbps: Option<f64>,
    /// Which measured limit busbw is compared with.
    pub(crate) limit: Option<String>,
    /// busbw as a percentage of that limit.
    pub(crate) limit_pct: Option<f64>,
    /// p50 divided by the plain-socket blocking ping-pong round trip p50.
    pub(crate) x_rtt: Option<f64>,
    /// `ok`, `off`, or `FAIL: <what>`.
    pub(crate) check: String,
}

/// One operation of a `--collective all` run at its largest size: the line to look at for a
/// regression.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// The operation.
    pub(crate) collective: String,
    /// The algorithm that ran at that size.
    pub(crate) algorithm: String,
    /// The size, bytes.
    pub(crate) bytes: u64,
    /// Median iteration, µs.
    pub(crate) p50_us: f64,
    /// Bus bandwidth, GB/s.
    pub(crate) busbw_gbps: Option<f64>,
    /// Which measured limit busbw is compared with.
    pub(crate) limit: Option<String>,
    /// busbw as a percentage of that limit.
    pub(crate) limit_pct: Option<f64>,
    /// `ok`, `off`, or `FAIL: <what>`.
    pub(crate) check: String,
}

impl Summary {
    /// Each operation's row at its largest size, in the order the operations ran.
    pub(crate) fn of(rows: &[Row]) -> Vec<Summary> {
        let mut out: Vec<Summary> = Vec::new();
        for r in rows {
            let s = Summary {
                collective: r.collective.clone(),
                algorithm: r.algorithm.clone(),
                bytes: r.bytes,
                p50_us: r.p50_us,
                busbw_gbps: r.busbw_gbps,
                limit: r.limit.clone(),
                limit_pct: r.limit_pct,
                check: r.check.clone(),
            };
            match out.iter_mut().find(|o| o.collective == r.collective) {
                Some(o) if o.bytes <= r.bytes => *o = s,
                Some(_) => {}
                None => out.push(s),
            }
        }
        out
    }
}

/// One message size of `--overlap`: a compute loop beside a background allreduce. Times
/// are the p50 over iterations of the slowest rank, in µs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OverlapRow {
    /// The allreduce's buffer (f32 sum).
    pub(crate) bytes: u64,
    /// Timed iterations of each series.
    pub(crate) iters: u64,
    /// Passes of the compute loop (calibrated on rank 0 to last about `comm_us`), or µs of
    /// sleep with `--overlap-sleep`.
    pub(crate) units: u64,
    /// The blocking allreduce alone.
    pub(crate) comm_us: f64,
    /// The compute loop alone.
    pub(crate) compute_us: f64,
    /// The loop, then the blocking allreduce (no overlap: the blocking figure).
    pub(crate) serial_us: f64,
    /// `start_allreduce`, the loop, `wait`.
    pub(crate) overlap_us: f64,
    /// serial / max(compute, comm).
    pub(crate) serial_ratio: f64,
    /// overlap / max(compute, comm): 1 is perfect overlap, the goal is at most 1.15.
    pub(crate) overlap_ratio: f64,
    /// How much of the shorter of compute and comm the overlap hid:
    /// (compute + comm - overlap) / min(compute, comm), in percent.
    pub(crate) hidden_pct: f64,
    /// `ok`, `off`, or what failed (the checked call ran through `start_allreduce`).
    pub(crate) check: String,
}

/// `--overlap`'s columns.
pub(crate) const OVERLAP_COLUMNS: [&str; 11] = [
    "bytes",
    "iters",
    "units",
    "comm_us",
    "compute_us",
    "serial_us",
    "overlap_us",
    "serial_ratio",
    "overlap_ratio",
    "hidden_pct",
    "check",
];

fn overlap_cells(r: &OverlapRow) -> Vec<String> {
    vec![
        r.bytes.to_string(),
        r.iters.to_string(),
        r.units.to_string(),
        format!("{:.1}", r.comm_us),
        format!("{:.1}", r.compute_us),
        format!("{:.1}", r.serial_us),
        format!("{:.1}", r.overlap_us),
        format!("{:.3}", r.serial_ratio),
        format!("{:.3}", r.overlap_ratio),
        format!("{:.1}", r.hidden_pct),
        r.check.clone(),
    ]
}

/// One figure of the transport benchmark, beside its plain-socket counterpart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Figure {
    /// What was measured.
    pub(crate) name: String,
    /// The library's figure.
    pub(crate) value: f64,
    /// Unit of `value` and `plain`.
    pub(crate) unit: String,
    /// The plain-socket (or bound) figure it is compared with.
    pub(crate) plain: Option<f64>,
    /// value / plain.
    pub(crate) ratio: Option<f64>,
    /// The goal for the ratio, as text.
    pub(crate) goal: String,
}

impl Report {
    /// Print to stdout in `format` and write JSON to `json` if asked.
    pub(crate) fn emit(&self, format: Format, json: Option<&std::path::Path>) -> Result<()> {
        let text = match format {
            Format::Table => self.table(),
            Format::Csv => self.csv(),
        };
        print!("{text}");
        if let Some(path) = json {
            let body = serde_json::to_string_pretty(self)
                .map_err(|e| Error::Invalid(format!("encoding the report as JSON: {e}")))?;
            std::fs::write(path, body + "\n")
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok(())
    }

    /// The header lines (each starting with `#`).
    pub(crate) fn header(&self) -> String {
        let mut s = String::new();
        let l = &self.limits;
        let _ = writeln!(
            s,
            "# {} {}: host {}, {} cpus, transport {} ({}), {} ranks, store {}",
            self.tool,
            self.mode,
            self.host,
            self.cpus,
            self.transport,
            self.waiting,
            self.ranks,
            self.store
        );
        let mut lim = Vec::new();
        if let Some(p) = &l.pingpong_blocking_us {
            lim.push(format!("ping-pong RTT p50 {:.1} us blocking", p.p50));
        }
        if let Some(p) = &l.pingpong_spin_us {
            lim.push(format!("{:.1} us busy-poll", p.p50));
        }
        if let Some(g) = l.stream_oneway_gbps {
            let bufs = match l.socket_buffer_bytes {
                0 => "kernel socket buffers".to_string(),
                b => format!("{} socket buffers", human_bytes(b)),
            };
            lim.push(format!(
                "stream one-way {g:.2} GB/s ({} writes, {bufs})",
                human_bytes(l.stream_message_bytes)
            ));
        }
        if let Some(g) = l.stream_duplex_gbps {
            lim.push(format!("full duplex {g:.2} GB/s per direction"));
        }
        if let Some(p) = &l.shm_pingpong_us {
            lim.push(format!("shm channel ping-pong RTT p50 {:.2} us busy-poll", p.p50));
        }
        if let Some(g) = l.shm_stream_gbps {
            lim.push(format!("shm channel stream one-way {g:.2} GB/s"));
        }
        if let Some(g) = l.memcpy_gbps {
            lim.push(format!("memcpy {g:.2} GB/s"));
        }
        if let Some(g) = l.add_f32_gbps {
            lim.push(format!("f32 add {g:.2} GB/s"));
        }
        if lim.is_empty() {
            let _ = writeln!(s, "# limits: not measured");
        } else {
            let what = if l.shm_pingpong_us.is_some() {
                "plain sockets and gloo-shm's bare channel"
            } else {
                "plain sockets"
            };
            let _ = writeln!(
                s,
                "# limits ({what} between ranks 0 and 1, this run): {}",
                lim.join(", ")
            );
        }
        if !self.placement.is_empty() {
            let _ = writeln!(s, "# placement: {}", self.placement);
        }
        if !self.command.is_empty() {
            let _ = writeln!(s, "# command: {}", self.command);
        }
        for n in &self.notes {
            let _ = writeln!(s, "# {n}");
        }
        s
    }

    fn table(&self) -> String {
        let mut s = self.header();
        let header: Vec<String> = ROW_COLUMNS.iter().map(|c| c.to_string()).collect();
        if self.summary.is_empty() {
            if !self.rows.is_empty() {
                let body: Vec<Vec<String>> = self.rows.iter().map(row_cells).collect();
                s.push_str(&align(&header, &body));
            }
        } else {
            // One table per operation, then the summary.
            for sum in &self.summary {
                let rows = self.rows.iter().filter(|r| r.collective == sum.collective);
                let body: Vec<Vec<String>> = rows.map(row_cells).collect();
                let _ = writeln!(s, "\n# {}", sum.collective);
                s.push_str(&align(&header, &body));
            }
            let _ = writeln!(s, "\n# summary: each operation at its largest size");
            let header: Vec<String> = SUMMARY_COLUMNS.iter().map(|c| c.to_string()).collect();
            let body: Vec<Vec<String>> = self.summary.iter().map(summary_cells).collect();
            s.push_str(&align(&header, &body));
        }
        if !self.overlap.is_empty() {
            let header: Vec<String> = OVERLAP_COLUMNS.iter().map(|c| c.to_string()).collect();
            let body: Vec<Vec<String>> = self.overlap.iter().map(overlap_cells).collect();
            s.push_str(&align(&header, &body));
        }
        if !self.figures.is_empty() {
            let header: Vec<String> = FIGURE_COLUMNS.iter().map(|c| c.to_string()).collect();
            let body: Vec<Vec<String>> = self.figures.iter().map(figure_cells).collect();
            s.push_str(&align(&header, &body));
        }
        s
    }

    fn csv(&self) -> String {
        let mut s = String::new();
        if !self.rows.is_empty() {
            // The operation goes last, so that the columns keep the table's positions.
            s.push_str(&ROW_COLUMNS.join(","));
            s.push_str(",collective\n");
            for r in &self.rows {
                let mut cells = row_cells(r);
                cells.push(r.collective.clone());
                s.push_str(&cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","));
                s.push('\n');
            }
        }
        if !self.figures.is_empty() {
            s.push_str(&FIGURE_COLUMNS.join(","));
            s.push('\n');
            for f in &self.figures {
                s.push_str(
                    &figure_cells(f).iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","),
                );
                s.push('\n');
            }
        }
        if !self.overlap.is_empty() {
            s.push_str(&OVERLAP_COLUMNS.join(","));
            s.push('\n');
            for r in &self.overlap {
                s.push_str(
                    &overlap_cells(r).iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","),
                );
                s.push('\n');
            }
        }
        if self.rows.is_empty() && self.figures.is_empty() && self.overlap.is_empty() {
            s.push_str("limit,value,unit\n");
            for (name, v, unit) in limit_list(&self.limits) {
                let _ = writeln!(s, "{name},{v:.3},{unit}");
            }
        }
        s
    }
}

/// The sweep's columns, in order (the table and CSV share them).
pub(crate) const ROW_COLUMNS: [&str; 15] = [
    "bytes",
    "elements",
    "dtype",
    "op",
    "algorithm",
    "iters",
    "min_us",
    "p50_us",
    "p99_us",
    "algbw_GBps",
    "busbw_GBps",
    "limit",
    "pct_limit",
    "x_rtt",
    "check",
];

/// The summary's columns.
pub(crate) const SUMMARY_COLUMNS: [&str; 8] =
    ["collective", "algorithm", "bytes", "p50_us", "busbw_GBps", "limit", "pct_limit", "check"];

/// The transport benchmark's columns.
pub(crate) const FIGURE_COLUMNS: [&str; 6] = ["measure", "value", "unit", "plain", "ratio", "goal"];

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"))
}

fn row_cells(r: &Row) -> Vec<String> {
    vec![
        r.bytes.to_string(),
        r.elements.to_string(),
        r.dtype.clone(),
        r.op.clone(),
        r.algorithm.clone(),
        r.iters.to_string(),
        format!("{:.1}", r.min_us),
        format!("{:.1}", r.p50_us),
        format!("{:.1}", r.p99_us),
        opt(r.algbw_gbps, 3),
        opt(r.busbw_gbps, 3),
        r.limit.clone().unwrap_or_else(|| "-".into()),
        opt(r.limit_pct, 1),
        opt(r.x_rtt, 2),
        r.check.clone(),
    ]
}

fn summary_cells(r: &Summary) -> Vec<String> {
    vec![
        r.collective.clone(),
        r.algorithm.clone(),
        r.bytes.to_string(),
        format!("{:.1}", r.p50_us),
        opt(r.busbw_gbps, 3),
        r.limit.clone().unwrap_or_else(|| "-".into()),
        opt(r.limit_pct, 1),
        r.check.clone(),
    ]
}

fn figure_cells(f: &Figure) -> Vec<String> {
    vec![
        f.name.clone(),
        format!("{:.3}", f.value),
        f.unit.clone(),
        opt(f.plain, 3),
        opt(f.ratio, 3),
        f.goal.clone(),
    ]
}

fn csv_cell(c: &str) -> String {
    if c.contains([',', '"', '\n']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_string()
    }
}

/// Right-aligns numbers and left-aligns text under a header.
fn align(header: &[String], body: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in body {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let numeric = |i: usize| body.iter().all(|r| r[i] == "-" || r[i].parse::<f64>().is_ok());
    let right: Vec<bool> = (0..header.len()).map(numeric).collect();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            if right[i] {
                let _ = write!(s, "{c:>width$}", width = w[i]);
            } else {
                let _ = write!(s, "{c:<width$}", width = w[i]);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut s = line(header);
    for row in body {
        s.push_str(&line(row));
    }
    s
}

fn limit_list(l: &Limits) -> Vec<(&'static str, f64, &'static str)> {
    let mut v = Vec::new();
    if let Some(p) = &l.pingpong_blocking_us {
        v.push(("pingpong_blocking_p50", p.p50, "us"));
    }
    if let Some(p) = &l.pingpong_spin_us {
        v.push(("pingpong_spin_p50", p.p50, "us"));
    }
    if let Some(g) = l.stream_oneway_gbps {
        v.push(("stream_oneway", g, "GB/s"));
    }
    if let Some(g) = l.stream_duplex_gbps {
        v.push(("stream_duplex_per_direction", g, "GB/s"));
    }
    if let Some(p) = &l.shm_pingpong_us {
        v.push(("shm_pingpong_spin_p50", p.p50, "us"));
    }
    if let Some(g) = l.shm_stream_gbps {
        v.push(("shm_stream_oneway", g, "GB/s"));
    }
    if let Some(g) = l.memcpy_gbps {
        v.push(("memcpy", g, "GB/s"));
    }
    if let Some(g) = l.add_f32_gbps {
        v.push(("add_f32", g, "GB/s"));
    }
    v
}

/// `67108864` → `64 MiB`.
pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (m, u) in UNITS {
        if b >= m && b.is_multiple_of(m) {
            return format!("{} {u}", b / m);
        }
    }
    format!("{b} B")
}

/// This process's command line, as a shell would show it (arguments with spaces quoted).
pub(crate) fn command_line() -> String {
    std::env::args()
        .enumerate()
        .map(|(i, a)| {
            let a = if i == 0 { "gloo-bench".to_string() } else { a };
            if a.contains(' ') { format!("'{a}'") } else { a }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// This machine's host name (`?` if it cannot be read).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            tool: "gloo-bench 0".into(),
            mode: "sweep".into(),
            command: "gloo-bench".into(),
            host: "h".into(),
            cpus: 2,
            transport: "tcp".into(),
            waiting: "busy-poll 50 us".into(),
            placement: "bind core".into(),
            ranks: 2,
            store: "file".into(),
            collective: Some("sendrecv".into()),
            limits: Limits::default(),
            rows: vec![Row {
                collective: "sendrecv".into(),
                bytes: 4,
                elements: 1,
                dtype: "f32".into(),
                op: "-".into(),
                algorithm: "direct".into(),
                iters: 10,
                min_us: 1.0,
                p50_us: 2.0,
                p99_us: 3.0,
                algbw_gbps: Some(0.002),
                busbw_gbps: Some(0.002),
                limit: None,
                limit_pct: None,
                x_rtt: None,
                check: "ok".into(),
            }],
            summary: vec![],
            figures: vec![],
            overlap: vec![],
            notes: vec!["a, note".into()],
        }
    }

    #[test]
    fn table_and_csv_carry_every_column() {
        let r = sample();
        let t = r.table();
        for c in ROW_COLUMNS {
            assert!(t.contains(c), "{c} missing from\n{t}");
        }
        let csv = r.csv();
        let mut lines = csv.lines();
        assert_eq!(lines.next().unwrap(), ROW_COLUMNS.join(",") + ",collective");
        assert_eq!(lines.next().unwrap().split(',').count(), ROW_COLUMNS.len() + 1);
    }

    #[test]
    fn the_summary_keeps_each_operations_largest_size_and_the_table_shows_it() {
        let mut r = sample();
        let row = r.rows[0].clone();
        let big = Row { bytes: 64, p50_us: 9.0, ..row.clone() };
        let other = Row {
            collective: "barrier".into(),
            bytes: 0,
            algorithm: "dissemination".into(),
            ..row
        };
        r.rows = vec![r.rows[0].clone(), big, other];
        r.summary = Summary::of(&r.rows);
        let got: Vec<(&str, u64)> =
            r.summary.iter().map(|s| (s.collective.as_str(), s.bytes)).collect();
        assert_eq!(got, [("sendrecv", 64), ("barrier", 0)]);
        let t = r.table();
        assert!(t.contains("# summary"), "{t}");
        for c in SUMMARY_COLUMNS {
            assert!(t.contains(c), "{c} missing from\n{t}");
        }
        assert!(t.contains("# sendrecv") && t.contains("# barrier"), "{t}");
    }

    #[test]
    fn json_round_trips() {
        let r = sample();
        let s = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&s).unwrap();
        assert_eq!(back.rows[0].bytes, 4);
        assert_eq!(back.notes, r.notes);
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(1000), "1000 B");
    }
}
