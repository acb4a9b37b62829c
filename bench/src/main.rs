//! `make bench`: runway's figures beside a ceiling measured in the same run, printed as a table
//! and written to target/bench.json.
//!
//! Every figure is a ratio against its ceiling, because these machines are shared and noisy:
//! absolute numbers drift, ratios measured side by side mostly do not. Nothing here asserts a
//! time limit; the table is for people and for comparing runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod amqp;
mod history;

/// One figure of the table.
pub(crate) struct Figure {
    pub(crate) name: &'static str,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) ceiling: Option<f64>,
    /// A second ceiling: the bare two-message round trip, for the AMQP figures.
    pub(crate) bare: Option<f64>,
    /// What the ratio means, for the table.
    pub(crate) note: &'static str,
}

fn main() -> Result<()> {
    let bin = release_dir()?;
    let runway = bin.join("runway");
    if !runway.exists() {
        bail!("{} is missing: run `make bench` (it builds the release binaries first)", runway.display());
    }
    // `make bench` runs every group; naming groups (`cargo run --release -p runway-bench --
    // history`) runs only those, to iterate on one figure, and leaves target/bench.json alone.
    let groups: Vec<String> = std::env::args().skip(1).collect();
    for group in &groups {
        if !GROUPS.contains(&group.as_str()) {
            bail!("unknown benchmark group `{group}`: expected one of {}", GROUPS.join(", "));
        }
    }
    let wanted = |group: &str| groups.is_empty() || groups.iter().any(|g| g == group);
    let work = tempfile::tempdir().context("temp dir")?;
    let mut figures = Vec::new();
    if wanted("local") {
        figures.extend(local_overhead(&runway, work.path())?);
        figures.extend(local_log_streaming(&runway, work.path())?);
    }
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    if wanted("amqp") {
        figures.extend(runtime.block_on(amqp::figures(&bin))?);
    } else if wanted("dispatch") {
        figures.extend(runtime.block_on(amqp::dispatch_figures(&bin))?.figures);
    }
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    if wanted("history") {
        figures.extend(runtime.block_on(history::figures(&bin, &url))?);
    }
    print_and_save(&figures, groups.is_empty())
}

/// The groups of figures, by the argument that selects them.
/// `dispatch` is the dispatch and round-trip part of `amqp` alone.
const GROUPS: [&str; 4] = ["local", "amqp", "dispatch", "history"];

fn release_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("own path")?;
    Ok(exe.parent().context("binary directory")?.to_path_buf())
}

fn write_project(dir: &Path, toml: &str) -> Result<()> {
    std::fs::write(dir.join("runway.toml"), toml).context("write runway.toml")
}

fn time(mut command: Command) -> Result<Duration> {
    let start = Instant::now();
    let status = command.stdout(Stdio::null()).stderr(Stdio::null()).status().context("spawn")?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(elapsed)
}

/// A `/proc/<pid>/status` memory field (`VmRSS`, `VmHWM`) in MB.
pub(crate) fn proc_mb(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("read /proc/PID/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{field} of process {pid}"))?;
    Ok(kb / 1024.0)
}

pub(crate) fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// `runway run` of `true` in local mode against `sh -c true`, median of many runs each.
fn local_overhead(runway: &Path, work: &Path) -> Result<Vec<Figure>> {
    let dir = work.join("overhead");
    std::fs::create_dir_all(&dir)?;
    write_project(&dir, "[operations.noop]\nrun = \"true\"\n")?;
    let rounds = 60;
    let mut direct = Vec::new();
    let mut through = Vec::new();
    for _ in 0..rounds {
        let mut sh = Command::new("sh");
        sh.args(["-c", "true"]);
        direct.push(time(sh)?);
        let mut cli = Command::new(runway);
        cli.args(["--quiet", "run", "noop"]).current_dir(&dir).env_remove("RUNWAY_SERVER");
        through.push(time(cli)?);
    }
    let direct = median(direct).as_secs_f64() * 1000.0;
    let through = median(through).as_secs_f64() * 1000.0;
    Ok(vec![Figure {
        name: "local_overhead_ms",
        value: through - direct,
        unit: "ms",
        ceiling: Some(direct),
        bare: None,
        note: "runway run true minus sh -c true (ceiling: sh -c true itself)",
    }])
}

/// `seq 1 N` through `runway run` into a file, against `seq 1 N > file`.
fn local_log_streaming(runway: &Path, work: &Path) -> Result<Vec<Figure>> {
    let n: u64 = 2_000_000;
    let dir = work.join("stream");
    std::fs::create_dir_all(&dir)?;
    // `seqm` names a secret, so every line goes through the masker (the value never matches: the
    // output stays seq's, and the cost measured is the scan).
    write_project(
        &dir,
        &format!(
            "[operations.seq]\nrun = \"seq 1 {n}\"\n[operations.seqm]\nrun = \"seq 1 {n}\"\nsecrets = [\"BENCH_SECRET\"]\n"
        ),
    )?;
    let direct_file = dir.join("direct.txt");
    let through_file = dir.join("through.txt");
    let mut direct = Vec::new();
    let mut through = Vec::new();
    let mut masked = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let status =
            Command::new("seq").args(["1", &n.to_string()]).stdout(std::fs::File::create(&direct_file)?).status()?;
        direct.push(start.elapsed());
        if !status.success() {
            bail!("seq failed");
        }
        let start = Instant::now();
        let status = Command::new(runway)
            .args(["--quiet", "run", "seq"])
            .current_dir(&dir)
            .env_remove("RUNWAY_SERVER")
            .stdout(std::fs::File::create(&through_file)?)
            .status()?;
        through.push(start.elapsed());
        if !status.success() {
            bail!("runway run seq failed: {status}");
        }
        if std::fs::read(&direct_file)? != std::fs::read(&through_file)? {
            bail!("runway's output differs from seq's: a line is missing or out of order");
        }
        let start = Instant::now();
        let status = Command::new(runway)
            .args(["--quiet", "run", "seqm"])
            .current_dir(&dir)
            .env_remove("RUNWAY_SERVER")
            .env("BENCH_SECRET", "a-secret-that-seq-never-prints")
            .stdout(std::fs::File::create(&through_file)?)
            .status()?;
        masked.push(start.elapsed());
        if !status.success() {
            bail!("runway run seqm failed: {status}");
        }
        if std::fs::read(&direct_file)? != std::fs::read(&through_file)? {
            bail!("runway's masked output differs from seq's: a line is missing or out of order");
        }
    }
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    Ok(vec![
        Figure {
            name: "log_lines_per_s_local",
            value: rate(median(through.clone())),
            unit: "lines/s",
            ceiling: Some(rate(median(direct))),
            bare: None,
            note: "seq 1 2000000 through runway (local mode) into a file (ceiling: seq > file)",
        },
        Figure {
            name: "log_lines_per_s_local_masked",
            value: rate(median(masked)),
            unit: "lines/s",
            ceiling: Some(rate(median(through))),
            bare: None,
            note: "the same with a secret to mask (ceiling: the same run without one): masking's cost",
        },
    ])
}

fn print_and_save(figures: &[Figure], save: bool) -> Result<()> {
    let width = figures.iter().map(|figure| figure.name.len()).max().unwrap_or(0).max("figure".len());
    println!(
        "{:<width$} {:>14} {:>14} {:>8} {:>14} {:>8}  unit / what",
        "figure", "value", "ceiling", "ratio", "bare ceiling", "ratio"
    );
    let mut json = BTreeMap::new();
    let ratio_to = |ceiling: Option<f64>, value: f64| ceiling.filter(|c| *c != 0.0).map(|ceiling| value / ceiling);
    let show = |value: Option<f64>, digits: usize| value.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    for figure in figures {
        let ratio = ratio_to(figure.ceiling, figure.value);
        let bare_ratio = ratio_to(figure.bare, figure.value);
        println!(
            "{:<width$} {:>14.2} {:>14} {:>8} {:>14} {:>8}  {} ({})",
            figure.name,
            figure.value,
            show(figure.ceiling, 2),
            show(ratio, 3),
            show(figure.bare, 2),
            show(bare_ratio, 3),
            figure.unit,
            figure.note
        );
        json.insert(
            figure.name,
            serde_json::json!({
                "value": figure.value,
                "unit": figure.unit,
                "ceiling": figure.ceiling,
                "ratio": ratio,
                "ceiling_bare": figure.bare,
                "ratio_bare": bare_ratio,
            }),
        );
    }
    if !save {
        return Ok(());
    }
    let target = release_dir()?.parent().context("target dir")?.join("bench.json");
    std::fs::write(&target, serde_json::to_vec_pretty(&json)?)?;
    println!("\nwritten to {}", target.display());
    Ok(())
}
