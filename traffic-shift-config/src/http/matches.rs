//! `match` of an `http[]` rule: string matches (exact, prefix, RE2 regex),
//! headers, query parameters, and the rules no request reaches.

use std::collections::BTreeMap;

use super::types::{Context, HttpMatch, HttpRule, StringMatch};
use crate::{check::Check, dto, error::FieldPath, names::is_dns1123_label_any_case, values};

/// A `StringMatch`; `where_` is Istio's name for it in messages. `uri`
/// may be an empty prefix (Envoy allows it), other fields may not.
pub(super) fn string_match(
    cx: &mut Check,
    path: &FieldPath,
    written: dto::StringMatch,
    where_: &str,
) -> Option<StringMatch> {
    let set: Vec<&str> = [
        ("exact", written.exact.is_some()),
        ("prefix", written.prefix.is_some()),
        ("regex", written.regex.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if set.len() > 1 {
        cx.error(
            path.key(set[1]),
            format!(
                "{} and {} are both set: a string match is one of exact, prefix or regex",
                set[0], set[1]
            ),
        );
        return None;
    }
    if let Some(exact) = written.exact {
        return Some(StringMatch::Exact(exact));
    }
    if let Some(prefix) = written.prefix {
        if prefix.is_empty() && where_ != "uri" {
            cx.error(
                path.key("prefix"),
                format!("{where_:?}: prefix string match should not be empty"),
            );
            return None;
        }
        return Some(StringMatch::Prefix(prefix));
    }
    if let Some(regex) = written.regex {
        let path = path.key("regex");
        if regex.is_empty() {
            cx.error(
                path,
                format!("{where_:?}: regex string match should not be empty"),
            );
            return None;
        }
        return cx
            .ok(path, values::regex(&regex, where_))
            .map(|()| StringMatch::Regex(regex));
    }
    Some(StringMatch::Any)
}

/// `headers`, `queryParams` or `withoutHeaders` of a match.
fn string_matches(
    cx: &mut Check,
    path: &FieldPath,
    written: Option<BTreeMap<String, Option<dto::StringMatch>>>,
    where_: &str,
) -> BTreeMap<String, StringMatch> {
    let mut matches = BTreeMap::new();
    for (name, written) in written.unwrap_or_default() {
        let path = path.key(&name);
        if where_ != "queryParams"
            && let Err(message) = values::header_match_name(&name)
        {
            cx.error(path.clone(), message);
        }
        let Some(written) = written else {
            if where_ == "withoutHeaders" {
                matches.insert(name, StringMatch::Any);
            } else {
                cx.error(path, format!("header match {name} cannot be null"));
            }
            continue;
        };
        // withoutHeaders: `regex: "*"` is not a regex but "present".
        if where_ == "withoutHeaders" && written.regex.as_deref() == Some("*") {
            matches.insert(name, StringMatch::Any);
            continue;
        }
        if let Some(found) = string_match(cx, &path, written, where_) {
            matches.insert(name, found);
        }
    }
    matches
}

pub(super) fn http_match(
    cx: &mut Check,
    context: &Context,
    base: &FieldPath,
    m: dto::HttpMatchRequest,
) -> Option<HttpMatch> {
    let errors_before = cx.errors.len();
    let headers = string_matches(cx, &base.key("headers"), m.headers, "headers");
    let without_headers = string_matches(
        cx,
        &base.key("withoutHeaders"),
        m.without_headers,
        "withoutHeaders",
    );
    let query_params = string_matches(cx, &base.key("queryParams"), m.query_params, "queryParams");
    if !context.gateway_only {
        for name in headers.keys().chain(without_headers.keys()) {
            if values::is_jwt_claim(name) {
                cx.error(
                    base.key(if headers.contains_key(name) {
                        "headers"
                    } else {
                        "withoutHeaders"
                    })
                    .key(name),
                    format!(
                        "JWT claim based routing (key: {name}) is only supported for gateway, \
                         found no gateways: bind the VirtualService to a Gateway"
                    ),
                );
            }
        }
    }
    let single = |cx: &mut Check, field: &str, written: Option<dto::StringMatch>| {
        written.and_then(|written| string_match(cx, &base.key(field), written, field))
    };
    let uri = single(cx, "uri", m.uri);
    let scheme = single(cx, "scheme", m.scheme);
    let method = single(cx, "method", m.method);
    let authority = single(cx, "authority", m.authority);
    let port = m.port.and_then(|port| cx.port(base.key("port"), port));
    let source_labels = m.source_labels.unwrap_or_default();
    cx.labels(&base.key("sourceLabels"), &source_labels);
    let gateways = m.gateways.unwrap_or_default();
    cx.gateway_names(&base.key("gateways"), &gateways);
    let source_namespace = m.source_namespace.filter(|namespace| !namespace.is_empty());
    if let Some(namespace) = &source_namespace
        && !is_dns1123_label_any_case(namespace)
    {
        cx.error(
            base.key("sourceNamespace"),
            format!("sourceNamespace match {namespace} is invalid"),
        );
    }
    (cx.errors.len() == errors_before).then(|| HttpMatch {
        name: m.name,
        uri,
        scheme,
        method,
        authority,
        headers,
        query_params,
        without_headers,
        ignore_uri_case: m.ignore_uri_case.unwrap_or(false),
        port,
        source_labels,
        gateways,
        source_namespace,
        stat_prefix: m.stat_prefix,
    })
}

/// Istio's `analyzeUnreachableHTTPRules`, its warnings (IST0130, IST0131):
/// a rule after a rule without matches is never used, as is a match that an
/// earlier rule already has.
pub(crate) fn unreachable_http_rules(cx: &mut Check, rules: &[HttpRule]) {
    let mut empty_match_at: Option<usize> = None;
    let mut seen: Vec<(HttpMatch, usize)> = Vec::new();
    let mut prefixes: Vec<PrefixMatch> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let path = FieldPath::parse(&format!("spec.http[{i}]"));
        let name = rule
            .name
            .as_ref()
            .map_or_else(|| format!("#{i}"), |name| format!("{name:?}"));
        if rule.matches.is_empty() {
            if empty_match_at.is_some() {
                cx.warn(
                    path,
                    format!(
                        "virtualService rule {name} not used (only the last rule can have no \
                         matches)"
                    ),
                );
            }
            empty_match_at = Some(i);
            continue;
        }
        let mut duplicates = 0;
        for (k, m) in rule.matches.iter().enumerate() {
            if empty_match_at.is_some() {
                cx.warn(
                    path.clone(),
                    format!(
                        "virtualService rule {name} not used (route without matches defined before)"
                    ),
                );
                break;
            }
            let unnamed = HttpMatch {
                name: None,
                ..m.clone()
            };
            if let Some((_, earlier)) = seen.iter().find(|(seen, _)| *seen == unnamed) {
                let match_name = m
                    .name
                    .as_ref()
                    .map_or_else(|| format!("#{k}"), |name| format!("{name:?}"));
                let earlier_name = rules[*earlier]
                    .name
                    .as_ref()
                    .map_or_else(|| format!("#{earlier}"), |name| format!("{name:?}"));
                cx.warn(
                    path.key("match").index(k),
                    format!(
                        "virtualService rule {name} match {match_name} is not used \
                         (duplicate/overlapping match in rule {earlier_name})"
                    ),
                );
                duplicates += 1;
            } else {
                seen.push((unnamed, i));
                prefixes.extend(PrefixMatch::new(m, &name, i, k));
            }
        }
        if duplicates == rule.matches.len() {
            cx.warn(
                path,
                format!("virtualService rule {name} not used (all matches used by prior rules)"),
            );
        }
    }
    // A prefix match an earlier one covers (its prefix starts the later
    // one's, and its other fields are the same or wider).
    for (a, earlier) in prefixes.iter().enumerate() {
        for later in &prefixes[a + 1..] {
            if later.prefix != earlier.prefix && earlier.covers(later) {
                cx.warn(
                    FieldPath::parse(&format!("spec.http[{}].match[{}]", later.rule, later.index)),
                    format!(
                        "virtualService rule {} match {} of prefix {} is not used \
                         (duplicate/overlapping match in rule {} of prefix {} on {})",
                        later.rule_name,
                        later.match_name,
                        later.prefix,
                        earlier.match_name,
                        earlier.prefix,
                        earlier.rule_name
                    ),
                );
            }
        }
    }
}

/// A `uri: {prefix}` match, with what Istio compares of its other fields
/// (`exact:` or `prefix:` and the value; a regex is not compared).
struct PrefixMatch {
    rule: usize,
    index: usize,
    rule_name: String,
    match_name: String,
    prefix: String,
    port: Option<u16>,
    method: String,
    authority: String,
    headers: BTreeMap<String, String>,
    query_params: BTreeMap<String, String>,
    without_headers: BTreeMap<String, String>,
}

impl PrefixMatch {
    fn new(m: &HttpMatch, rule_name: &str, rule: usize, index: usize) -> Option<Self> {
        let Some(StringMatch::Prefix(prefix)) = &m.uri else {
            return None;
        };
        if prefix.is_empty() {
            return None;
        }
        let method = match exact_or_prefix(m.method.as_ref()) {
            method if method.is_empty() => "exact:GET".to_owned(),
            method => method,
        };
        let values = |map: &BTreeMap<String, StringMatch>| {
            map.iter()
                .map(|(key, value)| (key.clone(), exact_or_prefix(Some(value))))
                .collect()
        };
        Some(Self {
            rule,
            index,
            rule_name: rule_name.to_owned(),
            match_name: m
                .name
                .as_ref()
                .map_or_else(|| format!("#{index}"), |name| format!("{name:?}")),
            prefix: prefix.clone(),
            port: m.port,
            method,
            authority: exact_or_prefix(m.authority.as_ref()),
            headers: values(&m.headers),
            query_params: values(&m.query_params),
            without_headers: values(&m.without_headers),
        })
    }

    /// Istio's `coveredValidation`: every request `later` admits, this one
    /// admits first.
    fn covers(&self, later: &Self) -> bool {
        let wider = |mine: &str, theirs: &str| mine == theirs || mine.starts_with(theirs);
        let maps = |mine: &BTreeMap<String, String>, theirs: &BTreeMap<String, String>| {
            mine.len() == theirs.len()
                && mine
                    .iter()
                    .all(|(key, value)| theirs.get(key).is_some_and(|t| wider(value, t)))
        };
        later.prefix.starts_with(&self.prefix)
            && later.port == self.port
            && wider(&self.method, &later.method)
            && wider(&self.authority, &later.authority)
            && maps(&self.headers, &later.headers)
            && maps(&self.query_params, &later.query_params)
            && maps(&self.without_headers, &later.without_headers)
    }
}

/// Istio's `assignExactOrPrefix`.
fn exact_or_prefix(m: Option<&StringMatch>) -> String {
    match m {
        Some(StringMatch::Exact(exact)) if !exact.is_empty() => format!("exact:{exact}"),
        Some(StringMatch::Prefix(prefix)) if !prefix.is_empty() => format!("prefix:{prefix}"),
        _ => String::new(),
    }
}
