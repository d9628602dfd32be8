//! An HTTPRoute rule's `CORS` filter (the spec's `HTTPCORSFilter`), with
//! the CRD's rules, as Istio's controller writes it into the
//! VirtualService rule's `corsPolicy` (`createCorsFilter` in its
//! `conversion.go`): an origin without `*` matched exactly, one ending in
//! its only `*` by prefix, `*` alone by a regex of any
//! `scheme://host(:port)`, any other `*` as `.*` of a regex (greedy to the
//! left, so `https://*.bar.com` takes `https://a.b.bar.com`);
//! `allowCredentials: true` only; `maxAge` in seconds (the CRD's default,
//! 5, when absent); and preflights of origins not allowed answered by the
//! proxy without CORS headers (`unmatchedPreflights: IGNORE`).

use std::time::Duration;

use super::dto;
use crate::{
    check::Check,
    error::FieldPath,
    http::{CorsPolicy, StringMatch, UnmatchedPreflights},
};

/// The CRD's `MaxItems` of `allowOrigins`, `allowHeaders` and
/// `exposeHeaders`.
const MAX_ITEMS: usize = 64;
/// The CRD's `MaxItems` of `allowMethods`.
const MAX_METHODS: usize = 9;
/// The CRD's default `maxAge`, which the API server writes when it is
/// absent.
const DEFAULT_MAX_AGE: u64 = 5;
/// What `*` alone in `allowOrigins` becomes: any origin, as RFC 6454 writes
/// one (`scheme://host(:port)`), Istio's regex.
pub(super) const ANY_ORIGIN: &str = "^[a-zA-Z][a-zA-Z0-9+.-]*://[^/\\s?#]+$";

/// A `CORS` filter written at `path` (`filters[i]`): its `corsPolicy`, or
/// `None` after errors.
pub(super) fn filter(
    cx: &mut Check,
    path: &FieldPath,
    written: Option<dto::CorsFilter>,
) -> Option<CorsPolicy> {
    let Some(written) = written else {
        cx.error(path.key("cors"), "cors is required with type CORS");
        return None;
    };
    let base = path.key("cors");
    let errors = cx.errors.len();
    let origins = written.allow_origins.unwrap_or_default();
    list(cx, &base, "allowOrigins", &origins, MAX_ITEMS, "origins");
    for (k, origin) in origins.iter().enumerate() {
        if let Err(why) = origin_pattern(origin) {
            cx.error(
                base.key("allowOrigins").index(k),
                format!(
                    "{origin:?} is not a CORS origin: {why}; write <scheme>://<host>(:<port>) \
                     with scheme http or https (https://www.example.com, \
                     https://*.example.com:8443), or * alone for any origin"
                ),
            );
        }
    }
    let methods = written.allow_methods.unwrap_or_default();
    list(cx, &base, "allowMethods", &methods, MAX_METHODS, "methods");
    for (k, method) in methods.iter().enumerate() {
        if !crate::values::cors_method(method) {
            cx.error(
                base.key("allowMethods").index(k),
                format!(
                    "method {method:?} is not allowed: use GET, HEAD, POST, PUT, DELETE, \
                     CONNECT, OPTIONS, TRACE, PATCH (upper case), or * alone for any method"
                ),
            );
        }
    }
    let headers = written.allow_headers.unwrap_or_default();
    list(cx, &base, "allowHeaders", &headers, MAX_ITEMS, "headers");
    let expose = written.expose_headers.unwrap_or_default();
    list(cx, &base, "exposeHeaders", &expose, MAX_ITEMS, "");
    for (field, names) in [("allowHeaders", &headers), ("exposeHeaders", &expose)] {
        for (k, name) in names.iter().enumerate() {
            if name.is_empty() || name.len() > 256 || !name.bytes().all(is_tchar) {
                cx.error(
                    base.key(field).index(k),
                    format!(
                        "{name:?} is not a header name: 1 to 256 letters, digits and \
                         !#$%&'*+-.^_`|~ (no spaces, no colon)"
                    ),
                );
            }
        }
    }
    let max_age = match written.max_age {
        None => Some(DEFAULT_MAX_AGE),
        Some(seconds) if (1..=i64::from(i32::MAX)).contains(&seconds) => {
            u64::try_from(seconds).ok()
        }
        Some(seconds) => {
            cx.error(
                base.key("maxAge"),
                format!(
                    "maxAge {seconds} is out of range: it is in seconds, at least 1 (absent: 5)"
                ),
            );
            None
        }
    };
    if cx.errors.len() > errors {
        return None;
    }
    Some(CorsPolicy {
        allow_origins: origins.iter().map(|origin| origin_match(origin)).collect(),
        allow_methods: methods,
        allow_headers: headers,
        expose_headers: expose,
        max_age: max_age.map(Duration::from_secs),
        allow_credentials: written.allow_credentials.filter(|allow| *allow),
        unmatched_preflights: UnmatchedPreflights::Ignore,
    })
}

/// A list's CRD rules: at most `max` items, each once (`listType=set`),
/// and `*` alone (`wildcard` names the items in the message; empty: `*` is
/// an item as any other, as in `exposeHeaders`).
fn list(
    cx: &mut Check,
    base: &FieldPath,
    field: &str,
    items: &[String],
    max: usize,
    wildcard: &str,
) {
    if items.len() > max {
        cx.error(
            base.key(field),
            format!("{field} has {} items: at most {max}", items.len()),
        );
    }
    for (k, item) in items.iter().enumerate() {
        if let Some(first) = items[..k].iter().position(|other| other == item) {
            cx.error(
                base.key(field).index(k),
                format!(
                    "{item:?} is also {}: {field} is a set; remove one",
                    base.key(field).index(first)
                ),
            );
        }
    }
    if !wildcard.is_empty() && items.len() > 1 && items.iter().any(|item| item == "*") {
        cx.error(
            base.key(field),
            format!(
                "{field} cannot contain '*' alongside other {wildcard}: '*' alone allows \
                 every one; remove '*' or the others"
            ),
        );
    }
}

/// The CRD's pattern of an origin: `*`, or `http(s)://` then a host (`*`,
/// or DNS labels of letters, digits and `-`, the first maybe `*`) and an
/// optional port of 1 to 5 digits; at most 253 characters.
fn origin_pattern(origin: &str) -> Result<(), &'static str> {
    if origin == "*" {
        return Ok(());
    }
    if origin.len() > 253 {
        return Err("longer than 253 characters");
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("the scheme must be http:// or https://")?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("the port must be 1 to 5 digits");
    }
    if host == "*" {
        return Ok(());
    }
    let labels = host.strip_prefix("*.").unwrap_or(host);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if labels.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(
            "the host must be DNS labels (letters, digits, -), the first of them maybe *, or * alone",
        )
    }
}

/// How an allowed origin is matched, as Istio writes it.
pub(super) fn origin_match(origin: &str) -> StringMatch {
    if origin == "*" {
        return StringMatch::Regex(ANY_ORIGIN.to_owned());
    }
    if !origin.contains('*') {
        return StringMatch::Exact(origin.to_owned());
    }
    if let Some(prefix) = origin.strip_suffix('*')
        && !prefix.contains('*')
    {
        return StringMatch::Prefix(prefix.to_owned());
    }
    let pattern = regex::escape(origin).replace("\\*", ".*");
    StringMatch::Regex(format!("^{pattern}$"))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A backendRef's `filters` may not have `CORS` (Istio refuses it there,
/// `InvalidFilter`): the proxy answers CORS for a whole rule. `base`: the
/// backendRef.
pub(super) fn refused_in_backend_ref(
    cx: &mut Check,
    base: &FieldPath,
    written: &[dto::HttpFilter],
) {
    for (f, filter) in written.iter().enumerate() {
        if filter.type_.as_deref() == Some("CORS") {
            cx.error(
                base.key("filters").index(f).key("type"),
                "filter CORS in a backendRef is not supported: the proxy answers CORS for a \
                 whole rule; move it to the rule's filters",
            );
        }
    }
}
