//! Where notifications may go: the callback policy (`[callbacks]`), against server-side request
//! forgery through `callbackUri` (issue 15).
//!
//! - **At request time** ([`CallbackPolicy::check`]): everything knowable without DNS. The length,
//!   control characters, scheme, credentials, IP addresses written in odd forms (`127.1`,
//!   `0x7f000001`, `2130706433`), addresses of a refused class, `localhost`, and this server's own
//!   address. Refusals are 400s naming the field.
//! - **At delivery** ([`Resolver`]): every address a callback's host resolves to is checked again,
//!   after DNS. A name that resolves to a refused address (DNS rebinding) gets nothing.
//!
//! Address classes: public addresses are allowed; private (RFC 1918, CGNAT, unique local), loopback
//! and link-local ones only when their class is allowed or an `allow` entry names them; reserved ones
//! (unspecified, multicast, broadcast, documentation, benchmarking, 240/4) only by an `allow` entry.
//! IPv4 addresses inside IPv6 ones (mapped, NAT64, 6to4) are judged as the IPv4 address.
//! Plain `http` goes only to hosts an `allow` entry names: a signed token never crosses an open
//! network in clear.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::config::CallbackSettings;

/// What the policy is built from, and the addresses of this server, which are never a callback.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackPolicy {
    schemes: Vec<String>,
    allow: Vec<Rule>,
    allow_private: bool,
    allow_loopback: bool,
    allow_link_local: bool,
    pub max_length: usize,
    own: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    /// An address block (`10.1.0.0/16`, `::1/128`; a bare address is a /32 or /128).
    Net(IpAddr, u8),
    /// A host name, exactly (`bots.internal.example`), or a domain's subdomains (`*.internal.example`).
    Host(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Public,
    Private,
    Loopback,
    LinkLocal,
    Reserved,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Public => "public",
            Class::Private => "private",
            Class::Loopback => "loopback",
            Class::LinkLocal => "link-local",
            Class::Reserved => "reserved",
        }
    }
}

/// The IPv4 address an IPv6 one carries, where routing would reach it: mapped (`::ffff:a.b.c.d`),
/// NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

pub fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let reserved: [([u8; 4], u32); 9] = [
        ([0, 0, 0, 0], 8),       // "this network", 0.0.0.0
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation
        ([198, 51, 100, 0], 24), // documentation
        ([203, 0, 113, 0], 24),  // documentation
        ([198, 18, 0, 0], 15),   // benchmarking
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, and the broadcast address
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
    ];
    if ip.is_loopback() {
        Class::Loopback
    } else if ip.is_private() || in_v4(ip, [100, 64, 0, 0], 10) {
        Class::Private
    } else if ip.is_link_local() {
        Class::LinkLocal
    } else if reserved.iter().any(|(net, bits)| in_v4(ip, *net, *bits)) {
        Class::Reserved
    } else {
        Class::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    let s = ip.segments();
    if ip.is_loopback() {
        Class::Loopback
    } else if ip.is_unspecified() || ip.is_multicast() {
        Class::Reserved
    } else if s[0] & 0xffc0 == 0xfe80 {
        Class::LinkLocal
    } else if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfec0 {
        // unique local, and the old site-local
        Class::Private
    } else if (s[0] == 0x2001 && matches!(s[1], 0 | 0x0db8)) || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) {
        // documentation, Teredo (its addresses hide where they lead), discard-only
        Class::Reserved
    } else if s[..6] == [0; 6] {
        // IPv4-compatible (deprecated): judged as reserved rather than guessed at
        Class::Reserved
    } else {
        Class::Public
    }
}

fn contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => in_v4(i, n.octets(), u32::from(bits)),
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let bits = u32::from(bits);
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(i) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn parse_rule(entry: &str) -> Result<Rule, String> {
    let entry = entry.trim();
    let (addr, bits) = match entry.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (entry, None),
    };
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = addr.parse::<IpAddr>() {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => {
                b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| format!("'{entry}': the prefix length must be 0 to {max}"))?
            }
        };
        return Ok(Rule::Net(ip, bits));
    }
    if bits.is_some() {
        return Err(format!("'{entry}' is neither an address block (10.0.0.0/8) nor a host name"));
    }
    let host = entry.to_ascii_lowercase();
    let name = host.strip_prefix("*.").unwrap_or(&host);
    let valid =
        !name.is_empty() && name.split('.').all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !valid {
        return Err(format!("'{entry}' is neither an address block (10.0.0.0/8) nor a host name (bot.example.com, *.example.com)"));
    }
    Ok(Rule::Host(host))
}

/// Shows a value in an error message, cut short when long (a refused 900 KB URL is not echoed).
/// Control characters are escaped, so that a refused value never breaks a log line.
pub fn shown(value: &str) -> String {
    const MAX: usize = 120;
    let escaped =
        |s: &str| s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect::<String>();
    match value.char_indices().nth(MAX) {
        Some((i, _)) => format!("'{}…' ({} characters)", escaped(&value[..i]), value.chars().count()),
        None => format!("'{}'", escaped(value)),
    }
}

impl CallbackPolicy {
    /// The policy of a `[callbacks]` section; the error is (field, problem).
    pub fn new(s: &CallbackSettings) -> Result<Self, (String, String)> {
        if s.schemes.is_empty() {
            return Err(("callbacks.schemes".into(), "must list at least one scheme (https)".into()));
        }
        for (i, scheme) in s.schemes.iter().enumerate() {
            if scheme != "https" && scheme != "http" {
                return Err((
                    format!("callbacks.schemes[{i}]"),
                    format!("'{scheme}' is not a scheme notifications can use; use https or http"),
                ));
            }
        }
        let allow = s
            .allow
            .iter()
            .enumerate()
            .map(|(i, e)| parse_rule(e).map_err(|p| (format!("callbacks.allow[{i}]"), p)))
            .collect::<Result<Vec<_>, _>>()?;
        if !(64..=65_536).contains(&s.max_length) {
            return Err(("callbacks.max_length".into(), format!("{} is out of range; use 64 to 65536", s.max_length)));
        }
        Ok(CallbackPolicy {
            schemes: s.schemes.clone(),
            allow,
            allow_private: s.allow_private,
            allow_loopback: s.allow_loopback,
            allow_link_local: s.allow_link_local,
            max_length: s.max_length,
            own: Vec::new(),
        })
    }

    /// This server's own listening addresses (HTTP, SIP), which no callback may name.
    pub fn with_own(mut self, own: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.own.extend(own);
        self
    }

    fn named(&self, host: &str) -> bool {
        self.allow.iter().any(|r| match r {
            Rule::Host(h) => match h.strip_prefix("*.") {
                Some(domain) => host.len() > domain.len() + 1 && host.ends_with(domain) && host[..host.len() - domain.len()].ends_with('.'),
                None => h == host,
            },
            Rule::Net(..) => false,
        })
    }

    fn in_block(&self, ip: IpAddr) -> bool {
        let v4 = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allow.iter().any(|r| match r {
            Rule::Net(net, bits) => contains(*net, *bits, ip) || v4.is_some_and(|v4| contains(*net, *bits, v4)),
            Rule::Host(_) => false,
        })
    }

    /// Whether one of this server's addresses listens on `port`.
    pub fn names_own_port(&self, port: u16) -> bool {
        self.own.iter().any(|o| o.port() == port)
    }

    fn is_own(&self, ip: IpAddr, port: u16) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        // On a wildcard bind the server's other interface addresses are not known here (no
        // interface listing); loopback and the unspecified address on its port are always its own.
        self.own.iter().any(|own| own.port() == port && (own.ip() == ip || ip.is_loopback() || ip.is_unspecified()))
    }

    /// Whether a notification may go to `ip` (`port`, when known), reached through the name `host`.
    pub fn address(&self, host: Option<&str>, ip: IpAddr, port: Option<u16>) -> Result<(), String> {
        if port.is_some_and(|p| self.is_own(ip, p)) {
            return Err(format!("{} is this server's own address", SocketAddr::new(ip, port.unwrap_or_default())));
        }
        if self.in_block(ip) || host.is_some_and(|h| self.named(h)) {
            return Ok(());
        }
        let class = classify(ip);
        let allowed = match class {
            Class::Public => true,
            Class::Private => self.allow_private,
            Class::Loopback => self.allow_loopback,
            Class::LinkLocal => self.allow_link_local,
            Class::Reserved => false,
        };
        if allowed {
            return Ok(());
        }
        let via = host.filter(|h| h.parse::<IpAddr>().is_err()).map(|h| format!("'{h}' resolves to ")).unwrap_or_default();
        Err(format!(
            "{via}{ip}, a {} address, which the callback policy refuses (allow it in [callbacks] allow or {})",
            class.name(),
            match class {
                Class::Private => "allow_private",
                Class::Loopback => "allow_loopback",
                Class::LinkLocal => "allow_link_local",
                _ => "not at all: reserved addresses are never allowed by class",
            }
        ))
    }

    /// Everything that can be known of a callback URL without DNS. The problem says what is wrong,
    /// without the field's name.
    pub fn check(&self, value: &str) -> Result<url::Url, String> {
        let n = value.chars().count();
        if n > self.max_length {
            return Err(format!("is {n} characters long; at most {} are allowed", self.max_length));
        }
        if let Some((i, c)) = value.chars().enumerate().find(|(_, c)| c.is_control() || c.is_whitespace()) {
            return Err(format!("{} contains {} at position {i}; a URL has none", shown(value), char_name(c)));
        }
        let url = url::Url::parse(value).map_err(|e| format!("{} is not an absolute URL ({e})", shown(value)))?;
        let scheme = url.scheme();
        if !self.schemes.iter().any(|s| s == scheme) {
            return Err(format!("{} must use {}", shown(value), self.schemes.join(" or ")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{} must not carry credentials (user:password@)", shown(value)));
        }
        let Some(host) = url.host() else {
            return Err(format!("{} has no host", shown(value)));
        };
        let port = url.port_or_known_default();
        let ip = match host {
            url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            url::Host::Domain(_) => None,
        };
        match (ip, host) {
            (Some(ip), _) => {
                let standard = url.host_str().unwrap_or_default();
                self.address(Some(standard), ip, port).map_err(|p| format!("{}: {p}", shown(value)))?;
                // Filters elsewhere may read `127.1` or `0x7f000001` differently than we do.
                let written = written_host(value);
                if !written.eq_ignore_ascii_case(standard) {
                    return Err(format!("{} writes the address {standard} as '{written}'; write it in the standard form", shown(value)));
                }
                if scheme == "http" && !self.in_block(ip) {
                    return Err(format!("{} uses http, which goes only to hosts named in [callbacks] allow; use https", shown(value)));
                }
            }
            (None, url::Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if d == "localhost" || d.ends_with(".localhost") {
                    // RFC 6761: always loopback, whatever DNS says.
                    let name = Some(d.as_str());
                    self.address(name, IpAddr::V4(Ipv4Addr::LOCALHOST), port).map_err(|p| format!("{}: {p}", shown(value)))?;
                    self.address(name, IpAddr::V6(Ipv6Addr::LOCALHOST), port).map_err(|p| format!("{}: {p}", shown(value)))?;
                }
                if scheme == "http" && !self.named(&d) {
                    return Err(format!("{} uses http, which goes only to hosts named in [callbacks] allow; use https", shown(value)));
                }
            }
            (None, _) => return Err(format!("{} has no host", shown(value))),
        }
        Ok(url)
    }
}

fn char_name(c: char) -> String {
    match c {
        '\r' => "a carriage return (CR)".into(),
        '\n' => "a line feed (LF)".into(),
        '\t' => "a tab".into(),
        ' ' => "a space".into(),
        c => format!("the character U+{:04X}", u32::from(c)),
    }
}

/// The host as the URL writes it (between `://` and the port, path, query or fragment).
fn written_host(value: &str) -> &str {
    let rest = value.split_once("://").map_or(value, |(_, r)| r);
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or("");
    if hostport.starts_with('[') {
        return hostport.split_inclusive(']').next().unwrap_or(hostport);
    }
    hostport.split(':').next().unwrap_or(hostport)
}

/// DNS for the notifier's client: each name's addresses, less those the policy refuses. A name with
/// nothing left fails to resolve, with the reason.
pub struct Resolver(pub Arc<CallbackPolicy>);

#[derive(Debug, thiserror::Error)]
#[error("refused by the callback policy: {0}")]
pub struct Refused(pub String);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.address(Some(&host), a.ip(), None) {
                    Ok(()) => true,
                    Err(p) => {
                        refused.get_or_insert(p);
                        false
                    }
                })
                .collect();
            match (kept.is_empty(), refused) {
                (true, Some(p)) => Err(Box::new(Refused(p)) as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(f: impl FnOnce(&mut CallbackSettings)) -> CallbackPolicy {
        let mut s = CallbackSettings::default();
        f(&mut s);
        CallbackPolicy::new(&s).expect("valid").with_own(["127.0.0.1:8080".parse().expect("addr")])
    }

    fn demo() -> CallbackPolicy {
        policy(|s| {
            s.schemes.push("http".into());
            s.allow = vec!["127.0.0.1".into(), "localhost".into()];
        })
    }

    /// One row per URL: accepted (None) or the refusal's words (Some).
    fn check(p: &CallbackPolicy, cases: &[(&str, Option<&str>)]) {
        for (url, want) in cases {
            let got = p.check(url);
            match (want, &got) {
                (None, Ok(_)) => {}
                (Some(words), Err(problem)) if problem.contains(words) => {}
                _ => panic!("{url}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn the_default_policy_refuses_every_address_the_attack_used() {
        let p = policy(|_| {});
        check(
            &p,
            &[
                ("https://bot.contoso.com/cb", None),
                ("https://52.112.0.1/cb", None),
                ("https://[2603:1063::1]/cb", None),
                ("https://169.254.169.254/latest/meta-data/", Some("169.254.169.254, a link-local address")),
                ("https://10.0.0.1/", Some("10.0.0.1, a private address")),
                ("https://192.168.1.1/", Some("a private address")),
                ("https://172.16.5.4/", Some("a private address")),
                ("https://100.64.0.1/", Some("a private address")),
                ("https://[fd00::1]/", Some("fd00::1, a private address")),
                ("https://[fe80::1]/", Some("a link-local address")),
                ("https://[::ffff:169.254.169.254]/", Some("a link-local address")),
                ("https://[::ffff:127.0.0.1]/", Some("a loopback address")),
                ("https://[64:ff9b::a00:1]/", Some("a private address")),
                ("https://[2002:a00:1::]/", Some("a private address")),
                ("https://0/", Some("0.0.0.0, a reserved address")),
                ("https://0.0.0.0/", Some("a reserved address")),
                ("https://2130706433/", Some("127.0.0.1, a loopback address")),
                ("https://224.0.0.1/", Some("a reserved address")),
                ("https://255.255.255.255/", Some("a reserved address")),
                ("https://[::]/", Some("a reserved address")),
                ("https://[::1]/", Some("a loopback address")),
                ("https://localhost/cb", Some("a loopback address")),
                ("https://api.localhost/cb", Some("a loopback address")),
                ("http://bot.contoso.com/cb", Some("must use https")),
                ("ftp://bot.contoso.com/cb", Some("must use https")),
                ("https://user:pw@bot.contoso.com/cb", Some("must not carry credentials")),
                (
                    "https://bot.contoso.com/c\r\nb",
                    Some("'https://bot.contoso.com/c\\r\\nb' contains a carriage return (CR) at position 25"),
                ),
                ("https://bot.contoso.com/c b", Some("a space")),
                ("not a url", Some("a space")),
                ("cb", Some("is not an absolute URL")),
            ],
        );
    }

    #[test]
    fn the_demo_policy_takes_its_own_webhooks_and_nothing_else_local() {
        let p = demo();
        check(
            &p,
            &[
                ("http://127.0.0.1:3978/api/calls", None),
                ("http://localhost:3978/api/calls", None),
                ("https://127.0.0.1:3978/api/calls", None),
                ("http://127.0.0.2:3978/cb", Some("127.0.0.2, a loopback address")),
                ("http://[::1]:3978/cb", Some("a loopback address")),
                ("http://127.1:3978/cb", Some("writes the address 127.0.0.1 as '127.1'")),
                ("http://0x7f000001:3978/cb", Some("as '0x7f000001'")),
                ("http://0177.0.0.1:3978/cb", Some("standard form")),
                ("http://127.0.0.1:8080/v1.0/communications/calls", Some("127.0.0.1:8080 is this server's own address")),
                ("http://localhost:8080/sim/v1/calls", Some("this server's own address")),
                ("http://bot.contoso.com/cb", Some("uses http, which goes only to hosts named")),
                ("https://10.0.0.1/", Some("a private address")),
            ],
        );
    }

    #[test]
    fn allow_entries_and_classes_open_exactly_what_they_name() {
        let p = policy(|s| {
            s.schemes.push("http".into());
            s.allow = vec!["10.1.0.0/16".into(), "*.internal.example".into(), "fd00::/8".into()];
        });
        check(
            &p,
            &[
                ("http://10.1.2.3/cb", None),
                ("https://10.2.0.1/cb", Some("a private address")),
                ("http://bots.internal.example/cb", None),
                ("http://internal.example/cb", Some("uses http")),
                ("http://evilinternal.example/cb", Some("uses http")),
                ("https://[fd12::1]/cb", None),
            ],
        );
        // A name on the allow list may resolve to private addresses; others may not.
        assert!(p.address(Some("bots.internal.example"), "10.9.9.9".parse().expect("ip"), None).is_ok());
        assert!(p.address(Some("bot.contoso.com"), "10.9.9.9".parse().expect("ip"), None).is_err());
        let classes = policy(|s| s.allow_private = true);
        check(&classes, &[("https://192.168.1.1/", None), ("https://127.0.0.1/", Some("loopback"))]);
    }

    #[test]
    fn a_wildcard_bind_refuses_loopback_on_its_port_and_leaves_allowed_bots_alone() {
        let s = CallbackSettings { allow: vec!["10.1.0.0/16".into()], ..CallbackSettings::default() };
        let p = CallbackPolicy::new(&s).expect("valid").with_own(["0.0.0.0:443".parse().expect("addr")]);
        check(
            &p,
            &[
                ("https://10.1.2.3/cb", None),
                ("https://127.0.0.1/cb", Some("is this server's own address")),
                ("https://10.1.2.3:8443/cb", None),
            ],
        );
        let p = CallbackPolicy::new(&CallbackSettings::default()).expect("valid").with_own(["192.0.2.10:8080".parse().expect("addr")]);
        assert!(p.address(None, "192.0.2.10".parse().expect("ip"), Some(8080)).is_err_and(|e| e.contains("own address")));
    }

    #[tokio::test]
    async fn names_that_resolve_to_refused_addresses_get_nothing() {
        use reqwest::dns::Resolve;
        let name = || "localhost".parse::<reqwest::dns::Name>().expect("name");
        let refused = Resolver(Arc::new(policy(|_| {}))).resolve(name()).await.err().expect("refused");
        assert!(refused.to_string().contains("'localhost' resolves to "), "{refused}");
        assert!(refused.to_string().contains(", a loopback address, which the callback policy refuses"), "{refused}");
        let allowed = Resolver(Arc::new(policy(|s| s.allow_loopback = true))).resolve(name()).await;
        assert!(allowed.is_ok_and(|mut addrs| addrs.next().is_some_and(|a| a.ip().is_loopback())));
    }

    #[test]
    fn long_urls_are_refused_without_being_echoed() {
        let p = policy(|_| {});
        let long = format!("https://bot.contoso.com/{}", "a".repeat(900_000));
        let problem = p.check(&long).expect_err("too long");
        assert_eq!(problem, "is 900024 characters long; at most 2048 are allowed");
        let long_bad = format!("https://bot.contoso.com/{}\r\n", "a".repeat(1_000));
        let problem = p.check(&long_bad).expect_err("CR");
        assert!(problem.len() < 250, "{problem}");
    }

    #[test]
    fn settings_errors_name_the_field() {
        let bad = |f: fn(&mut CallbackSettings)| {
            let mut s = CallbackSettings::default();
            f(&mut s);
            CallbackPolicy::new(&s).expect_err("refused").0
        };
        assert_eq!(bad(|s| s.schemes = vec!["https".into(), "ftp".into()]), "callbacks.schemes[1]");
        assert_eq!(bad(|s| s.schemes.clear()), "callbacks.schemes");
        assert_eq!(bad(|s| s.allow = vec!["10.0.0.0/33".into()]), "callbacks.allow[0]");
        assert_eq!(bad(|s| s.allow = vec!["ok.example".into(), "bad host!".into()]), "callbacks.allow[1]");
        assert_eq!(bad(|s| s.max_length = 10), "callbacks.max_length");
    }
}
