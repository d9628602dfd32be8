//! Checks of single values, as Istio's validation makes them
//! (`istio/istio` `pkg/config/validation/validation.go` and
//! `validation/agent/validation.go`): durations, percentages, regexes,
//! labels, header names and values, `exportTo`. Each returns Istio's
//! message, with a hint of what to write where Istio gives none.

use std::time::Duration;

use crate::names::{is_dns1123_label, is_dns1123_label_any_case};

/// A duration Istio refuses (`duration`, `duration_or_zero`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "invalid duration {text:?}: write a number and a unit, as 10s, 1.5s, 250ms or 1m30s \
         (units ns, us, ms, s, m, h)"
    )]
    Syntax { text: String },
    #[error("duration must be greater than 1ms (it is {text}, negative)")]
    Negative { text: String },
    #[error("duration must be greater than 1ms (it is {text})")]
    BelowMillisecond { text: String },
    #[error("only durations to ms precision are supported ({text})")]
    SubMillisecond { text: String },
}

/// An integer percentage over 100 or negative (`percent`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("percentage {value} is not in range 0..100")]
pub struct PercentError {
    pub value: i64,
}

/// A `Percent` value out of range (`percentage`).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("percentage {value} is neither 0.0, nor in range [0.0001, 100.0]")]
pub struct PercentageError {
    pub value: f64,
}

/// A regex Istio refuses (`regex`); `where_` is Istio's name of the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegexError {
    #[error("{where_:?}: regex is too large, max length allowed is {MAX_REGEX_LEN}")]
    TooLong { where_: String },
    #[error(
        "{where_:?}: {reason}; Istio uses RE2 style regex-based match \
         (https://github.com/google/re2/wiki/Syntax)"
    )]
    Invalid { where_: String, reason: String },
}

/// What is wrong with a label key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelKeyProblem {
    Invalid,
    PrefixTooLong,
    NameTooLong,
}

impl LabelKeyProblem {
    fn hint(self) -> &'static str {
        match self {
            Self::Invalid => "",
            Self::PrefixTooLong => " (DNS prefix is too long)",
            Self::NameTooLong => " (name is too long)",
        }
    }
}

/// A label Kubernetes refuses (`label`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("invalid tag key: {key:?}{}", kind.hint())]
    Key { key: String, kind: LabelKeyProblem },
    #[error("invalid tag value: {value:?}")]
    Value { value: String },
}

/// A header name a match or a header operation may not use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderNameError {
    #[error("header name cannot be empty")]
    Empty,
    #[error("header name {name} is not a valid header name")]
    Invalid { name: String },
    #[error("invalid header {name:?}: header cannot have \":\" prefix")]
    Pseudo { name: String },
    #[error("invalid header {name:?}: cannot set Host header")]
    Host { name: String },
}

/// A header value Istio refuses (`header_value`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderValueError {
    #[error("header value configuration {value} is invalid")]
    Control { value: String },
    #[error("header value configuration: invalid header configuration. {0}")]
    Format(HeaderFormatError),
}

/// Where Envoy's substitution format parser stops (`header_value`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderFormatError {
    #[error("Un-escaped %")]
    UnescapedPercent,
    #[error("Expecting ',', ']', or whitespace")]
    ExpectDelimiterOrEnd,
    #[error("Expecting '\"'")]
    ExpectString,
    #[error("Un-terminated backslash in JSON string")]
    UnterminatedBackslash,
    #[error("Expecting ')' or whitespace")]
    ExpectArgsEnd,
    #[error("Expecting '%' or whitespace after")]
    ExpectVariableEnd,
    #[error("Un-terminated variable expression '{value}'")]
    UnterminatedVariable { value: String },
}

/// A `retryOn` entry Envoy does not know (`retry_on`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{policy:?} is not a valid retryOn policy: use {} or an HTTP status code",
    RETRY_ON.join(", ")
)]
pub struct RetryOnError {
    pub policy: String,
}

/// Parses a duration as Istio reads it from YAML: Go's `time.ParseDuration`
/// syntax (`10s`, `1.5s`, `250ms`, `1m30s`, `2h`; units `ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h`), which the CRDs check with CEL's `duration()`.
/// `(negative, magnitude)`; `None` for text that is no duration.
fn parse_go_duration(text: &str) -> Option<(bool, Duration)> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some((false, Duration::ZERO));
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let units = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(units);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut value = whole.checked_mul(nanos_per_unit)?;
        // The fraction, to the nanosecond (Go rounds down too).
        let mut scale = nanos_per_unit;
        for digit in fraction.bytes().take(30) {
            scale /= 10;
            value += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(value)?;
        rest = next;
    }
    // Go's limit: about 290 years.
    let nanos = u64::try_from(total)
        .ok()
        .filter(|n| i64::try_from(*n).is_ok())?;
    Some((negative && nanos != 0, Duration::from_nanos(nanos)))
}

/// A duration field (`timeout`, `interval`, ...): Go syntax, at least 1ms,
/// whole milliseconds (Istio's `ValidateDuration`; the CRDs say "must be a
/// valid duration greater than 1ms").
pub fn duration(text: &str) -> Result<Duration, DurationError> {
    let owned = || text.to_owned();
    match parse_go_duration(text) {
        None => Err(DurationError::Syntax { text: owned() }),
        Some((true, _)) => Err(DurationError::Negative { text: owned() }),
        Some((false, duration)) if duration < Duration::from_millis(1) => {
            Err(DurationError::BelowMillisecond { text: owned() })
        }
        Some((false, duration)) if duration.subsec_nanos() % 1_000_000 != 0 => {
            Err(DurationError::SubMillisecond { text: owned() })
        }
        Some((false, duration)) => Ok(duration),
    }
}

/// A duration where `0s` turns the feature off (TCP `idleTimeout`).
pub fn duration_or_zero(text: &str) -> Result<Duration, DurationError> {
    match parse_go_duration(text) {
        Some((_, Duration::ZERO)) => Ok(Duration::ZERO),
        _ => duration(text),
    }
}

/// Istio's `ValidatePercent`: an integer percentage.
pub fn percent(value: i64) -> Result<u32, PercentError> {
    u32::try_from(value)
        .ok()
        .filter(|value| *value <= 100)
        .ok_or(PercentError { value })
}

/// Istio's `validatePercentage` for a `Percent` (`{value: 0.5}`).
pub fn percentage(value: f64) -> Result<f64, PercentageError> {
    if !(0.0..=100.0).contains(&value) || (value > 0.0 && value < 0.0001) {
        Err(PercentageError { value })
    } else {
        Ok(value)
    }
}

/// The longest regex Istio accepts (Envoy's RE2 program size limit,
/// approximated by length).
pub const MAX_REGEX_LEN: usize = 1024;
/// Bound on the compiled size of a regex, so a short pattern that expands
/// (`(a{100}){100}`) costs no more than this to check, nor to use later.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Istio's `validateStringRegexp`: at most 1024 characters, and valid RE2
/// syntax (checked with the `regex` crate, whose syntax is RE2's: no
/// look-around, no back-references), compiled within [`REGEX_SIZE_LIMIT`].
/// `where_` names the field in the message, as Istio does.
pub fn regex(pattern: &str, where_: &str) -> Result<(), RegexError> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(RegexError::TooLong {
            where_: where_.to_owned(),
        });
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(64)
        .build()
        .map(|_| ())
        .map_err(|error| {
            let error = match error {
                regex::Error::CompiledTooBig(limit) => {
                    format!("the compiled regex is larger than {limit} bytes")
                }
                error => error.to_string(),
            };
            RegexError::Invalid {
                where_: where_.to_owned(),
                reason: crate::error::one_line(error),
            }
        })
}

/// Kubernetes label rules, as Istio's `labels.Instance.Validate` applies
/// them to `labels`, `sourceLabels` and selectors: the key, then the value.
pub fn label(key: &str, value: &str) -> Result<(), LabelError> {
    label_key(key)?;
    if !value.is_empty() && !is_qualified_name(value) {
        return Err(LabelError::Value {
            value: value.to_owned(),
        });
    }
    Ok(())
}

fn label_key(key: &str) -> Result<(), LabelError> {
    let error = |kind| LabelError::Key {
        key: key.to_owned(),
        kind,
    };
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() || !prefix.split('.').all(is_dns1123_label_any_case) {
            return Err(error(LabelKeyProblem::Invalid));
        }
        if prefix.len() > 253 {
            return Err(error(LabelKeyProblem::PrefixTooLong));
        }
    }
    if !is_qualified_name(name) {
        return Err(error(LabelKeyProblem::Invalid));
    }
    if name.len() > 63 {
        return Err(error(LabelKeyProblem::NameTooLong));
    }
    Ok(())
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The request header names a match may test (Istio's
/// `ValidateHTTPHeaderNameOrJwtClaimRoute`): an RFC 7230 token, a
/// pseudo-header, or a JWT claim (`@request.auth.claims.<name>`).
pub fn header_match_name(name: &str) -> Result<(), HeaderNameError> {
    if name.is_empty() {
        return Err(HeaderNameError::Empty);
    }
    if is_jwt_claim(name)
        || matches!(
            name,
            ":method" | ":scheme" | ":authority" | ":path" | ":status"
        )
    {
        return Ok(());
    }
    if !name.bytes().all(is_tchar) {
        return Err(HeaderNameError::Invalid {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Whether `method` may be listed in a CORS `allowMethods` (Istio's
/// `corsPolicy` and the Gateway API `CORS` filter take the same set): a
/// standard method in upper case, or `*`.
pub fn cors_method(method: &str) -> bool {
    matches!(
        method,
        "GET"
            | "HEAD"
            | "POST"
            | "PUT"
            | "PATCH"
            | "DELETE"
            | "CONNECT"
            | "OPTIONS"
            | "TRACE"
            | "*"
    )
}

/// A header name of `corsPolicy` `allowHeaders`/`exposeHeaders` (Istio's
/// `ValidateCORSHTTPHeaderName`): `*`, or an RFC 7230 token (so no
/// pseudo-header, no JWT claim).
pub fn cors_header_name(name: &str) -> Result<(), HeaderNameError> {
    if name.is_empty() {
        return Err(HeaderNameError::Empty);
    }
    if name == "*" || name.bytes().all(is_tchar) {
        Ok(())
    } else {
        Err(HeaderNameError::Invalid {
            name: name.to_owned(),
        })
    }
}

/// `@request.auth.claims.<name>` (or `@request.auth.claims[<name>]`): only
/// Istio gateways route on these.
pub fn is_jwt_claim(name: &str) -> bool {
    name.strip_prefix("@request.auth.claims")
        .is_some_and(|rest| rest.len() > 1 && (rest.starts_with('.') || rest.starts_with('[')))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header a request `set`/`add` may name (Istio's
/// `ValidateHTTPHeaderWithAuthorityOperationName`): not a pseudo-header nor
/// `host`, except the authority (`:authority`, `host`).
pub fn request_header_write(name: &str) -> Result<(), HeaderNameError> {
    if name.is_empty() {
        return Err(HeaderNameError::Empty);
    }
    let authority = name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host");
    if is_internal_header(name) && !authority {
        return Err(HeaderNameError::Pseudo {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// A header that `remove`, or a response `set`/`add`, may name (Istio's
/// `ValidateHTTPHeaderOperationName`).
pub fn header_operation(name: &str) -> Result<(), HeaderNameError> {
    if name.is_empty() {
        return Err(HeaderNameError::Empty);
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(HeaderNameError::Host {
            name: name.to_owned(),
        });
    }
    if is_internal_header(name) {
        return Err(HeaderNameError::Pseudo {
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

/// Istio's `ValidateHTTPHeaderValue`: no control characters but tab, and
/// Envoy's `%VARIABLE%` / `%VARIABLE(args)%` syntax, `%%` for a `%`.
pub fn header_value(value: &str) -> Result<(), HeaderValueError> {
    if value
        .chars()
        .any(|c| (c.is_ascii_control() && c != '\t') || c == '\u{7f}')
    {
        return Err(HeaderValueError::Control {
            value: value.to_owned(),
        });
    }
    header_value_format(value).map_err(HeaderValueError::Format)
}

/// The state machine of Istio's `validateHeaderValue` (Envoy's
/// substitution format parser).
fn header_value_format(value: &str) -> Result<(), HeaderFormatError> {
    #[derive(PartialEq)]
    enum State {
        Literal,
        VariableName,
        ExpectArray,
        ExpectString,
        String,
        ExpectDelimiterOrEnd,
        ExpectArgsEnd,
        ExpectVariableEnd,
    }
    let bytes = value.as_bytes();
    let mut state = State::Literal;
    let mut pos = 0;
    while pos < bytes.len() {
        let ch = bytes[pos];
        let has_next = pos + 1 < bytes.len();
        match state {
            State::Literal => {
                if ch == b'%' {
                    if !has_next {
                        return Err(HeaderFormatError::UnescapedPercent);
                    }
                    if bytes[pos + 1] == b'%' {
                        pos += 1;
                    } else {
                        state = State::VariableName;
                    }
                }
            }
            State::VariableName => {
                if ch == b'%' {
                    state = State::Literal;
                } else if ch == b'(' {
                    state = State::ExpectArray;
                }
            }
            State::ExpectArray => {
                if ch == b'[' {
                    state = State::ExpectString;
                } else if ch != b' ' {
                    state = State::String;
                }
            }
            State::ExpectDelimiterOrEnd => {
                if ch == b',' {
                    state = State::ExpectString;
                } else if ch == b']' {
                    state = State::ExpectArgsEnd;
                } else if ch != b' ' {
                    return Err(HeaderFormatError::ExpectDelimiterOrEnd);
                }
            }
            State::ExpectString => {
                if ch == b'"' {
                    state = State::String;
                } else if ch != b' ' {
                    return Err(HeaderFormatError::ExpectString);
                }
            }
            State::String => {
                if ch == b'\\' {
                    if !has_next {
                        return Err(HeaderFormatError::UnterminatedBackslash);
                    }
                    pos += 1;
                } else if ch == b')' {
                    state = State::ExpectVariableEnd;
                } else if ch == b'"' {
                    state = State::ExpectDelimiterOrEnd;
                }
            }
            State::ExpectArgsEnd => {
                if ch == b')' {
                    state = State::ExpectVariableEnd;
                } else if ch != b' ' {
                    return Err(HeaderFormatError::ExpectArgsEnd);
                }
            }
            State::ExpectVariableEnd => {
                if ch == b'%' {
                    state = State::Literal;
                } else if ch != b' ' {
                    return Err(HeaderFormatError::ExpectVariableEnd);
                }
            }
        }
        pos += 1;
    }
    if state == State::Literal {
        Ok(())
    } else {
        Err(HeaderFormatError::UnterminatedVariable {
            value: value.to_owned(),
        })
    }
}

/// Istio's `validateExportTo`: `.` (this namespace), `*` (all), `~` (none,
/// ServiceEntry only) or namespace names; no duplicates; `*` and `~` alone.
/// Returns every problem, each with the index it is about.
pub fn export_to(
    namespace: &str,
    export_to: &[String],
    is_service_entry: bool,
) -> Vec<(usize, String)> {
    let mut problems = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, entry) in export_to.iter().enumerate() {
        let key = if entry == "." {
            namespace
        } else {
            entry.as_str()
        };
        if seen.contains(&key) {
            problems.push((
                i,
                if key == entry {
                    format!("duplicate entries in exportTo for entry {entry}")
                } else {
                    format!("duplicate entries in exportTo: . and current namespace {namespace}")
                },
            ));
            continue;
        }
        let valid = key == "*" || (key == "~" && is_service_entry) || is_dns1123_label(key);
        if valid {
            seen.push(key);
        } else {
            problems.push((
                i,
                format!(
                    "only .,*, or a valid DNS 1123 label is allowed as exportTo entry (got {entry:?})"
                ),
            ));
        }
    }
    if seen.contains(&"*") && export_to.len() > 1 {
        problems.push((
            0,
            "cannot have both public (*) and non-public exportTo values for a resource".to_owned(),
        ));
    }
    if seen.contains(&"~") && export_to.len() > 1 {
        problems.push((
            0,
            "cannot export service entry to no one (~) and someone".to_owned(),
        ));
    }
    problems
}

/// The `retryOn` policies Envoy knows (Istio's `supportedRetryOnPolicies`);
/// an HTTP status code is accepted too.
const RETRY_ON: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// One `retryOn` entry.
pub fn retry_on(policy: &str) -> Result<(), RetryOnError> {
    let status = policy
        .parse::<u16>()
        .ok()
        .filter(|code| is_http_status(*code));
    if status.is_some() || RETRY_ON.contains(&policy) {
        Ok(())
    } else {
        Err(RetryOnError {
            policy: policy.to_owned(),
        })
    }
}

/// The codes Go's `http.StatusText` names.
fn is_http_status(code: u16) -> bool {
    matches!(
        code,
        100..=103
            | 200..=208
            | 226
            | 300..=305
            | 307
            | 308
            | 400..=418
            | 421..=426
            | 428
            | 429
            | 431
            | 451
            | 500..=508
            | 510
            | 511
    )
}

/// The gRPC status names Istio accepts for an abort fault.
pub const GRPC_STATUS: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

#[cfg(test)]
mod tests;
