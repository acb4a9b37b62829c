//! Reading a runner's HTTP endpoints (`runway-worker --metrics-addr`): a plain HTTP GET,
//! the Prometheus text read into samples, and polling a scrape until a value arrives.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{PATIENCE, Worker};

/// How often a poll scrapes again: the cadence of the poll, not a wait for anything.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// An HTTP answer: the status code and the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// `GET path` on `addr` (host:port), read to the end of the connection. HTTP/1.0, so that the
/// body comes whole, never chunked.
pub async fn get(addr: &str, path: &str) -> Answer {
    let mut stream =
        tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read the answer");
    let text = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    Answer { status, body: body.to_owned() }
}

/// The address the worker said it serves metrics at (it logs it before "serving").
pub fn metrics_addr(worker: &Worker) -> String {
    let log = worker.log();
    let url = log
        .lines()
        .find_map(|line| line.split("metrics=http://").nth(1))
        .unwrap_or_else(|| panic!("the worker did not say where its metrics are: {log}"));
    url.trim_end_matches("/metrics").to_owned()
}

/// One scrape of `/metrics`, as samples.
#[derive(Debug)]
pub struct Scrape {
    pub text: String,
}

impl Scrape {
    /// The value of the sample `name` whose labels include every one of `labels`; the sum if
    /// several match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for line in self.text.lines().filter(|line| !line.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric != name {
                continue;
            }
            let rest = rest.trim_end_matches('}');
            if labels.iter().all(|(key, wanted)| rest.split(',').any(|pair| pair == format!("{key}=\"{wanted}\""))) {
                let value: f64 = value.parse().expect("a number");
                found = Some(found.unwrap_or(0.0) + value);
            }
        }
        found
    }

    /// Every metric name the scrape holds (without `_bucket`, `_count` and the like).
    pub fn families(&self) -> Vec<String> {
        self.text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split(' ').next())
            .map(str::to_owned)
            .collect()
    }

    /// Every sample name, as a query would name it (`_bucket`, `_total`, ...).
    pub fn sample_names(&self) -> Vec<String> {
        self.text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .map(str::to_owned)
            .collect()
    }
}

pub async fn scrape(addr: &str) -> Scrape {
    let answer = get(addr, "/metrics").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    Scrape { text: answer.body }
}

/// Scrape `addr` until `until` holds of a scrape; that scrape.
pub async fn scrape_until(addr: &str, what: &str, until: impl Fn(&Scrape) -> bool) -> Scrape {
    let mut last = None;
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let scrape = scrape(addr).await;
            if until(&scrape) {
                return scrape;
            }
            last = Some(scrape.text);
            tokio::time::sleep(POLL_EVERY).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("the metrics never showed {what}; the last scrape:\n{}", last.unwrap_or_default()))
}

/// `GET path` until `until` holds of the answer; that answer.
pub async fn get_until(addr: &str, path: &str, what: &str, until: impl Fn(&Answer) -> bool) -> Answer {
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let answer = get(addr, path).await;
            if until(&answer) {
                return answer;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{path} never showed {what}"))
}
