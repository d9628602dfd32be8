//! Header changes of a rule or a destination (`headers.request` /
//! `headers.response`), the authority rewritten once, and `corsPolicy`.

use super::matches::string_match;
use super::types::{
    CorsPolicy, HeaderOperations, Headers, Rewrite, StringMatch, UnmatchedPreflights,
};
use crate::{check::Check, dto, error::FieldPath, values};

/// `headers` of a rule or of a route destination.
pub(super) fn header_changes(
    cx: &mut Check,
    base: &FieldPath,
    written: Option<dto::Headers>,
) -> Headers {
    let Some(written) = written else {
        return Headers::default();
    };
    Headers {
        request: header_operations(cx, &base.key("request"), written.request, true),
        response: header_operations(cx, &base.key("response"), written.response, false),
    }
}

fn header_operations(
    cx: &mut Check,
    base: &FieldPath,
    written: Option<dto::HeaderOperations>,
    request: bool,
) -> HeaderOperations {
    let Some(written) = written else {
        return HeaderOperations::default();
    };
    let set = written.set.unwrap_or_default();
    let add = written.add.unwrap_or_default();
    let remove = written.remove.unwrap_or_default();
    for (operation, map) in [("set", &set), ("add", &add)] {
        for (name, value) in map {
            let path = base.key(operation).key(name);
            let name_check = if request {
                values::request_header_write(name)
            } else {
                values::header_operation(name)
            };
            if let Err(message) = name_check {
                cx.error(path, message);
            } else if let Err(message) = values::header_value(value) {
                cx.error(path, message);
            }
        }
    }
    for (k, name) in remove.iter().enumerate() {
        if let Err(message) = values::header_operation(name) {
            cx.error(base.key("remove").index(k), message);
        }
    }
    HeaderOperations { set, add, remove }
}

/// Istio's `validateAuthorityRewrite`: the authority is rewritten in one
/// place only.
pub(super) fn authority_rewrite(
    cx: &mut Check,
    base: &FieldPath,
    rewrite: Option<&Rewrite>,
    headers: &Headers,
) {
    let mut current = rewrite.and_then(|rewrite| rewrite.authority.clone());
    for (operation, map) in [("set", &headers.request.set), ("add", &headers.request.add)] {
        for (name, value) in map {
            if !(name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")) {
                continue;
            }
            if let Some(have) = &current {
                cx.error(
                    base.key("headers").key("request").key(operation).key(name),
                    format!(
                        "authority header cannot be set multiple times: have {have:?}, \
                         attempting to set {value:?}"
                    ),
                );
                return;
            }
            current = Some(value.clone());
        }
    }
}

pub(super) fn cors_policy(cx: &mut Check, base: &FieldPath, cors: dto::CorsPolicy) -> CorsPolicy {
    let mut allow_origins = Vec::new();
    for (k, origin) in cors
        .allow_origins
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let path = base.key("allowOrigins").index(k);
        let empty = [&origin.exact, &origin.prefix, &origin.regex]
            .iter()
            .all(|value| value.as_deref().unwrap_or_default().is_empty());
        if empty {
            cx.error(
                path,
                "'' is not a valid match type for CORS allow origins: set exact, prefix or regex",
            );
            continue;
        }
        allow_origins.extend(string_match(cx, &path, origin, "corsPolicy.allowOrigins"));
    }
    for (k, origin) in cors
        .allow_origin
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        cx.warn(
            base.key("allowOrigin").index(k),
            "allowOrigin is deprecated: use allowOrigins: [{exact: ...}]",
        );
        allow_origins.push(StringMatch::Exact(origin));
    }
    let allow_methods = cors.allow_methods.unwrap_or_default();
    for (k, method) in allow_methods.iter().enumerate() {
        if !values::cors_method(method) {
            cx.error(
                base.key("allowMethods").index(k),
                format!("{method:?} is not a supported HTTP method"),
            );
        }
    }
    let allow_headers = cors.allow_headers.unwrap_or_default();
    let expose_headers = cors.expose_headers.unwrap_or_default();
    for (field, names) in [
        ("allowHeaders", &allow_headers),
        ("exposeHeaders", &expose_headers),
    ] {
        for (k, name) in names.iter().enumerate() {
            let path = base.key(field).index(k);
            if let Err(message) = values::cors_header_name(name) {
                cx.error(path, message);
            }
        }
    }
    let max_age = cors.max_age.and_then(|text| {
        let parsed = values::duration(&text);
        // Istio reports a fraction finer than a millisecond twice: as a
        // duration, and as a max age.
        let finer = matches!(parsed, Err(values::DurationError::SubMillisecond { .. }));
        let duration = cx.ok(base.key("maxAge"), parsed);
        if finer || duration.is_some_and(|duration| duration.subsec_nanos() != 0) {
            cx.error(
                base.key("maxAge"),
                "max_age duration is accurate only to seconds precision",
            );
        }
        duration
    });
    let unmatched_preflights = match cors.unmatched_preflights.as_deref() {
        None | Some("UNSPECIFIED" | "FORWARD") => UnmatchedPreflights::Forward,
        Some("IGNORE") => UnmatchedPreflights::Ignore,
        Some(other) => {
            cx.error(
                base.key("unmatchedPreflights"),
                format!("unmatchedPreflights {other:?} is not known: use FORWARD or IGNORE"),
            );
            UnmatchedPreflights::Forward
        }
    };
    CorsPolicy {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials: cors.allow_credentials,
        unmatched_preflights,
    }
}
