//! `TestValidatePortName` (Istio's `ValidatePortName`, a DNS-1123 label of
//! either case) and `TestStrictValidateHTTPHeaderName`
//! (`ValidateStrictHTTPHeaderName`: `[-A-Za-z0-9]+`).
//!
//! `ValidatePortName` guards the port names of a `ServiceEntry`
//! (`ports[].name`) and of an endpoint (`ports` keys): each case runs on
//! both. `ValidateStrictHTTPHeaderName` guards no field of the five kinds
//! read here; its cases run on the header names of `corsPolicy`
//! (`allowHeaders`, `exposeHeaders`: Istio's `ValidateCORSHTTPHeaderName`,
//! an RFC 7230 token or `*`), whose verdict on each of them is the same:
//! `:authority` is a pseudo-header, not a token.

use super::{
    Case, Verdict,
    Verdict::{Refused, Valid},
    case, document, run,
};

#[test]
fn istio_validate_port_name() {
    // Istio's: "toolong" 14 times, 98 characters (at most 63).
    let too_long = "toolong".repeat(14);
    let too_long = too_long.as_str();
    // (Istio's case name, the port name, Istio's verdict)
    let names: [(&'static str, &str, Verdict); 4] = [
        (
            "TestValidatePortName/(empty)",
            "",
            Refused("invalid port name: "),
        ),
        ("TestValidatePortName/simple", "simple", Valid),
        ("TestValidatePortName/full", "full", Valid),
        (
            "TestValidatePortName/toolong",
            too_long,
            Refused("invalid port name: toolong"),
        ),
    ];
    let mut cases: Vec<Case> = Vec::new();
    for (name, port, verdict) in names {
        cases.push(case(
            name,
            document(
                "ServiceEntry",
                &format!(
                    "  hosts: [foo.bar.com]\n  addresses: [10.0.0.1]\n  ports: [{{number: 80, \
                     protocol: http, name: \"{port}\"}}]\n  resolution: STATIC\n  endpoints: \
                     [{{address: 10.1.0.1, ports: {{\"{port}\": 8080}}}}]\n"
                ),
            ),
            verdict,
        ));
        cases.push(case(
            name,
            document(
                "WorkloadEntry",
                &format!("  address: 10.1.0.1\n  ports: {{\"{port}\": 8080}}\n"),
            ),
            verdict,
        ));
    }
    assert_eq!(names.len(), 4, "every case of TestValidatePortName");
    run(&cases);
}

#[test]
fn istio_strict_validate_http_header_name() {
    // (Istio's case name, the header name, Istio's verdict)
    let names: [(&'static str, &str, Verdict); 4] = [
        ("TestStrictValidateHTTPHeaderName/header1", "header1", Valid),
        (
            "TestStrictValidateHTTPHeaderName/X-Requested-With",
            "X-Requested-With",
            Valid,
        ),
        (
            "TestStrictValidateHTTPHeaderName/:authority",
            ":authority",
            Refused("header name :authority is not a valid header name"),
        ),
        (
            "TestStrictValidateHTTPHeaderName/(empty)",
            "",
            Refused("header name cannot be empty"),
        ),
    ];
    let mut cases: Vec<Case> = Vec::new();
    for (name, header, verdict) in names {
        for field in ["allowHeaders", "exposeHeaders"] {
            cases.push(case(
                name,
                document(
                    "VirtualService",
                    &format!(
                        "  hosts: [foo.bar]\n  http:\n  - corsPolicy: {{{field}: [\"{header}\"]}}\n    \
                         route: [{{destination: {{host: foo.baz}}}}]\n"
                    ),
                ),
                verdict,
            ));
        }
    }
    assert_eq!(
        names.len(),
        4,
        "every case of TestStrictValidateHTTPHeaderName"
    );
    run(&cases);
}
