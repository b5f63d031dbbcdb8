//! Unit tests of the bulk transport's pure parts: the job timer, the batcher's moves, the
//! judging of a job's results.

use std::time::Duration;

use crate::client::{BatchStatus, BulkBatches, BulkResultItem, ItemOutcome};

use super::batcher::{next_move, Gathering, Move};
use super::client_ref;
use super::results::{judge, Verdict};
use super::timer::{
    poll_after, JobTimer, Seen, NEAR_MISS_READS, RECENT_JOBS, SHORTEST_JOB_GUESS, SHORTEST_POLL,
};

#[test]
fn the_first_read_tracks_a_high_percentile_of_the_job_time() {
    let mut timer = JobTimer::new(Duration::from_secs(1));
    let found_at_once = |took| Seen {
        took,
        waited: took,
        first_read: true,
    };
    let missed = |took, waited| Seen {
        took,
        waited,
        first_read: false,
    };
    // Read too early: the wait grows by a step, not to whatever that job took.
    timer.observe(missed(Duration::from_millis(1_500), Duration::from_secs(1)));
    assert_eq!(timer.expected, Duration::from_millis(1_100));
    // Jobs read after the same wait that miss together teach one step, not one each.
    timer.observe(missed(Duration::from_millis(1_500), Duration::from_secs(1)));
    assert_eq!(timer.expected, Duration::from_millis(1_100));
    // Found done on the first read: it shrinks a little, however long that read waited.
    timer.observe(found_at_once(Duration::from_secs(5)));
    assert_eq!(timer.expected, Duration::from_micros(1_094_500));
    assert_eq!(timer.slowest, Duration::from_secs(5));
    // Jobs drawn uniformly from 2 to 3 s, five in flight at a time read after the same wait:
    // it settles where about one first read in twenty misses, near the 95th percentile (2.95 s).
    let mut timer = JobTimer::new(Duration::from_secs(5));
    let mut misses = 0;
    for round in 0..800u32 {
        let waited = timer.expected;
        for job in 0..5 {
            let draw = (round * 5 + job) * 7_919 % 1_000;
            let took = Duration::from_millis(2_000 + u64::from(draw));
            let first_read = took <= waited;
            if !first_read && round >= 400 {
                misses += 1;
            }
            timer.observe(Seen {
                took: took.max(waited),
                waited,
                first_read,
            });
        }
    }
    let settled = timer.expected.as_secs_f64();
    assert!((2.75..3.15).contains(&settled), "{settled}");
    assert!((40..250).contains(&misses), "{misses} misses in 2,000 jobs");
    // One job ten times slower: a step up, not ten times.
    let before = timer.expected;
    timer.observe(missed(Duration::from_secs(30), before));
    assert!(timer.expected < before * 2, "{:?}", timer.expected);
    // Slow jobs, one after another: the median of the recent ones follows them at once.
    for _ in 0..RECENT_JOBS {
        timer.observe(missed(Duration::from_secs(30), before));
    }
    assert!(
        timer.expected >= Duration::from_secs(30),
        "{:?}",
        timer.expected
    );
    // Fast jobs bring it down, never below the shortest guess.
    for _ in 0..10_000 {
        timer.observe(found_at_once(Duration::from_millis(10)));
    }
    assert_eq!(timer.expected, SHORTEST_JOB_GUESS);
    // A job that never showed results teaches nothing.
    timer.observe(Seen::default());
    assert_eq!(timer.expected, SHORTEST_JOB_GUESS);
}

#[test]
fn a_job_is_read_again_soon_after_a_near_miss_then_once_per_job_time() {
    let learned = Duration::from_secs(4);
    assert_eq!(poll_after(learned, 1), Duration::from_millis(400));
    assert_eq!(poll_after(learned, 2), Duration::from_millis(800));
    assert_eq!(
        poll_after(learned, NEAR_MISS_READS),
        Duration::from_millis(3_200)
    );
    assert_eq!(poll_after(learned, NEAR_MISS_READS + 1), learned);
    assert_eq!(poll_after(learned, u32::MAX), learned);
    assert_eq!(poll_after(Duration::ZERO, 9), SHORTEST_POLL);
}

#[test]
fn client_refs_name_the_line() {
    assert_eq!(client_ref(42), "line-42");
}

const GATHERING: Gathering = Gathering {
    heads: 40,
    batch: 100,
    in_flight: 3,
    target: 10,
    lingered: true,
    more_coming: false,
    waited: false,
    critical: false,
    rows_away: 400,
    spread: 500,
};

#[test]
fn critical_heads_go_at_once_and_others_only_in_full_jobs_within_the_spread() {
    // Shallower than the critical path and too few for a full job: held back for later jobs.
    assert_eq!(next_move(GATHERING), Move::Wait);
    // A full job goes at once while fewer rows are away than the spread needs ...
    let full = Gathering {
        heads: 100,
        lingered: false,
        ..GATHERING
    };
    assert_eq!(next_move(full), Move::Job);
    // ... and waits once it would not fit: the rest fill the deep conversations' later jobs.
    let spread = Gathering {
        rows_away: 401,
        ..full
    };
    assert_eq!(next_move(spread), Move::Wait);
    // A head on the critical path goes as soon as its job's other heads are in, part-filled.
    let critical = Gathering {
        critical: true,
        lingered: true,
        ..spread
    };
    assert_eq!(
        next_move(Gathering {
            heads: 40,
            ..critical
        }),
        Move::Job
    );
    let arriving = Gathering {
        lingered: false,
        ..critical
    };
    assert_eq!(next_move(arriving), Move::Wait);
    // Too few for a job: alone, cheaper and sooner than a job.
    assert_eq!(
        next_move(Gathering {
            heads: 2,
            ..critical
        }),
        Move::Alone
    );
    // Unless lanes still work toward their heads (opening their conversations): then a thin
    // job or a single create waits for them, a while.
    let opening = Gathering {
        heads: 2,
        more_coming: true,
        ..critical
    };
    assert_eq!(next_move(opening), Move::Wait);
    assert_eq!(
        next_move(Gathering {
            waited: true,
            ..opening
        }),
        Move::Alone
    );
    // A full job does not wait for them.
    assert_eq!(
        next_move(Gathering {
            heads: 100,
            ..opening
        }),
        Move::Job
    );
    // Never beyond the jobs the budget pays for, critical or not.
    let busy = Gathering {
        target: 3,
        ..critical
    };
    assert_eq!(next_move(busy), Move::Wait);
    assert_eq!(next_move(Gathering { target: 3, ..full }), Move::Wait);
    let none = Gathering {
        heads: 0,
        ..critical
    };
    assert_eq!(next_move(none), Move::Wait);
}

fn item(reference: &str, outcome: ItemOutcome) -> BulkResultItem {
    BulkResultItem {
        client_ref: Some(reference.to_string()),
        outcome,
    }
}

fn created(id: &str) -> ItemOutcome {
    ItemOutcome::Created {
        object_id: id.to_string(),
    }
}

fn failed(status: u16) -> ItemOutcome {
    ItemOutcome::Failed {
        status,
        code: None,
        message: "x".into(),
    }
}

fn listed(items: Vec<BulkResultItem>) -> BulkBatches {
    BulkBatches {
        batches: vec![BatchStatus::Complete],
        items,
    }
}

fn refs(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|line| line.to_string()).collect()
}

fn unknown(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Unknown(_))
}

#[test]
fn results_are_final_when_the_job_is_complete_or_every_ref_has_a_trusted_answer() {
    let sent = refs(&["a", "b", "c"]);
    let partial = listed(vec![item("a", created("m1")), item("b", failed(422))]);
    // A partial list decides nothing while the job runs.
    assert_eq!(judge(&sent, &partial, false), None);
    // Once complete, the missing row is an unknown outcome.
    let verdicts = judge(&sent, &partial, true).expect("final");
    assert_eq!(verdicts[0], Verdict::Created("m1".into()));
    assert!(matches!(verdicts[1], Verdict::Failed { status: 422, .. }));
    assert!(unknown(&verdicts[2]));
    // Every ref answered, none in doubt: final without the job's word.
    let whole = listed(vec![
        item("a", created("m1")),
        item("b", failed(429)),
        item("c", failed(409)),
    ]);
    let verdicts = judge(&sent, &whole, false).expect("final");
    assert!(matches!(verdicts[1], Verdict::Failed { status: 429, .. }));
}

#[test]
fn a_5xx_an_unreadable_item_or_a_contradiction_is_decided_only_once_the_job_is_complete() {
    let sent = refs(&["a", "b", "c"]);
    let doubtful = listed(vec![
        item("a", failed(500)),
        item(
            "b",
            ItemOutcome::Unreadable {
                why: "no status".into(),
            },
        ),
        item("c", created("m3")),
        item("c", failed(400)),
    ]);
    assert_eq!(judge(&sent, &doubtful, false), None);
    let verdicts = judge(&sent, &doubtful, true).expect("final");
    assert!(verdicts.iter().all(unknown), "{verdicts:?}");
    // Listed twice with the same answer: trusted.
    let twice = listed(vec![
        item("a", created("m1")),
        item("a", created("m1")),
        item("b", created("m2")),
        item("c", created("m3")),
    ]);
    assert!(judge(&sent, &twice, false)
        .expect("final")
        .iter()
        .all(|verdict| !unknown(verdict)));
}

#[test]
fn a_ref_never_sent_puts_every_answer_of_the_job_in_doubt() {
    let sent = refs(&["a", "b"]);
    let stranger = listed(vec![
        item("a", created("m1")),
        item("b", created("m2")),
        item("zz", created("m9")),
    ]);
    assert_eq!(judge(&sent, &stranger, false), None);
    let verdicts = judge(&sent, &stranger, true).expect("final");
    assert!(verdicts.iter().all(unknown), "{verdicts:?}");
    let nameless = listed(vec![
        item("a", created("m1")),
        item("b", created("m2")),
        BulkResultItem {
            client_ref: None,
            outcome: created("m3"),
        },
    ]);
    assert!(judge(&sent, &nameless, true)
        .expect("final")
        .iter()
        .all(unknown));
}
