//! The end of a run on stderr: what stopped it and the exit code that means, the rows, what the
//! run sent and spent, and the commands that apply next.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::StateCounts;
use crate::exit_codes::ExitCode;
use crate::send::{SendStats, SendStop};
use crate::throttle::{PacingSnapshot, Throttle};

pub(super) fn exit_for(stop: &SendStop, counts: &StateCounts, db: &Path) -> ExitCode {
    let db = db.display();
    match stop {
        SendStop::Completed if counts.succeeded == counts.total() => ExitCode::Success,
        SendStop::Completed => ExitCode::Incomplete,
        SendStop::Interrupted => {
            eprintln!("interrupted; continue with: kustomer-import resume --db {db}");
            ExitCode::Interrupted
        }
        SendStop::ApiFatal(err) => {
            let err = crate::text::escape_control(&err.to_string()).into_owned();
            eprintln!("stopped: {err}\nnothing more was sent; fix the key and continue with: kustomer-import resume --db {db}");
            ExitCode::ApiFatal
        }
        SendStop::Refused(reason) => {
            eprintln!("refused before sending: {reason}");
            ExitCode::ApiFatal
        }
        SendStop::AuditOverwritten(detail) => {
            eprintln!("stopped: {detail}\nnothing more was sent. Use a key with org.admin, or continue without audit fields in a new job (--no-audit-fields); the affected row is marked in the report (errorCode audit_fields_overwritten)");
            ExitCode::ApiFatal
        }
        SendStop::ErrorBudget { failed, allowed } => {
            eprintln!("stopped: {failed} rows failed in this run, more than --max-errors allows ({allowed}); the remaining rows stay pending. See the errors with: kustomer-import report --db {db}; then: kustomer-import resume --db {db}");
            ExitCode::ErrorBudget
        }
        SendStop::Storage(err) => {
            eprintln!("stopped: the checkpoint could not be written ({err}); nothing more was sent. Free space or fix permissions, then: kustomer-import resume --db {db}");
            ExitCode::Storage
        }
        SendStop::LookupRouteUnproven(reason) => {
            eprintln!("stopped: {reason}\ncontinue with: kustomer-import resume --db {db}");
            ExitCode::ApiFatal
        }
        SendStop::Unreachable(reason) => {
            eprintln!("stopped: the API is unreachable: {reason}\nrows not sent stay pending; once the API answers (check the network and --base-url), continue with: kustomer-import resume --db {db}");
            ExitCode::ApiFatal
        }
        SendStop::AlreadyImported(existing) => {
            eprintln!(
                "refused: {} of the sampled rows already exist in Kustomer, each in its own conversation:",
                existing.len()
            );
            for found in existing.iter().take(10) {
                eprintln!(
                    "  line {}: externalId {:?} is message {} in conversation {}",
                    found.line,
                    crate::text::escape_control(&found.external_id),
                    crate::text::escape_control(&found.message_id),
                    found.conversation_id
                );
            }
            eprintln!(
                "This export looks imported already (perhaps by another checkpoint). Nothing was sent.\n\
                 - to finish that import, resume its own checkpoint: kustomer-import resume --db ORIGINAL.sqlite\n\
                 - to import only what is missing: kustomer-import resume --db {db} --skip-existing\n  \
                 (every row is looked up first, one extra request each; rows found are recorded succeeded, code found_existing)"
            );
            ExitCode::Usage
        }
    }
}

/// What the summary's suggested commands depend on.
pub(super) struct Hints<'a> {
    pub(super) db: &'a Path,
    /// Failed rows a retry may fix (the rest failed for good and are rejects).
    pub(super) retryable_failed: u64,
}

/// The end-of-run summary on stderr: the rows, what this run sent and spent, the commands that
/// apply next.
pub(super) fn print_summary(
    before: &StateCounts,
    after: &StateCounts,
    elapsed: Duration,
    throttle: Option<&(Arc<Throttle>, Arc<SendStats>)>,
    hints: Option<Hints>,
) {
    let mut out = std::io::stderr().lock();
    row_summary(&mut out, before, after, elapsed);
    if let Some((throttle, counters)) = throttle {
        spend_summary(&mut out, throttle, counters);
    }
    if let Some(hints) = hints {
        next_commands(&mut out, after, &hints);
    }
}

/// The rows by state, and how many this run settled how fast.
fn row_summary(out: &mut impl Write, before: &StateCounts, after: &StateCounts, elapsed: Duration) {
    let sent_now =
        (after.succeeded + after.failed).saturating_sub(before.succeeded + before.failed);
    let secs = elapsed.as_secs_f64().max(0.001);
    let _ = writeln!(
        out,
        "\n{} rows: {} succeeded, {} failed, {} invalid, {} duplicate, {} pending, {} sending",
        after.total(),
        after.succeeded,
        after.failed,
        after.invalid,
        after.duplicate,
        after.pending,
        after.sending
    );
    let _ = writeln!(
        out,
        "this run: {sent_now} rows settled in {:.1}s ({:.1} rows/s)",
        secs,
        sent_now as f64 / secs
    );
}

/// What the run spent: unknown outcomes and lookups, pacing, requests, messages per request.
fn spend_summary(out: &mut impl Write, throttle: &Throttle, counters: &SendStats) {
    let unknown = counters.unknown.load(Ordering::Relaxed);
    if unknown > 0 || counters.lookups.load(Ordering::Relaxed) > 0 {
        let _ = writeln!(
            out,
            "unknown outcomes: {unknown}, lookups by externalId: {} ({} early, {} of them found \
             it), found already created: {}",
            counters.lookups.load(Ordering::Relaxed),
            counters.early_lookups.load(Ordering::Relaxed),
            counters.early_hits.load(Ordering::Relaxed),
            counters.reconciled.load(Ordering::Relaxed)
        );
        let reads = counters.conversation_reads.load(Ordering::Relaxed);
        if reads > 0 {
            let _ = writeln!(
                out,
                "conversation pages read to settle externalIds found in other conversations: {reads}"
            );
        }
    }
    let budget = &throttle.budget;
    let pacing = PacingSnapshot::of(throttle);
    let _ = if pacing.rate_headers_missing {
        writeln!(out, "pacing:   {}", pacing.describe())
    } else if pacing.adaptive {
        writeln!(
            out,
            "pacing:   yielded to the org's other clients for {} in all ({})",
            pacing.yielded(),
            pacing.rates()
        )
    } else {
        Ok(())
    };
    let _ = writeln!(
        out,
        "requests: {} within a budget of {}/min, {} answered 429, {} common pauses{}",
        budget.admitted.load(Ordering::Relaxed),
        budget.requests_per_minute(),
        budget.rate_limited.load(Ordering::Relaxed),
        budget.pauses.load(Ordering::Relaxed),
        if throttle.concurrency.is_adaptive() {
            format!(
                ", concurrency ended at {}",
                throttle.concurrency.view().summary()
            )
        } else {
            String::new()
        }
    );
    // Every request counts against the org's budget: how many messages each one bought.
    let requests = budget.admitted.load(Ordering::Relaxed);
    let created = counters.succeeded.load(Ordering::Relaxed);
    let jobs = counters.bulk_jobs.load(Ordering::Relaxed);
    if requests > 0 && (jobs > 0 || created > 0) {
        let _ = writeln!(
            out,
            "spent:    {:.2} messages per request ({created} rows settled as created with {requests} requests{})",
            created as f64 / requests as f64,
            if jobs > 0 {
                format!(
                    "; {jobs} bulk jobs, {} extra polls",
                    counters.bulk_polls.load(Ordering::Relaxed)
                )
            } else {
                String::new()
            }
        );
    }
}

/// The commands that apply after this run: the report, the rejects, a retry, a resume.
fn next_commands(out: &mut impl Write, after: &StateCounts, hints: &Hints) {
    let db = crate::text::shell_quoted(hints.db);
    let _ = writeln!(
        out,
        "report:   kustomer-import report --db {db} [--format csv|html]"
    );
    let rejects = after.invalid + after.failed.saturating_sub(hints.retryable_failed);
    if rejects > 0 {
        let _ = writeln!(
            out,
            "rejects:  kustomer-import report --db {db} --rejects rejects.csv ({rejects} rows to fix and import again)"
        );
    }
    if hints.retryable_failed > 0 {
        let _ = writeln!(
            out,
            "retry:    kustomer-import resume --db {db} --retry-failed ({} rows failed transiently)",
            hints.retryable_failed
        );
    }
    if after.pending + after.sending > 0 {
        let _ = writeln!(out, "continue: kustomer-import resume --db {db}");
    }
}
