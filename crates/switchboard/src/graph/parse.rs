//! Graph JSON in: lenient the way Graph is, precise when it refuses.
//!
//! Property names match case-insensitively (Graph treats action parameter names so), `@odata.type` is
//! optional except where it picks a subtype, and unknown properties are ignored (the types we read are
//! open). Every error names the offending field by its JSON path.

use serde_json::{Map, Value};

/// A refused request body: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct BodyError {
    pub field: String,
    pub problem: String,
}

pub fn err(field: impl Into<String>, problem: impl Into<String>) -> BodyError {
    BodyError { field: field.into(), problem: problem.into() }
}

/// Parses a request body that must be a JSON object.
pub fn object(bytes: &[u8]) -> Result<Value, BodyError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(err("(body)", "a JSON object is required, but the body is empty"));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| err("(body)", format!("invalid JSON: {e}")))?;
    if !v.is_object() {
        return Err(err("(body)", format!("expected a JSON object, found {}", kind(&v))));
    }
    Ok(v)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An integer, also when written as a whole-number float (`200.0`): JSON Schema counts it as one,
/// and so do Graph's own services. Floats beyond the range of `i64` saturate, so range checks refuse them.
pub fn integer(v: &Value) -> Option<i64> {
    let whole = |f: f64| f.is_finite() && f.fract() == 0.0;
    v.as_i64().or_else(|| v.as_f64().filter(|f| whole(*f)).map(|f| f as i64))
}

/// A JSON object being read, with its path for error messages.
#[derive(Clone, Copy)]
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

/// A value found under an owned path.
pub struct Field<'a> {
    pub value: &'a Value,
    pub path: String,
}

impl<'a> Obj<'a> {
    pub fn root(v: &'a Value) -> Option<Obj<'a>> {
        v.as_object().map(|map| Obj { map, path: "" })
    }

    pub fn path_of(&self, name: &str) -> String {
        if self.path.is_empty() { name.to_owned() } else { format!("{}.{name}", self.path) }
    }

    /// The property `name`, matched case-insensitively; JSON `null` counts as absent.
    /// The members, in name order (a `serde_json` map).
    pub fn entries(&self) -> impl Iterator<Item = (&'a str, &'a Value)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, name: &str) -> Option<Field<'a>> {
        let value = self.map.get(name).or_else(|| self.map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))?;
        (!value.is_null()).then(|| Field { value, path: self.path_of(name) })
    }

    pub fn str_opt(&self, name: &str) -> Result<Option<&'a str>, BodyError> {
        match self.get(name) {
            None => Ok(None),
            Some(f) => f.value.as_str().map(Some).ok_or_else(|| err(&f.path, format!("expected a string, found {}", kind(f.value)))),
        }
    }

    pub fn str_req(&self, name: &str) -> Result<&'a str, BodyError> {
        self.str_opt(name)?.ok_or_else(|| err(self.path_of(name), "is required"))
    }

    pub fn bool_opt(&self, name: &str) -> Result<Option<bool>, BodyError> {
        match self.get(name) {
            None => Ok(None),
            Some(f) => f.value.as_bool().map(Some).ok_or_else(|| err(&f.path, format!("expected a boolean, found {}", kind(f.value)))),
        }
    }

    pub fn int_opt(&self, name: &str) -> Result<Option<i64>, BodyError> {
        match self.get(name) {
            None => Ok(None),
            Some(f) => integer(f.value).map(Some).ok_or_else(|| err(&f.path, format!("expected an integer, found {}", kind(f.value)))),
        }
    }

    /// A nested object; the returned path is owned by `holder`.
    pub fn obj_opt(&self, name: &str, holder: &'a mut String) -> Result<Option<Obj<'a>>, BodyError> {
        match self.get(name) {
            None => Ok(None),
            Some(f) => {
                let map = f.value.as_object().ok_or_else(|| err(&f.path, format!("expected an object, found {}", kind(f.value))))?;
                *holder = f.path;
                Ok(Some(Obj { map, path: holder.as_str() }))
            }
        }
    }

    pub fn array_opt(&self, name: &str) -> Result<Option<(&'a Vec<Value>, String)>, BodyError> {
        match self.get(name) {
            None => Ok(None),
            Some(f) => {
                let arr = f.value.as_array().ok_or_else(|| err(&f.path, format!("expected an array, found {}", kind(f.value))))?;
                Ok(Some((arr, f.path)))
            }
        }
    }

    /// An array of strings.
    pub fn strings_opt(&self, name: &str) -> Result<Option<Vec<String>>, BodyError> {
        let Some((arr, path)) = self.array_opt(name)? else {
            return Ok(None);
        };
        arr.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_owned).ok_or_else(|| err(format!("{path}[{i}]"), format!("expected a string, found {}", kind(v))))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The `@odata.type` annotation without its `#` and `microsoft.graph.` prefix, lower-cased.
    pub fn odata_type(&self) -> Result<Option<String>, BodyError> {
        Ok(self.str_opt("@odata.type")?.map(|t| {
            let t = t.trim_start_matches('#');
            // `get`, not a slice: the 16th byte may fall inside a character.
            let t = match t.get(..16) {
                Some(prefix) if t.len() > 16 && prefix.eq_ignore_ascii_case("microsoft.graph.") => &t[16..],
                _ => t,
            };
            t.to_ascii_lowercase()
        }))
    }
}

/// An element of an array, as an object.
pub fn element<'a>(v: &'a Value, path: &'a str) -> Result<Obj<'a>, BodyError> {
    v.as_object().map(|map| Obj { map, path }).ok_or_else(|| err(path, format!("expected an object, found {}", kind(v))))
}

/// Who an `identitySet` names, before the directory is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityRef {
    User { id: String, tenant_id: Option<String> },
    Phone { number: String },
    Application { id: String },
    ApplicationInstance { id: String, tenant_id: Option<String> },
}

const IDENTITY_KINDS: [&str; 12] = [
    "user",
    "phone",
    "application",
    "applicationInstance",
    "guest",
    "device",
    "encrypted",
    "onPremises",
    "acsUser",
    "spoolUser",
    "azureCommunicationServicesUser",
    "assertedIdentity",
];

/// Reads an `identitySet` (or `communicationsIdentitySet`): exactly one identity, with an `id`.
pub fn identity_set(set: Obj<'_>) -> Result<IdentityRef, BodyError> {
    let present: Vec<&str> = IDENTITY_KINDS.iter().copied().filter(|k| *k != "assertedIdentity" && set.get(k).is_some()).collect();
    let which = match present.as_slice() {
        [one] => *one,
        [] => {
            return Err(err(set.path, "must name a user, phone, application or applicationInstance identity"));
        }
        many => {
            return Err(err(set.path, format!("names several identities ({}); exactly one is allowed", many.join(", "))));
        }
    };
    let mut holder = String::new();
    let Some(identity) = set.obj_opt(which, &mut holder)? else {
        return Err(err(set.path_of(which), "is required"));
    };
    let id = identity.str_req("id")?;
    if id.trim().is_empty() {
        return Err(err(identity.path_of("id"), "must not be empty"));
    }
    let tenant_id = identity.str_opt("tenantId")?.map(str::to_owned);
    let id = id.to_owned();
    match which {
        "user" => Ok(IdentityRef::User { id, tenant_id }),
        "phone" => Ok(IdentityRef::Phone { number: id }),
        "application" => Ok(IdentityRef::Application { id }),
        "applicationInstance" => Ok(IdentityRef::ApplicationInstance { id, tenant_id }),
        other => Err(err(
            set.path_of(other),
            format!("{other} identities are not supported by Switchboard; use user, phone, application or applicationInstance"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity(v: Value) -> Result<IdentityRef, BodyError> {
        let root = json!({ "identity": v });
        let obj = Obj::root(&root).ok_or_else(|| err("", "not an object"))?;
        let mut h = String::new();
        let set = obj.obj_opt("identity", &mut h)?.ok_or_else(|| err("identity", "missing"))?;
        identity_set(set)
    }

    #[test]
    fn identity_sets_are_read_leniently_and_refused_precisely() {
        let cases: Vec<(Value, Result<IdentityRef, BodyError>)> = vec![
            (json!({"user": {"id": "u1", "displayName": "x"}}), Ok(IdentityRef::User { id: "u1".into(), tenant_id: None })),
            (
                json!({"@odata.type": "#microsoft.graph.identitySet", "User": {"@odata.type": "#microsoft.graph.identity", "id": "u1", "tenantId": "t"}}),
                Ok(IdentityRef::User { id: "u1".into(), tenant_id: Some("t".into()) }),
            ),
            (json!({"phone": {"id": "+12345678901"}, "extra": 1}), Ok(IdentityRef::Phone { number: "+12345678901".into() })),
            (json!({}), Err(err("identity", "must name a user, phone, application or applicationInstance identity"))),
            (
                json!({"user": {"id": "a"}, "phone": {"id": "+1"}}),
                Err(err("identity", "names several identities (user, phone); exactly one is allowed")),
            ),
            (json!({"user": {"displayName": "x"}}), Err(err("identity.user.id", "is required"))),
            (json!({"user": "u1"}), Err(err("identity.user", "expected an object, found a string"))),
            (json!({"user": {"id": 5}}), Err(err("identity.user.id", "expected a string, found a number"))),
        ];
        for (input, expected) in cases {
            assert_eq!(identity(input.clone()), expected, "{input}");
        }
    }

    #[test]
    fn whole_floats_are_integers() {
        let cases = [(json!(200), Some(200)), (json!(200.0), Some(200)), (json!(-3.0), Some(-3)), (json!(1.5), None), (json!("7"), None)];
        for (v, want) in cases {
            assert_eq!(integer(&v), want, "{v}");
        }
        assert_eq!(integer(&json!(1e300)), Some(i64::MAX));
        assert_eq!(integer(&json!(u64::MAX)), Some(i64::MAX));
    }
}
