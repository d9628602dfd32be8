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
