//! `plan`'s words: the plan for a person, and the hint `run` gives when bulk mode would halve
//! the requests. The model (`crate::plan`) computes; this file only writes. Uses `plan` and
//! `text`, nothing above `report`.

use std::path::Path;

use crate::plan::{BulkSaving, Plan};
use crate::text::{duration, thousands, whole_seconds};

/// One line for a person: bulk mode would need under half the requests of single mode.
pub fn bulk_hint(checkpoint: &Path, saving: BulkSaving) -> String {
    let BulkSaving {
        bulk_requests: bulk,
        single_requests: single,
    } = saving;
    format!(
        "bulk mode would need about {} requests instead of {} ({:.1}x fewer): see `kustomer-import \
         plan --db {} --max-rpm N`",
        thousands(bulk),
        thousands(single),
        single as f64 / bulk.max(1) as f64,
        crate::text::shell_quoted(checkpoint),
    )
}

/// The plan for a person.
pub fn plan_text(plan: &Plan, source: &str, notes: &[String]) -> String {
    use std::fmt::Write;
    let duration = |seconds: f64| duration(whole_seconds(seconds));
    let mut out = String::new();
    let _ = writeln!(out, "plan for {source}");
    for note in notes {
        let _ = writeln!(out, "{note}");
    }
    if plan.rows == 0 {
        let _ = writeln!(out, "nothing to send: no row is pending");
        return out;
    }
    let _ = writeln!(
        out,
        "rows to send        {} in {} conversations",
        thousands(plan.rows),
        thousands(plan.conversations)
    );
    let depth = &plan.depth;
    let _ = write!(
        out,
        "rows per conv.      p50 {}, p90 {}, p99 {}, max {}",
        thousands(depth.p50),
        thousands(depth.p90),
        thousands(depth.p99),
        thousands(depth.max)
    );
    if let Some(deepest) = &plan.deepest_conversation {
        let _ = write!(
            out,
            " (deepest: {})",
            crate::text::escape_control(&deepest.id)
        );
    }
    let _ = writeln!(out);
    let resolution = &plan.resolution;
    if resolution.tickets > 0 {
        let _ = writeln!(
            out,
            "to resolve          {} tickets of {} customers not yet in the checkpoint: {} requests \
             if nothing exists yet (lookups and creates; {} with bulk creates), {} if everything \
             is found; included below",
            thousands(resolution.tickets),
            thousands(resolution.customers),
            thousands(resolution.worst_requests),
            thousands(resolution.bulk_worst_requests),
            thousands(resolution.best_requests)
        );
    }
    let _ = writeln!(
        out,
        "single mode         {} requests, {}",
        thousands(plan.single.requests),
        duration(plan.single.seconds)
    );
    let bulk = &plan.bulk;
    let _ = writeln!(
        out,
        "bulk mode           about {} requests, {} ({:.1} messages a request)",
        thousands(bulk.requests),
        duration(bulk.seconds),
        bulk.messages_per_request
    );
    let _ = writeln!(
        out,
        "                    {} jobs of up to {} rows carry {} rows, {} go as single creates",
        thousands(bulk.jobs),
        plan.batch_size,
        thousands(bulk.rows_by_bulk),
        thousands(bulk.rows_single)
    );
    let _ = writeln!(
        out,
        "                    critical path: {} jobs one after the other at {} s each \
         (assumed: --job-seconds; Kustomer's bulk processing time is unverified)",
        thousands(bulk.critical_path_rounds),
        bulk.job_seconds
    );
    let _ = writeln!(
        out,
        "                    {} jobs in flight at once: the rows that ride jobs spread over the \
         critical path's rounds, at most what the budget pays for during one job time (two \
         requests a job) and --max-jobs",
        thousands(bulk.jobs_in_flight)
    );
    if bulk.rounds_capped {
        let _ = writeln!(
            out,
            "                    at most {} rows of a conversation go by bulk: more rounds would \
             make bulk mode slower than single mode, so deeper conversations send the rest one by one",
            thousands(bulk.critical_path_rounds)
        );
    }
    let _ = writeln!(
        out,
        "lower bound         {} requests: the fewest any importer keeping each conversation \
         in order can use ({} jobs)",
        thousands(bulk.lower_bound_requests),
        thousands(bulk.lower_bound_jobs)
    );
    out
}
