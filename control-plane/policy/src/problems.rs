//! What is wrong with a tenant's authorization data, each with where it is
//! and what to do.

use std::fmt;

use serde::Serialize;

/// One thing wrong, at a path such as `roles[2].policies[0]`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found, in the order of the data.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Records when `items` holds more than `max`: only the first `max` are
    /// then read.
    pub fn at_most<'a, T>(
        &mut self,
        path: &str,
        items: &'a [T],
        max: usize,
        advice: &str,
    ) -> &'a [T] {
        if items.len() > max {
            self.push(
                path,
                format!(
                    "a tenant has at most {max} {path}, not {}; {advice}",
                    items.len()
                ),
            );
        }
        &items[..items.len().min(max)]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Data refused as a whole, with every problem found.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("the authorization data is invalid:\n{0}")]
pub struct Invalid(pub Problems);
