//! `TestValidateChainingVirtualService` (istio/istio
//! `pkg/config/validation/virtualservice_test.go`): root and delegate
//! `VirtualService`s.

use super::{
    Verdict::{Accepted, Refused},
    case, document, run,
};

fn vs(spec: &str) -> String {
    document("VirtualService", spec)
}

/// Istio's test looks at errors only: the valid cases are `Accepted`.
#[test]
fn istio_validate_chaining_virtual_service() {
    let t = |name: &'static str, spec: &str, verdict| case(name, vs(spec), verdict);
    let delegate = "delegate: {name: test, namespace: test}";
    let cases = [
        t(
            "TestValidateChainingVirtualService/root simple",
            &format!(
                "  hosts: [foo.bar]\n  gateways: [test-gateway]\n  http:\n  - {{{delegate}}}\n"
            ),
            Accepted,
        ),
        t(
            "TestValidateChainingVirtualService/root applies to sidecar with delegate",
            &format!("  hosts: [foo.bar]\n  http:\n  - {{{delegate}}}\n"),
            Accepted,
        ),
        t(
            "TestValidateChainingVirtualService/root with delegate and destination in one route",
            &format!(
                "  hosts: [foo.bar]\n  http:\n  - {{{delegate}, route: [{{destination: {{host: foo.baz}}}}]}}\n"
            ),
            Refused("must not specify route"),
        ),
        t(
            "TestValidateChainingVirtualService/delegate with no destination",
            "  hosts: []\n  http:\n  - {}\n",
            Refused("HTTP route, redirect or direct_response is required"),
        ),
        t(
            "TestValidateChainingVirtualService/delegate with delegate",
            &format!("  hosts: []\n  http:\n  - {{{delegate}}}\n"),
            Refused("delegate HTTP route cannot contain delegate"),
        ),
        t(
            "TestValidateChainingVirtualService/delegate with TCP route",
            "  hosts: []\n  tcp:\n  - route: [{destination: {host: foo.baz}}]\n",
            Refused("delegate virtual service must have no tcp route specified"),
        ),
        t(
            "TestValidateChainingVirtualService/delegate with gateway",
            "  hosts: []\n  gateways: [test]\n  http:\n  - route: [{destination: {host: foo.baz}}]\n",
            Refused("delegate virtual service must have no gateways specified"),
        ),
        t(
            "TestValidateChainingVirtualService/delegate with sourceNamespace",
            "  hosts: []\n  http:\n  - match: [{sourceNamespace: test}]\n    route: [{destination: {host: foo.baz}}]\n",
            Accepted,
        ),
    ];
    assert_eq!(
        cases.len(),
        8,
        "every case of TestValidateChainingVirtualService"
    );
    run(&cases);
}

/// `TestValidateRootHTTPRoute`: each route the only `http` rule of a
/// `VirtualService` for `foo.bar` (Istio's test looks at errors only).
#[test]
fn istio_validate_root_http_route() {
    let t = |name: &'static str, rule: &str, verdict| {
        case(
            name,
            vs(&format!("  hosts: [foo.bar]\n  http:\n  - {rule}\n")),
            verdict,
        )
    };
    let delegate = "delegate: {name: test, namespace: test}";
    let redirect = "redirect: {uri: /, authority: foo.biz}";
    let cases = [
        t(
            "TestValidateRootHTTPRoute/simple",
            &format!("{{{delegate}}}"),
            Accepted,
        ),
        t(
            "TestValidateRootHTTPRoute/route and delegate conflict",
            &format!("{{route: [{{destination: {{host: foo.baz}}}}], {delegate}}}"),
            Refused("must not specify route"),
        ),
        t(
            "TestValidateRootHTTPRoute/redirect and delegate conflict",
            &format!("{{redirect: {{uri: /lerp, authority: foo.biz}}, {delegate}}}"),
            Refused("must not specify redirect"),
        ),
        t(
            "TestValidateRootHTTPRoute/null header match",
            &format!("{{{delegate}, match: [{{headers: {{header: null}}}}]}}"),
            Refused("header match header cannot be null"),
        ),
        t(
            "TestValidateRootHTTPRoute/prefix header match",
            &format!("{{{delegate}, match: [{{headers: {{header: {{prefix: test}}}}}}]}}"),
            Accepted,
        ),
        t(
            "TestValidateRootHTTPRoute/empty prefix header match (delegate)",
            &format!("{{{delegate}, match: [{{headers: {{header: {{prefix: \"\"}}}}}}]}}"),
            Refused("\"headers\": prefix string match should not be empty"),
        ),
        t(
            "TestValidateRootHTTPRoute/exact header match",
            &format!("{{{delegate}, match: [{{headers: {{header: {{exact: test}}}}}}]}}"),
            Accepted,
        ),
        t(
            "TestValidateRootHTTPRoute/regex header match",
            &format!("{{{delegate}, match: [{{headers: {{header: {{regex: test}}}}}}]}}"),
            Accepted,
        ),
        t(
            "TestValidateRootHTTPRoute/exact without headers match",
            &format!("{{{redirect}, match: [{{withoutHeaders: {{header: {{exact: test}}}}}}]}}"),
            Accepted,
        ),
        t(
            "TestValidateRootHTTPRoute/regex without headers match",
            &format!("{{{redirect}, match: [{{withoutHeaders: {{header: {{regex: test}}}}}}]}}"),
            Accepted,
        ),
        t(
            "TestValidateRootHTTPRoute/regex without headers match ?",
            &format!("{{{redirect}, match: [{{withoutHeaders: {{header: {{regex: \"?\"}}}}}}]}}"),
            Refused("Istio uses RE2 style regex-based match"),
        ),
        t(
            "TestValidateRootHTTPRoute/regex without headers match *",
            &format!("{{{redirect}, match: [{{withoutHeaders: {{header: {{regex: \"*\"}}}}}}]}}"),
            Accepted,
        ),
        t(
            "TestValidateRootHTTPRoute/regex uri match",
            &format!("{{{delegate}, match: [{{uri: {{regex: test}}}}]}}"),
            Accepted,
        ),
        t(
            "TestValidateRootHTTPRoute/prefix uri match",
            &format!("{{{delegate}, match: [{{uri: {{prefix: test}}}}]}}"),
            Accepted,
        ),
        t(
            "TestValidateRootHTTPRoute/exact uri match",
            &format!("{{{delegate}, match: [{{uri: {{exact: test}}}}]}}"),
            Accepted,
        ),
        t(
            "TestValidateRootHTTPRoute/prefix queryParams match",
            &format!("{{{delegate}, match: [{{queryParams: {{q: {{prefix: test}}}}}}]}}"),
            Accepted,
        ),
        t(
            "TestValidateRootHTTPRoute/exact queryParams match",
            &format!("{{{delegate}, match: [{{queryParams: {{q: {{exact: test}}}}}}]}}"),
            Accepted,
        ),
        t(
            "TestValidateRootHTTPRoute/regex queryParams match",
            &format!("{{{delegate}, match: [{{headers: {{q: {{regex: test}}}}}}]}}"),
            Accepted,
        ),
        t(
            "TestValidateRootHTTPRoute/empty prefix match in method",
            &format!("{{match: [{{method: {{prefix: \"\"}}}}], {redirect}}}"),
            Refused("\"method\": prefix string match should not be empty"),
        ),
        t(
            "TestValidateRootHTTPRoute/empty regex match in method",
            &format!("{{match: [{{method: {{regex: \"\"}}}}], {redirect}}}"),
            Refused("\"method\": regex string match should not be empty"),
        ),
        t(
            "TestValidateRootHTTPRoute/empty prefix match in uri",
            &format!("{{match: [{{uri: {{prefix: \"\"}}}}], {redirect}}}"),
            Accepted,
        ),
        t(
            "TestValidateRootHTTPRoute/empty regex match in uri",
            &format!("{{match: [{{uri: {{regex: \"\"}}}}], {redirect}}}"),
            Refused("\"uri\": regex string match should not be empty"),
        ),
        t(
            "TestValidateRootHTTPRoute/empty regex match in query",
            &format!("{{match: [{{queryParams: {{q: {{regex: \"\"}}}}}}], {redirect}}}"),
            Refused("\"queryParams\": regex string match should not be empty"),
        ),
        t(
            "TestValidateRootHTTPRoute/empty regex match in scheme",
            &format!("{{match: [{{scheme: {{regex: \"\"}}}}], {redirect}}}"),
            Refused("\"scheme\": regex string match should not be empty"),
        ),
        t(
            "TestValidateRootHTTPRoute/empty prefix match in scheme",
            &format!("{{match: [{{scheme: {{prefix: \"\"}}}}], {redirect}}}"),
            Refused("\"scheme\": prefix string match should not be empty"),
        ),
        t(
            "TestValidateRootHTTPRoute/empty prefix header match",
            "{match: [{headers: {header: {prefix: \"\"}}}]}",
            Refused("\"headers\": prefix string match should not be empty"),
        ),
    ];
    assert_eq!(cases.len(), 26, "every case of TestValidateRootHTTPRoute");
    run(&cases);
}

/// `TestValidateDelegateHTTPRoute`: each route the only `http` rule of a
/// delegate `VirtualService` (no hosts); errors only, as Istio's test.
#[test]
fn istio_validate_delegate_http_route() {
    let t = |name: &'static str, rule: &str, verdict| {
        case(name, vs(&format!("  http:\n  - {rule}\n")), verdict)
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
            "TestValidateDelegateHTTPRoute/empty",
            "{}",
            Refused("HTTP route, redirect or direct_response is required"),
        ),
        t(
            "TestValidateDelegateHTTPRoute/simple",
            &format!("{{{route}}}"),
            Accepted,
        ),
        t(
            "TestValidateDelegateHTTPRoute/no destination",
            "{route: [{}]}",
            Refused("destination is required"),
        ),
        t(
            "TestValidateDelegateHTTPRoute/weighted",
            &two(25, 75),
            Accepted,
        ),
        t(
            "TestValidateDelegateHTTPRoute/total weight > 100",
            &two(55, 50),
            Accepted,
        ),
        t(
            "TestValidateDelegateHTTPRoute/total weight < 100",
            &two(49, 50),
            Accepted,
        ),
        t(
            "TestValidateDelegateHTTPRoute/simple redirect",
            "{redirect: {uri: /lerp, authority: foo.biz}}",
            Accepted,
        ),
        t(
            "TestValidateDelegateHTTPRoute/conflicting redirect and route",
            &format!("{{{route}, redirect: {{uri: /lerp, authority: foo.biz}}}}"),
            Refused("HTTP route cannot contain both route and redirect"),
        ),
        t(
            "TestValidateDelegateHTTPRoute/request response headers",
            &format!("{{{route}}}"),
            Accepted,
        ),
        t(
            "TestValidateDelegateHTTPRoute/valid headers",
            &headers(
                "{request: {add: {name: \"\"}, set: {name: \"\"}, remove: [name]}, response: {add: {name: \"\"}, set: {name: \"\"}, remove: [name]}}",
            ),
            Accepted,
        ),
        t(
            "TestValidateDelegateHTTPRoute/empty header name - request add",
            &headers("{request: {add: {\"\": value}}}"),
            Refused("header name cannot be empty"),
        ),
        t(
            "TestValidateDelegateHTTPRoute/empty header name - request set",
            &headers("{request: {set: {\"\": value}}}"),
            Refused("header name cannot be empty"),
        ),
        t(
            "TestValidateDelegateHTTPRoute/empty header name - request remove",
            &headers("{request: {remove: [\"\"]}}"),
            Refused("header name cannot be empty"),
        ),
        t(
            "TestValidateDelegateHTTPRoute/empty header name - response add",
            &headers("{response: {add: {\"\": value}}}"),
            Refused("header name cannot be empty"),
        ),
        t(
            "TestValidateDelegateHTTPRoute/empty header name - response set",
            &headers("{response: {set: {\"\": value}}}"),
            Refused("header name cannot be empty"),
        ),
        t(
            "TestValidateDelegateHTTPRoute/empty header name - response remove",
            &headers("{response: {remove: [\"\"]}}"),
            Refused("header name cannot be empty"),
        ),
        t(
            "TestValidateDelegateHTTPRoute/null header match",
            &format!("{{{bar}, match: [{{headers: {{header: null}}}}]}}"),
            Refused("header match header cannot be null"),
        ),
        t(
            "TestValidateDelegateHTTPRoute/nil match",
            &format!("{{{bar}}}"),
            Accepted,
        ),
        t(
            "TestValidateDelegateHTTPRoute/match with nil element",
            &format!("{{{bar}, match: [null]}}"),
            Accepted,
        ),
        t(
            "TestValidateDelegateHTTPRoute/invalid mirror percent",
            &format!("{{mirrorPercent: 101, {bar}, match: [null]}}"),
            Refused("mirror_percent must have a max value of 100 (it has 101)"),
        ),
        t(
            "TestValidateDelegateHTTPRoute/invalid mirror percentage",
            &format!("{{mirrorPercentage: {{value: 101}}, {bar}, match: [null]}}"),
            Refused("mirror_percentage must have a max value of 100"),
        ),
        t(
            "TestValidateDelegateHTTPRoute/valid mirror percentage",
            &format!("{{mirrorPercentage: {{value: 1}}, {bar}, match: [null]}}"),
            Accepted,
        ),
        t(
            "TestValidateDelegateHTTPRoute/negative mirror percentage",
            &format!("{{mirrorPercentage: {{value: -1}}, {bar}, match: [null]}}"),
            Refused("mirror_percentage must have a min value of 0"),
        ),
        t(
            "TestValidateDelegateHTTPRoute/delegate route with delegate",
            "{delegate: {name: test, namespace: test}}",
            Refused("delegate HTTP route cannot contain delegate"),
        ),
    ];
    assert_eq!(
        cases.len(),
        24,
        "every case of TestValidateDelegateHTTPRoute"
    );
    run(&cases);
}
