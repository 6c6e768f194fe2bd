//! How a simulated party acts when called: answer after N ms (and maybe hang up N ms later, or take
//! N ms over a consultative transfer), be busy, decline, or never answer. Once answered, a party can
//! press keys when the bot's first prompt starts, and speak for N ms into a recording.

use serde::{Deserialize, Serialize};

/// The longest delay a behaviour may script (an hour).
pub const MAX_BEHAVIOUR_MS: u64 = 3_600_000;

/// How a simulated party acts when called. Read through [`BehaviourFields`], so that every kind refuses
/// fields it does not take (serde's `deny_unknown_fields` ignores them on unit variants).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Behaviour {
    Answer {
        #[serde(default = "default_after_ms")]
        after_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hang_up_after_ms: Option<u64>,
        /// As a transferee: how long the party takes to act on a consultative transfer (default 100 ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transfer_delay_ms: Option<u64>,
        /// Keys (`0`–`9`, `*`, `#`, `A`–`D`) the party presses once, `press_after_ms` after the first
        /// prompt or recording of the call starts (one every [`KEY_GAP_MS`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        press: Option<String>,
        /// Default [`DEFAULT_PRESS_AFTER_MS`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        press_after_ms: Option<u64>,
        /// How long the party speaks when a recording starts; silent without it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        speak_ms: Option<u64>,
    },
    Busy,
    Decline,
    NoAnswer,
}

fn default_after_ms() -> u64 {
    200
}

/// How long after a prompt starts a party presses its keys, unless its behaviour says.
pub const DEFAULT_PRESS_AFTER_MS: u64 = 500;
/// The time between two keys a party presses.
pub const KEY_GAP_MS: u64 = 100;
/// The most keys a behaviour or one press may hold.
pub const MAX_KEYS: usize = 32;

/// A behaviour as written (TOML or JSON): the kind and every field any kind takes. `null` stands for
/// the default; a field that is present, even as `null`, is refused on a kind that does not take it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BehaviourFields {
    kind: BehaviourKind,
    #[serde(default, deserialize_with = "present")]
    after_ms: Option<Option<Millis>>,
    #[serde(default, deserialize_with = "present")]
    hang_up_after_ms: Option<Option<Millis>>,
    #[serde(default, deserialize_with = "present")]
    transfer_delay_ms: Option<Option<Millis>>,
    #[serde(default, deserialize_with = "present_keys")]
    press: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    press_after_ms: Option<Option<Millis>>,
    #[serde(default, deserialize_with = "present")]
    speak_ms: Option<Option<Millis>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum BehaviourKind {
    Answer,
    Busy,
    Decline,
    NoAnswer,
}

fn present_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Tells a field given as `null` (`Some(None)`) from a missing one (`None`, through `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Millis>>, D::Error> {
    Option::<Millis>::deserialize(d).map(Some)
}

impl BehaviourFields {
    fn into_behaviour(self) -> Result<Behaviour, String> {
        let ms = |f: Option<Option<Millis>>| f.flatten().map(|m| m.0);
        let answer_fields = [
            ("after_ms", self.after_ms.is_some()),
            ("hang_up_after_ms", self.hang_up_after_ms.is_some()),
            ("transfer_delay_ms", self.transfer_delay_ms.is_some()),
            ("press", self.press.is_some()),
            ("press_after_ms", self.press_after_ms.is_some()),
            ("speak_ms", self.speak_ms.is_some()),
        ];
        let (kind, given) = match self.kind {
            BehaviourKind::Answer => {
                return Ok(Behaviour::Answer {
                    after_ms: ms(self.after_ms).unwrap_or_else(default_after_ms),
                    hang_up_after_ms: ms(self.hang_up_after_ms),
                    transfer_delay_ms: ms(self.transfer_delay_ms),
                    press: self.press.flatten(),
                    press_after_ms: ms(self.press_after_ms),
                    speak_ms: ms(self.speak_ms),
                });
            }
            BehaviourKind::Busy => ("busy", Behaviour::Busy),
            BehaviourKind::Decline => ("decline", Behaviour::Decline),
            BehaviourKind::NoAnswer => ("no-answer", Behaviour::NoAnswer),
        };
        match answer_fields.iter().find(|(_, given)| *given) {
            Some((name, _)) => Err(format!("unknown field `{name}`: a '{kind}' behaviour takes no field but `kind`")),
            None => Ok(given),
        }
    }
}

impl<'de> Deserialize<'de> for Behaviour {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BehaviourFields::deserialize(d)?.into_behaviour().map_err(serde::de::Error::custom)
    }
}

/// Milliseconds: a non-negative integer, also written as a whole float (`200.0`), as JSON Schema allows.
struct Millis(u64);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MillisVisitor)
    }
}

struct MillisVisitor;

impl serde::de::Visitor<'_> for MillisVisitor {
    type Value = Millis;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a non-negative whole number of milliseconds")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Millis, E> {
        Ok(Millis(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Millis, E> {
        u64::try_from(v).map(Millis).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Millis, E> {
        // Anything above the largest allowed delay is refused by `validate`, so saturating is safe.
        if v.is_finite() && v >= 0.0 && v.fract() == 0.0 {
            Ok(Millis(v as u64))
        } else {
            Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
        }
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour::Answer {
            after_ms: default_after_ms(),
            hang_up_after_ms: None,
            transfer_delay_ms: None,
            press: None,
            press_after_ms: None,
            speak_ms: None,
        }
    }
}

impl Behaviour {
    pub fn validate(&self) -> Result<(), String> {
        if let Behaviour::Answer { after_ms, hang_up_after_ms, transfer_delay_ms, press, press_after_ms, speak_ms } = self {
            for (name, value) in [("press_after_ms", press_after_ms), ("speak_ms", speak_ms)] {
                if let Some(v) = value.filter(|v| *v > MAX_BEHAVIOUR_MS) {
                    return Err(format!("{name} is {v}, at most {MAX_BEHAVIOUR_MS} is allowed"));
                }
            }
            if let Some(keys) = press {
                check_keys(keys)?;
            }
            if let Some(d) = transfer_delay_ms.filter(|d| *d > MAX_BEHAVIOUR_MS) {
                return Err(format!("transfer_delay_ms is {d}, at most {MAX_BEHAVIOUR_MS} is allowed"));
            }
            if *after_ms > MAX_BEHAVIOUR_MS {
                return Err(format!("after_ms is {after_ms}, at most {MAX_BEHAVIOUR_MS} is allowed"));
            }
            if let Some(h) = hang_up_after_ms.filter(|h| *h > MAX_BEHAVIOUR_MS) {
                return Err(format!("hang_up_after_ms is {h}, at most {MAX_BEHAVIOUR_MS} is allowed"));
            }
        }
        Ok(())
    }
}

/// Checks keys as a party presses them: 1 to [`MAX_KEYS`] of `0`–`9`, `*`, `#`, `A`–`D`.
pub fn check_keys(keys: &str) -> Result<(), String> {
    if keys.is_empty() || keys.chars().count() > MAX_KEYS {
        return Err(format!("keys must be 1 to {MAX_KEYS} of 0-9, *, #, A-D; got {} characters", keys.chars().count()));
    }
    match keys.chars().find(|c| !matches!(c, '0'..='9' | '*' | '#' | 'A'..='D' | 'a'..='d')) {
        Some(c) => Err(format!("keys may be 0-9, *, #, A-D; '{}' is not a key", c.escape_default())),
        None => Ok(()),
    }
}

/// The configured behaviour of directory parties, by user id (in any case) or phone number. A party
/// the directory knows without one answers after 200 ms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Behaviours(std::collections::HashMap<String, Behaviour>);

impl Behaviours {
    pub fn insert(&mut self, key: &str, behaviour: Behaviour) {
        self.0.insert(key.to_ascii_lowercase(), behaviour);
    }

    pub fn get(&self, key: &str) -> Option<&Behaviour> {
        self.0.get(&key.to_ascii_lowercase())
    }
}
