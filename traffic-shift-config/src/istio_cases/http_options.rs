//! `TestValidateHTTPRetry`, `TestValidateHTTPRewrite`,
//! `TestValidateUriRegexRewrite`, `TestValidateHTTPRedirect` (Istio's
//! `ValidateHTTPRetry`, `validateHTTPRewrite`, `validateURIRegexRewrite`,
//! `validateHTTPRedirect`): each field on the only `http` rule of a
//! `VirtualService` for `foo.bar`; errors only, as Istio's tests. A `nil`
//! input is the rule without the field.

use super::{
    Case, Verdict,
    Verdict::{Accepted, Refused},
    http_rule_case, run,
};

/// The rule `{<fields>}` (`route` to `foo.baz` unless `fields` redirects).
fn rule(name: &'static str, fields: &str, verdict: Verdict) -> Case {
    let route = if fields.contains("redirect:") {
        String::new()
    } else {
        ", route: [{destination: {host: foo.baz}}]".to_owned()
    };
    let fields = if fields.is_empty() {
        route.trim_start_matches(", ").to_owned()
    } else {
        format!("{fields}{route}")
    };
    http_rule_case(name, &fields, verdict)
}

#[test]
fn istio_validate_http_retry() {
    let t = |name, retries: &str, verdict| rule(name, &format!("retries: {retries}"), verdict);
    let cases = [
        t(
            "TestValidateHTTPRetry/valid",
            "{attempts: 10, perTryTimeout: 2s, retryOn: \"5xx,gateway-error\"}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRetry/disable retries",
            "{attempts: 0}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRetry/invalid, retry policy configured but attempts set to zero",
            "{attempts: 0, perTryTimeout: 2s, retryOn: \"5xx,gateway-error\"}",
            Refused("http retry policy configured when attempts are set to 0 (disabled)"),
        ),
        t(
            "TestValidateHTTPRetry/valid default",
            "{attempts: 10}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRetry/valid http status retryOn",
            "{attempts: 10, perTryTimeout: 2s, retryOn: \"503,connect-failure\"}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRetry/invalid attempts",
            "{attempts: -1, perTryTimeout: 2s}",
            Refused("attempts cannot be negative"),
        ),
        t(
            "TestValidateHTTPRetry/invalid timeout",
            "{attempts: 10, perTryTimeout: 2.000000001s}",
            Refused("only durations to ms precision are supported"),
        ),
        t(
            "TestValidateHTTPRetry/timeout too small",
            "{attempts: 10, perTryTimeout: 0.000000999s}",
            Refused("duration must be greater than 1ms"),
        ),
        t(
            "TestValidateHTTPRetry/invalid backoff",
            "{attempts: 10, backoff: 0.000000999s}",
            Refused("duration must be greater than 1ms"),
        ),
        t(
            "TestValidateHTTPRetry/invalid policy retryOn",
            "{attempts: 10, perTryTimeout: 2s, retryOn: \"5xx,invalid policy\"}",
            Refused("\"invalid policy\" is not a valid retryOn policy"),
        ),
        t(
            "TestValidateHTTPRetry/invalid http status retryOn",
            "{attempts: 10, perTryTimeout: 2s, retryOn: \"600,connect-failure\"}",
            Refused("\"600\" is not a valid retryOn policy"),
        ),
        t(
            "TestValidateHTTPRetry/invalid, retryRemoteLocalities configured but attempts set to zero",
            "{attempts: 0, retryRemoteLocalities: false}",
            Refused("http retry policy configured when attempts are set to 0 (disabled)"),
        ),
    ];
    assert_eq!(cases.len(), 12, "every case of TestValidateHTTPRetry");
    run(&cases);
}

#[test]
fn istio_validate_http_rewrite() {
    let t = |name, rewrite: &str, verdict| {
        let fields = if rewrite.is_empty() {
            String::new()
        } else {
            format!("rewrite: {rewrite}")
        };
        rule(name, &fields, verdict)
    };
    let regex =
        "uriRegexRewrite: {match: \"^/service/([^/]+)(/.*)$\", rewrite: '\\2/instance/\\1'}";
    let cases = [
        t("TestValidateHTTPRewrite/nil in", "", Accepted),
        t(
            "TestValidateHTTPRewrite/uri and authority",
            "{uri: /path/to/resource, authority: foobar.org}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRewrite/uri",
            "{uri: /path/to/resource}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRewrite/authority",
            "{authority: foobar.org}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRewrite/uriRegexRewrite",
            &format!("{{{regex}}}"),
            Accepted,
        ),
        t(
            "TestValidateHTTPRewrite/uriRegexRewrite and authority",
            &format!("{{authority: foobar.org, {regex}}}"),
            Accepted,
        ),
        t(
            "TestValidateHTTPRewrite/uriRegexRewrite and uri",
            &format!("{{uri: /path/to/resource, {regex}}}"),
            Refused("rewrite may only contain one of URI or UriRegexRewrite"),
        ),
        t(
            "TestValidateHTTPRewrite/no uri, uriRegexRewrite, or authority",
            "{}",
            Refused("rewrite must specify at least one of URI, UriRegexRewrite, or authority"),
        ),
    ];
    assert_eq!(cases.len(), 8, "every case of TestValidateHTTPRewrite");
    run(&cases);
}

#[test]
fn istio_validate_uri_regex_rewrite() {
    let t = |name, regex: &str, verdict| {
        let fields = if regex.is_empty() {
            String::new()
        } else {
            format!("rewrite: {{uriRegexRewrite: {regex}}}")
        };
        rule(name, &fields, verdict)
    };
    let cases = [
        t(
            "TestValidateUriRegexRewrite/uriRegexRewrite nil",
            "",
            Accepted,
        ),
        t(
            "TestValidateUriRegexRewrite/uriRegexRewrite happy path",
            "{match: \"^/service/([^/]+)(/.*)$\", rewrite: '\\2/instance/\\1'}",
            Accepted,
        ),
        t(
            "TestValidateUriRegexRewrite/uriRegexRewrite missing match",
            "{rewrite: '\\2/instance/\\1'}",
            Refused("UriRegexRewrite requires both Rewrite and Match fields to be specified"),
        ),
        t(
            "TestValidateUriRegexRewrite/uriRegexRewrite missing rewrite",
            "{match: \"^/service/([^/]+)(/.*)$\"}",
            Refused("UriRegexRewrite requires both Rewrite and Match fields to be specified"),
        ),
        t(
            "TestValidateUriRegexRewrite/uriRegexRewrite invalid regex patterns",
            "{match: \"[\", rewrite: \"[\"}",
            Refused("\"HTTPRewrite.UriRegexRewrite.Match\": "),
        ),
    ];
    assert_eq!(cases.len(), 5, "every case of TestValidateUriRegexRewrite");
    run(&cases);
}

#[test]
fn istio_validate_http_redirect() {
    let t = |name, redirect: &str, verdict| {
        let fields = if redirect.is_empty() {
            String::new()
        } else {
            format!("redirect: {redirect}")
        };
        rule(name, &fields, verdict)
    };
    let cases = [
        t("TestValidateHTTPRedirect/nil redirect", "", Accepted),
        t(
            "TestValidateHTTPRedirect/empty uri and authority",
            "{uri: \"\", authority: \"\"}",
            Refused("redirect must specify URI, authority, scheme, or port"),
        ),
        t(
            "TestValidateHTTPRedirect/too small redirect code",
            "{uri: t, authority: \"\", redirectCode: 299}",
            Refused("299 is not a valid redirect code, must be 3xx"),
        ),
        t(
            "TestValidateHTTPRedirect/too large redirect code",
            "{uri: t, authority: \"\", redirectCode: 400}",
            Refused("400 is not a valid redirect code, must be 3xx"),
        ),
        t(
            "TestValidateHTTPRedirect/empty authority",
            "{uri: t, authority: \"\"}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRedirect/empty uri",
            "{uri: \"\", authority: t}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRedirect/empty redirect code",
            "{uri: t, authority: t, redirectCode: 0}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRedirect/normal redirect",
            "{uri: t, authority: t, redirectCode: 308}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRedirect/prefix_rewrite alone",
            "{prefixRewrite: /bar}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRedirect/prefix_rewrite with authority",
            "{authority: foo.example.com, prefixRewrite: /}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRedirect/uri and prefix_rewrite mutually exclusive",
            "{uri: /old, prefixRewrite: /new}",
            Refused("redirect may only specify one of uri or prefix_rewrite"),
        ),
    ];
    assert_eq!(cases.len(), 11, "every case of TestValidateHTTPRedirect");
    run(&cases);
}
