//! The runners: who answers a ping (`runway runner list`), which of them serve a target, and
//! why a job's queue has no consumer (every runner serving it busy, or none up).
//!
//! It asks; it changes nothing on any runner.

use std::time::Duration;

use runway_broker::protocol::{self, Control, ControlBody, RunnerInfo, Target, VERSION, now_ms};
use runway_broker::topology::Topology;
use runway_broker::{Connection, ConsumeOptions};

use crate::exit::{self, CliError};
use crate::format;
use crate::table::{Align, Column, render};
use crate::view::{self, RunnerView};

/// How long `runner list` waits for answers.
const PING_DEADLINE: Duration = Duration::from_millis(1500);

const COLUMNS: [Column; 7] = [
    Column { header: "ID", width: 24, align: Align::Left, gap: 1 },
    Column { header: "LABELS", width: 28, align: Align::Left, gap: 1 },
    Column { header: "RUNNING", width: 7, align: Align::Right, gap: 1 },
    Column { header: "OF", width: 4, align: Align::Right, gap: 2 },
    Column { header: "KIND", width: 10, align: Align::Left, gap: 1 },
    Column { header: "VERSION", width: 8, align: Align::Left, gap: 1 },
    Column { header: "UPTIME", width: 9, align: Align::Right, gap: 0 },
];

/// `runner list`: ping every runner and print who answers before the deadline.
pub async fn list(conn: &Connection, topology: &Topology, json: bool) -> Result<u8, CliError> {
    let runners = ping(conn, topology).await?;
    let now = now_ms();
    if json {
        for info in &runners {
            crate::stdout::line(&view::line(&RunnerView::new(info, now)))?;
        }
        return Ok(exit::SUCCESS);
    }
    let rows = runners.iter().map(|info| row(info, now)).collect();
    crate::stdout::line(&render(&COLUMNS, rows))?;
    if runners.is_empty() {
        eprintln!("runway: no runner answered within {}", format::duration(protocol::to_ms(PING_DEADLINE)));
    }
    Ok(exit::SUCCESS)
}

fn row(info: &RunnerInfo, now_ms: u64) -> Vec<String> {
    let labels = runway_broker::topology::canonical_labels(&info.labels);
    let kind = if info.in_process {
        "cli"
    } else if info.by_id_only {
        "by-id"
    } else {
        "daemon"
    };
    vec![
        info.id.clone(),
        if labels.is_empty() { "-".to_owned() } else { labels },
        info.running.to_string(),
        info.concurrency.to_string(),
        kind.to_owned(),
        info.version.clone(),
        format::duration(now_ms.saturating_sub(info.started_at_ms)),
    ]
}

/// Ping every runner; who answers before the deadline, by id.
pub async fn ping(conn: &Connection, topology: &Topology) -> Result<Vec<RunnerInfo>, CliError> {
    let queue = topology.declare_reply_queue(conn).await?;
    let mut answers =
        conn.consume(&queue, &ConsumeOptions { no_ack: true, ..ConsumeOptions::with_prefetch(0) }).await?;
    let control = Control { v: VERSION, body: ControlBody::Ping { reply_to: queue.clone() } };
    topology.publish_control(conn, &control).await?;
    let mut runners: Vec<RunnerInfo> = Vec::new();
    let deadline = tokio::time::Instant::now() + PING_DEADLINE;
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, answers.next()).await {
        if let Ok(info) = protocol::decode::<RunnerInfo>(&delivery.body, "runner info") {
            runners.push(info);
        }
    }
    runners.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(runners)
}

/// Why a queue has no consumer: a runner consumes a shared queue only while it has a free
/// slot, so "no consumer" means either that every runner serving it is busy or that none is up.
/// Asks the runners (a ping) and says which, naming how many serve `target`.
pub async fn why_no_consumer(conn: &Connection, topology: &Topology, target: &Target) -> String {
    match ping(conn, topology).await {
        Ok(runners) => why_none_consumes(&runners, target),
        Err(err) => format!("no runner consumes it now (asking the runners failed: {err})"),
    }
}

/// [`why_no_consumer`] from the runners that answered.
fn why_none_consumes(runners: &[RunnerInfo], target: &Target) -> String {
    let serving: Vec<&RunnerInfo> = runners.iter().filter(|info| serves(info, target)).collect();
    match serving.len() {
        0 => "no runner that serves it is up".to_owned(),
        n => {
            let running: u32 = serving.iter().map(|info| info.running).sum();
            let slots: u32 = serving.iter().map(|info| info.concurrency).sum();
            format!(
                "{n} runner{} serve{} it and {} busy ({running} of {slots} slots in use): it runs when a slot frees",
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" },
                if n == 1 { "it is" } else { "all are" },
            )
        }
    }
}

/// Whether a runner takes jobs for `target`.
fn serves(info: &RunnerInfo, target: &Target) -> bool {
    match target {
        Target::Runner(id) => info.id == *id,
        Target::Any => !info.by_id_only,
        Target::Labels(labels) => {
            !info.by_id_only && labels.iter().all(|(key, value)| info.labels.get(key) == Some(value))
        }
    }
}

/// What an attached CLI says when its job still waits for a runner: which queue it is in, how
/// many runners consume it, and if none does, why.
pub async fn waiting_notice(conn: &Connection, topology: &Topology, target: &Target) -> String {
    match topology.job_queue_info(conn, target).await {
        Ok(Some(info)) if info.consumers == 0 => {
            let why = why_no_consumer(conn, topology, target).await;
            format!(
                "still waiting for a runner: the job is in queue `{}` ({} waiting there), which no runner \
                 consumes now: {why}",
                info.name, info.messages
            )
        }
        Ok(Some(info)) => format!(
            "still waiting for a runner: the job is in queue `{}` ({} waiting there), which {} consume",
            info.name,
            info.messages,
            match info.consumers {
                1 => "1 runner".to_owned(),
                n => format!("{n} runners"),
            }
        ),
        Ok(None) => "still waiting for a runner: the job's queue is gone".to_owned(),
        Err(err) => format!("still waiting for a runner (cannot inspect its queue: {err})"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn runner(id: &str, labels: &[(&str, &str)], running: u32, by_id_only: bool) -> RunnerInfo {
        RunnerInfo {
            v: VERSION,
            id: id.to_owned(),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            concurrency: 2,
            running,
            by_id_only,
            in_process: false,
            hostname: "h".to_owned(),
            version: "0.1.0".to_owned(),
            started_at_ms: 0,
        }
    }

    #[test]
    fn by_id_only_runners_serve_only_their_own_id() {
        let cli = runner("cli-1", &[], 0, true);
        assert!(serves(&cli, &Target::Runner("cli-1".to_owned())));
        assert!(!serves(&cli, &Target::Any));
        let labels: BTreeMap<String, String> = [("env".to_owned(), "prod".to_owned())].into();
        assert!(!serves(&cli, &Target::Labels(labels)));
    }

    #[test]
    fn a_label_target_needs_every_label() {
        let prod = runner("w-1", &[("env", "prod"), ("region", "eu")], 0, false);
        let wanted: BTreeMap<String, String> = [("env".to_owned(), "prod".to_owned())].into();
        assert!(serves(&prod, &Target::Labels(wanted)));
        let both: BTreeMap<String, String> =
            [("env".to_owned(), "prod".to_owned()), ("region".to_owned(), "us".to_owned())].into();
        assert!(!serves(&prod, &Target::Labels(both)));
    }

    #[test]
    fn nobody_consumes_because_none_is_up_or_all_are_busy() {
        assert_eq!(why_none_consumes(&[], &Target::Any), "no runner that serves it is up");
        let busy = [runner("w-1", &[], 2, false), runner("w-2", &[], 2, false)];
        assert_eq!(
            why_none_consumes(&busy, &Target::Any),
            "2 runners serve it and all are busy (4 of 4 slots in use): it runs when a slot frees"
        );
        assert_eq!(
            why_none_consumes(&busy[..1], &Target::Any),
            "1 runner serves it and it is busy (2 of 2 slots in use): it runs when a slot frees"
        );
    }

    #[test]
    fn the_table_keeps_its_columns() {
        let info = runner("w-1", &[("env", "prod")], 1, false);
        let table = render(&COLUMNS, vec![row(&info, 61_000)]);
        let lines: Vec<&str> = table.lines().collect();
        let layout = |cells: [&str; 7]| {
            format!(
                "{:<24} {:<28} {:>7} {:>4}  {:<10} {:<8} {:>9}",
                cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
            )
        };
        assert_eq!(lines[0], layout(["ID", "LABELS", "RUNNING", "OF", "KIND", "VERSION", "UPTIME"]));
        assert_eq!(lines[1], layout(["w-1", "env=prod", "1", "2", "daemon", "0.1.0", "1m 1s"]));
    }
}
