//! `TestValidateServiceEntries` (Istio's `ValidateServiceEntry`), and the
//! `serviceentry-{valid,invalid}.yaml` CRD fixtures.

use super::{
    Verdict::{Accepted, Refused, Valid, Warns},
    case, document, run,
};

fn se(spec: &str) -> String {
    document("ServiceEntry", spec)
}

/// Two HTTP ports, named `http-valid1` and `http-valid2`, as most cases have.
const HTTP_PORTS: &str = "  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  - {number: 8080, protocol: http, name: http-valid2}\n";

/// The `valid` and `warning` of `TestValidateServiceEntries`, case by case.
#[test]
fn istio_validate_service_entries() {
    let t = |name: &'static str, spec: String, verdict| case(name, se(&spec), verdict);
    let p = HTTP_PORTS;
    let cases = [
        t(
            "TestValidateServiceEntries/discovery type DNS",
            format!("  hosts: [\"*.google.com\"]\n{p}  endpoints:\n  - {{address: lon.google.com, ports: {{http-valid1: 8080}}}}\n  - {{address: in.google.com, ports: {{http-valid2: 9080}}}}\n  resolution: DNS\n"),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/discovery type DNS Round Robin",
            format!("  hosts: [\"*.istio.io\"]\n{p}  endpoints:\n  - {{address: api-v1.istio.io, ports: {{http-valid1: 8080}}}}\n  resolution: DNS_ROUND_ROBIN\n"),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/discovery type DNS, label tlsMode: istio",
            format!("  hosts: [\"*.google.com\"]\n{p}  endpoints:\n  - {{address: lon.google.com, ports: {{http-valid1: 8080}}, labels: {{security.istio.io/tlsMode: istio}}}}\n  - {{address: in.google.com, ports: {{http-valid2: 9080}}, labels: {{security.istio.io/tlsMode: istio}}}}\n  resolution: DNS\n"),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/discovery type DNS, one host set with IP address and https port",
            format!("  hosts: [httpbin.org]\n  addresses: [10.10.10.10]\n{p}  - {{number: 443, protocol: https, name: https}}\n  resolution: DNS\n"),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/discovery type DNS, multi hosts set with IP address and https port",
            format!("  hosts: [httpbin.org, wikipedia.org]\n  addresses: [10.10.10.10]\n{p}  - {{number: 443, protocol: https, name: https}}\n  resolution: DNS\n"),
            Warns("service entry can not have more than one host specified simultaneously with address and tcp port"),
        ),
        t(
            "TestValidateServiceEntries/discovery type DNS, IP address set",
            format!("  hosts: [\"*.google.com\"]\n  addresses: [10.10.10.10]\n{p}  endpoints:\n  - {{address: lon.google.com, ports: {{http-valid1: 8080}}}}\n  - {{address: in.google.com, ports: {{http-valid2: 9080}}}}\n  resolution: DNS\n"),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/discovery type DNS, IP in endpoints",
            format!("  hosts: [\"*.google.com\"]\n{p}  endpoints:\n  - {{address: 1.1.1.1, ports: {{http-valid1: 8080}}}}\n  - {{address: in.google.com, ports: {{http-valid2: 9080}}}}\n  resolution: DNS\n"),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/discovery type DYNAMIC_DNS",
            format!("  hosts: [\"*.google.com\"]\n{p}  resolution: DYNAMIC_DNS\n"),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/empty hosts",
            "  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  endpoints:\n  - {address: in.google.com, ports: {http-valid2: 9080}}\n  resolution: DNS\n".into(),
            Refused("service entry must have at least one host"),
        ),
        t(
            "TestValidateServiceEntries/bad hosts",
            "  hosts: [\"-\"]\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  endpoints:\n  - {address: in.google.com, ports: {http-valid2: 9080}}\n  resolution: DNS\n".into(),
            Refused("domain name \"-\" invalid (label \"-\" invalid)"),
        ),
        t(
            "TestValidateServiceEntries/full wildcard host",
            "  hosts: [foo.com, \"*\"]\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  endpoints:\n  - {address: in.google.com, ports: {http-valid2: 9080}}\n  resolution: DNS\n".into(),
            Refused("invalid host *"),
        ),
        t(
            "TestValidateServiceEntries/short name host",
            "  hosts: [foo, bar.com]\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  endpoints:\n  - {address: in.google.com, ports: {http-valid1: 9080}}\n  resolution: DNS\n".into(),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/undefined endpoint port",
            "  hosts: [google.com]\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  - {number: 80, protocol: http, name: http-valid2}\n  endpoints:\n  - {address: lon.google.com, ports: {http-valid1: 8080}}\n  - {address: in.google.com, ports: {http-dne: 9080}}\n  resolution: DNS\n".into(),
            Refused("endpoint port 9080 is not defined by the service entry"),
        ),
        t(
            "TestValidateServiceEntries/discovery type DNS, non-FQDN endpoint",
            format!("  hosts: [\"*.google.com\"]\n{p}  endpoints:\n  - {{address: \"*.lon.google.com\", ports: {{http-valid1: 8080}}}}\n  - {{address: in.google.com, ports: {{http-dne: 9080}}}}\n  resolution: DNS\n"),
            Refused("endpoint address \"*.lon.google.com\" is not a valid FQDN or an IP address"),
        ),
        t(
            "TestValidateServiceEntries/discovery type DNS, non-FQDN host",
            format!("  hosts: [\"*.google.com\"]\n{p}  resolution: DNS\n"),
            Refused("hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for resolution mode DNS"),
        ),
        t(
            "TestValidateServiceEntries/discovery type DNS, no endpoints",
            format!("  hosts: [google.com]\n{p}  resolution: DNS\n"),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/discovery type DNS, unix endpoint",
            "  hosts: [\"*.google.com\"]\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  endpoints:\n  - {address: \"unix:///lon/google/com\"}\n  resolution: DNS\n".into(),
            Refused("endpoint address \"unix:///lon/google/com\" is not a valid FQDN or an IP address"),
        ),
        t(
            "TestValidateServiceEntries/discovery type none",
            format!("  hosts: [google.com]\n{p}  resolution: NONE\n"),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/discovery type none, endpoints provided",
            format!("  hosts: [google.com]\n{p}  endpoints:\n  - {{address: lon.google.com, ports: {{http-valid1: 8080}}}}\n  resolution: NONE\n"),
            Refused("no endpoints should be provided for resolution type none"),
        ),
        t(
            "TestValidateServiceEntries/discovery type none, cidr addresses",
            format!("  hosts: [google.com]\n  addresses: [172.1.2.16/16]\n{p}  resolution: NONE\n"),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/discovery type static, cidr addresses with endpoints",
            format!("  hosts: [google.com]\n  addresses: [172.1.2.16/16]\n{p}  endpoints:\n  - {{address: 1.1.1.1, ports: {{http-valid1: 8080}}}}\n  - {{address: 2.2.2.2, ports: {{http-valid2: 9080}}}}\n  resolution: STATIC\n"),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/discovery type static",
            format!("  hosts: [google.com]\n  addresses: [172.1.2.16]\n{p}  endpoints:\n  - {{address: 1.1.1.1, ports: {{http-valid1: 8080}}}}\n  - {{address: 2.2.2.2, ports: {{http-valid2: 9080}}}}\n  resolution: STATIC\n"),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/discovery type static, FQDN in endpoints",
            format!("  hosts: [google.com]\n  addresses: [172.1.2.16]\n{p}  endpoints:\n  - {{address: google.com, ports: {{http-valid1: 8080}}}}\n  - {{address: 2.2.2.2, ports: {{http-valid2: 9080}}}}\n  resolution: STATIC\n"),
            Refused("endpoint address \"google.com\" is not a valid IP address"),
        ),
        t(
            "TestValidateServiceEntries/discovery type static, missing endpoints",
            format!("  hosts: [google.com]\n  addresses: [172.1.2.16]\n{p}  resolution: STATIC\n"),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/discovery type static, bad endpoint port name",
            format!("  hosts: [google.com]\n  addresses: [172.1.2.16]\n{p}  endpoints:\n  - {{address: 1.1.1.1, ports: {{http-valid1: 8080}}}}\n  - {{address: 2.2.2.2, ports: {{http-dne: 9080}}}}\n  resolution: STATIC\n"),
            Refused("endpoint port 9080 is not defined by the service entry"),
        ),
        t(
            "TestValidateServiceEntries/discovery type none, conflicting port names",
            "  hosts: [google.com]\n  ports:\n  - {number: 80, protocol: http, name: http-conflict}\n  - {number: 8080, protocol: http, name: http-conflict}\n  resolution: NONE\n".into(),
            Refused("service entry port name \"http-conflict\" already defined"),
        ),
        t(
            "TestValidateServiceEntries/discovery type none, conflicting port numbers",
            "  hosts: [google.com]\n  ports:\n  - {number: 80, protocol: http, name: http-conflict1}\n  - {number: 80, protocol: http, name: http-conflict2}\n  resolution: NONE\n".into(),
            Refused("service entry port 80 already defined"),
        ),
        t(
            "TestValidateServiceEntries/unix socket",
            "  hosts: [uds.cluster.local]\n  ports:\n  - {number: 6553, protocol: grpc, name: grpc-service1}\n  resolution: STATIC\n  endpoints:\n  - {address: \"unix:///path/to/socket\"}\n".into(),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/unix socket, relative path",
            "  hosts: [uds.cluster.local]\n  ports:\n  - {number: 6553, protocol: grpc, name: grpc-service1}\n  resolution: STATIC\n  endpoints:\n  - {address: \"unix://./relative/path.sock\"}\n".into(),
            Refused("./relative/path.sock is not an absolute path to a file"),
        ),
        t(
            "TestValidateServiceEntries/unix socket, endpoint ports",
            "  hosts: [uds.cluster.local]\n  ports:\n  - {number: 6553, protocol: grpc, name: grpc-service1}\n  resolution: STATIC\n  endpoints:\n  - {address: \"unix:///path/to/socket\", ports: {grpc-service1: 6553}}\n".into(),
            Refused("unix endpoint unix:///path/to/socket must not include ports"),
        ),
        t(
            "TestValidateServiceEntries/unix socket, multiple service ports",
            "  hosts: [uds.cluster.local]\n  ports:\n  - {number: 6553, protocol: grpc, name: grpc-service1}\n  - {number: 80, protocol: http, name: http-service2}\n  resolution: STATIC\n  endpoints:\n  - {address: \"unix:///path/to/socket\"}\n".into(),
            Refused("exactly 1 service port required for unix endpoints"),
        ),
        t(
            "TestValidateServiceEntries/empty protocol",
            "  hosts: [google.com]\n  addresses: [172.1.2.16/16]\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  - {number: 8080, name: http-valid2}\n  resolution: NONE\n".into(),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/selector",
            "  hosts: [google.com]\n  workloadSelector: {labels: {foo: bar}}\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n".into(),
            Warns("workloadSelector should not be set when resolution mode is NONE"),
        ),
        t(
            "TestValidateServiceEntries/workload selector without labels",
            format!("  hosts: [google.com]\n{p}  workloadSelector: {{}}\n"),
            Warns("service entry: workload selector specified without labels, will be applied to all services in namespace"),
        ),
        t(
            "TestValidateServiceEntries/selector and endpoints",
            "  hosts: [google.com]\n  workloadSelector: {labels: {foo: bar}}\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  endpoints:\n  - {address: 1.1.1.1}\n".into(),
            Refused("only one of WorkloadSelector or Endpoints is allowed in Service Entry"),
        ),
        t(
            "TestValidateServiceEntries/selector and resolution NONE",
            "  hosts: [google.com]\n  workloadSelector: {labels: {foo: bar}}\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  resolution: NONE\n".into(),
            Warns("workloadSelector should not be set when resolution mode is NONE"),
        ),
        t(
            "TestValidateServiceEntries/selector and resolution DNS",
            "  hosts: [google.com]\n  workloadSelector: {labels: {foo: bar}}\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  resolution: DNS\n".into(),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/bad selector key",
            "  hosts: [google.com]\n  workloadSelector: {labels: {\"\": bar}}\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n".into(),
            Refused("empty key is not supported in selector: \"=bar\""),
        ),
        t(
            "TestValidateServiceEntries/repeat target port",
            "  hosts: [google.com]\n  resolution: DNS\n  ports:\n  - {number: 80, protocol: http, name: http-valid1, targetPort: 80}\n  - {number: 81, protocol: http, name: http-valid2, targetPort: 80}\n".into(),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/valid target port",
            "  hosts: [google.com]\n  resolution: DNS\n  ports:\n  - {number: 80, protocol: http, name: http-valid1, targetPort: 81}\n".into(),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/invalid target port",
            "  hosts: [google.com]\n  resolution: DNS\n  ports:\n  - {number: 80, protocol: http, name: http-valid1, targetPort: 65536}\n".into(),
            Refused("port number 65536 must be in the range 1..65535"),
        ),
        t(
            "TestValidateServiceEntries/warn target port",
            "  hosts: [google.com]\n  workloadSelector: {labels: {key: bar}}\n  ports:\n  - {number: 80, protocol: http, name: http-valid1, targetPort: 1234}\n".into(),
            Warns("workloadSelector should not be set when resolution mode is NONE"),
        ),
        t(
            "TestValidateServiceEntries/valid endpoint port",
            "  hosts: [google.com]\n  ports:\n  - {number: 80, protocol: http, name: http-valid1, targetPort: 81}\n  resolution: STATIC\n  endpoints:\n  - {address: 1.1.1.1, ports: {http-valid1: 8081}}\n".into(),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/invalid endpoint port",
            "  hosts: [google.com]\n  ports:\n  - {number: 80, protocol: http, name: http-valid1, targetPort: 81}\n  resolution: STATIC\n  endpoints:\n  - {address: 1.1.1.1, ports: {http-valid1: 65536}}\n".into(),
            Refused("port number 65536 must be in the range 1..65535"),
        ),
        t(
            "TestValidateServiceEntries/protocol unset for addresses empty",
            "  hosts: [google.com]\n  addresses: []\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  - {number: 8080, name: http-valid2}\n  resolution: NONE\n".into(),
            Warns("addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is not enabled"),
        ),
        t(
            "TestValidateServiceEntries/protocol is TCP for addresses empty",
            "  hosts: [google.com]\n  addresses: []\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  - {number: 81, protocol: TCP, name: tcp-valid1}\n  resolution: NONE\n".into(),
            Warns("addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is not enabled"),
        ),
        t(
            "TestValidateServiceEntries/dns round robin with more than one endpoint",
            "  hosts: [google.com]\n  addresses: []\n  ports:\n  - {number: 8081, protocol: http, name: http-valid1}\n  endpoints:\n  - {address: api-v1.istio.io, ports: {http-valid1: 8081}}\n  - {address: 1.1.1.2, ports: {http-valid1: 8081}}\n  resolution: DNS_ROUND_ROBIN\n".into(),
            Refused("there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN"),
        ),
        t(
            "TestValidateServiceEntries/dns round robin with 0 endpoints",
            "  hosts: [google.com]\n  addresses: []\n  ports:\n  - {number: 8081, protocol: http, name: http-valid1}\n  endpoints: []\n  resolution: DNS_ROUND_ROBIN\n".into(),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/partial wildcard hosts",
            "  hosts: [\"*.nytimes.com\", \"*washingtonpost.com\"]\n  addresses: []\n  ports:\n  - {number: 443, protocol: HTTPS, name: https-nytimes}\n  endpoints: []\n  resolution: NONE\n".into(),
            Warns("partial wildcard \"*washingtonpost.com\" not allowed"),
        ),
        t(
            "TestValidateServiceEntries/network set with no address on endpoint",
            "  hosts: [www.example.com]\n  addresses: []\n  ports:\n  - {number: 443, protocol: HTTPS, name: https-example}\n  endpoints:\n  - {network: cluster-1}\n  resolution: STATIC\n".into(),
            Warns("address is unset with network \"cluster-1\""),
        ),
        t(
            "TestValidateServiceEntries/discovery type DYNAMIC_DNS, unsupported TCP protocol",
            "  hosts: [\"*.google.com\"]\n  addresses: []\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  - {number: 81, protocol: TCP, name: tcp-valid1}\n  resolution: DYNAMIC_DNS\n".into(),
            Refused("only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type DYNAMIC_DNS"),
        ),
        t(
            "TestValidateServiceEntries/discovery type DYNAMIC_DNS, GRPC protocol",
            "  hosts: [\"*.svc.cluster.local\"]\n  addresses: []\n  ports:\n  - {number: 9090, protocol: GRPC, name: grpc}\n  resolution: DYNAMIC_DNS\n".into(),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/discovery type DYNAMIC_DNS, FQDN host",
            "  hosts: [google.com]\n  addresses: []\n  ports:\n  - {number: 80, protocol: http, name: http-valid}\n  resolution: DYNAMIC_DNS\n".into(),
            Refused("host must be wildcarded for resolution mode DYNAMIC_DNS"),
        ),
        t(
            "TestValidateServiceEntries/discovery type DYNAMIC_DNS, endpoints set",
            "  hosts: [\"*.google.com\"]\n  addresses: []\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  endpoints:\n  - {address: in.google.com, ports: {http-valid1: 9080}}\n  resolution: DYNAMIC_DNS\n".into(),
            Refused("endpoints cannot be set for resolution type DYNAMIC_DNS"),
        ),
        t(
            "TestValidateServiceEntries/discovery type DYNAMIC_DNS, IP address set",
            format!("  hosts: [\"*.google.com\"]\n  addresses: [10.10.10.10]\n{p}  resolution: DYNAMIC_DNS\n"),
            Refused("addresses cannot be set for resolution type DYNAMIC_DNS"),
        ),
        t(
            "TestValidateServiceEntries/discovery type DYNAMIC_DNS, empty hosts",
            "  hosts: []\n  addresses: []\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  resolution: DYNAMIC_DNS\n".into(),
            Refused("at least one wildcard host must be provided for resolution type DYNAMIC_DNS"),
        ),
        t(
            "TestValidateServiceEntries/discovery type DYNAMIC_DNS, multiple wildcarded hosts",
            "  hosts: [\"*.google.com\", \"*.amazon.com\"]\n  addresses: []\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  resolution: DYNAMIC_DNS\n".into(),
            Valid,
        ),
        t(
            "TestValidateServiceEntries/discovery type DYNAMIC_DNS, internal mesh location",
            "  hosts: [\"*.google.com\"]\n  addresses: []\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  resolution: DYNAMIC_DNS\n  location: MESH_INTERNAL\n".into(),
            Valid,
        ),
        case(
            "TestValidateServiceEntries/discovery type DYNAMIC_DNS, MESH_INTERNAL with waypoint (invalid)",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: r\n  namespace: default\n  labels: {istio.io/use-waypoint: my-waypoint}\nspec:\n  hosts: [\"*.google.com\"]\n  addresses: []\n  ports:\n  - {number: 80, protocol: http, name: http-valid1}\n  resolution: DYNAMIC_DNS\n  location: MESH_INTERNAL\n".into(),
            Refused("location MESH_INTERNAL with resolution type DYNAMIC_DNS is not supported when using waypoints"),
        ),
        t(
            "TestValidateServiceEntries/discovery type DYNAMIC_DNS, nil port",
            "  hosts: [\"*.google.com\"]\n  location: MESH_EXTERNAL\n  ports: [null]\n  resolution: DYNAMIC_DNS\n".into(),
            Refused("service entry port may not be null"),
        ),
        t(
            "TestValidateServiceEntries/nil port in ports array",
            "  hosts: [google.com]\n  ports: [null]\n  resolution: NONE\n".into(),
            Refused("service entry port may not be null"),
        ),
        t(
            "TestValidateServiceEntries/discovery type DNS with addresses, nil port",
            "  hosts: [google.com]\n  addresses: [1.2.3.4]\n  ports: [null]\n  resolution: DNS\n".into(),
            Refused("service entry port may not be null"),
        ),
    ];
    assert_eq!(cases.len(), 62, "every case of TestValidateServiceEntries");
    run(&cases);
}

/// `testdata/crds/serviceentry-valid.yaml` and `serviceentry-invalid.yaml`:
/// the CRD's schema and CEL rules. Their `_err` is the CEL message; ours
/// carry the webhook's words for the same rule (noted per case).
#[test]
fn istio_service_entry_crd_fixtures() {
    let doc = |name: &str, spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n{spec}"
        )
    };
    let f = |name: &'static str, text: String, verdict| case(name, text, verdict);
    let cases = [
        // Go's YAML reads `001:db8::` as a string; so must we.
        f(
            "serviceentry-valid.yaml/full",
            doc("full", "  hosts: [\"example.com\"]\n  workloadSelector:\n    labels:\n      foo: bar\n  addresses: [1.2.3.4, 001:db8::]\n  exportTo: [foo, .]\n  location: MESH_EXTERNAL\n  ports:\n    - name: foo\n      protocol: HTTP\n      number: 1234\n      targetPort: 2345\n  subjectAltNames: [sa]\n  resolution: DNS\n"),
            Accepted,
        ),
        f(
            "serviceentry-valid.yaml/static-endpoints",
            doc("static-endpoints", "  hosts: [\"example.com\"]\n  endpoints:\n    - address: \"sub.example.com\"\n  ports:\n    - name: foo\n      protocol: HTTP\n      number: 1234\n      targetPort: 2345\n  resolution: DNS\n"),
            Accepted,
        ),
        f(
            "serviceentry-valid.yaml/empty-selector",
            doc("empty-selector", "  workloadSelector: {}\n  hosts: [\"example.com\"]\n"),
            Accepted,
        ),
        f(
            "serviceentry-valid.yaml/partial-wildcard",
            doc("partial-wildcard", "  hosts: [\"*x\"]\n"),
            Accepted,
        ),
        f(
            "serviceentry-valid.yaml/none-cidr",
            doc("none-cidr", "  hosts: [\"example.com\"]\n  addresses:\n  - 1.1.1.1/32\n"),
            Accepted,
        ),
        // CRD: "spec: Required value".
        f(
            "serviceentry-invalid.yaml/no-spec",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: no-spec\n".into(),
            Refused("spec"),
        ),
        // CRD: "spec.hosts: Required value".
        f(
            "serviceentry-invalid.yaml/missing-host",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: missing-host\nspec: {}\n".into(),
            Refused("service entry must have at least one host"),
        ),
        // CRD: "wildcard is not supported in selector".
        f(
            "serviceentry-invalid.yaml/bad-selector-value",
            doc("bad-selector-value", "  hosts: [\"example.com\"]\n  workloadSelector:\n    labels:\n      \"val\": \"*\"\n"),
            Refused("wildcard is not supported in selector"),
        ),
        // CRD: "only one of WorkloadSelector or Endpoints can be set".
        f(
            "serviceentry-invalid.yaml/selector-and-endpoints",
            doc("selector-and-endpoints", "  hosts: [\"example.com\"]\n  workloadSelector: {}\n  endpoints:\n    - address: \"1.2.3.4\"\n"),
            Refused("only one of WorkloadSelector or Endpoints is allowed in Service Entry"),
        ),
        // CRD: "hostname cannot be wildcard".
        f(
            "serviceentry-invalid.yaml/bad-host-wildcard",
            doc("bad-host-wildcard", "  hosts: [\"*\"]\n"),
            Refused("invalid host *"),
        ),
        f(
            "serviceentry-invalid.yaml/bad-cidr-resolution",
            doc("bad-cidr-resolution", "  hosts: [\"example.com\"]\n  addresses: [1.2.3.4/16]\n  resolution: DNS\n"),
            Refused("CIDR addresses are allowed only for NONE/STATIC resolution types"),
        ),
        // CRD: "Duplicate value".
        f(
            "serviceentry-invalid.yaml/duplicate-ports-name",
            doc("duplicate-ports-name", "  hosts: [\"example.com\"]\n  ports:\n    - name: a\n      number: 1\n    - name: a\n      number: 12\n"),
            Refused("service entry port name \"a\" already defined"),
        ),
        // CRD: "port number cannot be duplicated".
        f(
            "serviceentry-invalid.yaml/duplicate-ports-number",
            doc("duplicate-ports-number", "  hosts: [\"example.com\"]\n  ports:\n    - name: a\n      number: 1\n    - name: b\n      number: 1\n"),
            Refused("service entry port 1 already defined"),
        ),
        // CRD: "port must be between 1-65535".
        f(
            "serviceentry-invalid.yaml/bad-port",
            doc("bad-port", "  hosts: [\"example.com\"]\n  ports:\n    - name: a\n      number: 99999\n"),
            Refused("port number 99999 must be in the range 1..65535"),
        ),
        f(
            "serviceentry-invalid.yaml/bad-port-target",
            doc("bad-port-target", "  hosts: [\"example.com\"]\n  ports:\n    - name: a\n      number: 1\n      targetPort: 99999\n"),
            Refused("port number 99999 must be in the range 1..65535"),
        ),
        // CRD: "NONE mode cannot set endpoints".
        f(
            "serviceentry-invalid.yaml/none-with-endpoints",
            doc("none-with-endpoints", "  hosts: [\"example.com\"]\n  endpoints:\n    - address: \"1.2.3.4\"\n  resolution: NONE\n"),
            Refused("no endpoints should be provided for resolution type none"),
        ),
        // CRD: "DNS_ROUND_ROBIN mode cannot have multiple endpoints".
        f(
            "serviceentry-invalid.yaml/dns-rr-with-multiple-endpoints",
            doc("dns-rr-with-multiple-endpoints", "  hosts: [\"example.com\"]\n  resolution: DNS_ROUND_ROBIN\n  endpoints:\n    - address: \"sub1.example.com\"\n    - address: \"sub2.example.com\"\n"),
            Refused("there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN"),
        ),
    ];
    run(&cases);
}
