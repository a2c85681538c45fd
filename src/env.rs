//! The one error of start-up configuration, shared by every module that reads variables (`config`,
//! `traces`), and the number reader they share, so none of them has to import another.

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

/// The whole number in `var`, `default` when unset, refused outside `min..=max`.
pub(crate) fn parse_num(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(raw) = get(var) else { return Ok(default) };
    let n: u64 = raw.parse().map_err(|_| bad(var, format!("`{raw}` is not a whole number")))?;
    if !(min..=max).contains(&n) {
        return Err(bad(var, format!("{n} is outside {min}..={max}")));
    }
    Ok(n)
}
