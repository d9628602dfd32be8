//! What a route changes in a request or answers itself: header operations,
//! `rewrite` (uri, authority), `redirect` and `direct_response`, as Envoy
//! does them for Istio.

use hyper::{
    HeaderMap,
    header::{HeaderName, HeaderValue},
};

use super::routes::MatchedUri;
use traffic_shift_config::{
    http::{DerivePort, DirectBody, HeaderOperations, RedirectPort},
    model::{HttpRedirect, Rewrite},
};

/// Applies `remove`, then `set` (replacing), then `add` (appending), as
/// Envoy's header parser does. Names and values were validated with the
/// rules; one that still does not fit HTTP is skipped.
pub fn apply_headers(headers: &mut HeaderMap, ops: &HeaderOperations) {
    for name in &ops.remove {
        headers.remove(name.as_str());
    }
    for (name, value) in &ops.set {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    for (name, value) in &ops.add {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
}

/// The new path and query after `rewrite.uri` / `uriRegexRewrite`, or
/// `None` when the route does not rewrite the uri. A `uri` rewrite replaces
/// the prefix the route matched (a route without a uri match matched the
/// prefix `/`, as Envoy sees it), or the whole path after an exact or regex
/// match; the query string stays.
pub fn rewrite_path(
    rewrite: &Rewrite,
    uri_regex: Option<&(regex::Regex, String)>,
    matched: &MatchedUri,
    path: &str,
    query: Option<&str>,
) -> Option<String> {
    let new_path = if let Some((regex, replacement)) = uri_regex {
        regex.replace_all(path, replacement.as_str()).into_owned()
    } else {
        let uri = rewrite.uri.as_deref()?;
        replace_prefix(path, matched, uri)
    };
    Some(match query {
        Some(query) => format!("{new_path}?{query}"),
        None => new_path,
    })
}

fn replace_prefix(path: &str, matched: &MatchedUri, with: &str) -> String {
    match matched {
        MatchedUri::Prefix(len) => format!("{with}{}", path.get(*len..).unwrap_or("")),
        MatchedUri::Whole => with.to_owned(),
    }
}

/// RE2's `\1` substitutions (what Istio's `uriRegexRewrite.rewrite` uses)
/// in the `regex` crate's syntax (`${1}`).
pub fn re2_replacement(rewrite: &str) -> String {
    let mut out = String::with_capacity(rewrite.len());
    let mut chars = rewrite.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '\\' if chars.peek() == Some(&'\\') => {
                chars.next();
                out.push('\\');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// The `Location` of a redirect, from the request as the client sent it
/// (`uri_regex`: the redirect's own, compiled).
pub fn redirect_location(
    redirect: &HttpRedirect,
    uri_regex: Option<&(regex::Regex, String)>,
    matched: &MatchedUri,
    authority: &str,
    listener_port: u16,
    path: &str,
    query: Option<&str>,
) -> String {
    let scheme = redirect.scheme.as_deref().unwrap_or("http");
    let mut host = redirect
        .authority
        .clone()
        .unwrap_or_else(|| authority.to_owned());
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = match redirect.port {
        Some(RedirectPort::Number(port)) => Some(port),
        Some(RedirectPort::Derive(DerivePort::FromRequestPort)) => Some(listener_port),
        Some(RedirectPort::Derive(DerivePort::FromProtocolDefault)) => Some(default_port),
        None => None,
    };
    if let Some(port) = port {
        host = super::routes::strip_port(&host).to_owned();
        if port != default_port {
            host = format!("{host}:{port}");
        }
    }
    if let Some((regex, replacement)) = uri_regex {
        let path = regex.replace_all(path, replacement.as_str()).into_owned();
        return format!("{scheme}://{host}{}", with_query(path, query));
    }
    let path_and_query = match (&redirect.uri, &redirect.prefix_rewrite) {
        // A path with its own query replaces the request's query.
        (Some(uri), _) if uri.contains('?') => uri.clone(),
        (Some(uri), _) => with_query(uri.clone(), query),
        (None, Some(prefix)) => with_query(replace_prefix(path, matched, prefix), query),
        (None, None) => with_query(path.to_owned(), query),
    };
    format!("{scheme}://{host}{path_and_query}")
}

fn with_query(path: String, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

/// The body of a `directResponse`: the string, or the base64 bytes decoded.
pub fn direct_body(body: Option<&DirectBody>) -> Vec<u8> {
    match body {
        None => Vec::new(),
        Some(DirectBody::String(text)) => text.clone().into_bytes(),
        Some(DirectBody::Bytes(text)) => base64_decode(text),
    }
}

/// Standard base64 (padding optional); characters outside the alphabet are
/// skipped (the rules checked the text).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap_or(0));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(uri: &str) -> Rewrite {
        Rewrite {
            uri: Some(uri.into()),
            authority: None,
            uri_regex: None,
        }
    }

    #[test]
    fn uri_rewrite_replaces_the_matched_prefix_and_keeps_the_query() {
        let r = rewrite("/v2/");
        assert_eq!(
            rewrite_path(
                &r,
                None,
                &MatchedUri::Prefix(5),
                "/api/ratings",
                Some("a=1")
            ),
            Some("/v2/ratings?a=1".into())
        );
        assert_eq!(
            rewrite_path(&r, None, &MatchedUri::Whole, "/api/ratings", None),
            Some("/v2/".into())
        );
        let none = Rewrite {
            uri: None,
            authority: Some("x".into()),
            uri_regex: None,
        };
        assert_eq!(
            rewrite_path(&none, None, &MatchedUri::Whole, "/a", None),
            None
        );
    }

    #[test]
    fn regex_rewrite_uses_re2_substitutions() {
        let regex = regex::Regex::new("^/service/([^/]+)(/.*)$").unwrap();
        let replacement = re2_replacement("\\2/instance/\\1");
        let r = Rewrite {
            uri: None,
            authority: None,
            uri_regex: Some(("unused".into(), "unused".into())),
        };
        assert_eq!(
            rewrite_path(
                &r,
                Some(&(regex, replacement)),
                &MatchedUri::Whole,
                "/service/foo/v1/api",
                None
            ),
            Some("/v1/api/instance/foo".into())
        );
    }

    #[test]
    fn header_operations_remove_then_set_then_add() {
        let mut headers = HeaderMap::new();
        headers.insert("x-old", HeaderValue::from_static("1"));
        headers.insert("x-set", HeaderValue::from_static("before"));
        headers.insert("x-add", HeaderValue::from_static("first"));
        let ops = HeaderOperations {
            set: [("x-set".to_owned(), "after".to_owned())].into(),
            add: [("x-add".to_owned(), "second".to_owned())].into(),
            remove: vec!["x-old".into()],
        };
        apply_headers(&mut headers, &ops);
        assert!(headers.get("x-old").is_none());
        assert_eq!(headers.get("x-set").unwrap(), "after");
        let added: Vec<_> = headers.get_all("x-add").iter().collect();
        assert_eq!(added, ["first", "second"]);
    }

    #[test]
    fn redirects_as_envoy() {
        let mut redirect = HttpRedirect {
            uri: Some("/v1/bookRatings".into()),
            prefix_rewrite: None,
            uri_regex: None,
            authority: Some("newratings.default.svc.cluster.local".into()),
            port: None,
            scheme: None,
            redirect_code: 301,
        };
        assert_eq!(
            redirect_location(
                &redirect,
                None,
                &MatchedUri::Whole,
                "ratings:9080",
                9080,
                "/v1/getProductRatings",
                Some("q=1")
            ),
            "http://newratings.default.svc.cluster.local/v1/bookRatings?q=1"
        );
        redirect.uri = None;
        redirect.authority = None;
        redirect.prefix_rewrite = Some("/new/".into());
        redirect.scheme = Some("https".into());
        redirect.port = Some(RedirectPort::Derive(DerivePort::FromProtocolDefault));
        assert_eq!(
            redirect_location(
                &redirect,
                None,
                &MatchedUri::Prefix(5),
                "shop:8080",
                8080,
                "/old/x",
                None
            ),
            "https://shop/new/x"
        );
        redirect.scheme = None;
        redirect.port = Some(RedirectPort::Number(9000));
        assert_eq!(
            redirect_location(
                &redirect,
                None,
                &MatchedUri::Prefix(5),
                "shop:8080",
                8080,
                "/old/x",
                None
            ),
            "http://shop:9000/new/x"
        );
        // A Gateway API ReplacePrefixMatch: the redirect's regex rewrites
        // the path (whole segments); the query stays; the request's port
        // kept (FROM_REQUEST_PORT), and left out when it is the scheme's.
        redirect.prefix_rewrite = None;
        redirect.port = Some(RedirectPort::Derive(DerivePort::FromRequestPort));
        let regex = (regex::Regex::new("^/old").unwrap(), "/new".to_owned());
        assert_eq!(
            redirect_location(
                &redirect,
                Some(&regex),
                &MatchedUri::Prefix(5),
                "shop:8080",
                8080,
                "/old/x",
                Some("q=1")
            ),
            "http://shop:8080/new/x?q=1"
        );
        assert_eq!(
            redirect_location(
                &redirect,
                Some(&regex),
                &MatchedUri::Whole,
                "shop",
                80,
                "/old",
                None
            ),
            "http://shop/new"
        );
    }

    #[test]
    fn direct_bodies() {
        assert_eq!(
            direct_body(Some(&DirectBody::Bytes("aGVsbG8=".into()))),
            b"hello"
        );
        assert_eq!(direct_body(Some(&DirectBody::String("hi".into()))), b"hi");
        assert!(direct_body(None).is_empty());
    }
}
