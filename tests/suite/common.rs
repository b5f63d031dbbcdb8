//! Shared harness for the integration tests: the compiled binary, a sandbox process on loopback,
//! generated inputs, and checks on what the sandbox stored.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN_KEY: &str = "sandbox-admin-key";
pub const AGENT_KEY: &str = "sandbox-agent-key";
/// The createdBy every generated row carries.
pub const AGENT_USER: &str = "5f0000000000000000000001";

pub fn bin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kustomer-import"))
}

/// The importer with a clean environment: no key or base URL inherited from the caller.
pub fn importer(dir: &Path) -> Command {
    let mut command = Command::new(bin_path());
    command
        .current_dir(dir)
        .env_remove("KUSTOMER_API_KEY")
        .env_remove("KUSTOMER_BASE_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// `importer` with the sandbox's URL and a key.
pub fn importer_for(dir: &Path, sandbox: &Sandbox, key: &str) -> Command {
    let mut command = importer(dir);
    command
        .env("KUSTOMER_API_KEY", key)
        .env("KUSTOMER_BASE_URL", &sandbox.url);
    command
}

/// How long any one importer command in a test may take before the test fails.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(240);

/// The send flags with short waits, for tests: the loopback sandbox answers in milliseconds, so
/// a slow write has landed long before 0.2 s, and a request is given up after 3 s.
/// `extra` wins where it names the same flag.
pub fn send_flags(extra: &[&str]) -> Vec<String> {
    let mut flags: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    for (flag, value) in [("--settle-delay", "0.2"), ("--request-timeout", "3")] {
        if !extra.contains(&flag) {
            flags.extend([flag.to_string(), value.to_string()]);
        }
    }
    flags
}

/// `run INPUT --db job.sqlite --quiet EXTRA...` in `dir`, to completion.
pub fn run_job(dir: &Path, sandbox: &Sandbox, key: &str, input: &str, extra: &[&str]) -> Output {
    let mut command = importer_for(dir, sandbox, key);
    command
        .args(["run", input, "--db", "job.sqlite", "--quiet"])
        .args(send_flags(extra));
    run_bounded(command, COMMAND_LIMIT)
}

/// `resume --db job.sqlite --quiet EXTRA...` in `dir`, to completion.
pub fn resume_job(dir: &Path, sandbox: &Sandbox, key: &str, extra: &[&str]) -> Output {
    let mut command = importer_for(dir, sandbox, key);
    command
        .args(["resume", "--db", "job.sqlite", "--quiet"])
        .args(send_flags(extra));
    run_bounded(command, COMMAND_LIMIT)
}

/// Runs to completion with a generous bound, so a hung importer fails the test instead of CI.
/// Output is drained while the process runs: a full pipe would otherwise stall it.
pub fn run_bounded(mut command: Command, limit: Duration) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn importer");
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "importer did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
                String::from_utf8_lossy(&stderr.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

pub fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A sandbox process listening on a free loopback port; killed when dropped.
pub struct Sandbox {
    child: Child,
    pub url: String,
    http: reqwest::blocking::Client,
}

impl Sandbox {
    pub fn start(flags: &[&str]) -> Sandbox {
        let mut child = Command::new(bin_path())
            .args(["sandbox", "--listen", "127.0.0.1:0"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sandbox");
        let stdout = child.stdout.take().expect("sandbox stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the sandbox never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("sandbox did not announce its address");
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .expect("address in the first line")
            .to_string();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        Sandbox { child, url, http }
    }

    pub fn stats(&self) -> Value {
        self.get("/_sandbox/stats")
    }

    pub fn stored(&self) -> u64 {
        self.stats()["messages_stored"]
            .as_u64()
            .expect("messages_stored")
    }

    /// conversationId → messages in stored order; messages seeded as another integration's
    /// (`POST /_sandbox/seed`) are left out: only what the importer created.
    pub fn messages(&self) -> BTreeMap<String, Vec<Value>> {
        let body = self.get("/_sandbox/messages");
        let mut out = BTreeMap::new();
        for (conversation, list) in body["conversations"].as_object().expect("conversations") {
            let created: Vec<Value> = list
                .as_array()
                .expect("list")
                .iter()
                .filter(|message| message["seeded"] != Value::Bool(true))
                .cloned()
                .collect();
            if !created.is_empty() {
                out.insert(conversation.clone(), created);
            }
        }
        out
    }

    /// POSTs a JSON body to a control endpoint, e.g. `/_sandbox/seed`; returns the answer.
    pub fn post_json(&self, path: &str, body: &Value) -> Value {
        self.control_post(path, Some(body))
            .json()
            .expect("control json")
    }

    pub fn post(&self, path: &str) {
        self.control_post(path, None);
    }

    fn control_post(&self, path: &str, body: Option<&Value>) -> reqwest::blocking::Response {
        let mut request = self.http.post(format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().expect("control request");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response
    }

    /// Every `/v1` request waits at the sandbox's door until [`Sandbox::release`].
    pub fn hold(&self) {
        self.post("/_sandbox/hold");
    }

    pub fn release(&self) {
        self.post("/_sandbox/release");
    }

    /// A counter of `/_sandbox/stats` by its path of keys. A counter that is not there (renamed,
    /// misspelt) fails the test, so an assertion on it cannot pass by reading 0. Maps keyed by
    /// what was seen (`requests_by_status`, `creates_by_conversation`) have no key until the
    /// first count: read those with [`Sandbox::stat_or_zero`].
    pub fn stat(&self, path: &[&str]) -> u64 {
        let stats = self.stats();
        path.iter()
            .fold(&stats, |value, key| &value[*key])
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {path:?} in the sandbox stats: {stats}"))
    }

    /// An entry of a stats map keyed by what was seen (`requests_by_status`,
    /// `creates_by_conversation`, ...): 0 while nothing was counted under `key`, but the map
    /// itself must exist.
    pub fn stat_or_zero(&self, map: &[&str], key: &str) -> u64 {
        let stats = self.stats();
        let entries = map
            .iter()
            .fold(&stats, |value, name| &value[*name])
            .as_object()
            .unwrap_or_else(|| panic!("no map {map:?} in the sandbox stats: {stats}"));
        match entries.get(key) {
            None => 0,
            Some(count) => count
                .as_u64()
                .unwrap_or_else(|| panic!("{map:?}.{key} is no count: {stats}")),
        }
    }

    /// Lets the next `passes` `/v1` requests through, then holds every later one until
    /// [`Sandbox::release`]: a run stopped where the test chooses, which cannot end first.
    pub fn hold_after(&self, passes: u64) {
        self.post(&format!("/_sandbox/hold?after={passes}"));
    }

    fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .expect("control request")
            .json()
            .expect("control json")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One generated message, as the test expects it to arrive.
#[derive(Debug, Clone)]
pub struct Expected {
    pub line: u64,
    pub conversation_id: String,
    pub external_id: String,
    pub sent_at: String,
}

/// A CSV of `rows` valid messages over `conversations` conversations, lines shuffled so that
/// file order is not time order. Returns what each conversation should hold, in order.
pub fn write_csv(path: &Path, rows: usize, conversations: usize, seed: u64) -> Vec<Expected> {
    let layout = (0..rows).map(|index| (index % conversations, index / conversations));
    write_layout(path, layout, seed)
}

/// A CSV with `depths[c]` messages in conversation `c`, lines shuffled.
pub fn write_csv_with_depths(path: &Path, depths: &[usize], seed: u64) -> Vec<Expected> {
    let layout = depths
        .iter()
        .enumerate()
        .flat_map(|(conversation, &depth)| {
            (0..depth).map(move |position| (conversation, position))
        });
    write_layout(path, layout, seed)
}

/// One message per `(conversation, position)`, lines shuffled.
fn write_layout(
    path: &Path,
    layout: impl Iterator<Item = (usize, usize)>,
    seed: u64,
) -> Vec<Expected> {
    let mut expected: Vec<Expected> = layout
        .enumerate()
        .map(|(index, (conversation, position))| {
            let minutes = (conversation * 500 + position * 7) as i64;
            let sent = jiff::Timestamp::from_second(1_600_000_000 + minutes * 60).unwrap();
            Expected {
                line: 0,
                conversation_id: format!("{:024x}", 0xabc000 + conversation),
                external_id: format!("t-{seed}-{index}"),
                sent_at: sent.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            }
        })
        .collect();
    shuffle(&mut expected, seed);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(
        file,
        "conversationId,externalId,channel,app,direction,sentAt,preview,createdBy"
    )
    .unwrap();
    for (index, row) in expected.iter_mut().enumerate() {
        row.line = index as u64 + 2;
        let direction = if index % 3 == 0 { "out" } else { "in" };
        writeln!(
            file,
            "{},{},chat,tests,{direction},{},\"Hello, \"\"{}\"\" — ünïcödé ✓\",{AGENT_USER}",
            row.conversation_id, row.external_id, row.sent_at, row.external_id,
        )
        .unwrap();
    }
    file.flush().unwrap();
    expected
}

/// A deterministic shuffle (the same seed, the same order).
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = (state >> 33) as usize % (i + 1);
        items.swap(i, j);
    }
}

/// Every expected message stored exactly once, in (sentAt, line) order within its conversation,
/// and nothing else stored. Messages seeded through `/_sandbox/seed` (another integration's) are
/// left out.
pub fn assert_stored_exactly_once_in_order(sandbox: &Sandbox, expected: &[Expected]) {
    let stored = sandbox.messages();
    let mut wanted: HashMap<&str, Vec<&Expected>> = HashMap::new();
    for row in expected {
        wanted
            .entry(row.conversation_id.as_str())
            .or_default()
            .push(row);
    }
    for rows in wanted.values_mut() {
        rows.sort_by(|a, b| (&a.sent_at, a.line).cmp(&(&b.sent_at, b.line)));
    }
    let total: usize = stored.values().map(Vec::len).sum();
    assert_eq!(total, expected.len(), "messages stored in all");
    for (conversation, rows) in &wanted {
        let got: Vec<&str> = stored
            .get(*conversation)
            .map(|list| {
                list.iter()
                    .map(|m| m["externalId"].as_str().unwrap_or(""))
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<&str> = rows.iter().map(|r| r.external_id.as_str()).collect();
        assert_eq!(got, want, "conversation {conversation}: stored order");
    }
    let stats = sandbox.stats();
    assert_eq!(stats["duplicate_external_ids"], 0, "duplicates in {stats}");
}

/// Every row the report calls succeeded names a message that exists in the sandbox, in the
/// row's own conversation, under the row's externalId: nothing is claimed that is not there.
pub fn assert_every_success_is_real(sandbox: &Sandbox, dir: &Path, db: &str) {
    let stored = sandbox.messages();
    let mut by_id: HashMap<String, (String, String)> = HashMap::new();
    for (conversation, list) in &stored {
        for message in list {
            by_id.insert(
                message["id"].as_str().unwrap_or_default().to_string(),
                (
                    conversation.clone(),
                    message["externalId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
            );
        }
    }
    for row in report_rows(dir, db) {
        if row["state"] != "succeeded" {
            continue;
        }
        let found = by_id.get(&row["messageId"]);
        assert_eq!(
            found,
            Some(&(row["conversationId"].clone(), row["externalId"].clone())),
            "line {} claims message {} in {}",
            row["line"],
            row["messageId"],
            row["conversationId"]
        );
    }
}

/// The CSV report as maps from column to value.
pub fn report_rows(dir: &Path, db: &str) -> Vec<HashMap<String, String>> {
    let mut command = importer(dir);
    command.args(["report", "--db", db, "--format", "csv"]);
    let output = run_bounded(command, Duration::from_secs(60));
    assert_eq!(code(&output), 0, "{}", text(&output));
    let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            headers
                .iter()
                .zip(record.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

pub fn status_json(dir: &Path, db: &str) -> Value {
    let mut command = importer(dir);
    command.args(["status", "--db", db, "--json"]);
    let output = run_bounded(command, Duration::from_secs(60));
    assert_eq!(code(&output), 0, "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

pub fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// Sends a signal by name (INT, TERM, KILL) to a process.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Kills `child` with SIGKILL while the sandbox holds its requests at the door, proves the kill
/// landed on a running process (not one that had finished), and opens the door again once the
/// held requests died with their connections, so nothing they carried is stored after the kill.
pub fn kill_9_while_held(sandbox: &Sandbox, child: &mut Child, limit: Duration) {
    use std::os::unix::process::ExitStatusExt;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the run ended first"
    );
    let _ = child.kill();
    let status = wait_child(child, limit);
    assert_eq!(
        status.signal(),
        Some(9),
        "the kill landed mid-run: {status:?}"
    );
    wait_until(limit, "held requests gone", || {
        sandbox.stat(&["in_flight"]) == 0
    });
    sandbox.release();
}

/// Waits for a child to exit, or kills it and panics after `limit`: a hung importer fails its
/// test instead of hanging the suite.
pub fn wait_child(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child whose stderr is read line by line as it comes (and kept, for failure messages).
pub struct Watched {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
}

impl Watched {
    /// Spawns `command` with stderr piped and stdout discarded.
    pub fn spawn(mut command: Command) -> Watched {
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watched {
            child,
            lines,
            stderr: Vec::new(),
        }
    }

    /// Waits until a stderr line contains `needle`, or panics after `limit`.
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) {
        let started = Instant::now();
        loop {
            if self.stderr.iter().any(|line| line.contains(needle)) {
                return;
            }
            let left = limit.saturating_sub(started.elapsed());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => self.stderr.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {}
                Err(_) => panic!(
                    "no stderr line with {needle:?} within {limit:?}:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
    }

    /// Waits for the exit (bounded by `limit`), then collects the rest of stderr.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let status = wait_child(&mut self.child, limit);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.stderr.push(line);
        }
        status
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.join("\n")
    }
}

/// Polls until `condition` holds, or panics after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
