//! The robot server's wire format: the JSON bodies and the limits both
//! sides enforce, so the controller can refuse a robot the server would.

use serde::{Deserialize, Serialize};

/// Longest robot name, in bytes of UTF-8. Matches a Kubernetes object
/// name's limit, since external names default to `metadata.name`.
pub const MAX_NAME_BYTES: usize = 253;

/// Longest color, in bytes of UTF-8.
pub const MAX_COLOR_BYTES: usize = 1024;

/// Largest request body the server reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Largest page of `GET /v1/robots`, as JSON: the server stops adding
/// robots before a page would grow past it (and gives `next`), and the
/// client reads no larger answer.
pub const MAX_LIST_BYTES: usize = 1024 * 1024;

/// A robot as the reference server stores it: `{"name": "...", "color": "..."}`.
///
/// Read as Go's `encoding/json` reads it for the reference server: unknown
/// fields are ignored, missing ones are empty, and only a JSON object is a
/// robot (serde's derive would also take `["name", "color"]`). A field given
/// twice is refused: Go would keep the last, but an ambiguous robot is
/// better refused than guessed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Robot {
    pub name: String,
    pub color: String,
}

impl<'de> Deserialize<'de> for Robot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RobotObject;
        impl<'de> serde::de::Visitor<'de> for RobotObject {
            type Value = Robot;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object with name and color")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Robot, A::Error> {
                let (mut name, mut color) = (None::<String>, None::<String>);
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let slot = match key.as_ref() {
                        "name" => &mut name,
                        "color" => &mut color,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.is_some() {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate field `{key}`"
                        )));
                    }
                    *slot = Some(map.next_value()?);
                }
                Ok(Robot {
                    name: name.unwrap_or_default(),
                    color: color.unwrap_or_default(),
                })
            }
        }
        d.deserialize_map(RobotObject)
    }
}

impl Robot {
    pub fn new(name: impl Into<String>, color: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            color: color.into(),
        }
    }

    /// Checks the limits the server enforces.
    pub fn validate(&self) -> Result<(), InvalidRobot> {
        validate_name(&self.name)?;
        if self.color.len() > MAX_COLOR_BYTES {
            return Err(InvalidRobot::ColorTooLong {
                len: self.color.len(),
            });
        }
        Ok(())
    }
}

/// Checks a robot name against the server's limits.
pub fn validate_name(name: &str) -> Result<(), InvalidRobot> {
    if name.is_empty() {
        return Err(InvalidRobot::EmptyName);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(InvalidRobot::NameTooLong { len: name.len() });
    }
    Ok(())
}

/// Why a robot breaks the server's limits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRobot {
    #[error("robot name must not be empty")]
    EmptyName,
    #[error("robot name is {len} bytes, more than the limit of {MAX_NAME_BYTES}")]
    NameTooLong { len: usize },
    #[error("robot color is {len} bytes, more than the limit of {MAX_COLOR_BYTES}")]
    ColorTooLong { len: usize },
}

/// The JSON body of every error answer: `{"error": "Robot not found"}`.
///
/// For the reference server's cases the message is the reference's text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// One page of `GET /v1/robots`, ordered by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotList {
    pub items: Vec<Robot>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The messages the reference server answers with; clients match on them.
pub mod messages {
    pub const NOT_FOUND: &str = "Robot not found";
    pub const ALREADY_EXISTS: &str = "Robot already exists";
    pub const MISSING_NAME: &str = "Missing name parameter";
    pub const METHOD_NOT_ALLOWED: &str = "Method not allowed";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_unknown_fields_read_like_go() {
        let r: Robot = serde_json::from_str(r#"{"name":"a","extra":1}"#).unwrap();
        assert_eq!(r, Robot::new("a", ""));
    }

    #[test]
    fn only_objects_are_robots() {
        assert!(serde_json::from_str::<Robot>(r#"["a","b"]"#).is_err());
        assert!(serde_json::from_str::<Robot>(r#""a""#).is_err());
        assert!(serde_json::from_str::<Robot>(r#"{"name":1}"#).is_err());
        assert!(serde_json::from_str::<Robot>(r#"{"name":"a","name":"b"}"#).is_err());
        let r: Robot = serde_json::from_str(r#"{"color":"c","name":"n","name2":[1]}"#).unwrap();
        assert_eq!(r, Robot::new("n", "c"));
    }

    #[test]
    fn limits_are_bytes_not_chars() {
        let name = "ü".repeat(MAX_NAME_BYTES / 2); // 2 bytes each
        assert!(validate_name(&name).is_ok());
        let name = "ü".repeat(MAX_NAME_BYTES / 2 + 1);
        assert_eq!(
            validate_name(&name),
            Err(InvalidRobot::NameTooLong {
                len: MAX_NAME_BYTES + 1
            })
        );
        assert_eq!(validate_name(""), Err(InvalidRobot::EmptyName));
        let long = Robot::new("a", "x".repeat(MAX_COLOR_BYTES + 1));
        assert!(matches!(
            long.validate(),
            Err(InvalidRobot::ColorTooLong { .. })
        ));
    }
}
