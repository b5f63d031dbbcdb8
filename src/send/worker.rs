//! A worker's loop: take a lane from the board, drive its head rows one after another until
//! the lane is done or must wait, hand it back, take the next.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::checkpoint::codes::CONVERSATION_NOT_FOUND;
use crate::checkpoint::{Checkpoint, CheckpointError, RowState};

use super::control::Halt;
use super::lanes::{Lane, Next};
use super::outcome;
use super::row::{self, HeadProgress, RowEnd};
use super::transport::Head;
use super::Shared;

/// Read-only checkpoint connections shared by the workers: a worker holds one only for a
/// synchronous read, so bulk mode's thousands of lanes need no more connections than threads.
pub struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Checkpoint>>,
}

impl Readers {
    pub fn new(path: PathBuf) -> Readers {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on an idle connection (opened if none is), then keeps it for the next.
    fn with<T>(
        &self,
        read: impl FnOnce(&mut Checkpoint) -> Result<T, CheckpointError>,
    ) -> Result<T, CheckpointError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut reader = match idle {
            Some(reader) => reader,
            None => Checkpoint::open_read_only(&self.path)?,
        };
        let answer = read(&mut reader);
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(reader);
        }
        answer
    }
}

/// One worker: takes lanes from the board until none is left.
pub async fn work(shared: &Arc<Shared>, readers: &Readers) -> Result<(), CheckpointError> {
    loop {
        let lane = match shared
            .board
            .next(|| shared.route_view(), shared.control.stop())
            .await
        {
            Next::Done => return Ok(()),
            Next::RouteDeadlock => {
                let mut reason = String::from(
                    "every remaining row waits on a lookup by externalId that answered 404, and \
                     the lookup route has not been proven: no message of this job is known to \
                     exist to prove it on, so a 404 cannot be told from a missing route. Nothing \
                     more was sent; every row is resumable. Check the key's \
                     org.permission.message.read role and the base URL (`kustomer-import check`), \
                     then `resume`",
                );
                if shared.options.skip_existing {
                    reason.push_str(
                        ". With --skip-existing every row is looked up before it is sent; if none \
                         of them can exist yet, resume with --skip-existing=false",
                    );
                }
                shared.control.halt(Halt::RouteUnproven(reason));
                return Ok(());
            }
            Next::Lane(lane) => *lane,
            Next::Fresh(conversation_id) => {
                let queue = readers.with(|reader| reader.conversation_queue(&conversation_id))?;
                Lane::new(conversation_id, queue)
            }
        };
        // Every lane handed out goes back exactly once: finished, parked or waiting.
        let failure = match drive_lane(shared, readers, lane).await {
            Ok(LaneEnd::Done) => {
                shared.board.finished();
                None
            }
            Ok(LaneEnd::Park(lane, until)) => {
                shared.board.park(lane, until);
                None
            }
            Ok(LaneEnd::AwaitRoute(lane)) => {
                shared.board.await_route(lane);
                None
            }
            Err(err) => {
                shared.board.finished();
                Some(err)
            }
        };
        let (settling, awaiting_route) = shared.board.waiting();
        shared.stats().set_waiting(settling, awaiting_route);
        if let Some(err) = failure {
            return Err(err);
        }
    }
}

enum LaneEnd {
    Done,
    Park(Lane, tokio::time::Instant),
    AwaitRoute(Lane),
}

async fn drive_lane(
    shared: &Arc<Shared>,
    readers: &Readers,
    mut lane: Lane,
) -> Result<LaneEnd, CheckpointError> {
    while let Some(row) = lane.queue.front() {
        if shared.control.stopping() {
            return Ok(LaneEnd::Done);
        }
        match row.state {
            RowState::Pending | RowState::Sending => {}
            // A failure that a retry can fix holds the rest of the conversation, so that
            // retrying it later keeps chronological order.
            RowState::Failed if row.retryable => {
                hold_rest(shared, &lane);
                return Ok(LaneEnd::Done);
            }
            _ => {
                lane.queue.pop_front();
                continue;
            }
        }
        if let Some((line, reason)) = &lane.missing {
            if row.state == RowState::Pending {
                let message = format!(
                    "not sent: the conversation was not found when line {line} was sent ({reason})"
                );
                shared.ledger.record(
                    row.line,
                    outcome::failed(CONVERSATION_NOT_FOUND, message, false),
                )?;
                lane.queue.pop_front();
                continue;
            }
        }
        #[cfg(debug_assertions)]
        panic_for_tests(row.line);
        let row = row.clone();
        let body = readers.with(|reader| reader.body(row.line))?;
        let mut progress = match lane.head.take() {
            Some(progress) if progress.line() == row.line => progress,
            _ => HeadProgress::new(shared, &row),
        };
        let queue = &lane.queue;
        let rows_left = || {
            queue
                .iter()
                .filter(|row| matches!(row.state, RowState::Pending | RowState::Sending))
                .count() as u64
        };
        let head = Head {
            line: row.line,
            conversation_id: &lane.conversation_id,
            body: &body,
            rows_left: &rows_left,
        };
        match row::advance(shared, &head, &row, &mut progress).await? {
            RowEnd::Finished => {
                lane.queue.pop_front();
            }
            RowEnd::ConversationMissing { reason } => {
                lane.queue.pop_front();
                lane.missing = Some((row.line, reason));
            }
            RowEnd::Hold => {
                hold_rest(shared, &lane);
                return Ok(LaneEnd::Done);
            }
            RowEnd::Park(until) => {
                lane.head = Some(progress);
                return Ok(LaneEnd::Park(lane, until));
            }
            RowEnd::AwaitRoute => {
                lane.head = Some(progress);
                return Ok(LaneEnd::AwaitRoute(lane));
            }
            RowEnd::Stopped => return Ok(LaneEnd::Done),
        }
    }
    Ok(LaneEnd::Done)
}

/// Counts the rows waiting behind the lane's head for the progress display.
fn hold_rest(shared: &Shared, lane: &Lane) {
    let held = lane
        .queue
        .iter()
        .skip(1)
        .filter(|row| matches!(row.state, RowState::Pending | RowState::Sending))
        .count();
    shared.stats().add_held(held as u64);
}

/// Test builds only: `KUSTOMER_IMPORT_TEST_PANIC_AT_LINE=N` panics the worker that reaches line
/// N, so the tests can prove a panic is an internal error (exit 70) that leaves rows resumable.
#[cfg(debug_assertions)]
fn panic_for_tests(line: u64) {
    if std::env::var("KUSTOMER_IMPORT_TEST_PANIC_AT_LINE").ok() == Some(line.to_string()) {
        panic!("test panic at line {line}");
    }
}
