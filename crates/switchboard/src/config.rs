//! Server configuration: the TOML file format, its validation, and the demo directory.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
pub use switchboard_engine::directory::{
    AppInstance, Application, Directory, NotificationFormat, PstnNumber, Tenant, User, is_e164, is_guid,
};
pub use switchboard_sim::{Behaviour, Behaviours, MAX_BEHAVIOUR_MS};

pub const KNOWN_ROLES: &[&str] = &[
    "Calls.Initiate.All",
    "Calls.InitiateGroupCall.All",
    "Calls.JoinGroupCall.All",
    "Calls.JoinGroupCallAsGuest.All",
    "Calls.AccessMedia.All",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Where calls and the outbox are kept: `None` for SQLite in the data folder, or a
    /// `postgres://USER@HOST:PORT/DB` URL.
    pub store: Option<String>,
    /// This node's name in logs and `/metrics` (default: host name and port).
    pub node_id: Option<String>,
    /// Where the other nodes reach this one (default: the listen address).
    pub node_url: Option<String>,
    pub public_url: Option<String>,
    pub tls: Option<TlsSettings>,
    pub calls: CallSettings,
    pub notifications: NotificationSettings,
    /// Where notifications may go (`[callbacks]`).
    pub callbacks: CallbackSettings,
    /// Timeouts and limits of the HTTP listener (`[http]`).
    pub http: HttpSettings,
    pub sim: SimSettings,
    pub sip: SipSettings,
    pub directory: Directory,
}

/// `[sip]` and the users' SIP accounts. Without `listen` there is no SIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipSettings {
    /// UDP and TCP on this address (`--sip-listen`).
    pub listen: Option<SocketAddr>,
    /// The SIP domain; default: the listen host.
    pub domain: Option<String>,
    /// Each user's account, by the user's directory id.
    pub accounts: Vec<(String, SipAccount)>,
    /// Outbound proxies for PSTN numbers (`[[sip.trunks]]`, `--sip-trunk`); inbound calls from their
    /// addresses to the instances' numbers are taken without Digest.
    pub trunks: Vec<SipTrunk>,
    /// Whether the sim's scripted numbers go to a trunk too (default: they stay on the sim).
    pub trunk_sim_numbers: bool,
    /// Hold the transferee (re-INVITE `sendonly`) before the REFER, and resume it if the transfer
    /// fails (default: true, as RFC 5589 §6.1 shows).
    pub hold_before_refer: bool,
    /// When the transferee refuses REFER (405, 420, 501) or never answers it, call the target and
    /// bridge the two (RFC 3725) instead of failing the transfer (default: false).
    pub bridge_when_refer_refused: bool,
    /// When a REFER with Replaces is refused (420, 481, 501), REFER to the target without it: a
    /// basic transfer (default: false).
    pub blind_when_replaces_refused: bool,
    /// What the bot plays to a phone while nothing else does (default: silence).
    pub comfort_audio: ComfortAudio,
    /// SIP over TLS on this address (`--sip-tls-listen`), with `tls_cert` and `tls_key` (PEM); without
    /// them, `[tls]`'s, else a self-signed certificate made once in the data folder.
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// `[sip] comfort_audio`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComfortAudio {
    #[default]
    Silence,
    Tone,
    Off,
}

impl From<ComfortAudio> for switchboard_sip::rtp::ComfortAudio {
    fn from(a: ComfortAudio) -> Self {
        match a {
            ComfortAudio::Silence => Self::Silence,
            ComfortAudio::Tone => Self::Tone,
            ComfortAudio::Off => Self::Off,
        }
    }
}

impl Default for SipSettings {
    fn default() -> Self {
        SipSettings {
            listen: None,
            domain: None,
            accounts: Vec::new(),
            trunks: Vec::new(),
            trunk_sim_numbers: false,
            hold_before_refer: true,
            bridge_when_refer_refused: false,
            blind_when_replaces_refused: false,
            comfort_audio: ComfortAudio::Silence,
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[[sip.trunks]]`: where PSTN numbers go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipTrunk {
    /// `sip:HOST:PORT`, HOST an IP address (or `localhost`).
    pub address: String,
    /// A name for logs (default: the address).
    #[serde(default)]
    pub name: Option<String>,
    /// The E.164 prefixes it takes (default: every number), e.g. `["+1", "+44"]`.
    #[serde(default)]
    pub numbers: Vec<String>,
}

impl SipTrunk {
    /// The trunk's socket address: `sip:HOST[:PORT]`, HOST an IP address or `localhost`.
    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        let rest = self.address.strip_prefix("sip:").ok_or_else(|| format!("'{}' is not a sip:HOST:PORT URI", self.address))?;
        if rest.contains(['@', ';', '?']) {
            return Err(format!("'{}' must be only sip:HOST:PORT (no user or parameters)", self.address));
        }
        let (host, port) = match rest.rsplit_once(':').filter(|(h, _)| !h.is_empty() && (!h.contains(':') || h.ends_with(']'))) {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("'{p}' in '{}' is not a port", self.address))?),
            None => (rest, 5060),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = if host.eq_ignore_ascii_case("localhost") {
            std::net::IpAddr::from(Ipv4Addr::LOCALHOST)
        } else {
            host.parse().map_err(|_| format!("'{host}' in '{}' is not an IP address (or localhost)", self.address))?
        };
        Ok(SocketAddr::new(ip, port))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipAccount {
    pub username: String,
    pub password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSip {
    listen: Option<SocketAddr>,
    domain: Option<String>,
    #[serde(default)]
    trunks: Vec<SipTrunk>,
    #[serde(default)]
    trunk_sim_numbers: bool,
    #[serde(default = "yes")]
    hold_before_refer: bool,
    #[serde(default)]
    bridge_when_refer_refused: bool,
    #[serde(default)]
    blind_when_replaces_refused: bool,
    #[serde(default)]
    comfort_audio: ComfortAudio,
    tls_listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallSettings {
    pub ring_timeout_ms: u64,
    pub allow_http_loopback_callbacks: bool,
}

/// `[callbacks]`: the callback policy ([`crate::callback`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbackSettings {
    /// `https`, and `http` for hosts named in `allow`.
    pub schemes: Vec<String>,
    /// Host names (`bot.internal.example`, `*.internal.example`) and address blocks (`10.1.0.0/16`,
    /// `127.0.0.1`) allowed even though private, loopback or link-local.
    pub allow: Vec<String>,
    pub allow_private: bool,
    pub allow_loopback: bool,
    pub allow_link_local: bool,
    /// The longest callback URL taken, in characters.
    pub max_length: usize,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        CallbackSettings {
            schemes: vec!["https".into()],
            allow: Vec::new(),
            allow_private: false,
            allow_loopback: false,
            allow_link_local: false,
            max_length: 2048,
        }
    }
}

impl CallbackSettings {
    /// What `[calls] allow_http_loopback_callbacks` (the demo's setting) adds: http to the demo's
    /// own webhooks on 127.0.0.1 and localhost.
    fn allow_http_loopback(&mut self) {
        if !self.schemes.iter().any(|s| s == "http") {
            self.schemes.push("http".into());
        }
        for host in ["127.0.0.1", "localhost"] {
            if !self.allow.iter().any(|a| a == host) {
                self.allow.push(host.into());
            }
        }
    }
}

/// `[http]`: how long a client may take, and how many may be connected at once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// From a request's first byte (or the connection's start) to the end of its head.
    pub header_timeout_ms: u64,
    /// To read a request's whole body, from the end of its head.
    pub body_timeout_ms: u64,
    /// Between a response and the next request's first byte.
    pub idle_timeout_ms: u64,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings { header_timeout_ms: 10_000, body_timeout_ms: 30_000, idle_timeout_ms: 60_000, max_connections: 4096 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationSettings {
    pub issuer: String,
    pub timeout_ms: u64,
    pub first_retry_ms: u64,
    pub max_retry_ms: u64,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSettings {
    pub admin_key: String,
    /// Time stands still until `POST /sim/v1/clock` moves it (`serve --virtual-clock`).
    pub virtual_clock: bool,
    /// How each user and number of the directory acts when called.
    pub behaviours: Behaviours,
    /// How many ended calls' stories `GET /sim/v1/calls/{id}/history` keeps, and for how long.
    pub history_calls: usize,
    pub history_max_age_ms: u64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {field}: {problem}{}", more.iter().map(|(f, p)| format!("\n{file}: {f}: {p}")).collect::<String>())]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub problem: String,
    /// The file's other problems, each reported too.
    pub more: Vec<(String, String)>,
}

fn fail(file: &str, field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError { file: file.to_string(), field: field.into(), problem: problem.into(), more: Vec::new() }
}

// ---------------------------------------------------------------------------
// File representation

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    node_id: Option<String>,
    node_url: Option<String>,
    public_url: Option<String>,
    tls: Option<TlsSettings>,
    #[serde(default)]
    calls: CallSettings,
    #[serde(default)]
    notifications: NotificationSettings,
    #[serde(default)]
    callbacks: CallbackSettings,
    #[serde(default)]
    http: HttpSettings,
    sim: Option<FileSim>,
    sip: Option<FileSip>,
    #[serde(default)]
    tenants: Vec<Tenant>,
    #[serde(default)]
    applications: Vec<Application>,
    #[serde(default)]
    users: Vec<FileUser>,
    #[serde(default)]
    numbers: Vec<FileNumber>,
}

/// A user as written: the directory's fields and the sim's behaviour.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUser {
    id: String,
    display_name: String,
    tenant_id: String,
    #[serde(default)]
    behaviour: Behaviour,
    /// How the user signs in over SIP.
    sip: Option<SipAccount>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNumber {
    number: String,
    #[serde(default)]
    behaviour: Behaviour,
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings { ring_timeout_ms: 60_000, allow_http_loopback_callbacks: false }
    }
}

impl Default for NotificationSettings {
    fn default() -> Self {
        NotificationSettings {
            issuer: "https://api.botframework.com".to_string(),
            timeout_ms: 10_000,
            first_retry_ms: 1_000,
            max_retry_ms: 300_000,
            max_attempts: 12,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSim {
    admin_key: Option<String>,
    #[serde(default)]
    virtual_clock: bool,
    #[serde(default)]
    history_calls: Option<usize>,
    #[serde(default)]
    history_max_age_ms: Option<u64>,
}

/// Turns a byte offset into a 1-based "line L, column C" (column counted in characters).
fn line_col(src: &str, offset: usize) -> String {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {col}")
}

impl Config {
    pub fn demo() -> Config {
        Config {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            data_dir: PathBuf::from("./switchboard-data"),
            store: None,
            node_id: None,
            node_url: None,
            public_url: None,
            tls: None,
            calls: CallSettings { ring_timeout_ms: 60_000, allow_http_loopback_callbacks: true },
            notifications: NotificationSettings::default(),
            callbacks: {
                let mut c = CallbackSettings::default();
                c.allow_http_loopback();
                c
            },
            http: HttpSettings::default(),
            sim: SimSettings {
                admin_key: "switchboard-demo-admin".to_string(),
                virtual_clock: false,
                behaviours: demo_behaviours(),
                history_calls: switchboard_engine::history::HISTORY_CALLS,
                history_max_age_ms: switchboard_engine::history::HISTORY_MAX_AGE_MS,
            },
            sip: SipSettings { accounts: demo_sip_accounts(), ..SipSettings::default() },
            directory: demo_directory(),
        }
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| fail(&file, "(file)", format!("cannot read the file: {e}")))?;
        Config::from_toml(&src, &file)
    }

    pub fn from_toml(src: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: FileConfig = toml::from_str(src).map_err(|e| {
            let field = e.span().map_or_else(|| "(toml)".to_string(), |s| line_col(src, s.start));
            fail(file, field, e.message().trim().to_string())
        })?;
        let virtual_clock = raw.sim.as_ref().is_some_and(|s| s.virtual_clock);
        let history_calls = raw.sim.as_ref().and_then(|s| s.history_calls).unwrap_or(switchboard_engine::history::HISTORY_CALLS);
        let history_max_age_ms =
            raw.sim.as_ref().and_then(|s| s.history_max_age_ms).unwrap_or(switchboard_engine::history::HISTORY_MAX_AGE_MS);
        let admin_key = raw
            .sim
            .and_then(|s| s.admin_key)
            .ok_or_else(|| fail(file, "sim.admin_key", "missing; a [sim] section with admin_key is required"))?;
        let mut behaviours = Behaviours::default();
        let mut users = Vec::with_capacity(raw.users.len());
        let mut accounts = Vec::new();
        for (i, u) in raw.users.into_iter().enumerate() {
            u.behaviour.validate().map_err(|p| fail(file, format!("users[{i}].behaviour"), p))?;
            behaviours.insert(&u.id, u.behaviour);
            if let Some(account) = u.sip {
                accounts.push((u.id.clone(), account));
            }
            users.push(User { id: u.id, display_name: u.display_name, tenant_id: u.tenant_id });
        }
        let mut numbers = Vec::with_capacity(raw.numbers.len());
        for (i, n) in raw.numbers.into_iter().enumerate() {
            n.behaviour.validate().map_err(|p| fail(file, format!("numbers[{i}].behaviour"), p))?;
            behaviours.insert(&n.number, n.behaviour);
            numbers.push(PstnNumber { number: n.number });
        }
        let cfg = Config {
            listen: raw.listen.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))),
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("./switchboard-data")),
            store: raw.store,
            node_id: raw.node_id,
            node_url: raw.node_url,
            public_url: raw.public_url,
            tls: raw.tls,
            notifications: raw.notifications,
            callbacks: {
                let mut c = raw.callbacks;
                if raw.calls.allow_http_loopback_callbacks {
                    c.allow_http_loopback();
                }
                c
            },
            calls: raw.calls,
            http: raw.http,
            sim: SimSettings { admin_key, virtual_clock, behaviours, history_calls, history_max_age_ms },
            sip: match raw.sip {
                Some(s) => SipSettings {
                    listen: s.listen,
                    domain: s.domain,
                    accounts,
                    trunks: s.trunks,
                    trunk_sim_numbers: s.trunk_sim_numbers,
                    hold_before_refer: s.hold_before_refer,
                    bridge_when_refer_refused: s.bridge_when_refer_refused,
                    blind_when_replaces_refused: s.blind_when_replaces_refused,
                    comfort_audio: s.comfort_audio,
                    tls_listen: s.tls_listen,
                    tls_cert: s.tls_cert,
                    tls_key: s.tls_key,
                },
                None => SipSettings { accounts, ..SipSettings::default() },
            },
            directory: Directory { tenants: raw.tenants, applications: raw.applications, users, numbers },
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |field: String, problem: String| fail(file, field, problem);
        // Every problem is reported, not just the first: a file with four mistakes takes one run.
        let mut errors: Vec<ConfigError> = Vec::new();
        macro_rules! check {
            ($e:expr) => {
                if let Err(e) = $e {
                    errors.push(e);
                }
            };
        }
        if let Some(node) = &self.node_id
            && (node.is_empty() || node.len() > 64 || !node.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)))
        {
            errors.push(err("node_id".into(), format!("'{node}' must be 1 to 64 letters, digits, '-', '_', '.' or ':'")));
        }
        if let Some(url) = &self.node_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            errors.push(err("node_url".into(), format!("'{url}' is not an http:// or https:// URL")));
        }
        if let Some(store) = &self.store
            && !(store.starts_with("postgres://") || store.starts_with("postgresql://"))
        {
            errors.push(err("store".into(), format!("'{store}' is not a postgres:// URL; leave store out for SQLite in data_dir")));
        }
        if let Some(url) = &self.public_url {
            check!(check_url(url).map_err(|p| err("public_url".into(), p)));
        }
        // A broken policy is one more problem; the webhooks are then checked without it.
        let callbacks = crate::callback::CallbackPolicy::new(&self.callbacks).map_err(|(field, problem)| err(field, problem));
        let callbacks = callbacks.map_err(|e| errors.push(e)).ok();
        for (field, n) in [
            ("http.header_timeout_ms", self.http.header_timeout_ms),
            ("http.body_timeout_ms", self.http.body_timeout_ms),
            ("http.idle_timeout_ms", self.http.idle_timeout_ms),
            ("http.max_connections", self.http.max_connections as u64),
        ] {
            if n == 0 {
                errors.push(err(field.into(), "must be at least 1".into()));
            }
        }
        if let Some(tls) = &self.tls {
            match (&tls.cert, &tls.key) {
                (Some(_), None) => {
                    errors.push(err(
                        "tls.key".into(),
                        "tls.cert is set but tls.key is not; set both, or neither to generate a self-signed certificate".into(),
                    ));
                }
                (None, Some(_)) => {
                    errors.push(err(
                        "tls.cert".into(),
                        "tls.key is set but tls.cert is not; set both, or neither to generate a self-signed certificate".into(),
                    ));
                }
                _ => {}
            }
        }
        match (&self.sip.tls_cert, &self.sip.tls_key) {
            (Some(_), None) => {
                errors.push(err("sip.tls_key".into(), "sip.tls_cert is set but sip.tls_key is not; set both, or neither".into()));
            }
            (None, Some(_)) => {
                errors.push(err("sip.tls_cert".into(), "sip.tls_key is set but sip.tls_cert is not; set both, or neither".into()));
            }
            _ => {}
        }
        if self.sip.tls_listen.is_some() && self.sip.listen.is_none() {
            errors.push(err("sip.tls_listen".into(), "SIP over TLS needs SIP itself: set [sip] listen (or --sip-listen) too".into()));
        }
        let rt = self.calls.ring_timeout_ms;
        if !(1_000..=115_000).contains(&rt) {
            errors.push(err("calls.ring_timeout_ms".into(), format!("{rt} is out of range; must be between 1000 and 115000")));
        }
        let n = &self.notifications;
        if n.issuer.trim().is_empty() {
            errors.push(err("notifications.issuer".into(), "must not be empty".into()));
        }
        if n.timeout_ms == 0 {
            errors.push(err("notifications.timeout_ms".into(), "must be at least 1".into()));
        }
        if n.max_attempts == 0 {
            errors.push(err("notifications.max_attempts".into(), "must be at least 1".into()));
        }
        if n.first_retry_ms > n.max_retry_ms {
            errors.push(err(
                "notifications.first_retry_ms".into(),
                format!("{} is larger than max_retry_ms ({})", n.first_retry_ms, n.max_retry_ms),
            ));
        }
        if self.sim.admin_key.trim().is_empty() {
            errors.push(err("sim.admin_key".into(), "must not be empty".into()));
        }

        let d = &self.directory;
        if d.tenants.is_empty() {
            errors.push(err("tenants".into(), "at least one [[tenants]] entry is required".into()));
        }
        if d.applications.is_empty() {
            errors.push(err("applications".into(), "at least one [[applications]] entry is required".into()));
        }
        let declared = d.tenants.iter().map(|t| format!("'{}' ({})", t.id, t.name)).collect::<Vec<_>>().join(", ");
        let known_tenant = |field: String, id: &str| -> Result<(), ConfigError> {
            match d.tenant(id) {
                Some(_) => Ok(()),
                None => Err(err(field, format!("unknown tenant '{id}'; declared tenants are: {declared}"))),
            }
        };
        let guid = |field: String, id: &str| -> Result<(), ConfigError> {
            if is_guid(id) {
                Ok(())
            } else {
                Err(err(field, format!("'{id}' is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")))
            }
        };
        let non_empty = |field: String, v: &str| -> Result<(), ConfigError> {
            if v.trim().is_empty() { Err(err(field, "must not be empty".into())) } else { Ok(()) }
        };
        // Lower-cased id / phone number -> field path of its first use.
        let claim =
            |map: &mut HashMap<String, String>, field: String, value: &str| match map.insert(value.to_ascii_lowercase(), field.clone()) {
                Some(first) => Err(err(field, format!("'{value}' is already used by {first}"))),
                None => Ok(()),
            };
        let (mut tenant_ids, mut ids, mut phones) = (HashMap::new(), HashMap::new(), HashMap::new());
        for (i, t) in d.tenants.iter().enumerate() {
            let f = format!("tenants[{i}]");
            check!(guid(format!("{f}.id"), &t.id));
            check!(non_empty(format!("{f}.name"), &t.name));
            check!(claim(&mut tenant_ids, format!("{f}.id"), &t.id));
        }
        for (i, a) in d.applications.iter().enumerate() {
            let f = format!("applications[{i}]");
            check!(guid(format!("{f}.client_id"), &a.client_id));
            check!(claim(&mut ids, format!("{f}.client_id"), &a.client_id));
            check!(non_empty(format!("{f}.name"), &a.name));
            check!(non_empty(format!("{f}.secret"), &a.secret));
            for (field, limit) in [("max_requests_per_second", a.max_requests_per_second), ("max_concurrent_calls", a.max_concurrent_calls)]
            {
                if limit == Some(0) {
                    errors.push(err(format!("{f}.{field}"), "must be at least 1; leave it out for no limit".into()));
                }
            }
            match (&a.previous_secret, &a.previous_secret_expires) {
                (Some(p), Some(at)) => {
                    check!(non_empty(format!("{f}.previous_secret"), p));
                    if p == &a.secret {
                        errors.push(err(format!("{f}.previous_secret"), "is the same as secret; a rotation needs a new secret".into()));
                    }
                    if time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_err() {
                        errors.push(err(
                            format!("{f}.previous_secret_expires"),
                            format!("'{at}' is not an RFC 3339 time, e.g. 2026-12-31T00:00:00Z"),
                        ));
                    }
                }
                (Some(_), None) => {
                    errors.push(err(
                        format!("{f}.previous_secret_expires"),
                        "is required with previous_secret: say when the old secret stops working".into(),
                    ));
                }
                (None, Some(_)) => {
                    errors.push(err(format!("{f}.previous_secret"), "is missing; previous_secret_expires has nothing to expire".into()));
                }
                (None, None) => {}
            }
            if a.tenants.is_empty() {
                errors.push(err(format!("{f}.tenants"), "must list at least one tenant (the first is the home tenant)".into()));
            }
            for (j, t) in a.tenants.iter().enumerate() {
                check!(known_tenant(format!("{f}.tenants[{j}]"), t));
                if a.tenants[..j].iter().any(|o| o.eq_ignore_ascii_case(t)) {
                    errors.push(err(format!("{f}.tenants[{j}]"), format!("tenant '{t}' is listed twice")));
                }
            }
            for (j, r) in a.roles.iter().enumerate() {
                if !KNOWN_ROLES.contains(&r.as_str()) {
                    errors.push(err(format!("{f}.roles[{j}]"), format!("unknown role '{r}'; known roles are: {}", KNOWN_ROLES.join(", "))));
                }
            }
            if let Some(w) = &a.calling_webhook {
                check!(check_url(w).map_err(|p| err(format!("{f}.calling_webhook"), p)));
                if let Some(callbacks) = &callbacks {
                    check!(callbacks.check(w).map_err(|p| err(format!("{f}.calling_webhook"), p)));
                }
            }
            for (j, inst) in a.instances.iter().enumerate() {
                let g = format!("{f}.instances[{j}]");
                check!(guid(format!("{g}.id"), &inst.id));
                check!(claim(&mut ids, format!("{g}.id"), &inst.id));
                check!(non_empty(format!("{g}.display_name"), &inst.display_name));
                check!(known_tenant(format!("{g}.tenant_id"), &inst.tenant_id));
                if !a.tenants.iter().any(|t| t.eq_ignore_ascii_case(&inst.tenant_id)) {
                    errors.push(err(
                        format!("{g}.tenant_id"),
                        format!("tenant '{}' has not consented to this application; add it to {f}.tenants", inst.tenant_id),
                    ));
                }
                if let Some(p) = &inst.phone {
                    if !is_e164(p) {
                        errors.push(err(format!("{g}.phone"), format!("'{p}' is not an E.164 number (like +14255550100)")));
                    }
                    check!(claim(&mut phones, format!("{g}.phone"), p));
                }
            }
        }
        for (i, u) in d.users.iter().enumerate() {
            let f = format!("users[{i}]");
            check!(guid(format!("{f}.id"), &u.id));
            check!(claim(&mut ids, format!("{f}.id"), &u.id));
            check!(non_empty(format!("{f}.display_name"), &u.display_name));
            check!(known_tenant(format!("{f}.tenant_id"), &u.tenant_id));
        }
        let mut sip_names: Vec<&str> = Vec::new();
        for (user_id, account) in &self.sip.accounts {
            let i = d.users.iter().position(|u| &u.id == user_id).unwrap_or_default();
            let f = format!("users[{i}].sip");
            let name = &account.username;
            if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/".contains(c)) {
                errors.push(err(
                    format!("{f}.username"),
                    format!(
                        "'{name}' must be 1 to 64 characters a SIP user part allows (letters, digits, - _ . ! ~ * ' ( ) & = + $ , ; ? /)"
                    ),
                ));
            }
            if sip_names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                errors.push(err(format!("{f}.username"), format!("'{name}' is already another user's SIP user name")));
            }
            sip_names.push(name);
            check!(non_empty(format!("{f}.password"), &account.password));
        }
        if let Some(domain) = &self.sip.domain
            && (domain.is_empty() || domain.contains(|c: char| c.is_whitespace() || "<>@;:/\\\"".contains(c)))
        {
            errors.push(err("sip.domain".into(), format!("'{domain}' is not a host name or address")));
        }
        for (i, t) in self.sip.trunks.iter().enumerate() {
            let f = format!("sip.trunks[{i}]");
            check!(t.socket_addr().map_err(|p| err(format!("{f}.address"), p)));
            for (j, prefix) in t.numbers.iter().enumerate() {
                if !prefix.starts_with('+') || prefix.len() < 2 || !prefix[1..].chars().all(|c| c.is_ascii_digit()) {
                    errors.push(err(format!("{f}.numbers[{j}]"), format!("'{prefix}' is not an E.164 prefix (like +1 or +4420)")));
                }
            }
        }
        for (i, n) in d.numbers.iter().enumerate() {
            let f = format!("numbers[{i}]");
            if !is_e164(&n.number) {
                errors.push(err(format!("{f}.number"), format!("'{}' is not an E.164 number (like +14255550100)", n.number)));
            }
            check!(claim(&mut phones, format!("{f}.number"), &n.number));
        }
        let mut errors = errors.into_iter();
        match errors.next() {
            None => Ok(()),
            Some(mut first) => {
                first.more = errors.map(|e| (e.field, e.problem)).collect();
                Err(first)
            }
        }
    }
}

/// Checks that `url` is an absolute http(s) URL with a host.
fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("'{url}' must start with http:// or https://"))?;
    if url.chars().any(char::is_whitespace) {
        return Err(format!("'{url}' contains whitespace"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Err(format!("'{url}' has an unterminated IPv6 address")),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(format!("'{url}' has no host"));
    }
    if let Some(p) = port.filter(|p| p.parse::<u16>().is_err()) {
        return Err(format!("'{url}' has an invalid port '{p}'"));
    }
    Ok(())
}

const CONTOSO: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const FABRIKAM: &str = "bbbbbbbb-0000-4000-8000-000000000002";

/// The demo users' SIP accounts (README: "Transfer a real SIP phone").
pub const DEMO_SIP_PASSWORD: &str = "switchboard-demo-sip";

fn demo_sip_accounts() -> Vec<(String, SipAccount)> {
    [
        ("550fae72-d251-43ec-868c-373732c2704f", "heidi"),
        ("751f6800-3180-414d-bd94-333364659951", "alex"),
        ("eeeeeeee-0000-4000-8000-000000000486", "bob"),
        ("eeeeeeee-0000-4000-8000-000000000603", "dana"),
        ("eeeeeeee-0000-4000-8000-000000000408", "sam"),
        ("ffffffff-0000-4000-8000-000000000001", "fiona"),
    ]
    .into_iter()
    .map(|(id, name)| (id.to_owned(), SipAccount { username: name.to_owned(), password: DEMO_SIP_PASSWORD.to_owned() }))
    .collect()
}

fn demo_directory() -> Directory {
    let s = |v: &str| v.to_string();
    let roles = || KNOWN_ROLES.iter().map(|r| s(r)).collect::<Vec<_>>();
    let app = |id: &str, name: &str, tenants: &[&str], roles: Vec<String>, port: u16, fmt, instances| Application {
        client_id: s(id),
        name: s(name),
        secret: s("switchboard-demo-secret"),
        previous_secret: None,
        previous_secret_expires: None,
        tenants: tenants.iter().map(|t| s(t)).collect(),
        roles,
        calling_webhook: Some(format!("http://127.0.0.1:{port}/api/calls")),
        notification_format: fmt,
        instances,
        max_requests_per_second: None,
        max_concurrent_calls: None,
    };
    let inst =
        |id: &str, name: &str, phone: &str| AppInstance { id: s(id), display_name: s(name), tenant_id: s(CONTOSO), phone: Some(s(phone)) };
    let user = |id: &str, name: &str, tenant: &str| User { id: s(id), display_name: s(name), tenant_id: s(tenant) };
    let number = |n: &str| PstnNumber { number: s(n) };
    Directory {
        tenants: vec![Tenant { id: s(CONTOSO), name: s("Contoso") }, Tenant { id: s(FABRIKAM), name: s("Fabrikam") }],
        applications: vec![
            app(
                "cccccccc-0000-4000-8000-000000000003",
                "Demo Bot",
                &[CONTOSO, FABRIKAM],
                roles(),
                3978,
                NotificationFormat::Graph,
                vec![inst("dddddddd-0000-4000-8000-000000000004", "Contoso Reception", "+14255550100")],
            ),
            app("cccccccc-0000-4000-8000-000000000005", "Unprivileged Bot", &[CONTOSO], vec![], 3979, NotificationFormat::Graph, vec![]),
            app(
                "cccccccc-0000-4000-8000-000000000006",
                "Legacy Bot",
                &[CONTOSO],
                roles(),
                3980,
                NotificationFormat::Beta2018,
                vec![inst("dddddddd-0000-4000-8000-000000000007", "Legacy Reception", "+14255550107")],
            ),
        ],
        users: vec![
            user("550fae72-d251-43ec-868c-373732c2704f", "Heidi Steen", CONTOSO),
            user("751f6800-3180-414d-bd94-333364659951", "Alex Wilber", CONTOSO),
            user("eeeeeeee-0000-4000-8000-000000000486", "Busy Bob", CONTOSO),
            user("eeeeeeee-0000-4000-8000-000000000603", "Declining Dana", CONTOSO),
            user("eeeeeeee-0000-4000-8000-000000000408", "Silent Sam", CONTOSO),
            user("ffffffff-0000-4000-8000-000000000001", "Fabrikam Fiona", FABRIKAM),
        ],
        numbers: vec![number("+12345678901"), number("+15555550486"), number("+15555550603"), number("+15555550408")],
    }
}

/// How the demo directory's parties act (the README's table).
fn demo_behaviours() -> Behaviours {
    let mut b = Behaviours::default();
    for (key, behaviour) in [
        ("550fae72-d251-43ec-868c-373732c2704f", Behaviour::default()),
        ("751f6800-3180-414d-bd94-333364659951", Behaviour::default()),
        ("eeeeeeee-0000-4000-8000-000000000486", Behaviour::Busy),
        ("eeeeeeee-0000-4000-8000-000000000603", Behaviour::Decline),
        ("eeeeeeee-0000-4000-8000-000000000408", Behaviour::NoAnswer),
        ("ffffffff-0000-4000-8000-000000000001", Behaviour::default()),
        ("+12345678901", Behaviour::default()),
        ("+15555550486", Behaviour::Busy),
        ("+15555550603", Behaviour::Decline),
        ("+15555550408", Behaviour::NoAnswer),
    ] {
        b.insert(key, behaviour);
    }
    b
}

/// A complete, commented configuration equivalent to [`Config::demo`]
/// (shipped as docs/switchboard.example.toml).
pub const EXAMPLE_TOML: &str = r#"# Switchboard example configuration: the same directory as the built-in demo.
# Every section is optional except [sim], at least one [[tenants]] and one [[applications]].

listen = "127.0.0.1:8080"          # address the HTTP(S) server binds
data_dir = "./switchboard-data"     # where state (and a generated TLS certificate) is kept
# store = "postgres://switchboard@127.0.0.1:5432/switchboard"  # PostgreSQL instead of SQLite in data_dir
# node_id = "node-1"                 # this node in logs, /metrics and call ownership (default: host name and port)
# node_url = "http://10.0.0.5:8080"  # where the other nodes reach this one (default: the listen address)
# public_url = "https://switchboard.example.net"  # base URL bots use to reach us; default: derived from listen

# [sip]                             # SIP over UDP and TCP; without listen there is no SIP
# listen = "127.0.0.1:5060"
# domain = "switchboard.example.net"  # the SIP domain (default: the listen host)
# trunk_sim_numbers = false         # true: the sim's scripted numbers (below) go to the trunk too
# hold_before_refer = true          # hold the transferee (re-INVITE sendonly) before REFER; resume on failure
# bridge_when_refer_refused = false # true: a transferee that refuses REFER is bridged to the target (RFC 3725)
# blind_when_replaces_refused = false # true: a refused REFER with Replaces (420/481/501) is sent again without it
# comfort_audio = "silence"         # what phones hear from the bot: "silence", "tone" (440 Hz) or "off"
# tls_listen = "127.0.0.1:5061"     # SIP over TLS too (needs listen); the certificate:
# tls_cert = "sip-cert.pem"         # ... these two (PEM), else [tls]'s, else a self-signed one in data_dir
# tls_key = "sip-key.pem"
#
# [[sip.trunks]]                    # an outbound proxy for PSTN numbers (--sip-trunk for one);
# address = "sip:198.51.100.7:5060" # INVITEs from this address to an instance's number are taken
# name = "carrier"                  # in logs (default: the address)
# numbers = ["+1", "+44"]           # the E.164 prefixes it takes (default: every number)

# [tls]                             # omit both cert and key to generate a self-signed certificate
# cert = "cert.pem"
# key = "key.pem"

[calls]
ring_timeout_ms = 60000             # 1000..=115000
allow_http_loopback_callbacks = true  # permit http:// webhooks on 127.0.0.1 / localhost (adds both to [callbacks])

[callbacks]                         # where notifications may go (see docs/SECURITY.md); checked at request time
schemes = ["https"]                 # "http" too goes only to hosts named in allow
allow = []                          # hosts ("bot.internal.example", "*.internal.example") and address
                                    # blocks ("10.1.0.0/16", "127.0.0.1") allowed although not public
allow_private = false               # 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7
allow_loopback = false              # 127/8, ::1, localhost
allow_link_local = false            # 169.254/16 (cloud metadata), fe80::/10
max_length = 2048                   # characters in a callback URL, 64..=65536

[http]                              # slow and idle clients; a timeout closes the connection (408 when it can)
header_timeout_ms = 10000           # from a request's first byte to the end of its head
body_timeout_ms = 30000             # to read its body
idle_timeout_ms = 60000             # between a response and the next request
max_connections = 4096              # open at once; more get 503 with Retry-After

[notifications]
issuer = "https://api.botframework.com"  # issuer of the tokens signing our callbacks
timeout_ms = 10000                  # per delivery attempt
first_retry_ms = 1000               # exponential back-off, starting here ...
max_retry_ms = 300000               # ... capped here
max_attempts = 12                   # at least 1

[sim]
admin_key = "switchboard-demo-admin"  # key for the simulator's control API
virtual_clock = false                 # true: time stands still until POST /sim/v1/clock moves it
history_calls = 1000                  # ended calls whose story GET /sim/v1/calls/{id}/history keeps ...
history_max_age_ms = 3600000          # ... and for how long after they end (live calls' always)

[[tenants]]
id = "aaaaaaaa-0000-4000-8000-000000000001"
name = "Contoso"

[[tenants]]
id = "bbbbbbbb-0000-4000-8000-000000000002"
name = "Fabrikam"

[[applications]]
client_id = "cccccccc-0000-4000-8000-000000000003"
name = "Demo Bot"
secret = "switchboard-demo-secret"
# previous_secret = "the-old-one"   # a rotation: the old secret works too, until ...
# previous_secret_expires = "2026-12-31T00:00:00Z"  # ... this time (RFC 3339); both or neither
tenants = ["aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"]  # first = home tenant
roles = ["Calls.Initiate.All", "Calls.InitiateGroupCall.All", "Calls.JoinGroupCall.All",
         "Calls.JoinGroupCallAsGuest.All", "Calls.AccessMedia.All"]
calling_webhook = "http://127.0.0.1:3978/api/calls"
notification_format = "graph"       # "graph" (default) or "beta-2018"
# max_requests_per_second = 50      # Graph requests a second (a burst of as many); more get 429 + Retry-After
# max_concurrent_calls = 100        # live calls at once (Graph's own limit is 100); default: no limit

[[applications.instances]]          # application instance (resource account) with a phone number
id = "dddddddd-0000-4000-8000-000000000004"
display_name = "Contoso Reception"
tenant_id = "aaaaaaaa-0000-4000-8000-000000000001"
phone = "+14255550100"

[[applications]]
client_id = "cccccccc-0000-4000-8000-000000000005"
name = "Unprivileged Bot"
secret = "switchboard-demo-secret"
tenants = ["aaaaaaaa-0000-4000-8000-000000000001"]
roles = []                          # no application permissions consented
calling_webhook = "http://127.0.0.1:3979/api/calls"

[[applications]]
client_id = "cccccccc-0000-4000-8000-000000000006"
name = "Legacy Bot"
secret = "switchboard-demo-secret"
tenants = ["aaaaaaaa-0000-4000-8000-000000000001"]
roles = ["Calls.Initiate.All", "Calls.InitiateGroupCall.All", "Calls.JoinGroupCall.All",
         "Calls.JoinGroupCallAsGuest.All", "Calls.AccessMedia.All"]
calling_webhook = "http://127.0.0.1:3980/api/calls"
notification_format = "beta-2018"

[[applications.instances]]
id = "dddddddd-0000-4000-8000-000000000007"
display_name = "Legacy Reception"
tenant_id = "aaaaaaaa-0000-4000-8000-000000000001"
phone = "+14255550107"

# Users. behaviour kinds: "answer" (after_ms, default 200; optional hang_up_after_ms and
# transfer_delay_ms; for IVRs, press = "1#" with press_after_ms, default 500, after the call's first
# prompt, and speak_ms into a recording), "busy", "decline", "no-answer". Default: answer after 200 ms.
# sip: the user's SIP account (registers as sip:<username>@<sip domain> with Digest).
[[users]]
id = "550fae72-d251-43ec-868c-373732c2704f"
display_name = "Heidi Steen"
tenant_id = "aaaaaaaa-0000-4000-8000-000000000001"
behaviour = { kind = "answer", after_ms = 200 }
sip = { username = "heidi", password = "switchboard-demo-sip" }

[[users]]
id = "751f6800-3180-414d-bd94-333364659951"
display_name = "Alex Wilber"
tenant_id = "aaaaaaaa-0000-4000-8000-000000000001"
sip = { username = "alex", password = "switchboard-demo-sip" }

[[users]]
id = "eeeeeeee-0000-4000-8000-000000000486"
display_name = "Busy Bob"
tenant_id = "aaaaaaaa-0000-4000-8000-000000000001"
behaviour = { kind = "busy" }
sip = { username = "bob", password = "switchboard-demo-sip" }

[[users]]
id = "eeeeeeee-0000-4000-8000-000000000603"
display_name = "Declining Dana"
tenant_id = "aaaaaaaa-0000-4000-8000-000000000001"
behaviour = { kind = "decline" }
sip = { username = "dana", password = "switchboard-demo-sip" }

[[users]]
id = "eeeeeeee-0000-4000-8000-000000000408"
display_name = "Silent Sam"
tenant_id = "aaaaaaaa-0000-4000-8000-000000000001"
behaviour = { kind = "no-answer" }
sip = { username = "sam", password = "switchboard-demo-sip" }

[[users]]
id = "ffffffff-0000-4000-8000-000000000001"
display_name = "Fabrikam Fiona"
tenant_id = "bbbbbbbb-0000-4000-8000-000000000002"
sip = { username = "fiona", password = "switchboard-demo-sip" }

# PSTN numbers reachable from the simulated network.
[[numbers]]
number = "+12345678901"
behaviour = { kind = "answer", after_ms = 200 }

[[numbers]]
number = "+15555550486"
behaviour = { kind = "busy" }

[[numbers]]
number = "+15555550603"
behaviour = { kind = "decline" }

[[numbers]]
number = "+15555550408"
behaviour = { kind = "no-answer" }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[sim]
admin_key = "k"

[[tenants]]
id = "aaaaaaaa-0000-4000-8000-000000000001"
name = "Contoso"

[[applications]]
client_id = "cccccccc-0000-4000-8000-000000000003"
name = "Bot"
secret = "s"
tenants = ["aaaaaaaa-0000-4000-8000-000000000001"]
"#;
    const USER: &str = "\n[[users]]\nid = \"eeeeeeee-0000-4000-8000-000000000001\"\ndisplay_name = \"U\"\ntenant_id = \"aaaaaaaa-0000-4000-8000-000000000001\"\n";
    const INST: &str = "\n[[applications.instances]]\nid = \"dddddddd-0000-4000-8000-000000000004\"\ndisplay_name = \"I\"\ntenant_id = \"aaaaaaaa-0000-4000-8000-000000000001\"\nphone = \"+14255550100\"\n";

    fn cfg(top: &str, tail: &str) -> String {
        format!("{top}\n{MIN}{tail}")
    }

    #[test]
    fn every_problem_of_a_file_is_reported_at_once() {
        let src = cfg(
            "node_id = \"no spaces allowed\"\nnode_url = \"ftp://x\"",
            "[calls]\nring_timeout_ms = 5\n[callbacks]\nschemes = [\"ftp\"]\n",
        );
        let e = check(&src, "node_id");
        let fields: Vec<&str> = std::iter::once(e.field.as_str()).chain(e.more.iter().map(|(f, _)| f.as_str())).collect();
        assert_eq!(fields, ["node_id", "node_url", "callbacks.schemes[0]", "calls.ring_timeout_ms"], "{e}");
        assert_eq!(e.to_string().lines().count(), 4, "one line each:\n{e}");
        assert!(e.to_string().lines().all(|l| l.starts_with("test.toml: ")), "{e}");
    }

    /// Parses `src`, expecting an error whose Display contains `expected`; returns it.
    fn check(src: &str, expected: &str) -> ConfigError {
        match Config::from_toml(src, "test.toml") {
            Ok(_) => panic!("expected an error containing {expected:?} for:\n{src}"),
            Err(e) => {
                let text = e.to_string();
                assert!(text.starts_with("test.toml: "), "{text}");
                assert!(text.contains(expected), "error {text:?} does not contain {expected:?}\n{src}");
                e
            }
        }
    }

    #[test]
    fn malformed_configs() {
        let cases: Vec<(&str, String, &str, Option<&str>)> = vec![
            ("unknown top key", cfg("colour = \"red\"", ""), "unknown field `colour`", Some("line 1, column 1")),
            ("unknown nested key", cfg("", "[calls]\nring_timeout = 5\n"), "unknown field `ring_timeout`", None),
            ("unknown behaviour key", cfg("", &format!("{USER}behaviour = {{ kind = \"answer\", after = 5 }}\n")), "unknown field", None),
            ("unknown behaviour kind", cfg("", &format!("{USER}behaviour = {{ kind = \"ring\" }}\n")), "ring", None),
            ("wrong type", cfg("", "[calls]\nring_timeout_ms = \"fast\"\n"), "invalid type", None),
            ("bad listen", cfg("listen = \"nowhere\"", ""), "socket address", Some("line 1, column 10")),
            ("syntax", cfg("", "[[users]\n"), "", None),
            (
                "bad tenant guid",
                MIN.replace("aaaaaaaa-0000-4000-8000-000000000001\"\nname", "contoso\"\nname"),
                "not a GUID",
                Some("tenants[0].id"),
            ),
            ("bad user guid", cfg("", &USER.replace("eeeeeeee-0000", "eeeeeeee-000g")), "not a GUID", Some("users[0].id")),
            ("bad e164", cfg("", &INST.replace("+14255550100", "14255550100")), "not an E.164", Some("applications[0].instances[0].phone")),
            ("bad pstn", cfg("", "[[numbers]]\nnumber = \"+0123\"\n"), "not an E.164", Some("numbers[0].number")),
            ("duplicate user id", cfg("", &format!("{USER}{USER}")), "already used by users[0].id", Some("users[1].id")),
            (
                "bad sip username",
                cfg("", &format!("{USER}sip = {{ username = \"he idi\", password = \"p\" }}\n")),
                "'he idi' must be 1 to 64 characters a SIP user part allows",
                Some("users[0].sip.username"),
            ),
            (
                "empty sip password",
                cfg("", &format!("{USER}sip = {{ username = \"heidi\", password = \"\" }}\n")),
                "",
                Some("users[0].sip.password"),
            ),
            (
                "duplicate sip username",
                cfg(
                    "",
                    &format!(
                        "{USER}sip = {{ username = \"heidi\", password = \"p\" }}\n{}sip = {{ username = \"HEIDI\", password = \"p\" }}\n",
                        USER.replace("001\"\ndisplay", "002\"\ndisplay")
                    ),
                ),
                "'HEIDI' is already another user's SIP user name",
                Some("users[1].sip.username"),
            ),
            ("unknown sip key", cfg("", "[sip]\nport = 5060\n"), "unknown field `port`", None),
            ("bad sip listen", cfg("", "[sip]\nlisten = \"5060\"\n"), "socket address", None),
            ("bad sip domain", cfg("", "[sip]\ndomain = \"a b\"\n"), "'a b' is not a host name or address", Some("sip.domain")),
            (
                "trunk not a sip uri",
                cfg("", "[[sip.trunks]]\naddress = \"10.0.0.1:5060\"\n"),
                "'10.0.0.1:5060' is not a sip:HOST:PORT URI",
                Some("sip.trunks[0].address"),
            ),
            (
                "trunk host name",
                cfg("", "[[sip.trunks]]\naddress = \"sip:carrier.example:5060\"\n"),
                "'carrier.example' in 'sip:carrier.example:5060' is not an IP address (or localhost)",
                Some("sip.trunks[0].address"),
            ),
            (
                "trunk bad port",
                cfg("", "[[sip.trunks]]\naddress = \"sip:10.0.0.1:99999\"\n"),
                "'99999' in 'sip:10.0.0.1:99999' is not a port",
                Some("sip.trunks[0].address"),
            ),
            (
                "trunk bad prefix",
                cfg("", "[[sip.trunks]]\naddress = \"sip:10.0.0.1\"\nnumbers = [\"+1\", \"44\"]\n"),
                "'44' is not an E.164 prefix",
                Some("sip.trunks[0].numbers[1]"),
            ),
            ("sip tls cert only", cfg("", "[sip]\ntls_cert = \"c.pem\"\n"), "set both", Some("sip.tls_key")),
            (
                "sip tls without sip",
                cfg("", "[sip]\ntls_listen = \"127.0.0.1:5061\"\n"),
                "SIP over TLS needs SIP itself",
                Some("sip.tls_listen"),
            ),
            ("bad comfort audio", cfg("", "[sip]\ncomfort_audio = \"music\"\n"), "unknown variant `music`", None),
            ("trunk unknown key", cfg("", "[[sip.trunks]]\naddress = \"sip:10.0.0.1\"\nport = 1\n"), "unknown field `port`", None),
            (
                "user id = app id",
                cfg("", &USER.replace("eeeeeeee", "cccccccc").replace("001\"\ndisplay", "003\"\ndisplay")),
                "already used by applications[0].client_id",
                Some("users[0].id"),
            ),
            (
                "duplicate phone",
                cfg("", &format!("{INST}[[numbers]]\nnumber = \"+14255550100\"\n")),
                "already used by applications[0].instances[0].phone",
                Some("numbers[0].number"),
            ),
            (
                "unknown tenant",
                cfg("", &USER.replace("aaaaaaaa", "bbbbbbbb")),
                "unknown tenant 'bbbbbbbb-0000-4000-8000-000000000001'; declared tenants are: 'aaaaaaaa",
                Some("users[0].tenant_id"),
            ),
            (
                "unknown role",
                MIN.replace("tenants = [", "roles = [\"Calls.Everything\"]\ntenants = ["),
                "unknown role 'Calls.Everything'",
                Some("applications[0].roles[0]"),
            ),
            (
                "bad webhook",
                MIN.replace("tenants = [", "calling_webhook = \"ftp://x/y\"\ntenants = ["),
                "must start with http",
                Some("applications[0].calling_webhook"),
            ),
            (
                "webhook no host",
                MIN.replace("tenants = [", "calling_webhook = \"https:///api\"\ntenants = ["),
                "no host",
                Some("applications[0].calling_webhook"),
            ),
            ("bad public url", cfg("public_url = \"example.com\"", ""), "must start with http", Some("public_url")),
            ("ring timeout low", cfg("", "[calls]\nring_timeout_ms = 999\n"), "out of range", Some("calls.ring_timeout_ms")),
            ("ring timeout high", cfg("", "[calls]\nring_timeout_ms = 115001\n"), "out of range", Some("calls.ring_timeout_ms")),
            ("tls only cert", cfg("", "[tls]\ncert = \"c.pem\"\n"), "set both", Some("tls.key")),
            ("missing admin key", MIN.replace("admin_key = \"k\"", ""), "missing", Some("sim.admin_key")),
            ("missing sim", MIN.replace("[sim]\nadmin_key = \"k\"", ""), "missing", Some("sim.admin_key")),
            ("empty admin key", MIN.replace("admin_key = \"k\"", "admin_key = \"\""), "must not be empty", Some("sim.admin_key")),
            ("no tenants", "[sim]\nadmin_key = \"k\"\n".to_string(), "at least one", Some("tenants")),
            ("no applications", MIN.split("[[applications]]").next().unwrap_or_default().to_string(), "at least one", Some("applications")),
            ("empty secret", MIN.replace("secret = \"s\"", "secret = \" \""), "must not be empty", Some("applications[0].secret")),
            (
                "previous secret without an end",
                MIN.replace("secret = \"s\"", "secret = \"s\"\nprevious_secret = \"old\""),
                "is required with previous_secret",
                Some("applications[0].previous_secret_expires"),
            ),
            (
                "previous secret ending at no time",
                MIN.replace("secret = \"s\"", "secret = \"s\"\nprevious_secret = \"old\"\nprevious_secret_expires = \"soon\""),
                "'soon' is not an RFC 3339 time",
                Some("applications[0].previous_secret_expires"),
            ),
            (
                "previous secret the same",
                MIN.replace(
                    "secret = \"s\"",
                    "secret = \"s\"\nprevious_secret = \"s\"\nprevious_secret_expires = \"2026-12-31T00:00:00Z\"",
                ),
                "is the same as secret",
                Some("applications[0].previous_secret"),
            ),
            (
                "an end with no previous secret",
                MIN.replace("secret = \"s\"", "secret = \"s\"\nprevious_secret_expires = \"2026-12-31T00:00:00Z\""),
                "has nothing to expire",
                Some("applications[0].previous_secret"),
            ),
            ("a callback scheme", cfg("", "[callbacks]\nschemes = [\"ftp\"]\n"), "is not a scheme", Some("callbacks.schemes[0]")),
            ("a callback allow entry", cfg("", "[callbacks]\nallow = [\"10.0.0.0/40\"]\n"), "prefix length", Some("callbacks.allow[0]")),
            ("a zero timeout", cfg("", "[http]\nheader_timeout_ms = 0\n"), "must be at least 1", Some("http.header_timeout_ms")),
            ("an unknown http key", cfg("", "[http]\nheader_timeout = 5\n"), "unknown field", None),
            (
                "behaviour too slow",
                cfg("", &format!("{USER}behaviour = {{ kind = \"answer\", after_ms = 3600001 }}\n")),
                "at most",
                Some("users[0].behaviour"),
            ),
            ("zero attempts", cfg("", "[notifications]\nmax_attempts = 0\n"), "at least 1", Some("notifications.max_attempts")),
            ("bad format", MIN.replace("tenants = [", "notification_format = \"beta\"\ntenants = ["), "unknown variant", None),
        ];
        for (name, src, expected, field) in &cases {
            let e = check(src, expected);
            if let Some(field) = field {
                assert_eq!(&e.field, field, "case {name}: {e}");
            }
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MIN, "min").expect("valid");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.data_dir, PathBuf::from("./switchboard-data"));
        assert_eq!(c.calls, CallSettings { ring_timeout_ms: 60_000, allow_http_loopback_callbacks: false });
        assert_eq!(c.notifications, Config::demo().notifications);
        assert_eq!(c.directory.applications[0].notification_format, NotificationFormat::Graph);
        assert!(c.tls.is_none() && c.public_url.is_none());
        let with_user = Config::from_toml(&cfg("", USER), "u").expect("valid");
        assert_eq!(
            with_user.sim.behaviours.get("EEEEEEEE-0000-4000-8000-000000000001"),
            Some(&Behaviour::Answer {
                after_ms: 200,
                hang_up_after_ms: None,
                transfer_delay_ms: None,
                press: None,
                press_after_ms: None,
                speak_ms: None
            })
        );
    }

    #[test]
    fn example_matches_demo() {
        let demo = Config::demo();
        demo.validate("demo").expect("demo validates");
        let parsed = Config::from_toml(EXAMPLE_TOML, "example").expect("example parses");
        assert_eq!(parsed.directory, demo.directory);
        assert_eq!(parsed, demo);
    }

    #[test]
    fn lookups() {
        let d = Config::demo().directory;
        assert_eq!(d.tenant(FABRIKAM).map(|t| t.name.as_str()), Some("Fabrikam"));
        assert_eq!(d.app("CCCCCCCC-0000-4000-8000-000000000006").map(|a| a.notification_format), Some(NotificationFormat::Beta2018));
        let b = Config::demo().sim.behaviours;
        assert_eq!(b.get("eeeeeeee-0000-4000-8000-000000000486"), Some(&Behaviour::Busy));
        assert_eq!(b.get("+15555550408"), Some(&Behaviour::NoAnswer));
        let (app, inst) = d.instance("dddddddd-0000-4000-8000-000000000007").expect("instance");
        assert_eq!((app.name.as_str(), inst.display_name.as_str()), ("Legacy Bot", "Legacy Reception"));
        let (app, _) = d.instance_by_phone("+14255550100").expect("by phone");
        assert_eq!(app.name, "Demo Bot");
        assert!(d.instance_by_phone("+12345678901").is_none());
    }

    #[test]
    fn formats_and_behaviour() {
        assert!(is_e164("+14255550100") && is_e164("+12") && is_e164("+123456789012345"));
        assert!(!is_e164("+1") && !is_e164("+1234567890123456") && !is_e164("+0123") && !is_e164("14255550100") && !is_e164("+1-425"));
        assert!(is_guid("550FAE72-d251-43ec-868c-373732c2704f"));
        assert!(!is_guid("550fae72d251-43ec-868c-373732c2704f0") && !is_guid("550fae72-d251-43ec-868c-373732c2704") && !is_guid(""));
        assert_eq!(check_url("http://[::1]:3978/x"), Ok(()));
        assert!(check_url("http://host:99999/").is_err());
        let b: Behaviour =
            toml::from_str::<FileUser>("id='x'\ndisplay_name='y'\ntenant_id='z'\nbehaviour={kind='answer',hang_up_after_ms=5}")
                .expect("parses")
                .behaviour;
        assert_eq!(
            b,
            Behaviour::Answer {
                after_ms: 200,
                hang_up_after_ms: Some(5),
                transfer_delay_ms: None,
                press: None,
                press_after_ms: None,
                speak_ms: None
            }
        );
        assert_eq!(
            Behaviour::Answer {
                after_ms: 0,
                hang_up_after_ms: Some(3_600_001),
                transfer_delay_ms: None,
                press: None,
                press_after_ms: None,
                speak_ms: None
            }
            .validate()
            .map_err(|e| e.contains("hang_up_after_ms")),
            Err(true)
        );
        assert_eq!(Behaviour::NoAnswer.validate(), Ok(()));
        let e = Config::from_file(Path::new("/nonexistent/switchboard.toml")).expect_err("unreadable");
        assert_eq!(e.field, "(file)");
    }
}

#[cfg(test)]
mod behaviour_parsing {
    use super::Behaviour;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Behaviour, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn every_kind_refuses_fields_it_does_not_take() {
        for kind in ["busy", "decline", "no-answer"] {
            for extra in [json!({"after_ms": 5}), json!({"after_ms": null}), json!({"zzz": 1})] {
                let mut v = json!({"kind": kind});
                v.as_object_mut().into_iter().for_each(|o| o.extend(extra.as_object().cloned().unwrap_or_default()));
                assert!(parse(v.clone()).is_err_and(|e| e.contains("unknown field")), "{v}");
            }
        }
        assert!(parse(json!({"kind": "answer", "after_ms": 5, "zzz": 1})).is_err_and(|e| e.contains("unknown field `zzz`")));
        assert_eq!(parse(json!({"kind": "busy"})), Ok(Behaviour::Busy));
    }

    #[test]
    fn whole_floats_and_nulls_are_read_as_written() {
        let b = parse(json!({"kind": "answer", "after_ms": 200.0, "hang_up_after_ms": 1e3, "transfer_delay_ms": null}));
        assert_eq!(
            b,
            Ok(Behaviour::Answer {
                after_ms: 200,
                hang_up_after_ms: Some(1000),
                transfer_delay_ms: None,
                press: None,
                press_after_ms: None,
                speak_ms: None
            })
        );
        assert_eq!(
            parse(json!({"kind": "answer", "after_ms": null})),
            Ok(Behaviour::Answer {
                after_ms: 200,
                hang_up_after_ms: None,
                transfer_delay_ms: None,
                press: None,
                press_after_ms: None,
                speak_ms: None
            })
        );
        for bad in [json!(1.5), json!(-1), json!(-1.0), json!("5")] {
            assert!(parse(json!({"kind": "answer", "after_ms": bad})).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod shipped_example {
    /// The example shipped in docs/ is exactly what `switchboard example-config` prints.
    #[test]
    fn docs_example_is_the_built_in_one() {
        assert_eq!(include_str!("../../../docs/switchboard.example.toml"), super::EXAMPLE_TOML);
    }
}
