//! The import's adaptive share of the org window, under its ceiling (`--max-rpm` or
//! `--budget-share`): the org's live integrations spend the same window, so the import watches
//! `x-ratelimit-limit`, `-remaining` and `-reset` on every response, estimates what the others
//! spend, and paces itself so that the window always keeps a reserve for them.
//!
//! What the headers say, per window: `used = limit - remaining` counts everyone's requests the
//! server has seen. Ours are known by their admission sequence number, so the others' spend is
//! `used` minus ours. Our requests in flight make that lag (the server may or may not have
//! counted them when it answered), so the estimate takes *all* our requests admitted by the time
//! an answer is read as counted: the others' figure is then a lower bound that never mistakes our
//! own in-flight requests for theirs, and since `others + ours` is exactly `used` for the
//! allowance below, the lag cancels out where it matters.
//!
//! Plan, at every admission: `allowance = limit - reserve - others so far - others' projected
//! spend from the last answer until the reset - ours so far`. Non-positive: wait for the reset (the import yields).
//! Otherwise pace evenly at `allowance / time left`; the ceiling limiter still applies on top.
//! The others' rate is the previous window's blended with this one's average (weighted by how far
//! this window has run), or this window's average alone when it runs well above the previous one
//! (a surge, believed at once); the reserve absorbs the unevenness of live traffic in between.
//! Their spend so far is always the measured one, and while yielding a rare probe keeps the
//! measure fresh, so the import takes its share back once they calm down.

use std::time::Duration;

use tokio::time::Instant;

use super::RateInfo;

/// Room kept in every window for the org's other clients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reserve {
    /// A share of `x-ratelimit-limit`, in percent.
    Percent(f64),
    /// Requests per window.
    Requests(u32),
}

impl Default for Reserve {
    fn default() -> Reserve {
        Reserve::Percent(10.0)
    }
}

impl Reserve {
    pub fn of(self, limit: u32) -> u32 {
        match self {
            Reserve::Percent(percent) => {
                ((f64::from(limit) * percent / 100.0).ceil() as u32).min(limit)
            }
            Reserve::Requests(n) => n.min(limit),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Reserve::Percent(percent) => format!("{percent}% of the limit"),
            Reserve::Requests(n) => format!("{n} requests per window"),
        }
    }
}

/// Shortest time-left used in a plan: avoids dividing by (almost) zero at the reset.
const SHORTEST_TIME_LEFT: Duration = Duration::from_millis(20);
/// A window's average is not trusted over less than this much of it.
const SHORTEST_RATE_SPAN: Duration = Duration::from_millis(500);
/// This window's pace over the last one's that counts as a surge rather than the usual
/// unevenness of live traffic, once this share of the window has run.
const SURGE: f64 = 1.25;
const SURGE_AFTER: f64 = 0.2;
/// While yielding, one request this often still goes when the window has room by measure (only
/// the projection says no): without answers the import could not see the others calm down.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A waiter re-plans at least this often (a surge or a calm may change its answer).
pub(super) const REPLAN_EVERY: Duration = Duration::from_millis(250);

/// One org window as the import sees it.
#[derive(Debug, Clone)]
struct Window {
    /// When it resets: the earliest end any answer in it implied (reset values are rounded up).
    end: Instant,
    /// Our admissions before this window: ours in it are `granted - start_seq`.
    start_seq: u64,
    /// Highest sequence number of ours that an answer in this window came back for.
    max_seq: u64,
    /// Lower bound of what the others spent in it so far.
    others: u64,
    limit: u32,
    /// The last answer read in it, if any.
    last_seen: Option<Instant>,
}

/// What the pacer decided for one admission.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Gate {
    /// Go now (the admission is counted).
    Go,
    /// Come back at this instant.
    WaitUntil(Instant),
}

/// Figures for the progress line, `status` and the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ShareView {
    /// True once an answer carried the rate-limit headers.
    pub adaptive: bool,
    pub org_limit: Option<u32>,
    pub reserve: Option<u32>,
    /// The others' estimated spend, requests per minute.
    pub others_per_minute: Option<f64>,
    /// What the import is allowed now (at most its ceiling), requests per minute.
    pub allowed_per_minute: Option<f64>,
    /// How long admissions have waited for the others so far.
    pub yielded: Duration,
    /// Whether admissions are held back right now.
    pub yielding: bool,
}

pub(super) struct SharePacer {
    reserve: Reserve,
    ceiling_per_second: f64,
    /// Longest reset seen: the window's length.
    window_len: Duration,
    current: Option<Window>,
    /// The others' rate (per second) in the last finished window.
    previous_rate: Option<f64>,
    /// Our admissions so far; the sequence number of the next one is `granted + 1`.
    granted: u64,
    next_slot: Option<Instant>,
    last_probe: Option<Instant>,
    waiting: usize,
    waiting_since: Option<Instant>,
    yielded: Duration,
    allowed_per_second: Option<f64>,
}

impl SharePacer {
    pub(super) fn new(reserve: Reserve, ceiling_per_minute: u32) -> SharePacer {
        SharePacer {
            reserve,
            ceiling_per_second: f64::from(ceiling_per_minute.max(1)) / 60.0,
            window_len: Duration::ZERO,
            current: None,
            previous_rate: None,
            granted: 0,
            next_slot: None,
            last_probe: None,
            waiting: 0,
            waiting_since: None,
            yielded: Duration::ZERO,
            allowed_per_second: None,
        }
    }

    /// Learns from an answer to our request number `seq`.
    pub(super) fn observe(&mut self, rate: &RateInfo, seq: u64, now: Instant) {
        let (Some(limit), Some(remaining), Some(reset_in)) =
            (rate.limit, rate.remaining, rate.reset_in)
        else {
            return;
        };
        if limit == 0 {
            return;
        }
        self.window_len = self.window_len.max(reset_in).max(Duration::from_secs(1));
        let half = self.window_len / 2;
        let Some(seen_end) = now.checked_add(reset_in) else {
            return;
        };
        let same_window = match &self.current {
            // An answer read late that still describes an earlier window: ignore it.
            Some(window) if seen_end + half < window.end => return,
            Some(window) => seen_end <= window.end + half,
            None => false,
        };
        if !same_window {
            let start_seq = match self.current.take() {
                Some(window) => {
                    self.previous_rate = self.final_rate(&window).or(self.previous_rate);
                    window.max_seq
                }
                // Everything we sent so far may count in this first window.
                None => 0,
            };
            self.current = Some(Window {
                end: seen_end,
                start_seq,
                max_seq: start_seq,
                others: 0,
                limit,
                last_seen: None,
            });
        }
        let granted = self.granted;
        let Some(window) = self.current.as_mut() else {
            return;
        };
        // Reset values are rounded up, so every answer's end is at or after the true one: the
        // earliest is the best estimate. Windows only ever start from an answer, never from a
        // guess of their length, so an early estimate cannot carry over.
        window.end = window.end.min(seen_end);
        window.limit = limit;
        window.max_seq = window.max_seq.max(seq);
        window.last_seen = Some(now);
        let used = u64::from(limit.saturating_sub(remaining.min(limit)));
        let ours = granted.saturating_sub(window.start_seq);
        window.others = window.others.max(used.saturating_sub(ours));
    }

    /// The others' average rate over a window, from its last answer.
    fn final_rate(&self, window: &Window) -> Option<f64> {
        let seen = window.last_seen?;
        Some(window.others as f64 / self.elapsed_at(window, seen).as_secs_f64())
    }

    /// The window to plan in, and the others' rate in the window before it. Past the last
    /// known reset with no answer from the new window yet, that is a provisional window: ours
    /// since the last answer count in it, the others' spend is projected from the last one.
    fn planning_window(&self, now: Instant) -> Option<(Window, Option<f64>)> {
        let window = self.current.as_ref()?;
        if now < window.end {
            return Some((window.clone(), self.previous_rate));
        }
        let mut end = window.end;
        while end <= now {
            end = end.checked_add(self.window_len)?;
        }
        let provisional = Window {
            end,
            start_seq: window.max_seq,
            max_seq: window.max_seq,
            others: 0,
            limit: window.limit,
            last_seen: None,
        };
        Some((provisional, self.final_rate(window).or(self.previous_rate)))
    }

    /// Time from the window's start to `at`, never under [`SHORTEST_RATE_SPAN`] nor a tenth of
    /// the window (early in a window a handful of requests is not a rate).
    fn elapsed_at(&self, window: &Window, at: Instant) -> Duration {
        let left = window.end.saturating_duration_since(at);
        self.window_len
            .saturating_sub(left)
            .max(SHORTEST_RATE_SPAN)
            .max(self.window_len / 10)
    }

    /// The others' expected rate for the rest of the window, per second.
    fn others_rate(&self, window: &Window, previous: Option<f64>, now: Instant) -> f64 {
        let current = window
            .last_seen
            .map(|seen| window.others as f64 / self.elapsed_at(window, seen).as_secs_f64());
        match (previous, current) {
            (Some(previous), Some(current)) => {
                let left = window.end.saturating_duration_since(now).as_secs_f64();
                let run = (1.0 - left / self.window_len.as_secs_f64()).clamp(0.0, 1.0);
                // A surge: this window's pace well above the last one's, over enough of it not
                // to be the usual unevenness of live traffic, is believed at once.
                if run >= SURGE_AFTER && current > previous * SURGE {
                    current
                } else {
                    previous * (1.0 - run) + current * run
                }
            }
            (Some(previous), None) => previous,
            (None, Some(current)) => current,
            (None, None) => 0.0,
        }
    }

    /// Requests per second the import may spend now (zero: none until the reset), the reset,
    /// and whether the window has room by measure alone (for a probe); `None` without a window
    /// (no headers).
    fn allowed_rate(&mut self, now: Instant) -> Option<(f64, Instant, bool)> {
        let (window, previous) = self.planning_window(now)?;
        let left = window
            .end
            .saturating_duration_since(now)
            .max(SHORTEST_TIME_LEFT)
            .as_secs_f64();
        // The others keep spending between our answers: project from the last one read.
        let unseen_from = window.last_seen.unwrap_or(now).min(now);
        let unseen = window
            .end
            .saturating_duration_since(unseen_from)
            .max(SHORTEST_TIME_LEFT)
            .as_secs_f64();
        let others_rate = self.others_rate(&window, previous, now);
        let others_rest = others_rate * unseen;
        // What they likely spent since the last answer, before looking ahead.
        let others_by_now = window.others as f64
            + others_rate * now.saturating_duration_since(unseen_from).as_secs_f64();
        let ours = self.granted.saturating_sub(window.start_seq) as f64;
        let allowance = f64::from(window.limit)
            - f64::from(self.reserve.of(window.limit))
            - window.others as f64
            - others_rest
            - ours;
        let rate = (allowance / left).clamp(0.0, self.ceiling_per_second);
        self.allowed_per_second = Some(rate);
        let measured_room = f64::from(window.limit)
            - f64::from(self.reserve.of(window.limit))
            - others_by_now
            - ours
            >= 1.0;
        Some((
            if allowance < 1.0 { 0.0 } else { rate },
            window.end,
            measured_room,
        ))
    }

    /// Admits one request now, or says when to ask again. Every `Go` takes a sequence number.
    pub(super) fn gate(&mut self, now: Instant) -> Gate {
        let decision = match self.allowed_rate(now) {
            None => Gate::Go,
            Some((rate, reset, measured_room)) if rate <= 0.0 => {
                let probe_due = self
                    .last_probe
                    .is_none_or(|probe| now.saturating_duration_since(probe) >= PROBE_EVERY);
                if measured_room && probe_due {
                    self.last_probe = Some(now);
                    Gate::Go
                } else {
                    Gate::WaitUntil(reset.min(now + REPLAN_EVERY))
                }
            }
            Some((rate, _, _)) if rate >= self.ceiling_per_second => Gate::Go,
            Some((rate, _, _)) => {
                let spacing =
                    Duration::from_secs_f64((1.0 / rate).min(REPLAN_EVERY.as_secs_f64() * 40.0));
                match self.next_slot {
                    Some(slot) if slot > now => Gate::WaitUntil(slot.min(now + REPLAN_EVERY)),
                    _ => {
                        self.next_slot = Some(now + spacing);
                        Gate::Go
                    }
                }
            }
        };
        if decision == Gate::Go {
            self.granted += 1;
        }
        decision
    }

    /// The pace the share allows now, requests per second (`None` until the API reported a
    /// window).
    pub(super) fn allowed_per_second(&self) -> Option<f64> {
        self.allowed_per_second
    }

    /// The sequence number of the latest `Go`.
    pub(super) fn granted(&self) -> u64 {
        self.granted
    }

    /// A waiter starts (`true`) or stops (`false`) waiting for the others: the time at least one
    /// waits is the time the import yielded.
    pub(super) fn waiting(&mut self, started: bool, now: Instant) {
        if started {
            if self.waiting == 0 {
                self.waiting_since = Some(now);
            }
            self.waiting += 1;
        } else {
            self.waiting = self.waiting.saturating_sub(1);
            if self.waiting == 0 {
                if let Some(since) = self.waiting_since.take() {
                    self.yielded += now.saturating_duration_since(since);
                }
            }
        }
    }

    pub(super) fn view(&self, now: Instant) -> ShareView {
        let yielded = self.yielded
            + self
                .waiting_since
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        match self.planning_window(now) {
            None => ShareView {
                yielded,
                ..ShareView::default()
            },
            Some((window, previous)) => ShareView {
                adaptive: true,
                org_limit: Some(window.limit),
                reserve: Some(self.reserve.of(window.limit)),
                others_per_minute: Some(self.others_rate(&window, previous, now) * 60.0),
                allowed_per_minute: self.allowed_per_second.map(|rate| rate * 60.0),
                yielded,
                yielding: self.waiting > 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(limit: u32, remaining: u32, reset_secs: u64) -> RateInfo {
        RateInfo {
            limit: Some(limit),
            remaining: Some(remaining),
            reset_in: Some(Duration::from_secs(reset_secs)),
            retry_after: None,
        }
    }

    fn admit(pacer: &mut SharePacer, now: Instant) -> bool {
        pacer.gate(now) == Gate::Go
    }

    #[test]
    fn reserve_forms() {
        assert_eq!(Reserve::Percent(10.0).of(1800), 180);
        assert_eq!(Reserve::Percent(10.0).of(5), 1);
        assert_eq!(Reserve::Requests(50).of(30), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn without_headers_the_gate_is_open() {
        let mut pacer = SharePacer::new(Reserve::default(), 600);
        let now = Instant::now();
        for _ in 0..100 {
            assert!(admit(&mut pacer, now));
        }
        pacer.observe(&RateInfo::default(), 1, now);
        assert!(admit(&mut pacer, now));
        assert!(!pacer.view(now).adaptive);
    }

    #[tokio::test(start_paused = true)]
    async fn others_are_what_the_headers_say_minus_ours() {
        let mut pacer = SharePacer::new(Reserve::default(), 60_000);
        let start = Instant::now();
        for _ in 0..10 {
            assert!(admit(&mut pacer, start));
        }
        // 10 of ours admitted; the server has seen 50 requests in all.
        pacer.observe(&info(1000, 950, 60), 10, start);
        let window = pacer.current.clone().unwrap();
        assert_eq!(window.others, 40);
        // An answer to our first request, read after all ten were sent: the others' figure
        // never counts our in-flight requests as theirs (at most 40, not 49).
        pacer.observe(&info(1000, 959, 60), 1, start);
        assert_eq!(pacer.current.clone().unwrap().others, 40);
    }

    #[tokio::test(start_paused = true)]
    async fn yields_when_others_leave_no_room_and_comes_back_after_the_reset() {
        let mut pacer = SharePacer::new(Reserve::Percent(10.0), 60_000);
        let start = Instant::now();
        assert!(admit(&mut pacer, start));
        // Others already spent 95 of 100 with 30 s of a 60 s window left: nothing for us.
        pacer.observe(&info(100, 4, 30), 1, start);
        match pacer.gate(start) {
            Gate::WaitUntil(until) => assert!(until > start),
            Gate::Go => panic!("must yield"),
        }
        pacer.waiting(true, start);
        let after_reset = start + Duration::from_secs(31);
        pacer.waiting(false, after_reset);
        assert!(pacer.view(after_reset).yielded >= Duration::from_secs(31));
        // New window, seen as fresh: the others' rate from the last one (95 over 30 s) leaves
        // 100 - 10 - 95/30*60 < 0 at first, so the import starts only as they prove calmer.
        pacer.observe(&info(100, 99, 60), 1, after_reset);
        let calm = after_reset + Duration::from_secs(40);
        pacer.observe(&info(100, 98, 20), 1, calm);
        assert!(
            admit(&mut pacer, calm),
            "others calmed down: take the share back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn paces_below_the_ceiling_to_keep_the_reserve() {
        // Window 60 s, limit 600, others steady at 5/s (300 a window), reserve 60: we may
        // spend at most 240 a window, well under our 6,000/min ceiling.
        let mut pacer = SharePacer::new(Reserve::Percent(10.0), 6_000);
        let start = Instant::now();
        let mut now = start;
        let mut ours = 0u64;
        let mut most_used = 0u64;
        let step = Duration::from_millis(10);
        while now < start + Duration::from_secs(60) {
            if admit(&mut pacer, now) {
                ours += 1;
                let elapsed = now.duration_since(start).as_secs_f64();
                let others = (elapsed * 5.0) as u64;
                let used = (others + ours).min(600);
                most_used = most_used.max(used);
                let reset = 60 - now.duration_since(start).as_secs();
                pacer.observe(&info(600, 600 - used as u32, reset), pacer.granted(), now);
            }
            now += step;
        }
        assert!(
            most_used <= 540,
            "{most_used} used: the reserve of 60 must stay free"
        );
        assert!(
            ours >= 150,
            "ours {ours}: the share left should mostly be used"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn yields_to_a_surge_so_the_others_are_never_refused() {
        // Window 60 s, limit 600, reserve 60. Others spend 5/s (300 a window); in the second
        // window they surge to 8/s after 20 s (420 in that window). The import, planning on 300,
        // must give way: the others must never find the window spent.
        let mut pacer = SharePacer::new(Reserve::Percent(10.0), 6_000);
        let start = Instant::now();
        let others_rate = |t: f64| if t < 80.0 { 5.0 } else { 8.0 };
        let mut now = start;
        let mut others = 0.0f64;
        let mut used_in_window = [0u64; 2];
        let mut ours_in_window = [0u64; 2];
        let step = Duration::from_millis(10);
        while now < start + Duration::from_secs(120) {
            let t = now.duration_since(start).as_secs_f64();
            let window = usize::from(t >= 60.0);
            let window_start = 60.0 * window as f64;
            others += others_rate(t) * 0.01;
            let others_in_window =
                (others - (0..window).map(|_| 300.0).sum::<f64>()).floor() as u64;
            if admit(&mut pacer, now) {
                ours_in_window[window] += 1;
                let used = others_in_window + ours_in_window[window];
                used_in_window[window] = used_in_window[window].max(used);
                let reset = (window_start + 60.0 - t).ceil() as u64;
                pacer.observe(
                    &info(600, 600u64.saturating_sub(used) as u32, reset),
                    pacer.granted(),
                    now,
                );
            }
            used_in_window[window] =
                used_in_window[window].max(others_in_window + ours_in_window[window]);
            now += step;
        }
        // The reserve kept, give or take the request that found the others' latest spend.
        assert!(used_in_window[0] <= 541, "{used_in_window:?}");
        assert!(
            used_in_window[1] <= 600,
            "others refused: {used_in_window:?}"
        );
        assert!(
            ours_in_window[1] + 60 < ours_in_window[0],
            "yielded in the surge: {ours_in_window:?}"
        );
    }
}
