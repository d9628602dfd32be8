//! `TestValidateHTTPHeaderName` (Istio's
//! `ValidateHTTPHeaderNameOrJwtClaimRoute`, as a `headers` match name) and
//! `TestValidateCORSPolicy` (`validateCORSPolicy`), on the only `http` rule
//! of a `VirtualService` for `foo.bar`; errors only, as Istio's tests.

use super::{
    Case, Verdict,
    Verdict::{Accepted, Refused},
    http_rule_case, run,
};

fn rule(name: &'static str, fields: &str, verdict: Verdict) -> Case {
    http_rule_case(
        name,
        &format!("{fields}, route: [{{destination: {{host: foo.baz}}}}]"),
        verdict,
    )
}

#[test]
fn istio_validate_http_header_name() {
    let t = |name, header: &str, verdict| {
        rule(
            name,
            &format!("match: [{{headers: {{{header}: {{exact: x}}}}}}]"),
            verdict,
        )
    };
    let cases = [
        t("TestValidateHTTPHeaderName/header1", "header1", Accepted),
        t(
            "TestValidateHTTPHeaderName/X-Requested-With",
            "X-Requested-With",
            Accepted,
        ),
        t(
            "TestValidateHTTPHeaderName/:authority",
            "\":authority\"",
            Accepted,
        ),
        t(
            "TestValidateHTTPHeaderName/funky!$#_",
            "\"funky!$#_\"",
            Accepted,
        ),
        t(
            "TestValidateHTTPHeaderName/(empty)",
            "\"\"",
            Refused("header name cannot be empty"),
        ),
        t(
            "TestValidateHTTPHeaderName/::",
            "\"::\"",
            Refused("header name :: is not a valid header name"),
        ),
        t(
            "TestValidateHTTPHeaderName/illegal\"char",
            "'illegal\"char'",
            Refused("header name illegal\"char is not a valid header name"),
        ),
    ];
    assert_eq!(cases.len(), 7, "every case of TestValidateHTTPHeaderName");
    run(&cases);
}

#[test]
fn istio_validate_cors_policy() {
    let t = |name, cors: &str, verdict| rule(name, &format!("corsPolicy: {{{cors}}}"), verdict);
    let rest = "allowHeaders: [header1, header2], exposeHeaders: [header3], maxAge: 2s";
    let cases = [
        t(
            "TestValidateCORSPolicy/valid",
            &format!("allowMethods: [GET, POST], {rest}"),
            Accepted,
        ),
        t(
            "TestValidateCORSPolicy/bad method",
            &format!("allowMethods: [GET, PUTT], {rest}"),
            Refused("\"PUTT\" is not a supported HTTP method"),
        ),
        t(
            "TestValidateCORSPolicy/bad header",
            "allowMethods: [GET, POST], allowHeaders: [header1, header2], exposeHeaders: [\"\"], maxAge: 2s",
            Refused("header name cannot be empty"),
        ),
        t(
            "TestValidateCORSPolicy/bad max age",
            "allowMethods: [GET, POST], allowHeaders: [header1, header2], exposeHeaders: [header3], maxAge: 2.000000042s",
            Refused("max_age duration is accurate only to seconds precision"),
        ),
        t(
            "TestValidateCORSPolicy/empty matchType AllowOrigins",
            &format!(
                "allowOrigins: [{{exact: \"\"}}, {{prefix: \"\"}}, {{regex: \"\"}}], allowMethods: [GET, POST], {rest}"
            ),
            Refused("'' is not a valid match type for CORS allow origins"),
        ),
        t(
            "TestValidateCORSPolicy/non empty matchType AllowOrigins",
            &format!(
                "allowOrigins: [{{exact: exact}}, {{prefix: prefix}}, {{regex: regex}}], allowMethods: [GET, POST], {rest}"
            ),
            Accepted,
        ),
    ];
    assert_eq!(cases.len(), 6, "every case of TestValidateCORSPolicy");
    run(&cases);
}
