//! Parties: the endpoints that calls connect.

use serde::{Deserialize, Serialize};

/// A party to a call, as the directory knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Party {
    /// A Teams user of a tenant.
    User { id: String, display_name: String, tenant_id: String },
    /// A PSTN number in E.164 form.
    Phone { number: String },
    /// A bot, addressed by its application (client) id.
    Application { id: String, display_name: String },
    /// A resource account of a bot, with its own id (and usually a phone number).
    ApplicationInstance { id: String, display_name: String, tenant_id: String },
}

impl Party {
    /// The stable key of this party in the directory: user or instance id, app id, or number.
    pub fn key(&self) -> &str {
        match self {
            Party::User { id, .. } | Party::Application { id, .. } | Party::ApplicationInstance { id, .. } => id,
            Party::Phone { number } => number,
        }
    }

    /// How a person reads it: the display name, or the number.
    pub fn label(&self) -> &str {
        match self {
            Party::User { display_name, .. }
            | Party::Application { display_name, .. }
            | Party::ApplicationInstance { display_name, .. } => display_name,
            Party::Phone { number } => number,
        }
    }

    pub fn is_phone(&self) -> bool {
        matches!(self, Party::Phone { .. })
    }
}
