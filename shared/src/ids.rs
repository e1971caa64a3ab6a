//! Analysis ids, event ids, pool names and node ids.
//!
//! All use the same rule: 1 to [`MAX_ID_LEN`] characters of `[A-Za-z0-9_-]`. Analysis
//! ids and pool names appear in URLs and Durable Object names, event ids and node ids
//! are chosen by nodes; one charset keeps them safe to log, to put in a URL and to use
//! as a SQLite key.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::limits::MAX_ID_LEN;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters, got {len}", max = MAX_ID_LEN)]
    TooLong { len: usize },
    #[error("may only hold A-Z, a-z, 0-9, '_' and '-', found {found:?}")]
    BadChar { found: char },
}

/// Checks an id (analysis or event) against the shared rule.
pub fn check_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if let Some(found) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(IdError::BadChar { found });
    }
    // Only ASCII is left, so bytes are characters.
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { len: id.len() });
    }
    Ok(())
}

/// A newtype over a string checked with [`check_id`] (on parse and on deserialize).
macro_rules! checked_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        #[cfg_attr(test, derive(ts_rs::TS), ts(type = "string"))]
        // 64 is MAX_ID_LEN (the attribute takes a literal only)
        #[cfg_attr(
            feature = "openapi",
            derive(utoipa::ToSchema),
            schema(pattern = "^[A-Za-z0-9_-]+$", min_length = 1, max_length = 64)
        )]
        pub struct $name(String);

        impl $name {
            /// Checks `id` (e.g. a segment of a URL). A failure is a 400 / close 4400.
            pub fn parse(id: &str) -> Result<Self, IdError> {
                check_id(id)?;
                Ok(Self(id.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(id: String) -> Result<Self, IdError> {
                check_id(&id)?;
                Ok(Self(id))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

checked_id!(
    /// A checked analysis id: it names the analysis' Durable Object.
    AnalysisId
);
checked_id!(
    /// A checked pool name (`default` unless a submission names another): with the
    /// verified tenant it names the pool's Durable Object.
    PoolName
);
checked_id!(
    /// A checked node id: the `sub` of a node's token.
    NodeId
);

impl PoolName {
    /// The pool of a submission that names none.
    pub fn default_pool() -> Self {
        Self("default".to_owned())
    }
}
