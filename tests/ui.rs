//! `runway ui` in a real headless browser (Debian's chromium, driven over WebDriver through
//! chromedriver; `make browser` installs both): jobs queued on the real RabbitMQ and run by a
//! real worker are listed, a running job's page shows new log lines as they come, its cancel
//! button ends it `cancelled`, and a read-only view offers no button. A screenshot of the job's
//! page is kept as target/ui-screenshot.png.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use crate::support::users::User;
use crate::support::{Cli, Namespace, PATIENCE, Project, args, op};

/// A `runway ui` running; its address, from what it printed.
struct WebView {
    /// Killed when dropped.
    _cli: Cli,
    url: String,
}

async fn web_view(project: &Project, flags: &[String], extra: &[&str]) -> WebView {
    let mut ui_args = vec!["ui", "--listen", "127.0.0.1:0"];
    ui_args.extend_from_slice(extra);
    let mut cli = project.spawn_runway(&args(flags, &ui_args));
    let line = cli.stderr_line_containing("serving http://").await;
    let url = line.split_whitespace().find(|word| word.starts_with("http://")).expect("an address").to_owned();
    cli.stderr_line_containing("loopback only").await;
    WebView { _cli: cli, url: url.trim_end_matches('/').to_owned() }
}

/// chromedriver on a port of its own, in a process group of its own with the chromium it
/// starts: the whole group is killed when dropped, also when a test failed before it closed
/// its browser session (chromium would otherwise outlive the test).
struct Driver {
    process: tokio::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = self.process.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

async fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let process = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver runs (`make browser` installs Debian's chromium-driver)");
    Driver { process, url: format!("http://127.0.0.1:{port}") }
}

/// A headless chromium session through `driver`, once chromedriver answers.
async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            // Root in a container has no sandbox to give chromium.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"],
        }),
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let connected = ClientBuilder::rustls()
            .expect("TLS roots for the WebDriver client")
            .capabilities(capabilities.clone())
            .connect(&driver.url)
            .await;
        match connected {
            Ok(client) => return client,
            // chromedriver is still starting: ask again.
            Err(err) if tokio::time::Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("no WebDriver session from chromedriver at {}: {err}", driver.url),
        }
    }
}

/// Ask the page until `check` holds for the text of `css`; that text.
async fn wait_for_text(client: &Client, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if check(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: `{css}` never did; it last read {last:?}");
}

/// Go to `url` and wait until the browser shows it: a page with a live log open may keep the
/// previous page up a moment after `goto` returned.
async fn open(client: &Client, url: &str) {
    client.goto(url).await.unwrap_or_else(|err| panic!("open {url}: {err}"));
    wait_for_url(client, |current| current == url).await;
}

/// Wait until the browser's URL passes `check`.
async fn wait_for_url(client: &Client, check: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let current = client.current_url().await.map(|url| url.to_string()).unwrap_or_default();
        let ready = client.execute("return document.readyState", vec![]).await.ok();
        if check(&current) && ready.as_ref().and_then(|state| state.as_str()) == Some("complete") {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the browser stayed at {current}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The highest `tick N` in a log.
fn last_tick(log: &str) -> u32 {
    log.lines().filter_map(|line| line.strip_prefix("tick ")?.trim().parse().ok()).max().unwrap_or(0)
}

/// target/, from the test binary's place in target/debug/deps.
fn target_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    exe.ancestors().nth(3).expect("target/<profile>/deps/<exe>").to_path_buf()
}

#[tokio::test]
async fn the_web_view_lists_jobs_follows_a_log_live_and_cancels_from_the_page() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let slow = "i=0; while true; do i=$((i+1)); echo tick $i; echo warn $i >&2; sleep 0.3; done";
    let project =
        Project::new(&format!("{}{}", op("quick", "printf '\\033[32mgreen\\033[0m done\\n'"), op("slow", slow)));
    let _worker = ns.worker("w-ui", &[]).await;
    project.runway(&args(&flags, &["run", "quick", "--remote"])).await.assert_code(0);
    let detached = project.runway(&args(&flags, &["run", "slow", "--remote", "--detach"])).await;
    detached.assert_code(0);
    let slow_id = detached.stdout().trim().to_owned();
    let short = &slow_id.replace('-', "")[20..];

    let view = web_view(&project, &flags, &[]).await;
    let driver = chromedriver().await;
    let client = browser(&driver).await;

    // The jobs, newest first, with their short ids.
    open(&client, &format!("{}/jobs", view.url)).await;
    let table = wait_for_text(&client, "#jobs", "the jobs page lists both jobs", |text| {
        text.contains("quick") && text.contains("slow")
    })
    .await;
    assert!(table.contains(short), "the short id {short} is shown: {table}");
    let rows = client.find_all(Locator::Css("tr.job")).await.expect("rows");
    assert_eq!(rows.len(), 2, "{table}");
    let quick_id = rows[1].attr("data-id").await.expect("attr").expect("the quick job's id");
    assert_eq!(rows[0].attr("data-id").await.expect("attr").as_deref(), Some(slow_id.as_str()), "newest first");
    // A filter by operation.
    open(&client, &format!("{}/jobs?operation=quick", view.url)).await;
    let filtered = wait_for_text(&client, "#jobs", "the filter keeps quick", |text| text.contains("quick")).await;
    assert!(!filtered.contains("slow") && filtered.contains("success"), "{filtered}");

    // A finished job's page: its log with the job's own colours removed, never shown raw.
    open(&client, &format!("{}/jobs/{quick_id}", view.url)).await;
    let log = wait_for_text(&client, "#log", "the quick job's log", |text| text.contains("done")).await;
    assert!(log.contains("green done") && !log.contains('\u{1b}') && !log.contains("[32m"), "{log:?}");
    wait_for_text(&client, "#state", "the quick job succeeded", |text| text == "success").await;
    assert!(client.find(Locator::Css("#cancel")).await.is_err(), "a finished job offers no cancel");

    // A job queued while the list is open shows up in it, with no reload.
    open(&client, &format!("{}/jobs", view.url)).await;
    let later = project.runway(&args(&flags, &["run", "quick", "--remote", "--detach"])).await;
    later.assert_code(0);
    let later_id = later.stdout().trim().to_owned();
    wait_for_text(&client, "#jobs", "a new job appears in the open list", |text| {
        text.contains(&later_id.replace('-', "")[20..])
    })
    .await;

    // The running job's page: new log lines arrive while it is open, stderr told apart.
    open(&client, &format!("{}/jobs", view.url)).await;
    client
        .find(Locator::Css(&format!("a[title='{slow_id}']")))
        .await
        .expect("the slow job's link")
        .click()
        .await
        .expect("open it");
    wait_for_url(&client, |current| current.ends_with(&slow_id)).await;
    let first = wait_for_text(&client, "#log", "the log shows lines", |text| last_tick(text) >= 1).await;
    let seen = last_tick(&first);
    let later = wait_for_text(&client, "#log", "new lines arrive live", |text| last_tick(text) >= seen + 3).await;
    assert!(later.contains("warn 1"), "{later}");
    let stderr_lines = client.find_all(Locator::Css("#log .stderr")).await.expect("stderr spans");
    assert!(!stderr_lines.is_empty(), "stderr lines are marked apart");
    assert_eq!(wait_for_text(&client, "#state", "running", |text| text == "running").await, "running");
    let screenshot = client.screenshot().await.expect("a screenshot");
    std::fs::write(target_dir().join("ui-screenshot.png"), &screenshot).expect("keep the screenshot under target/");

    // A read-only view of the same job offers no cancel.
    let read_only = web_view(&project, &flags, &["--read-only"]).await;
    open(&client, &format!("{}/jobs/{short}", read_only.url)).await;
    wait_for_text(&client, "#state", "read-only page", |text| text == "running").await;
    assert!(client.find(Locator::Css("#cancel")).await.is_err(), "a read-only view offers a cancel button");

    // Cancel from the page: the job ends cancelled, and the page says so.
    open(&client, &format!("{}/jobs/{slow_id}", view.url)).await;
    wait_for_text(&client, "#state", "the job's page again", |text| text == "running").await;
    let button = match client.wait().at_most(PATIENCE).for_element(Locator::Css("#cancel")).await {
        Ok(button) => button,
        Err(err) => panic!("no cancel button ({err}) on: {}", client.source().await.unwrap_or_default()),
    };
    button.click().await.expect("click cancel");
    wait_for_text(&client, "#state", "the job ends cancelled", |text| text == "cancelled").await;
    let inspect = project.runway(&args(&flags, &["job", "inspect", &slow_id, "--json"])).await;
    inspect.assert_code(0);
    assert!(inspect.stdout().contains("\"cancelled\""), "{}", inspect.stdout());

    // The runners and queues pages.
    open(&client, &format!("{}/runners", view.url)).await;
    wait_for_text(&client, "#runners", "the worker is listed", |text| text.contains("w-ui")).await;
    open(&client, &format!("{}/queues", view.url)).await;
    wait_for_text(&client, "#queues", "jobs.any is listed", |text| text.contains(".jobs.any")).await;

    client.close().await.expect("end the browser session");
    drop(read_only);
    drop(view);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_web_view_whose_login_may_not_cancel_says_so_and_stops_offering_the_button() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    let observer = User::with_role(&ns.name, "observer");
    let project = Project::new(&op("slow", "while true; do echo tick; sleep 0.3; done"));
    let _worker = ns.worker("w-observed", &[]).await;
    let detached = project.runway(&args(&flags, &["run", "slow", "--remote", "--detach"])).await;
    detached.assert_code(0);
    let id = detached.stdout().trim().to_owned();
    let view = web_view(&project, &observer.flags(&ns.name), &[]).await;
    let driver = chromedriver().await;
    let client = browser(&driver).await;
    let page = format!("{}/jobs/{id}", view.url);
    open(&client, &page).await;
    wait_for_text(&client, "#log", "the observer sees the log", |text| text.contains("tick")).await;
    client.find(Locator::Css("#cancel")).await.expect("offered until refused").click().await.expect("click");
    let refusal = wait_for_text(&client, "#error", "the refusal is shown", |text| !text.is_empty()).await;
    assert!(refusal.contains("submitter"), "the refusal names the role that may cancel: {refusal}");
    open(&client, &page).await;
    wait_for_text(&client, "#state", "the job still runs", |text| text == "running").await;
    assert!(client.find(Locator::Css("#cancel")).await.is_err(), "the button is offered again after a refusal");
    client.close().await.expect("end the browser session");
    project.runway(&args(&flags, &["job", "cancel", &id])).await.assert_code(0);
    drop(view);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_job_whose_runner_dies_turns_lost_on_its_open_page() {
    let ns = Namespace::new().await;
    let flags = ns.flags();
    // It ends on its own: a killed runner leaves its job's processes running.
    let project = Project::new(&op("slow", "for i in $(seq 1 100); do echo tick; sleep 0.2; done"));
    let mut worker = ns.worker("w-doomed", &[]).await;
    let detached = project.runway(&args(&flags, &["run", "slow", "--remote", "--detach"])).await;
    detached.assert_code(0);
    let id = detached.stdout().trim().to_owned();
    let view = web_view(&project, &flags, &[]).await;
    let driver = chromedriver().await;
    let client = browser(&driver).await;
    open(&client, &format!("{}/jobs/{id}", view.url)).await;
    wait_for_text(&client, "#log", "the job runs", |text| text.contains("tick")).await;
    worker.signal(nix::sys::signal::Signal::SIGKILL);
    worker.exit_code().await;
    // Three silent heartbeat intervals later, the open page says lost, with no reload.
    wait_for_text(&client, "#state", "the page calls the job lost", |text| text == "lost").await;
    client.close().await.expect("end the browser session");
    drop(view);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_web_view_on_a_non_loopback_address_warns_that_it_has_no_accounts() {
    let ns = Namespace::new().await;
    let project = Project::empty();
    let mut cli = project.spawn_runway(&args(&ns.flags(), &["ui", "--listen", "0.0.0.0:0"]));
    let warning = cli.stderr_line_containing("warning").await;
    assert!(warning.contains("not loopback") && warning.contains("no accounts"), "{warning}");
    cli.kill().await;
    let local = project.runway(&["ui"]).await;
    local.assert_code(64);
    assert!(local.stderr.contains("server"), "the web view needs a server's history: {}", local.stderr);
    let bad = project.runway(&args(&ns.flags(), &["ui", "--listen", "nowhere"])).await;
    bad.assert_code(64);
    assert!(bad.stderr.contains("--listen"), "{}", bad.stderr);
    ns.cleanup().await;
}
