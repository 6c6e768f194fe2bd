//! The directory: tenants, applications (bots) with their application instances, users and PSTN
//! numbers. Who may do what, and who can be called. How a simulated party behaves when called is the
//! simulator's business, not the directory's.

use serde::{Deserialize, Serialize};
use switchboard_core::party::Party;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Directory {
    pub tenants: Vec<Tenant>,
    pub applications: Vec<Application>,
    pub users: Vec<User>,
    pub numbers: Vec<PstnNumber>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    /// The app's id (`appid` in its tokens).
    pub client_id: String,
    pub name: String,
    pub secret: String,
    /// The secret before the last rotation, accepted too until `previous_secret_expires` (RFC 3339),
    /// so that clients move to the new one without a gap.
    #[serde(default)]
    pub previous_secret: Option<String>,
    #[serde(default)]
    pub previous_secret_expires: Option<String>,
    pub tenants: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub calling_webhook: Option<String>,
    #[serde(default)]
    pub notification_format: NotificationFormat,
    #[serde(default)]
    pub instances: Vec<AppInstance>,
    /// Graph requests per second this app may make (a burst of as many); more get 429 with
    /// `Retry-After`. Unlimited when absent.
    #[serde(default)]
    pub max_requests_per_second: Option<u32>,
    /// Live calls this app may have at once (Graph's own limit is 100); unlimited when absent.
    #[serde(default)]
    pub max_concurrent_calls: Option<u32>,
}

/// The application permissions that make an app a calling bot: it holds at least one of them.
pub const CALLING_ROLES: [&str; 5] = [
    "Calls.Initiate.All",
    "Calls.InitiateGroupCall.All",
    "Calls.JoinGroupCall.All",
    "Calls.JoinGroupCallAsGuest.All",
    "Calls.AccessMedia.All",
];

impl Application {
    /// Whether calls may reach this app: it holds a calling permission. One without any (a bot
    /// that only reads, say) is never offered a call, by the sim, a phone or a transfer.
    pub fn can_be_called(&self) -> bool {
        self.roles.iter().any(|r| CALLING_ROLES.contains(&r.as_str()))
    }

    /// Why calls may not reach this app, if they may not.
    pub fn why_not_callable(&self) -> Option<String> {
        (!self.can_be_called())
            .then(|| format!("application '{}' holds none of the calling permissions, so it cannot be called", self.name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NotificationFormat {
    #[default]
    #[serde(rename = "graph")]
    Graph,
    #[serde(rename = "beta-2018")]
    Beta2018,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppInstance {
    pub id: String,
    pub display_name: String,
    pub tenant_id: String,
    pub phone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: String,
    pub display_name: String,
    pub tenant_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PstnNumber {
    pub number: String,
}

impl Directory {
    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id.eq_ignore_ascii_case(id))
    }
    pub fn app(&self, client_id: &str) -> Option<&Application> {
        self.applications.iter().find(|a| a.client_id.eq_ignore_ascii_case(client_id))
    }
    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id.eq_ignore_ascii_case(id))
    }
    pub fn number(&self, e164: &str) -> Option<&PstnNumber> {
        self.numbers.iter().find(|n| n.number == e164)
    }
    pub fn instance(&self, id: &str) -> Option<(&Application, &AppInstance)> {
        self.find_instance(|i| i.id.eq_ignore_ascii_case(id))
    }
    pub fn instance_by_phone(&self, e164: &str) -> Option<(&Application, &AppInstance)> {
        self.find_instance(|i| i.phone.as_deref() == Some(e164))
    }
    /// The application behind a bot party: the application itself, or the owner of an instance.
    pub fn app_of(&self, party: &Party) -> Option<&Application> {
        match party {
            Party::Application { id, .. } => self.app(id),
            Party::ApplicationInstance { id, .. } => self.instance(id).map(|(app, _)| app),
            _ => None,
        }
    }
    /// The bot's own side of one of its calls, as its participant shows it: the application instance
    /// the call belongs to, else the application.
    pub fn bot_party(&self, app_id: &str, application_instance: Option<&str>) -> Option<Party> {
        match application_instance {
            Some(inst) => self.instance(inst).map(|(_, i)| Party::ApplicationInstance {
                id: i.id.clone(),
                display_name: i.display_name.clone(),
                tenant_id: i.tenant_id.clone(),
            }),
            None => self.app(app_id).map(|a| Party::Application { id: a.client_id.clone(), display_name: a.name.clone() }),
        }
    }
    fn find_instance(&self, pred: impl Fn(&AppInstance) -> bool) -> Option<(&Application, &AppInstance)> {
        self.applications.iter().find_map(|a| a.instances.iter().find(|i| pred(i)).map(|i| (a, i)))
    }
}

/// `^\+[1-9][0-9]{1,14}$`
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// 8-4-4-4-12 hexadecimal digits, case-insensitive.
pub fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}
