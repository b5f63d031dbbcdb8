//! Before anything is sent: the API answers at all, the key works and reaches the right region,
//! and it may write what the job writes. What could not be checked is returned as warnings for
//! the command to print.

use crate::checkpoint::Job;
use crate::client::{ApiClient, ApiError};
use crate::retry::{RequestKind, RetryAction};

use super::events::SendEvent;
use super::SendStop;

/// What the preflight check learned.
pub struct Preflight {
    /// The org limit from `x-ratelimit-limit`, when the API sent one.
    pub org_limit: Option<u32>,
    /// Whether the key may read conversations (None: its roles could not be read).
    pub reads_conversations: Option<bool>,
    /// The key's roles, when its record could be read.
    pub roles: Option<Vec<String>>,
    /// What could not be checked; the run goes on.
    pub warnings: Vec<SendEvent>,
}

/// Roles that let a key read bulk jobs' results.
const BULK_READ_ROLES: [&str; 2] = ["org.permission.bulk.read", "org.user.bulk.read"];

/// Roles that let a key read a conversation and its messages, to settle a row whose externalId
/// another conversation also carries; the first is the one to name.
pub const CONVERSATION_READ_ROLES: [&str; 2] = [
    "org.permission.conversation.read",
    "org.user.conversation.read",
];

/// `bulk`: the job sends bulk jobs, whose results need a role of their own.
pub async fn preflight(client: &ApiClient, job: &Job, bulk: bool) -> Result<Preflight, SendStop> {
    match client.current_token().await {
        Ok(token) => {
            let mut preflight = Preflight {
                org_limit: token.rate.limit,
                reads_conversations: token.roles.as_ref().map(|roles| {
                    roles
                        .iter()
                        .any(|role| CONVERSATION_READ_ROLES.contains(&role.as_str()))
                }),
                roles: token.roles.clone(),
                warnings: Vec::new(),
            };
            let reads_bulk = token.roles.as_ref().map(|roles| {
                roles
                    .iter()
                    .any(|role| BULK_READ_ROLES.contains(&role.as_str()))
            });
            if bulk && reads_bulk == Some(false) {
                return Err(SendStop::Refused(
                    "bulk mode reads each job's results, which needs the org.permission.bulk.read \
                     role (or the legacy org.user.bulk.read), and the API key has neither. Add the \
                     role, or send one message per request with --mode single."
                        .into(),
                ));
            }
            match token.is_admin() {
                Some(false) if job.audit_fields => Err(SendStop::Refused(
                    "the API key lacks the org.admin role, so Kustomer would silently replace the \
                     audit fields (createdAt, createdBy, modifiedAt, modifiedBy) with the key's own \
                     user and the current time. Use an admin key, or re-run with --no-audit-fields \
                     (in a new checkpoint) to import without original authors and times."
                        .into(),
                )),
                Some(_) => Ok(preflight),
                None => {
                    preflight.warnings.push(SendEvent::RolesUnreadable);
                    Ok(preflight)
                }
            }
        }
        // Nothing answered: sending would only fail row after row.
        Err(err @ (ApiError::Connect { .. } | ApiError::Timeout { .. })) => {
            Err(SendStop::Unreachable(format!(
                "cannot reach the API at {} ({err}); nothing was sent",
                client.base_url()
            )))
        }
        Err(err) if err.retry_action(RequestKind::Lookup) == RetryAction::StopRun => {
            Err(SendStop::ApiFatal(err))
        }
        Err(err) => Ok(Preflight {
            org_limit: err.rate().and_then(|rate| rate.limit),
            reads_conversations: None,
            roles: None,
            warnings: vec![SendEvent::KeyUnchecked {
                error: err.to_string(),
            }],
        }),
    }
}
