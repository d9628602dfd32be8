//! `TestValidateWorkloadEntry` (Istio's `ValidateWorkloadEntry`), and the
//! `workloadentry-{valid,invalid}.yaml` CRD fixtures.

use super::{
    Verdict::{Accepted, Refused, Valid, Warns},
    case, document, run,
};

fn we(spec: &str) -> String {
    document("WorkloadEntry", spec)
}

#[test]
fn istio_validate_workload_entry() {
    let t = |name: &'static str, spec: &str, verdict| case(name, we(spec), verdict);
    let cases = [
        t(
            "TestValidateWorkloadEntry/valid",
            "  address: 1.2.3.4\n",
            Valid,
        ),
        t(
            "TestValidateWorkloadEntry/missing address",
            "  {}\n",
            Refused("address is required"),
        ),
        t(
            "TestValidateWorkloadEntry/missing address with network",
            "  network: network-2\n",
            Warns("address is unset with network \"network-2\""),
        ),
        t(
            "TestValidateWorkloadEntry/valid unix endpoint",
            "  address: \"unix:///lon/google/com\"\n",
            Valid,
        ),
        t(
            "TestValidateWorkloadEntry/invalid unix endpoint",
            "  address: \"unix:///lon/google/com\"\n  ports: {\"7777\": 7777}\n",
            Refused("unix endpoint unix:///lon/google/com must not include ports"),
        ),
        t(
            "TestValidateWorkloadEntry/valid FQDN",
            "  address: validdns.com\n  ports: {\"7777\": 7777}\n",
            Valid,
        ),
        t(
            "TestValidateWorkloadEntry/invalid FQDN",
            "  address: \"invaliddns.com:9443\"\n  ports: {\"7777\": 7777}\n",
            Refused(
                "endpoint address \"invaliddns.com:9443\" is not a valid FQDN or an IP address",
            ),
        ),
        t(
            "TestValidateWorkloadEntry/valid IP",
            "  address: 172.16.1.1\n  ports: {\"7777\": 7777}\n",
            Valid,
        ),
    ];
    assert_eq!(cases.len(), 8, "every case of TestValidateWorkloadEntry");
    run(&cases);
}

/// `testdata/crds/workloadentry-{valid,invalid}.yaml`; `_err` is the CEL
/// message, ours carry the webhook's words (noted per case).
#[test]
fn istio_workload_entry_crd_fixtures() {
    let doc = |name: &str, spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: WorkloadEntry\nmetadata:\n  name: {name}\nspec:\n{spec}"
        )
    };
    let f = |name: &'static str, text: String, verdict| case(name, text, verdict);
    let cases = [
        f(
            "workloadentry-valid.yaml/full",
            doc("full", "  address: 1.2.3.4\n  serviceAccount: sa\n  network: net\n  labels:\n    app: app\n  ports:\n    \"http\": 1\n  weight: 2\n  locality: foo/bar/baz\n"),
            Accepted,
        ),
        f(
            "workloadentry-valid.yaml/missing-address-network-set",
            doc("missing-address-network-set", "  network: net\n"),
            Accepted,
        ),
        f(
            "workloadentry-valid.yaml/uds-abstract",
            doc("uds-abstract", "  address: unix://@foo\n"),
            Accepted,
        ),
        f(
            "workloadentry-valid.yaml/uds-path",
            doc("uds-path", "  address: unix:///foo/bar\n"),
            Accepted,
        ),
        f(
            "workloadentry-valid.yaml/fqdn",
            doc("fqdn", "  address: example.com\n"),
            Accepted,
        ),
        // CRD: "spec: Required value".
        f(
            "workloadentry-invalid.yaml/no-spec",
            "apiVersion: networking.istio.io/v1alpha3\nkind: WorkloadEntry\nmetadata:\n  name: no-spec\n".into(),
            Refused("spec"),
        ),
        // CRD: "Address is required".
        f(
            "workloadentry-invalid.yaml/missing-address",
            "apiVersion: networking.istio.io/v1alpha3\nkind: WorkloadEntry\nmetadata:\n  name: missing-address\nspec: {}\n".into(),
            Refused("address is required"),
        ),
        // CRD: "UDS may not be a dir".
        f(
            "workloadentry-invalid.yaml/bad-uds-dir",
            doc("bad-uds-dir", "  address: unix:///dir/\n"),
            Refused("/dir/ is not an absolute path to a file"),
        ),
        // CRD: "UDS must be an absolute path or abstract socket".
        f(
            "workloadentry-invalid.yaml/bad-uds-relative",
            doc("bad-uds-relative", "  address: unix://relative\n"),
            Refused("relative is not an absolute path to a file"),
        ),
        // CRD: "UDS may not include ports".
        f(
            "workloadentry-invalid.yaml/uds-with-ports",
            doc("uds-with-ports", "  address: unix://@foo\n  ports:\n    \"http\": 80\n"),
            Refused("unix endpoint unix://@foo must not include ports"),
        ),
        // CRD: "port must be between 1-65535".
        f(
            "workloadentry-invalid.yaml/high-port",
            doc("high-port", "  address: 1.1.1.1\n  ports:\n    \"http\": 99999\n"),
            Refused("port number 99999 must be in the range 1..65535"),
        ),
        // CRD: "spec.ports: Invalid value".
        f(
            "workloadentry-invalid.yaml/bad-port-name",
            doc("bad-port-name", "  address: 1.1.1.1\n  ports:\n    \"@\": 80\n"),
            Refused("invalid port name: @"),
        ),
    ];
    run(&cases);
}
