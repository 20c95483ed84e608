//! A string key that lives inline in hash-table entries when short.

use std::borrow::Borrow;
use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTF-8 string stored inline up to 24 bytes: as a combiner key it spares a pointer chase
/// (a cache miss) per lookup. It crosses the shuffle exactly as a `String` does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SmallString(CompactString);

impl SmallString {
    /// The text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Converts into a `String`.
    pub fn into_string(self) -> String {
        self.0.into_string()
    }
}

impl Borrow<str> for SmallString {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl From<&str> for SmallString {
    fn from(s: &str) -> Self {
        SmallString(CompactString::from(s))
    }
}

impl fmt::Display for SmallString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SmallString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SmallString {
    // Through an owned String: the shuffle decoder cannot lend borrowed strings.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| SmallString(CompactString::from(s)))
    }
}
