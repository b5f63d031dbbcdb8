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
fn job_time_is_learned_smoothly() {
    let mut timer = JobTimer::new(Duration::from_secs(1));
    // Read too early: the wait grows at once to a little over what the job took.
    let late = Seen {
        took: Duration::from_millis(1_500),
        first_read: false,
    };
    timer.observe(late);
    assert_eq!(timer.expected, Duration::from_millis(1_650));
    // Found done on the first read: the wait shrinks slowly, however long that read waited.
    let early = Seen {
        took: Duration::from_secs(5),
        first_read: true,
    };
    timer.observe(early);
    assert_eq!(timer.expected, Duration::from_millis(1_617));
    assert_eq!(timer.slowest, Duration::from_secs(5));
    // One job ten times slower: the slowest, but the wait follows the recent median.
    let slow = Seen {
        took: Duration::from_secs(16),
        first_read: false,
    };
    timer.observe(slow);
    assert_eq!(timer.expected, Duration::from_millis(5_500));
    assert_eq!(timer.slowest, slow.took);
    for _ in 0..500 {
        timer.observe(early);
    }
    assert_eq!(timer.expected, SHORTEST_JOB_GUESS);
    // Slow jobs, one after another: the median follows them.
    for _ in 0..RECENT_JOBS {
        timer.observe(slow);
    }
    assert_eq!(timer.expected, Duration::from_millis(17_600));
    // A job that never showed results teaches nothing.
    timer.observe(Seen::default());
    assert_eq!(timer.expected, Duration::from_millis(17_600));
}

#[test]
fn a_job_is_read_again_soon_after_a_near_miss_then_once_per_job_time() {
    let learned = Duration::from_secs(4);
    assert_eq!(poll_after(learned, 1), Duration::from_secs(1));
    assert_eq!(poll_after(learned, NEAR_MISS_READS), Duration::from_secs(1));
    assert_eq!(poll_after(learned, NEAR_MISS_READS + 1), learned);
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
    waited: true,
    more_coming: false,
    budget_spare: false,
};

#[test]
fn a_job_goes_when_full_or_when_waiting_costs_time_the_budget_does_not_need() {
    // Full: goes at once, without lingering.
    let full = Gathering {
        heads: 100,
        lingered: false,
        ..GATHERING
    };
    assert_eq!(next_move(full), Move::Job);
    // Never beyond the jobs the budget pays for.
    let busy = Gathering { target: 3, ..full };
    assert_eq!(next_move(busy), Move::Wait);
    // Part-filled while jobs in flight will bring heads back, and requests are short.
    assert_eq!(next_move(GATHERING), Move::Wait);
    // ... but time is short: it goes.
    let spare = Gathering {
        budget_spare: true,
        ..GATHERING
    };
    assert_eq!(next_move(spare), Move::Job);
    // Nothing in flight: nothing else to wait for.
    let idle = Gathering {
        in_flight: 0,
        ..GATHERING
    };
    assert_eq!(next_move(idle), Move::Job);
    // Heads still arriving, or lanes still working for less than FILL_WAIT: wait.
    let arriving = Gathering {
        lingered: false,
        ..idle
    };
    assert_eq!(next_move(arriving), Move::Wait);
    let working = Gathering {
        more_coming: true,
        waited: false,
        ..idle
    };
    assert_eq!(next_move(working), Move::Wait);
    // Too few for a job: alone.
    let two = Gathering { heads: 2, ..idle };
    assert_eq!(next_move(two), Move::Alone);
    let none = Gathering { heads: 0, ..idle };
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
