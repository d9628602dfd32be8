//! `TestValidateHTTPDirectResponse`, `TestValidateHTTPStatus`,
//! `TestValidateHTTPFaultInjectionAbort`,
//! `TestValidateHTTPFaultInjectionDelay`: each on the only `http` rule of a
//! `VirtualService` for `foo.bar` (a `nil` input is the rule without it).

use super::{
    Case, Verdict,
    Verdict::{Accepted, Refused, Valid, Warns},
    http_rule_case, run,
};

fn rule(name: &'static str, fields: &str, verdict: Verdict) -> Case {
    http_rule_case(name, fields, verdict)
}

/// Istio's test looks at errors and warnings: `Valid` is no warning.
#[test]
fn istio_validate_http_direct_response() {
    let t =
        |name, response: &str, verdict| rule(name, &format!("directResponse: {response}"), verdict);
    let string = |size: usize| format!("{{status: 200, body: {{string: {}}}}}", "a".repeat(size));
    // Go's protojson writes bytes as base64: "a" x 3n is "YWFh" x n.
    let bytes = |size: usize| {
        let mut encoded = "YWFh".repeat(size / 3);
        match size % 3 {
            1 => encoded.push_str("YQ=="),
            2 => encoded.push_str("YWE="),
            _ => {}
        }
        format!("{{status: 200, body: {{bytes: \"{encoded}\"}}}}")
    };
    let (kb, mb) = (1024, 1024 * 1024);
    let cases = [
        rule(
            "TestValidateHTTPDirectResponse/nil redirect",
            "route: [{destination: {host: foo.baz}}]",
            Valid,
        ),
        t(
            "TestValidateHTTPDirectResponse/status 200",
            "{status: 200}",
            Valid,
        ),
        t(
            "TestValidateHTTPDirectResponse/status 100",
            "{status: 199}",
            Refused("HTTP status 199 is not in range 200-599"),
        ),
        t(
            "TestValidateHTTPDirectResponse/status 600",
            "{status: 601}",
            Refused("HTTP status 601 is not in range 200-599"),
        ),
        t(
            "TestValidateHTTPDirectResponse/with string body",
            "{status: 200, body: {string: hello}}",
            Valid,
        ),
        t(
            "TestValidateHTTPDirectResponse/with string body over 100kb",
            &string(101 * kb),
            Warns("large direct_responses may impact control plane performance"),
        ),
        t(
            "TestValidateHTTPDirectResponse/with string body over 1mb",
            &string(2 * mb),
            Refused(
                "large direct_responses may impact control plane performance, must be less than 1MB",
            ),
        ),
        t(
            "TestValidateHTTPDirectResponse/with bytes body",
            "{status: 200, body: {bytes: aGVsbG8=}}",
            Valid,
        ),
        t(
            "TestValidateHTTPDirectResponse/with bytes body over 100kb",
            &bytes(100 * kb + 1),
            Warns("large direct_responses may impact control plane performance"),
        ),
        t(
            "TestValidateHTTPDirectResponse/with bytes body over 1mb",
            &bytes(mb + 1),
            Refused(
                "large direct_responses may impact control plane performance, must be less than 1MB",
            ),
        ),
    ];
    assert_eq!(
        cases.len(),
        10,
        "every case of TestValidateHTTPDirectResponse"
    );
    run(&cases);
}

/// `TestValidateHTTPStatus`, through an abort's `httpStatus`.
#[test]
fn istio_validate_http_status() {
    let t = |name, status: i64, verdict| {
        rule(
            name,
            &format!(
                "fault: {{abort: {{httpStatus: {status}}}}}, route: [{{destination: {{host: foo.baz}}}}]"
            ),
            verdict,
        )
    };
    let cases = [
        t(
            "TestValidateHTTPStatus/-100",
            -100,
            Refused("HTTP status -100 is not in range 200-599"),
        ),
        t(
            "TestValidateHTTPStatus/0",
            0,
            Refused("HTTP status 0 is not in range 200-599"),
        ),
        t("TestValidateHTTPStatus/200", 200, Accepted),
        t("TestValidateHTTPStatus/600", 600, Accepted),
        t(
            "TestValidateHTTPStatus/601",
            601,
            Refused("HTTP status 601 is not in range 200-599"),
        ),
    ];
    run(&cases);
}

#[test]
fn istio_validate_http_fault_injection_abort() {
    let t = |name, abort: &str, verdict| {
        let fault = if abort.is_empty() {
            String::new()
        } else {
            format!("fault: {{abort: {abort}}}, ")
        };
        rule(
            name,
            &format!("{fault}route: [{{destination: {{host: foo.baz}}}}]"),
            verdict,
        )
    };
    let cases = [
        t("TestValidateHTTPFaultInjectionAbort/nil", "", Accepted),
        t(
            "TestValidateHTTPFaultInjectionAbort/valid",
            "{percentage: {value: 20}, httpStatus: 200}",
            Accepted,
        ),
        t(
            "TestValidateHTTPFaultInjectionAbort/valid default",
            "{httpStatus: 200}",
            Accepted,
        ),
        t(
            "TestValidateHTTPFaultInjectionAbort/invalid http status",
            "{percentage: {value: 20}, httpStatus: 9000}",
            Refused("HTTP status 9000 is not in range 200-599"),
        ),
        t(
            "TestValidateHTTPFaultInjectionAbort/invalid low http status",
            "{percentage: {value: 20}, httpStatus: 100}",
            Refused("HTTP status 100 is not in range 200-599"),
        ),
        t(
            "TestValidateHTTPFaultInjectionAbort/valid percentage",
            "{percentage: {value: 0.001}, httpStatus: 200}",
            Accepted,
        ),
        t(
            "TestValidateHTTPFaultInjectionAbort/invalid fractional percent",
            "{percentage: {value: -10.0}, httpStatus: 200}",
            Refused("percentage -10 is neither 0.0, nor in range [0.0001, 100.0]"),
        ),
        t(
            "TestValidateHTTPFaultInjectionAbort/grpc: nil",
            "",
            Accepted,
        ),
        t(
            "TestValidateHTTPFaultInjectionAbort/grpc: valid",
            "{percentage: {value: 20}, grpcStatus: DEADLINE_EXCEEDED}",
            Accepted,
        ),
        t(
            "TestValidateHTTPFaultInjectionAbort/grpc: valid default percentage",
            "{grpcStatus: DEADLINE_EXCEEDED}",
            Accepted,
        ),
        t(
            "TestValidateHTTPFaultInjectionAbort/grpc: invalid status",
            "{percentage: {value: 20}, grpcStatus: BAD_STATUS}",
            Refused("gRPC status \"BAD_STATUS\" is not supported"),
        ),
        t(
            "TestValidateHTTPFaultInjectionAbort/grpc: valid percentage",
            "{percentage: {value: 0.001}, grpcStatus: INTERNAL}",
            Accepted,
        ),
        t(
            "TestValidateHTTPFaultInjectionAbort/grpc: invalid fractional percent",
            "{percentage: {value: -10.0}, grpcStatus: DEADLINE_EXCEEDED}",
            Refused("percentage -10 is neither 0.0, nor in range [0.0001, 100.0]"),
        ),
    ];
    assert_eq!(
        cases.len(),
        13,
        "every case of TestValidateHTTPFaultInjectionAbort"
    );
    run(&cases);
}

#[test]
fn istio_validate_http_fault_injection_delay() {
    let t = |name, delay: &str, verdict| {
        let fault = if delay.is_empty() {
            String::new()
        } else {
            format!("fault: {{delay: {delay}}}, ")
        };
        rule(
            name,
            &format!("{fault}route: [{{destination: {{host: foo.baz}}}}]"),
            verdict,
        )
    };
    let cases = [
        t("TestValidateHTTPFaultInjectionDelay/nil", "", Accepted),
        t(
            "TestValidateHTTPFaultInjectionDelay/valid fixed",
            "{percentage: {value: 20}, fixedDelay: 3s}",
            Accepted,
        ),
        t(
            "TestValidateHTTPFaultInjectionDelay/valid default",
            "{fixedDelay: 3s}",
            Accepted,
        ),
        t(
            "TestValidateHTTPFaultInjectionDelay/invalid percent",
            "{percentage: {value: 101}, fixedDelay: 3s}",
            Refused("percentage 101 is neither 0.0, nor in range [0.0001, 100.0]"),
        ),
        t(
            "TestValidateHTTPFaultInjectionDelay/invalid delay",
            "{percentage: {value: 20}, fixedDelay: 3.000000042s}",
            Refused("only durations to ms precision are supported"),
        ),
        t(
            "TestValidateHTTPFaultInjectionDelay/valid fractional percentage",
            "{percentage: {value: 0.001}, fixedDelay: 3s}",
            Accepted,
        ),
        t(
            "TestValidateHTTPFaultInjectionDelay/invalid fractional percentage",
            "{percentage: {value: -10.0}, fixedDelay: 3s}",
            Refused("percentage -10 is neither 0.0, nor in range [0.0001, 100.0]"),
        ),
    ];
    assert_eq!(
        cases.len(),
        7,
        "every case of TestValidateHTTPFaultInjectionDelay"
    );
    run(&cases);
}
