//! `TestValidateHTTPRoute` (Istio's `validateHTTPRoute`): each route the
//! only `http` rule of a `VirtualService` for `foo.bar`; errors only, as
//! Istio's test.

use super::{
    Verdict::{Accepted, Refused},
    case, document, run,
};

#[test]
fn istio_validate_http_route() {
    let t = |name: &'static str, rule: &str, verdict| {
        case(
            name,
            document(
                "VirtualService",
                &format!("  hosts: [foo.bar]\n  http:\n  - {rule}\n"),
            ),
            verdict,
        )
    };
    let route = "route: [{destination: {host: foo.baz}}]";
    let bar = "route: [{destination: {host: foo.bar}}]";
    let two = |a: u32, b: u32| {
        format!(
            "{{route: [{{destination: {{host: foo.baz.south}}, weight: {a}}}, {{destination: {{host: foo.baz.east}}, weight: {b}}}]}}"
        )
    };
    let headers = |operations: &str| {
        format!("{{route: [{{destination: {{host: foo.baz}}, headers: {operations}}}]}}")
    };
    let cases = [
        t(
            "TestValidateHTTPRoute/empty",
            "{}",
            Refused("HTTP route, redirect or direct_response is required"),
        ),
        t(
            "TestValidateHTTPRoute/simple",
            &format!("{{{route}}}"),
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/no destination",
            "{route: [{}]}",
            Refused("destination is required"),
        ),
        t("TestValidateHTTPRoute/weighted", &two(25, 75), Accepted),
        t(
            "TestValidateHTTPRoute/total weight > 100",
            &two(550, 500),
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/total weight < 100",
            &two(49, 50),
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/simple redirect",
            "{redirect: {uri: /lerp, authority: foo.biz}}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/prefix_rewrite redirect with prefix URI match",
            "{match: [{uri: {prefix: /foo}}], redirect: {prefixRewrite: /bar}}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/prefix_rewrite redirect with exact URI match is invalid",
            "{match: [{uri: {exact: /foo}}], redirect: {prefixRewrite: /bar}}",
            Refused("redirect prefix_rewrite requires all URI matches to use prefix match type"),
        ),
        t(
            "TestValidateHTTPRoute/prefix_rewrite redirect with regex URI match is invalid",
            "{match: [{uri: {regex: /foo.*}}], redirect: {prefixRewrite: /bar}}",
            Refused("redirect prefix_rewrite requires all URI matches to use prefix match type"),
        ),
        t(
            "TestValidateHTTPRoute/prefix_rewrite redirect with no URI match (wildcard) is valid",
            "{match: [{headers: {x-foo: {exact: bar}}}], redirect: {prefixRewrite: /bar}}",
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/conflicting redirect and route",
            &format!("{{{route}, redirect: {{uri: /lerp, authority: foo.biz}}}}"),
            Refused("HTTP route cannot contain both route and redirect"),
        ),
        t(
            "TestValidateHTTPRoute/request response headers",
            &format!("{{{route}}}"),
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/valid headers",
            &headers(
                "{request: {add: {name: \"\"}, set: {name: \"\"}, remove: [name]}, response: {add: {name: \"\"}, set: {name: \"\"}, remove: [name]}}",
            ),
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/empty header name - request add",
            &headers("{request: {add: {\"\": value}}}"),
            Refused("header name cannot be empty"),
        ),
        t(
            "TestValidateHTTPRoute/empty header name - request set",
            &headers("{request: {set: {\"\": value}}}"),
            Refused("header name cannot be empty"),
        ),
        t(
            "TestValidateHTTPRoute/empty header name - request remove",
            &headers("{request: {remove: [\"\"]}}"),
            Refused("header name cannot be empty"),
        ),
        t(
            "TestValidateHTTPRoute/empty header name - response add",
            &headers("{response: {add: {\"\": value}}}"),
            Refused("header name cannot be empty"),
        ),
        t(
            "TestValidateHTTPRoute/empty header name - response set",
            &headers("{response: {set: {\"\": value}}}"),
            Refused("header name cannot be empty"),
        ),
        t(
            "TestValidateHTTPRoute/empty header name - response remove",
            &headers("{response: {remove: [\"\"]}}"),
            Refused("header name cannot be empty"),
        ),
        t(
            "TestValidateHTTPRoute/envoy escaped % set",
            &headers("{response: {set: {i-love-istio: \"100%%\"}}}"),
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/envoy variable set",
            &headers("{response: {set: {name: \"%HOSTNAME%\"}}}"),
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/envoy unescaped % set",
            &headers("{response: {set: {name: \"abcd%oijasodifj\"}}}"),
            Refused("invalid header configuration"),
        ),
        t(
            "TestValidateHTTPRoute/envoy escaped % add",
            &headers("{response: {add: {i-love-istio: \"100%% and more\"}}}"),
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/envoy variable add",
            &headers("{response: {add: {name: \"hello %HOSTNAME%\"}}}"),
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/envoy unescaped % add",
            &headers("{response: {add: {name: \"abcd%oijasodifj\"}}}"),
            Refused("invalid header configuration"),
        ),
        t(
            "TestValidateHTTPRoute/null header match",
            &format!("{{{bar}, match: [{{headers: {{header: null}}}}]}}"),
            Refused("header match header cannot be null"),
        ),
        t(
            "TestValidateHTTPRoute/empty prefix header match",
            &format!("{{{bar}, match: [{{headers: {{emptyprefix: {{prefix: \"\"}}}}}}]}}"),
            Refused("\"headers\": prefix string match should not be empty"),
        ),
        t(
            "TestValidateHTTPRoute/nil match",
            &format!("{{{bar}}}"),
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/match with nil element",
            &format!("{{{bar}, match: [null]}}"),
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/invalid mirror percent",
            &format!("{{mirrorPercent: 101, {bar}, match: [null]}}"),
            Refused("mirror_percent must have a max value of 100 (it has 101)"),
        ),
        t(
            "TestValidateHTTPRoute/invalid mirror percentage",
            &format!("{{mirrorPercentage: {{value: 101}}, {bar}, match: [null]}}"),
            Refused("mirror_percentage must have a max value of 100"),
        ),
        t(
            "TestValidateHTTPRoute/valid mirror percentage",
            &format!("{{mirrorPercentage: {{value: 1}}, {bar}, match: [null]}}"),
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/negative mirror percentage",
            &format!("{{mirrorPercentage: {{value: -1}}, {bar}, match: [null]}}"),
            Refused("mirror_percentage must have a min value of 0"),
        ),
        t(
            "TestValidateHTTPRoute/mirrors without destination",
            &format!("{{mirrors: [{{}}], {bar}, match: [null]}}"),
            Refused("destination is required for mirrors"),
        ),
        t(
            "TestValidateHTTPRoute/mirrors invalid mirror percentage",
            &format!(
                "{{mirrors: [{{destination: {{host: foo.baz}}}}, {{destination: {{host: foo.baz}}, percentage: {{value: 101}}}}], {bar}, match: [null]}}"
            ),
            Refused("mirror percentage must have a max value of 100"),
        ),
        t(
            "TestValidateHTTPRoute/mirrors valid mirror percentage",
            &format!(
                "{{mirrors: [{{destination: {{host: foo.baz}}, percentage: {{value: 1}}}}, {{destination: {{host: foo.baz}}, percentage: {{value: 50}}}}], {bar}, match: [null]}}"
            ),
            Accepted,
        ),
        t(
            "TestValidateHTTPRoute/mirrors negative mirror percentage",
            &format!(
                "{{mirrors: [{{destination: {{host: foo.baz}}, percentage: {{value: -1}}}}], {bar}, match: [null]}}"
            ),
            Refused("mirror percentage must have a min value of 0"),
        ),
        t(
            "TestValidateHTTPRoute/conflicting mirror and mirrors",
            &format!(
                "{{mirror: {{host: foo.baz}}, mirrors: [{{destination: {{host: foo.bar}}}}], {route}}}"
            ),
            Refused("HTTP route cannot contain both mirror and mirrors"),
        ),
    ];
    assert_eq!(cases.len(), 39, "every case of TestValidateHTTPRoute");
    run(&cases);
}
