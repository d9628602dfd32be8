//! `TestValidateDestination` and `TestValidateRouteDestination` (Istio's
//! `validateDestination`, `validateRouteDestinations`): each in the
//! `route` of a `tcp` rule. Istio's tests look at errors only, so the
//! valid cases are `Accepted` (our weight-total warnings aside).

use super::{
    Verdict::{Accepted, Refused},
    case, document, run,
};

fn tcp_route(route: &str) -> String {
    document(
        "VirtualService",
        &format!("  hosts: [foo.bar]\n  tcp:\n  - route: {route}\n"),
    )
}

#[test]
fn istio_validate_destination() {
    let t = |name: &'static str, destination: &str, verdict| {
        case(
            name,
            tcp_route(&format!("[{{destination: {destination}}}]")),
            verdict,
        )
    };
    let cases = [
        t(
            "TestValidateDestination/empty",
            "{}",
            Refused("empty domain name not allowed"),
        ),
        t(
            "TestValidateDestination/simple",
            "{host: foo.bar}",
            Accepted,
        ),
        t(
            "TestValidateDestination/full",
            "{host: foo.bar, subset: shiny, port: {number: 5000}}",
            Accepted,
        ),
        t(
            "TestValidateDestination/unnumbered-selector",
            "{host: foo.bar, subset: shiny, port: {}}",
            Refused("port number 0 must be in the range 1..65535"),
        ),
    ];
    assert_eq!(cases.len(), 4, "every case of TestValidateDestination");
    run(&cases);
}

#[test]
fn istio_validate_route_destination() {
    let t = |name: &'static str, route: &str, verdict| case(name, tcp_route(route), verdict);
    let two = |a: i64, b: i64| {
        format!(
            "[{{destination: {{host: foo.baz.south}}, weight: {a}}}, {{destination: {{host: foo.baz.east}}, weight: {b}}}]"
        )
    };
    let cases = [
        t(
            "TestValidateRouteDestination/simple",
            "[{destination: {host: foo.baz}}]",
            Accepted,
        ),
        t(
            "TestValidateRouteDestination/wildcard dash",
            "[{destination: {host: \"*-foo.baz\"}}]",
            Accepted,
        ),
        t(
            "TestValidateRouteDestination/wildcard prefix",
            "[{destination: {host: \"*foo.baz\"}}]",
            Accepted,
        ),
        t(
            "TestValidateRouteDestination/wildcard",
            "[{destination: {host: \"*\"}}]",
            Refused("invalid destination host *"),
        ),
        t(
            "TestValidateRouteDestination/bad wildcard",
            "[{destination: {host: \"foo.*\"}}]",
            Refused("domain name \"foo.*\" invalid (label \"*\" invalid)"),
        ),
        t(
            "TestValidateRouteDestination/bad fqdn",
            "[{destination: {host: default/baz}}]",
            Refused("domain name \"default/baz\" invalid (label \"default/baz\" invalid)"),
        ),
        t(
            "TestValidateRouteDestination/no destination",
            "[{}]",
            Refused("destination is required"),
        ),
        t(
            "TestValidateRouteDestination/weighted",
            &two(25, 75),
            Accepted,
        ),
        t(
            "TestValidateRouteDestination/weight < 0",
            &two(5, -1),
            Refused("weight -1 < 0"),
        ),
        t(
            "TestValidateRouteDestination/total weight > 100",
            &two(550, 500),
            Accepted,
        ),
        t(
            "TestValidateRouteDestination/total weight < 100",
            &two(49, 50),
            Accepted,
        ),
        t(
            "TestValidateRouteDestination/total weight = 100",
            &two(100, 0),
            Accepted,
        ),
        t(
            "TestValidateRouteDestination/weight = 0",
            "[{destination: {host: foo.baz.south}, weight: 0}]",
            Accepted,
        ),
        t(
            "TestValidateRouteDestination/total weight = 0 with multi RouteDestination",
            &two(0, 0),
            Refused("total destination weight = 0"),
        ),
    ];
    assert_eq!(
        cases.len(),
        14,
        "every case of TestValidateRouteDestination"
    );
    run(&cases);
}
