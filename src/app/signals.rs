//! Ctrl-C and SIGTERM: the first asks for a clean stop (no new requests, in-flight ones finish
//! and are recorded); a second one exits at once, leaving in-flight rows `sending` for `resume`
//! to reconcile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::exit_codes::ExitCode;

/// Set once an interrupt has been asked for; checked by synchronous work such as staging.
#[derive(Clone)]
pub struct Interrupt {
    pub token: CancellationToken,
    flag: Arc<AtomicBool>,
}

impl Interrupt {
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

/// Installs the handlers on the current runtime.
pub fn install() -> Interrupt {
    let interrupt = Interrupt {
        token: CancellationToken::new(),
        flag: Arc::new(AtomicBool::new(false)),
    };
    let handle = interrupt.clone();
    tokio::spawn(async move {
        // Listeners are made once: one made afresh after each signal could miss a second signal
        // that arrives in between.
        let Ok(mut signals) = Signals::new() else {
            return;
        };
        let mut signals_seen = 0;
        loop {
            if signals.next().await.is_none() {
                return;
            }
            signals_seen += 1;
            if signals_seen == 1 {
                eprintln!(
                    "\ninterrupted: finishing requests in flight and recording them (press Ctrl-C again to stop at once)"
                );
                handle.flag.store(true, Ordering::Relaxed);
                handle.token.cancel();
            } else {
                eprintln!(
                    "stopped at once; `kustomer-import resume` checks the rows that were in flight"
                );
                std::process::exit(ExitCode::Interrupted.code().into());
            }
        }
    });
    interrupt
}

/// Ctrl-C (SIGINT) and SIGTERM, as one stream.
#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> Option<()> {
        tokio::select! {
            received = self.interrupt.recv() => received,
            received = self.terminate.recv() => received,
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals)
    }

    async fn next(&mut self) -> Option<()> {
        tokio::signal::ctrl_c().await.ok()
    }
}
