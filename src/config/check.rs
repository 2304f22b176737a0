//! Range and consistency checks that serde cannot express, for every section's
//! `check`: all problems are collected, each naming its field and what was
//! expected.

use std::fmt;
use std::time::Duration;

/// One invalid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `mqtt.keepalive`.
    pub field: String,
    /// What was expected, and what was found.
    pub expected: String,
}

/// Every invalid value found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {}: {}", e.field, e.expected)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Collects the problems of one configuration, section by section.
#[derive(Debug, Default)]
pub struct Checker(Vec<FieldError>);

impl Checker {
    /// Records a problem with `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, expected: impl FnOnce() -> String) {
        if !ok {
            self.0.push(FieldError {
                field: field.to_owned(),
                expected: expected(),
            });
        }
    }

    /// Records a problem unless `min <= v <= max`.
    pub fn range<T: PartialOrd + fmt::Display>(&mut self, field: &str, v: T, min: T, max: T) {
        let ok = v >= min && v <= max;
        self.check(ok, field, || {
            format!("expected a value from {min} to {max}, found {v}")
        });
    }

    /// Records a problem unless the duration lies in `min..=max`.
    pub fn duration(&mut self, field: &str, v: Duration, min: Duration, max: Duration) {
        let ok = v >= min && v <= max;
        self.check(ok, field, || {
            format!(
                "expected a duration from {} to {}, found {}",
                humantime::format_duration(min),
                humantime::format_duration(max),
                humantime::format_duration(v)
            )
        });
    }

    /// Every problem found, or none.
    pub fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}
