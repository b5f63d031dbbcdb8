//! Requests under the retry rules: lookups retried as reads, and creates sent exactly once,
//! an unknown outcome settled by a lookup (on a route proven to find records) before any resend.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Halt, Route, Shared};
use crate::checkpoint::Entity;
use crate::client::{ApiError, EntityLookup};
use crate::retry::{
    reconnect_delay, RequestKind, RetryAction, RetrySchedule, MAX_RATE_LIMITED_PER_ROW,
};
use crate::send::SendStop;

/// How often, and how long apart at least, a create with an unknown outcome waits for a record
/// to prove its lookup route on before it is left unsettled.
const PROOF_TRIES: u32 = 10;
const PROOF_WAIT: Duration = Duration::from_millis(500);

impl Shared {
    /// One lookup, retried as lookups are (reads again after 5xx, timeouts and 429s).
    pub(super) async fn lookup<T, F, Fut>(
        &self,
        route: Route,
        ask: F,
    ) -> Result<EntityLookup<T>, Halt>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<EntityLookup<T>, ApiError>>,
    {
        let mut schedule = RetrySchedule::new(self.plan.retry);
        let mut refusals = Refusals::default();
        loop {
            if self.cancel.is_cancelled() {
                return Err(Halt::Stop(SendStop::Interrupted));
            }
            self.counters.lookups.fetch_add(1, Ordering::Relaxed);
            let err = match ask().await {
                Ok(answer) => {
                    self.answered();
                    if !matches!(answer, EntityLookup::Missing) {
                        self.proven[route as usize].store(true, Ordering::Relaxed);
                    }
                    return Ok(answer);
                }
                Err(err) => err,
            };
            match err.retry_action(RequestKind::Lookup) {
                RetryAction::StopRun => return Err(Halt::Stop(SendStop::ApiFatal(err))),
                action @ (RetryAction::RateLimited | RetryAction::NeverSent) => {
                    self.wait_to_resend(action, &err, &mut refusals).await?;
                }
                _ => {
                    self.answered();
                    match schedule.next_delay(None) {
                        Some(delay) => self.pause(delay).await?,
                        None => return Err(transient(&err)),
                    }
                }
            }
        }
    }

    /// Before sending again what the API refused unprocessed (429), or what never left (the
    /// connection did not open): the throttle's pause, or a reconnect backoff under the
    /// unreachable watchdog. Both bounded: 429s per request, and the watchdog.
    pub(super) async fn wait_to_resend(
        &self,
        action: RetryAction,
        err: &ApiError,
        refusals: &mut Refusals,
    ) -> Result<(), Halt> {
        if action == RetryAction::RateLimited {
            self.answered();
            refusals.rate_limited += 1;
            if refusals.rate_limited > MAX_RATE_LIMITED_PER_ROW {
                return Err(transient(err));
            }
            return Ok(());
        }
        refusals.never_sent += 1;
        self.unless_unreachable(err)?;
        self.pause(reconnect_delay(refusals.never_sent)).await
    }

    pub(super) fn unless_unreachable(&self, err: &ApiError) -> Result<(), Halt> {
        let since = self
            .last_answer
            .lock()
            .map(|at| at.elapsed())
            .unwrap_or_default();
        if since > self.plan.unreachable_after {
            return Err(Halt::Stop(SendStop::Unreachable(format!(
                "no answer for {}s ({err})",
                since.as_secs()
            ))));
        }
        Ok(())
    }

    /// Creates one customer or conversation exactly once: durably `sending` before each
    /// request, an unknown outcome settled by `settle` (a lookup) after the settle delay before
    /// any resend. Returns the new id.
    pub(super) async fn create_once<C, CFut, S, SFut>(
        &self,
        entity: Entity,
        key: &str,
        route: Route,
        create: C,
        settle: S,
    ) -> Result<String, Halt>
    where
        C: Fn() -> CFut,
        CFut: std::future::Future<Output = Result<String, ApiError>>,
        S: Fn() -> SFut,
        SFut: std::future::Future<Output = Result<Option<String>, Halt>>,
    {
        let mut schedule = RetrySchedule::new(self.plan.retry);
        let mut refusals = Refusals::default();
        loop {
            if self.cancel.is_cancelled() {
                return Err(Halt::Stop(SendStop::Interrupted));
            }
            self.write(|cp| cp.entity_sending(entity, key))?;
            let err = match create().await {
                Ok(id) => {
                    self.answered();
                    return Ok(id);
                }
                Err(err) => err,
            };
            match err.retry_action(RequestKind::Create) {
                RetryAction::StopRun => return Err(Halt::Stop(SendStop::ApiFatal(err))),
                RetryAction::FailRow => {
                    self.answered();
                    return Err(Halt::Fail {
                        code: err.code(),
                        message: err.to_string(),
                        retryable: false,
                    });
                }
                action @ (RetryAction::RateLimited | RetryAction::NeverSent) => {
                    self.wait_to_resend(action, &err, &mut refusals).await?;
                }
                RetryAction::OutcomeUnknown | RetryAction::RetryRead => {
                    self.counters.unknown.fetch_add(1, Ordering::Relaxed);
                    self.pause(self.plan.settle_delay).await?;
                    if let Some(id) = settle().await? {
                        return Ok(id);
                    }
                    self.believe_not_found(entity, route, &err).await?;
                    if !schedule.use_attempt() {
                        return Err(Halt::Fail {
                            code: crate::send::OUTCOME_UNKNOWN.into(),
                            message: format!(
                                "{err}; not found by lookup after {} attempts",
                                schedule.attempts()
                            ),
                            retryable: true,
                        });
                    }
                }
            }
        }
    }

    /// After an unknown outcome and a lookup that found nothing: resending is safe only if the
    /// route's "not found" is believable. An unproven route is proven on a record this job
    /// resolved; without one, the create stays unsettled (failed, looked up again on resume).
    pub(super) async fn believe_not_found(
        &self,
        entity: Entity,
        route: Route,
        cause: &ApiError,
    ) -> Result<(), Halt> {
        if self.proven(route) {
            return Ok(());
        }
        let by_email = route == Route::CustomerByEmail;
        // Early in a run nothing may be resolved yet to prove the route on: other tickets may
        // resolve one meanwhile, so wait a little, a bounded number of times.
        for _ in 0..PROOF_TRIES {
            let known = self.write(|cp| cp.known_resolved(entity, by_email))?;
            let Some((source, id)) = known else {
                self.pause(self.plan.settle_delay.max(PROOF_WAIT)).await?;
                continue;
            };
            let lowered = source.to_lowercase();
            let found = match route {
                Route::CustomerByExternalId => self
                    .lookup(route, || self.client.find_customer_by_external_id(&source))
                    .await?
                    .found()
                    .map(|c| c.id),
                Route::CustomerByEmail => self
                    .lookup(route, || self.client.find_customer_by_email(&lowered))
                    .await?
                    .found()
                    .map(|c| c.id),
                Route::ConversationByExternalId => self
                    .lookup(route, || {
                        self.client.find_conversation_by_external_id(&source)
                    })
                    .await?
                    .found()
                    .map(|c| c.id),
            };
            if found.as_deref() == Some(id.as_str()) {
                self.proven[route as usize].store(true, Ordering::Relaxed);
                return Ok(());
            }
            break;
        }
        Err(Halt::Fail {
            code: crate::send::OUTCOME_UNKNOWN.into(),
            message: format!(
                "{cause}; the lookup answered 404, and the route is not proven to find records \
                 (nothing this job resolved could be found by it), so the create is not resent"
            ),
            retryable: true,
        })
    }
}

/// Answers of one request that sent nothing through: 429s, and connections that never opened.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    rate_limited: u32,
    never_sent: u32,
}

fn transient(err: &ApiError) -> Halt {
    Halt::Fail {
        code: err.code(),
        message: err.to_string(),
        retryable: true,
    }
}
