//! The one error of start-up configuration, shared by every module that reads variables (`config`,
//! `traces`), so none of them has to import another to say a value is bad.

/// A configuration error: names the variable and says what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

/// `var` has a value that cannot be used, for `reason`.
pub(crate) fn bad(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError { var, reason: reason.into() }
}
