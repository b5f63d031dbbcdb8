//! A local stand-in for the Kustomer API, faithful to `shared/kustomer-api.md`, for the demo,
//! the tests and the benchmarks. It listens on loopback only and keeps everything in memory.

use std::net::SocketAddr;
use std::time::Duration;

/// Bearer key with `org.admin`: audit fields are kept as sent.
pub const ADMIN_KEY: &str = "sandbox-admin-key";
/// Bearer key without `org.admin`: audit fields are silently overwritten, as Kustomer documents.
pub const AGENT_KEY: &str = "sandbox-agent-key";

/// Everything the sandbox can be told at start.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Must be a loopback address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Org-wide limit in requests per window; None means unlimited.
    pub org_limit: Option<u32>,
    /// Length of the org limit window (Kustomer's is 60 s; tests use shorter).
    pub window: Duration,
    /// Send `Retry-After` with 429 answers.
    pub retry_after: bool,
    pub faults: Faults,
    pub seed: u64,
    /// Answer `GET /v1/auth/tokens/current` without roles (as if they could not be read).
    pub hide_roles: bool,
    pub reset_as_epoch: bool,
}

/// Injected failures, each a probability in 0..=1 unless said otherwise.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added latency per request, and its uniform jitter (+/-).
    pub latency: Duration,
    pub jitter: Duration,
    pub error_500: f64,
    pub error_503: f64,
    /// Close the connection without answering and without storing.
    pub drop_before_store: f64,
    /// Store the message, then close the connection without answering.
    pub store_then_drop: f64,
    /// After this many create requests, the admin key is revoked (answers 401).
    pub revoke_admin_after: Option<u64>,
}

/// A running sandbox.
pub struct RunningSandbox {
    pub addr: SocketAddr,
}

impl RunningSandbox {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the sandbox listens on loopback only; {0} is not a loopback address")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds and starts serving in the background on the current tokio runtime.
pub async fn start(config: SandboxConfig) -> Result<RunningSandbox, SandboxError> {
    let _ = config;
    todo!("sandbox::start")
}
impl SandboxConfig {
    pub fn new(listen: SocketAddr) -> Self {
        let _ = listen;
        todo!()
    }
}
pub struct Stats {
    pub messages_stored: u64,
    pub duplicate_external_ids: u64,
}
impl RunningSandbox {
    pub async fn shutdown(self) {}
    pub fn stats(&self) -> Stats {
        todo!()
    }
}
