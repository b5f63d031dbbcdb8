//! The sandbox's API keys: each key's kind, token id, machine user and roles, and the role
//! names the routes check.
//!
//! Plain data: imports only the sandbox's public key names.

use super::{ADMIN_KEY, AGENT_KEY, MESSAGES_ONLY_KEY, READONLY_KEY};

pub(crate) const ROLE_ADMIN: &str = "org.admin";
pub(crate) const ROLE_MESSAGE_CREATE: &str = "org.permission.message.create";
pub(crate) const ROLE_MESSAGE_READ: &str = "org.permission.message.read";
pub(crate) const ROLE_CUSTOMER_READ: &str = "org.permission.customer.read";
pub(crate) const ROLE_CUSTOMER_CREATE: &str = "org.permission.customer.create";
pub(crate) const ROLE_CONVERSATION_READ: &str = "org.permission.conversation.read";
pub(crate) const ROLE_CONVERSATION_CREATE: &str = "org.permission.conversation.create";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Admin,
    Agent,
    ReadOnly,
    /// `org.admin` and the message roles, none of the customer and conversation roles.
    MessagesOnly,
}

/// What the server knows about one API key.
#[derive(Debug)]
pub(crate) struct KeyProfile {
    pub kind: KeyKind,
    pub token_id: &'static str,
    pub name: &'static str,
    /// The key's machine user, author of what the key creates unless `org.admin` says otherwise.
    pub user_id: &'static str,
    pub roles: &'static [&'static str],
}

impl KeyProfile {
    pub(crate) fn has_role(&self, role: &str) -> bool {
        self.roles.contains(&role)
    }
}

static ADMIN_PROFILE: KeyProfile = KeyProfile {
    kind: KeyKind::Admin,
    token_id: "65a0000000000000000000a1",
    name: "sandbox admin key",
    user_id: "65a00000000000000000a0a1",
    roles: &[
        ROLE_ADMIN,
        ROLE_MESSAGE_CREATE,
        ROLE_MESSAGE_READ,
        "org.permission.bulk.read",
        "org.user.message.write",
        "org.user.message.read",
        ROLE_CUSTOMER_READ,
        ROLE_CUSTOMER_CREATE,
        ROLE_CONVERSATION_READ,
        ROLE_CONVERSATION_CREATE,
    ],
};

static MESSAGES_ONLY_PROFILE: KeyProfile = KeyProfile {
    kind: KeyKind::MessagesOnly,
    token_id: "65a0000000000000000000d4",
    name: "sandbox messages-only key",
    user_id: "65a00000000000000000d0e4",
    roles: &[
        ROLE_ADMIN,
        ROLE_MESSAGE_CREATE,
        ROLE_MESSAGE_READ,
        "org.permission.bulk.read",
    ],
};

static AGENT_PROFILE: KeyProfile = KeyProfile {
    kind: KeyKind::Agent,
    token_id: "65a0000000000000000000b2",
    name: "sandbox agent key",
    user_id: "65a00000000000000000b0b2",
    roles: &[
        ROLE_MESSAGE_CREATE,
        ROLE_MESSAGE_READ,
        ROLE_CUSTOMER_READ,
        ROLE_CUSTOMER_CREATE,
        ROLE_CONVERSATION_READ,
        ROLE_CONVERSATION_CREATE,
    ],
};

static READONLY_PROFILE: KeyProfile = KeyProfile {
    kind: KeyKind::ReadOnly,
    token_id: "65a0000000000000000000c3",
    name: "sandbox read-only key",
    user_id: "65a00000000000000000c0c3",
    roles: &[ROLE_MESSAGE_READ],
};

pub(crate) fn key_profile(bearer: &str) -> Option<&'static KeyProfile> {
    match bearer {
        ADMIN_KEY => Some(&ADMIN_PROFILE),
        AGENT_KEY => Some(&AGENT_PROFILE),
        READONLY_KEY => Some(&READONLY_PROFILE),
        MESSAGES_ONLY_KEY => Some(&MESSAGES_ONLY_PROFILE),
        _ => None,
    }
}
