//! The sandbox's in-memory world: API keys, fixed rate-limit windows, stored messages and the
//! counters behind `/_sandbox/stats`. One mutex guards it all; every operation on it is O(1)
//! (or O(log n) in a map) so the lock is held only briefly per request.
//!
//! The rate windows are in `clock`, the stats counters in `counters`, the bulk jobs in `bulk`.
//! The state is below every route module: it imports only `directory`, `faults`, `keys`,
//! `validate` and the sandbox's public types, never a route module, `http` or the router.

pub(crate) mod bulk;
mod clock;
mod counters;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::directory::{index_external_id, Directory};
use super::faults::FaultRoll;
use super::validate::BodyValidator;
use super::{SandboxConfig, SandboxMessage};
use clock::WindowCount;
pub(crate) use clock::{Clock, RateSnapshot};
use counters::Counters;
// The keys and roles live in `keys`; re-exported so that `state::KeyProfile` etc. still resolve.
pub(crate) use super::keys::{
    key_profile, KeyKind, KeyProfile, ROLE_ADMIN, ROLE_CONVERSATION_CREATE, ROLE_CONVERSATION_READ,
    ROLE_CUSTOMER_CREATE, ROLE_CUSTOMER_READ, ROLE_MESSAGE_CREATE, ROLE_MESSAGE_READ,
};

/// The one org every key belongs to.
pub(crate) const ORG_ID: &str = "5f1e2d3c4b5a69788796a5b4";

/// The limit header value sent when the org has no limit.
pub(crate) const UNLIMITED: u32 = 1_000_000;

/// The customer a conversation belongs to: a stable hash of its id, so one customer per
/// conversation (the per-customer limit is therefore also per conversation here).
pub(crate) fn customer_of(conversation_id: &str) -> String {
    let digest = Sha256::digest(format!("customer-of:{conversation_id}").as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a /v1 request was turned away before reaching its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Unauthorized,
    OrgLimited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreRefusal {
    CustomerLimited,
}

/// A stored message, shared read-only with response builders once stored.
#[derive(Debug)]
pub(crate) struct StoredMessage {
    pub id: String,
    pub conversation_id: String,
    pub customer_id: String,
    pub created_by: String,
    pub modified_by: String,
    pub attributes: Map<String, Value>,
    /// Stored by `POST /_sandbox/seed`, as if by another integration.
    pub seeded: bool,
}

impl StoredMessage {
    fn summary(&self) -> SandboxMessage {
        let text = |name: &str| {
            self.attributes
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        SandboxMessage {
            id: self.id.clone(),
            external_id: text("externalId"),
            sent_at: text("sentAt"),
            created_at: text("createdAt"),
            created_by: self.created_by.clone(),
            modified_at: text("modifiedAt"),
            modified_by: self.modified_by.clone(),
            imported_at: text("importedAt"),
            direction: text("direction"),
            preview: text("preview"),
            seeded: self.seeded,
        }
    }
}

/// A message ready to store: everything but its id.
pub(crate) struct NewMessage {
    pub conversation_id: String,
    pub customer_id: String,
    pub created_by: String,
    pub modified_by: String,
    pub attributes: Map<String, Value>,
    /// Messages with `importedAt` are exempt from the per-customer limit.
    pub counts_against_customer: bool,
}

/// The `data` of a lookup miss answered 200 (`POST /_sandbox/lookups/miss?data=..`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MissShape {
    /// `{"data": []}`
    EmptyList,
    /// `{"data": null}`
    Null,
    /// `{"data": {}}`
    EmptyObject,
}

/// Which spelling of the externalId lookup a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spelling {
    /// `externalId=`
    Camel,
    /// `externalid=`
    Lower,
}

/// How one lookup was answered, for the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LookupOutcome {
    Hit,
    Miss,
    NoRoute,
}

/// Everything behind the mutex.
pub(crate) struct World {
    fault_rng: StdRng,
    jitter_rng: StdRng,
    /// Dice of `error_429`, apart so that they never shift the other faults.
    limit_fault_rng: StdRng,
    /// Lookups draw from their own stream, so they never shift the create faults.
    lookup_rng: StdRng,
    id_salt: u64,
    id_sequence: u64,
    org_window: WindowCount,
    customer_windows: HashMap<String, WindowCount>,
    admin_revoked: bool,
    revoke_admin_after: Option<u64>,
    creates_seen: u64,
    messages: Vec<Arc<StoredMessage>>,
    /// Every message stored under an externalId, in storing order.
    by_external_id: HashMap<String, Vec<usize>>,
    by_conversation: HashMap<String, Vec<usize>>,
    /// ExternalIds stored but answered with no usable answer (store then drop or error), with
    /// when, until their first lookup arrives.
    unknown_outcomes: HashMap<String, Instant>,
    counters: Counters,
    /// Customers and conversations (issue 16).
    pub(crate) directory: Directory,
}

impl World {
    /// Counts a lookup answered with another integration's message first.
    pub(crate) fn count_other_first(&mut self) {
        self.counters.lookups.other_first += 1;
    }

    /// A new ObjectId-like id, unique within this sandbox (messages, customers, conversations).
    pub(crate) fn mint_id(&mut self) -> String {
        self.id_sequence += 1;
        object_id(self.id_salt.wrapping_add(self.id_sequence))
    }

    /// A message stored into a conversation created here joins that conversation's customer.
    fn join_customer(&self, message: &mut NewMessage) {
        if let Some(customer) = self
            .directory
            .customer_of_conversation(&message.conversation_id)
        {
            message.customer_id = customer;
        }
    }

    /// Keeps the highest count the org window reached.
    fn note_window_use(&mut self) {
        let used = u64::from(self.org_window.used);
        let most = &mut self.counters.max_requests_in_a_window;
        *most = (*most).max(used);
    }

    /// Gives the message its id and indexes it. A message whose externalId another imported
    /// (not seeded) message already carries counts as a duplicate.
    fn insert(&mut self, message: NewMessage, seeded: bool) -> Arc<StoredMessage> {
        let id = self.mint_id();
        let stored = Arc::new(StoredMessage {
            id,
            conversation_id: message.conversation_id,
            customer_id: message.customer_id,
            created_by: message.created_by,
            modified_by: message.modified_by,
            attributes: message.attributes,
            seeded,
        });
        let index = self.messages.len();
        self.messages.push(Arc::clone(&stored));
        if let Some(external_id) = stored.attributes.get("externalId").and_then(Value::as_str) {
            let messages = &self.messages;
            let repeated = index_external_id(&mut self.by_external_id, external_id, index, |at| {
                messages.get(at).is_some_and(|earlier| !earlier.seeded)
            });
            if repeated && !seeded {
                self.counters.duplicate_external_ids += 1;
            }
        }
        self.by_conversation
            .entry(stored.conversation_id.clone())
            .or_default()
            .push(index);
        stored
    }
}

/// State shared by every connection of one sandbox.
pub(crate) struct Shared {
    pub config: SandboxConfig,
    pub validator: BodyValidator,
    pub clock: Clock,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// While true, every `/v1` request waits in the gate (`POST /_sandbox/hold` / `release`).
    hold: tokio::sync::watch::Sender<bool>,
    /// Requests waiting on the hold right now.
    held: AtomicU64,
    /// `/v1` requests that reached the hold so far, and how many may pass before the hold
    /// engages by itself (`POST /_sandbox/hold?after=N`; `u64::MAX`: never).
    gate_passes: AtomicU64,
    hold_after: AtomicU64,
    /// While not 0, every lookup answers this status (`POST /_sandbox/lookups/fail` / `heal`):
    /// a read path that is down while creates still work.
    lookups_failing: AtomicU16,
    /// How a lookup miss answers (`POST /_sandbox/lookups/miss`): 0 as configured, else 200
    /// with `data` of [`MissShape`].
    miss_shape: AtomicU8,
    /// While true, every create answers 403 (`POST /_sandbox/forbid` / `restore`).
    creates_forbidden: AtomicBool,
    world: Mutex<World>,
    /// Bulk jobs, behind their own lock (see `bulk`).
    pub(crate) bulk: bulk::BulkState,
}

/// Counts one request as waiting on the hold for as long as it waits.
struct Held<'a>(&'a Shared);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one /v1 request as in flight for as long as it lives (dropped connections included).
pub(crate) struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    pub(crate) fn new(config: SandboxConfig) -> Self {
        // Separate streams so that latency draws never shift the fault sequence.
        let mut seeder = StdRng::seed_from_u64(config.seed);
        let fault_rng = StdRng::seed_from_u64(seeder.random());
        let jitter_rng = StdRng::seed_from_u64(seeder.random());
        let id_salt = seeder.random();
        let lookup_rng = StdRng::seed_from_u64(seeder.random());
        let limit_fault_rng = StdRng::seed_from_u64(seeder.random());
        // Bulk dice come from their own stream, derived apart from the seeder above.
        let bulk = bulk::BulkState::new(config.seed);
        let world = World {
            fault_rng,
            jitter_rng,
            lookup_rng,
            limit_fault_rng,
            id_salt,
            id_sequence: 0,
            org_window: WindowCount::default(),
            customer_windows: HashMap::new(),
            admin_revoked: false,
            revoke_admin_after: config.faults.revoke_admin_after,
            creates_seen: 0,
            messages: Vec::new(),
            by_external_id: HashMap::new(),
            by_conversation: HashMap::new(),
            unknown_outcomes: HashMap::new(),
            counters: Counters::default(),
            directory: Directory::default(),
        };
        Self {
            clock: Clock::new(config.window),
            validator: BodyValidator::messages(),
            config,
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            hold: tokio::sync::watch::Sender::new(false),
            held: AtomicU64::new(0),
            gate_passes: AtomicU64::new(0),
            hold_after: AtomicU64::new(u64::MAX),
            lookups_failing: AtomicU16::new(0),
            miss_shape: AtomicU8::new(0),
            creates_forbidden: AtomicBool::new(false),
            world: Mutex::new(world),
            bulk,
        }
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock leaves counters at worst slightly off; keep serving.
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(self)
    }

    /// Holds (`true`) or releases (`false`) every `/v1` request at the gate. Releasing also
    /// disarms a pending [`Shared::hold_after`].
    pub(crate) fn set_hold(&self, hold: bool) {
        if !hold {
            self.hold_after.store(u64::MAX, Ordering::Relaxed);
        }
        self.hold.send_replace(hold);
    }

    /// Lets the next `passes` `/v1` requests through, then holds every later one (as
    /// [`Shared::set_hold`]), so a test can stop a run at a point it chooses, before it ends.
    pub(crate) fn hold_after(&self, passes: u64) {
        let from = self.gate_passes.load(Ordering::Relaxed);
        self.hold_after
            .store(from.saturating_add(passes), Ordering::Relaxed);
    }

    /// Waits while the hold is on; counted in `held` meanwhile (a dropped request included).
    pub(crate) async fn pass_hold(&self) {
        let passes = self.gate_passes.fetch_add(1, Ordering::Relaxed);
        if passes >= self.hold_after.load(Ordering::Relaxed) {
            self.hold.send_replace(true);
        }
        let mut hold = self.hold.subscribe();
        if !*hold.borrow_and_update() {
            return;
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        let _waiting = Held(self);
        // Err only if the sender is gone, which cannot happen while `self` lives.
        let _ = hold.wait_for(|held| !*held).await;
    }

    pub(crate) fn next_delay(&self) -> Duration {
        let faults = &self.config.faults;
        if faults.jitter.is_zero() {
            return faults.latency;
        }
        faults.delay(&mut self.world().jitter_rng)
    }

    /// Counts the request, authenticates it and charges the org limit, in that order.
    pub(crate) fn admit(
        &self,
        bearer: Option<&str>,
        is_create: bool,
        now: Instant,
    ) -> (Result<&'static KeyProfile, Refusal>, RateSnapshot) {
        let window = self.clock.window_index(now);
        let mut world = self.world();
        world.counters.requests_total += 1;
        if is_create {
            world.creates_seen += 1;
            if world
                .revoke_admin_after
                .is_some_and(|after| world.creates_seen > after)
            {
                world.admin_revoked = true;
            }
        }
        let profile = bearer
            .and_then(key_profile)
            .filter(|profile| !(profile.kind == KeyKind::Admin && world.admin_revoked));
        let outcome = match profile {
            // Unauthenticated requests cannot be charged to the org.
            None => Err(Refusal::Unauthorized),
            Some(profile) => {
                let allowed = match self.config.org_limit {
                    Some(limit) => world.org_window.try_take(window, limit),
                    None => {
                        world.org_window.take(window);
                        true
                    }
                };
                world.note_window_use();
                if allowed {
                    Ok(profile)
                } else {
                    world.counters.faults.rate_limited_org += 1;
                    Err(Refusal::OrgLimited)
                }
            }
        };
        let used = world.org_window.used_in(window);
        drop(world);
        let limit = self.config.org_limit.unwrap_or(UNLIMITED);
        let snapshot = RateSnapshot {
            limit,
            remaining: limit.saturating_sub(used),
            reset_seconds: self.clock.seconds_to_reset(now),
            reset_epoch: self.clock.reset_epoch(now),
            reset_epoch_ms: self.clock.reset_epoch_ms(now),
        };
        (outcome, snapshot)
    }

    /// Whether this create is answered 429 by the `error_429` dice (counted when it is).
    pub(crate) fn roll_injected_429(&self) -> bool {
        if self.config.error_429 <= 0.0 {
            return false;
        }
        let mut world = self.world();
        let limited = world.limit_fault_rng.random::<f64>() < self.config.error_429;
        if limited {
            world.counters.injected_429 += 1;
        }
        limited
    }

    /// Charges one request of the live client to the org window (it has no key to check).
    pub(crate) fn charge_live_request(&self, now: Instant) {
        let window = self.clock.window_index(now);
        let mut world = self.world();
        let allowed = match self.config.org_limit {
            Some(limit) => world.org_window.try_take(window, limit),
            None => {
                world.org_window.take(window);
                true
            }
        };
        world.note_window_use();
        let live = &mut world.counters.live_client;
        live.requests += 1;
        if allowed {
            live.ok += 1;
        } else {
            live.rate_limited += 1;
        }
    }

    /// Rolls the fault dice for one create request and counts what they injected before storing.
    pub(crate) fn roll_faults(&self) -> FaultRoll {
        let mut world = self.world();
        let roll = self.config.faults.roll(&mut world.fault_rng);
        let counts = &mut world.counters;
        match roll.before_store {
            super::faults::BeforeStore::Proceed => {}
            super::faults::BeforeStore::Error500 => counts.faults.error_500 += 1,
            super::faults::BeforeStore::Error503 => counts.faults.error_503 += 1,
            super::faults::BeforeStore::DropConnection => {
                counts.faults.drop_before_store += 1;
                counts.dropped_connections += 1;
            }
        }
        roll
    }

    /// Charges the per-customer limit and stores the message.
    pub(crate) fn store(
        &self,
        mut message: NewMessage,
        now: Instant,
    ) -> Result<Arc<StoredMessage>, StoreRefusal> {
        let window = self.clock.window_index(now);
        let mut world = self.world();
        world.join_customer(&mut message);
        if message.counts_against_customer {
            let allowed = world
                .customer_windows
                .entry(message.customer_id.clone())
                .or_default()
                .try_take(window, self.config.customer_limit);
            if !allowed {
                world.counters.faults.rate_limited_customer += 1;
                return Err(StoreRefusal::CustomerLimited);
            }
        }
        Ok(world.insert(message, false))
    }

    /// Stores messages as if another integration had created them: no limits, no faults, not
    /// counted in `messages_stored` nor as duplicates.
    pub(crate) fn seed(&self, messages: Vec<NewMessage>) -> Vec<Arc<StoredMessage>> {
        let mut world = self.world();
        let stored: Vec<_> = messages
            .into_iter()
            .map(|mut message| {
                world.join_customer(&mut message);
                world.insert(message, true)
            })
            .collect();
        world.counters.seeded += stored.len() as u64;
        stored
    }

    /// Every message stored under `external_id`, in any conversation, newest first.
    /// The stored message with this id (a scan: the sandbox reads messages back rarely).
    pub(crate) fn by_id(&self, id: &str) -> Option<Arc<StoredMessage>> {
        self.world()
            .messages
            .iter()
            .find(|message| message.id == id)
            .cloned()
    }

    /// Every message stored into this conversation, in storing order.
    pub(crate) fn conversation_messages(&self, conversation_id: &str) -> Vec<Arc<StoredMessage>> {
        let world = self.world();
        world
            .by_conversation
            .get(conversation_id)
            .map(|indexes| {
                indexes
                    .iter()
                    .filter_map(|index| world.messages.get(*index).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn by_external_id(&self, external_id: &str) -> Vec<Arc<StoredMessage>> {
        let world = self.world();
        world
            .by_external_id
            .get(external_id)
            .map(|indexes| {
                indexes
                    .iter()
                    .rev()
                    .filter_map(|index| world.messages.get(*index).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every lookup answers `status` from now on (`Some`), or as usual again (`None`).
    pub(crate) fn set_lookups_failing(&self, status: Option<u16>) {
        self.lookups_failing
            .store(status.unwrap_or(0), Ordering::Relaxed);
    }

    /// The status this lookup fails with, if lookups are failing, counting it when it does.
    pub(crate) fn lookup_fails(&self) -> Option<u16> {
        let status = self.lookups_failing.load(Ordering::Relaxed);
        if status == 0 {
            return None;
        }
        let faults = &mut self.world().counters.faults;
        if status == 408 {
            faults.lookup_408 += 1;
        } else {
            faults.lookup_503 += 1;
        }
        Some(status)
    }

    /// How a lookup miss answers from now on (`None`: as configured).
    pub(crate) fn set_miss_shape(&self, shape: Option<MissShape>) {
        let code = match shape {
            None => 0,
            Some(MissShape::EmptyList) => 1,
            Some(MissShape::Null) => 2,
            Some(MissShape::EmptyObject) => 3,
        };
        self.miss_shape.store(code, Ordering::Relaxed);
    }

    pub(crate) fn miss_shape(&self) -> Option<MissShape> {
        match self.miss_shape.load(Ordering::Relaxed) {
            1 => Some(MissShape::EmptyList),
            2 => Some(MissShape::Null),
            3 => Some(MissShape::EmptyObject),
            _ => None,
        }
    }

    /// Every create answers 403 from now on (`true`), or as the key allows again (`false`).
    pub(crate) fn set_creates_forbidden(&self, forbidden: bool) {
        self.creates_forbidden.store(forbidden, Ordering::Relaxed);
    }

    /// Whether this create is refused 403 by `POST /_sandbox/forbid`, counting it when it is.
    pub(crate) fn create_forbidden(&self) -> bool {
        let forbidden = self.creates_forbidden.load(Ordering::Relaxed);
        if forbidden {
            self.world().counters.faults.forbidden += 1;
        }
        forbidden
    }

    /// A lookup of `external_id` arrived: the first one after an unknown-outcome answer
    /// shortens `lookup_after_unknown_outcome_min_ms` if it came sooner than any before.
    pub(crate) fn note_lookup(&self, external_id: &str) {
        let mut world = self.world();
        if let Some(answered) = world.unknown_outcomes.remove(external_id) {
            let gap = u64::try_from(answered.elapsed().as_millis()).unwrap_or(u64::MAX);
            let least = &mut world.counters.lookup_after_unknown_outcome_min_ms;
            *least = Some(least.map_or(gap, |before| before.min(gap)));
        }
    }

    pub(crate) fn roll_lookup_429(&self) -> bool {
        let mut world = self.world();
        let limited =
            super::faults::roll_lookup_429(self.config.faults.lookup_429, &mut world.lookup_rng);
        if limited {
            world.counters.lookups.lookup_429 += 1;
            world.counters.faults.lookup_429 += 1;
        }
        limited
    }

    pub(crate) fn set_admin_revoked(&self, revoked: bool) {
        let mut world = self.world();
        world.admin_revoked = revoked;
        if !revoked {
            // Restoring disarms `revoke_admin_after`, or the next create would revoke again.
            world.revoke_admin_after = None;
        }
    }
}

/// An ObjectId-like id: 4 bytes of Unix time, then 8 bytes unique within this sandbox.
pub(crate) fn object_id(unique: u64) -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    // ObjectIds keep only the low 32 bits of the time, as MongoDB does.
    format!("{:08x}{unique:016x}", seconds as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_ids_are_stable_object_ids() {
        let a = customer_of("0123456789abcdef01234567");
        assert_eq!(a, customer_of("0123456789abcdef01234567"));
        assert_ne!(a, customer_of("0123456789abcdef01234568"));
        assert!(super::super::validate::is_object_id(&a));
    }

    #[test]
    fn object_ids_differ_by_their_unique_part() {
        let a = object_id(1);
        let b = object_id(2);
        assert_eq!(a.len(), 24);
        assert_ne!(a[8..], b[8..]);
    }
}
