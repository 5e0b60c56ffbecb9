//! Names of owners, projects and datasets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, invalid};

/// A validated name: 1–64 characters of `a-z`, `0-9`, `-`, `_`, `.`,
/// starting with a letter or digit. Used for owners, projects and datasets.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.is_empty() {
            return Err(invalid("a name cannot be empty: use letters, digits, '-', '_' or '.'"));
        }
        if s.len() > 64 {
            return Err(invalid(format!("the name '{s}' is longer than 64 characters")));
        }
        let first = s.as_bytes()[0];
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(invalid(format!("the name '{s}' must start with a lowercase letter or a digit")));
        }
        if let Some(bad) =
            s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
        {
            return Err(invalid(format!(
                "the name '{s}' contains '{bad}': use lowercase letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(Name(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["mnist", "a", "vision-team", "x_1.2", "9lives"] {
            assert!(ok.parse::<Name>().is_ok(), "{ok}");
        }
        for bad in ["", "../x", "-x", ".x", "Mnist", "a/b", "a#b", "a b", &"x".repeat(65)] {
            assert!(bad.parse::<Name>().is_err(), "{bad}");
        }
    }
}
