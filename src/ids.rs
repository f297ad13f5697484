//! Identifiers parsed once, at the edge. Invariant: a [`ResourceId`], [`AccountId`] or
//! [`OrgId`] has passed [`check_id`] (not empty, at most 512 bytes, no control character) and a
//! [`CaseRef`] is not blank, so nothing behind the edge (event parsing, HTTP bodies and paths,
//! CLI arguments) checks them again.
//!
//! Mechanism: the only constructors run the check; serde (`try_from = "String"`) and clap
//! (`FromStr`) go through them, so a bad JSON field or argument is refused with the same
//! sentence. Each type's error names the event field it arrives in (`` `id` ``, `` `account` ``,
//! `` `org` ``, `` `case` ``); [`ResourceId::parse_as`] and the others name it otherwise.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

use crate::model::check_id;

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses `s`; the error calls it `what` (e.g. `--user`).
            pub fn parse_as(what: &str, s: impl Into<String>) -> Result<Self, String> {
                let s = s.into();
                $check(what, &s)?;
                Ok($name(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $name::parse_as($what, s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $name::parse_as($what, s)
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// A resource's id (the application's, unique).
    ResourceId,
    "`id`",
    check_id
);
string_newtype!(
    /// An account's id.
    AccountId,
    "`account`",
    check_id
);
string_newtype!(
    /// An organisation's id.
    OrgId,
    "`org`",
    check_id
);
string_newtype!(
    /// A legal hold's case reference: required, so not blank.
    CaseRef,
    "`case`",
    check_case
);

fn check_case(what: &str, case: &str) -> Result<(), String> {
    if case.trim().is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constructor_is_the_check_and_serde_goes_through_it() {
        assert_eq!(
            ResourceId::try_from("c1".to_string()).unwrap().as_str(),
            "c1"
        );
        assert_eq!(
            serde_json::from_str::<AccountId>("\"\"")
                .unwrap_err()
                .to_string(),
            "`account` must not be empty"
        );
        assert_eq!(
            OrgId::parse_as("the org id", "o\u{1}").unwrap_err(),
            "the org id contains a control character"
        );
        assert_eq!(
            "x".repeat(513).parse::<ResourceId>().unwrap_err(),
            "`id` is longer than 512 bytes"
        );
        assert_eq!(
            " ".parse::<CaseRef>().unwrap_err(),
            "`case` must not be empty"
        );
        let o: OrgId = serde_json::from_str("\"o1\"").unwrap();
        assert_eq!(serde_json::to_string(&o).unwrap(), "\"o1\"");
        assert_eq!(&*o, "o1");
    }
}
