//! Lanes: which conversation a worker takes next, and where a conversation waits.
//!
//! A lane is one conversation's remaining rows, head first; only its head row is ever in flight,
//! which is what keeps each conversation in chronological order. A lane whose head row must wait
//! (the settle delay after an unknown outcome, or the lookup route's proof) is parked here and
//! its worker takes another lane, so one slow conversation never idles a worker.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::checkpoint::QueuedRow;

use super::row::HeadProgress;

/// One conversation's remaining work.
pub struct Lane {
    pub conversation_id: String,
    /// Rows still to look at, in send order (sentAt, line).
    pub queue: VecDeque<QueuedRow>,
    /// Progress of the head row, kept across parking.
    pub head: Option<HeadProgress>,
    /// Set once a create answered 404: the conversation does not exist, so its later rows are
    /// failed without being sent. (line, reason)
    pub missing: Option<(u64, String)>,
}

impl Lane {
    pub fn new(conversation_id: String, queue: Vec<QueuedRow>) -> Lane {
        Lane {
            conversation_id,
            queue: queue.into(),
            head: None,
            missing: None,
        }
    }
}

/// What a worker should do next.
pub enum Next {
    /// Work this lane.
    Lane(Box<Lane>),
    /// Start this conversation: read its rows, then work it.
    Fresh(String),
    /// Nothing left for this worker.
    Done,
    /// Every remaining lane waits for the lookup route, and nothing can prove it.
    RouteDeadlock,
}

#[derive(Default)]
struct BoardState {
    fresh: VecDeque<String>,
    /// Lanes waiting until a moment (the settle delay).
    parked: Vec<(Instant, Lane)>,
    /// Lanes waiting until the lookup route is proven.
    awaiting_route: Vec<Lane>,
    /// Lanes being worked right now.
    active: usize,
}

/// Every lane of the run, and the workers' meeting point.
pub struct LaneBoard {
    state: Mutex<BoardState>,
    changed: Notify,
}

/// Whether the lookup route is proven, being proven, or given up on; read when choosing.
pub struct RouteView {
    pub proven: bool,
    pub proving: bool,
    pub broken: bool,
}

impl LaneBoard {
    pub fn new(conversations: Vec<String>) -> LaneBoard {
        LaneBoard {
            state: Mutex::new(BoardState {
                fresh: conversations.into(),
                ..BoardState::default()
            }),
            changed: Notify::new(),
        }
    }

    /// Waits for the next piece of work: a parked lane whose time has come, a lane whose route
    /// wait is over, a fresh conversation, in that order. `route` is asked afresh each time.
    pub async fn next(
        &self,
        route: impl Fn() -> RouteView,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Next {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake_at = {
                let Ok(mut state) = self.state.lock() else {
                    return Next::Done;
                };
                if stop.is_cancelled() {
                    return Next::Done;
                }
                let now = Instant::now();
                if let Some(index) = state.parked.iter().position(|(at, _)| *at <= now) {
                    let (_, lane) = state.parked.swap_remove(index);
                    state.active += 1;
                    return Next::Lane(Box::new(lane));
                }
                let route = route();
                if route.proven {
                    if let Some(lane) = state.awaiting_route.pop() {
                        state.active += 1;
                        return Next::Lane(Box::new(lane));
                    }
                }
                if let Some(conversation) = state.fresh.pop_front() {
                    state.active += 1;
                    return Next::Fresh(conversation);
                }
                let earliest = state.parked.iter().map(|(at, _)| *at).min();
                if earliest.is_none() {
                    if state.awaiting_route.is_empty() || route.broken {
                        return Next::Done;
                    }
                    if state.active == 0 && !route.proving && !route.proven {
                        return Next::RouteDeadlock;
                    }
                }
                earliest
            };
            tokio::select! {
                () = &mut notified => {}
                () = sleep_until_opt(wake_at) => {}
                () = stop.cancelled() => return Next::Done,
            }
        }
    }

    /// The worker is done with a lane (finished, held or stopped).
    pub fn finished(&self) {
        self.update(|_| {});
    }

    /// The lane waits until `until`, then any worker takes it up.
    pub fn park(&self, lane: Lane, until: Instant) {
        self.update(|state| state.parked.push((until, lane)));
    }

    /// The lane waits until the lookup route is proven.
    pub fn await_route(&self, lane: Lane) {
        self.update(|state| state.awaiting_route.push(lane));
    }

    /// Something the waiting workers decide on changed (e.g. the route's proof ended).
    pub fn wake(&self) {
        self.changed.notify_waiters();
    }

    /// Lanes parked for their settle delay, and lanes waiting for the route, for progress.
    pub fn waiting(&self) -> (usize, usize) {
        self.state
            .lock()
            .map(|state| (state.parked.len(), state.awaiting_route.len()))
            .unwrap_or_default()
    }

    /// Lanes that may hand a row over soon: being worked, or not yet taken up while fewer than
    /// `lanes` are worked (parked lanes and lanes waiting for the route are not coming soon).
    pub fn coming(&self, lanes: usize) -> usize {
        self.state
            .lock()
            .map(|state| {
                let idle = lanes.saturating_sub(state.active);
                state.active + state.fresh.len().min(idle)
            })
            .unwrap_or(usize::MAX)
    }

    fn update(&self, change: impl FnOnce(&mut BoardState)) {
        if let Ok(mut state) = self.state.lock() {
            state.active = state.active.saturating_sub(1);
            change(&mut state);
        }
        self.changed.notify_waiters();
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    fn route(proven: bool, proving: bool) -> impl Fn() -> RouteView {
        move || RouteView {
            proven,
            proving,
            broken: false,
        }
    }

    fn lane(id: &str) -> Lane {
        Lane::new(id.into(), Vec::new())
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_lane_comes_back_when_its_time_comes() {
        let board = LaneBoard::new(vec!["a".into()]);
        let stop = CancellationToken::new();
        let Next::Fresh(first) = board.next(route(true, false), &stop).await else {
            panic!("fresh first")
        };
        assert_eq!(first, "a");
        let started = Instant::now();
        board.park(lane("a"), started + Duration::from_secs(30));
        let Next::Lane(again) = board.next(route(true, false), &stop).await else {
            panic!("the parked lane")
        };
        assert_eq!(again.conversation_id, "a");
        assert!(started.elapsed() >= Duration::from_secs(30));
        board.finished();
        assert!(matches!(
            board.next(route(true, false), &stop).await,
            Next::Done
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn other_lanes_go_on_while_one_settles() {
        let board = LaneBoard::new(vec!["a".into(), "b".into()]);
        let stop = CancellationToken::new();
        assert!(matches!(
            board.next(route(true, false), &stop).await,
            Next::Fresh(_)
        ));
        board.park(lane("a"), Instant::now() + Duration::from_secs(30));
        let started = Instant::now();
        let Next::Fresh(second) = board.next(route(true, false), &stop).await else {
            panic!("the other conversation")
        };
        assert_eq!(second, "b");
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(board.waiting(), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn lanes_waiting_for_the_route_deadlock_only_when_nothing_can_prove_it() {
        let board = LaneBoard::new(vec!["a".into()]);
        let stop = CancellationToken::new();
        assert!(matches!(
            board.next(route(false, false), &stop).await,
            Next::Fresh(_)
        ));
        board.await_route(lane("a"));
        assert!(matches!(
            board.next(route(false, false), &stop).await,
            Next::RouteDeadlock
        ));
        // Once proven, the waiting lane is handed out.
        assert!(matches!(
            board.next(route(true, false), &stop).await,
            Next::Lane(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_proof_under_way_keeps_workers_waiting_until_woken() {
        let board = std::sync::Arc::new(LaneBoard::new(vec!["a".into()]));
        let stop = CancellationToken::new();
        assert!(matches!(
            board.next(route(false, false), &stop).await,
            Next::Fresh(_)
        ));
        board.await_route(lane("a"));
        let proven = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waiter = {
            let (board, stop, proven) = (board.clone(), stop.clone(), proven.clone());
            tokio::spawn(async move {
                let view = move || RouteView {
                    proven: proven.load(std::sync::atomic::Ordering::SeqCst),
                    proving: true,
                    broken: false,
                };
                matches!(board.next(view, &stop).await, Next::Lane(_))
            })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished());
        proven.store(true, std::sync::atomic::Ordering::SeqCst);
        board.wake();
        assert!(waiter.await.unwrap());
    }
}
