//! What the send phase has to tell the user, as values: the engine prints nothing, the command
//! decides where its warnings go (stderr, above the progress bar, nowhere in a benchmark).

use std::fmt;

use tokio::sync::mpsc;

/// A warning from the send phase. The run goes on after every one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendEvent {
    /// The key's roles could not be read: every created message's audit fields are checked.
    RolesUnreadable,
    /// The key could not be checked before sending (not a refusal: the run goes on).
    KeyUnchecked { error: String },
    /// The re-import guard could not look up some of its sampled rows.
    GuardInconclusive { unanswered: usize, sampled: usize },
}

impl fmt::Display for SendEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendEvent::RolesUnreadable => write!(
                f,
                "warning: the key's roles could not be read; continuing, and every created \
                 message's createdAt/createdBy is checked against what was sent"
            ),
            SendEvent::KeyUnchecked { error } => write!(
                f,
                "warning: could not check the key before sending ({error}); continuing"
            ),
            SendEvent::GuardInconclusive {
                unanswered,
                sampled,
            } => write!(
                f,
                "warning: the re-import guard could not look up {unanswered} of {sampled} sampled \
                 rows; continuing"
            ),
        }
    }
}

/// Where the send phase delivers its events; [`Events::ignored`] drops them.
#[derive(Debug, Clone, Default)]
pub struct Events(Option<mpsc::UnboundedSender<SendEvent>>);

impl Events {
    /// Events delivered to the receiver, in order, as they happen.
    pub fn channel() -> (Events, mpsc::UnboundedReceiver<SendEvent>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Events(Some(sender)), receiver)
    }

    pub fn ignored() -> Events {
        Events(None)
    }

    pub fn emit(&self, event: SendEvent) {
        if let Some(sender) = &self.0 {
            // A receiver gone means nobody listens any more: the event has nowhere to go.
            let _ = sender.send(event);
        }
    }
}
