use super::*;

#[test]
fn durations_in_go_syntax() {
    let cases = [
        ("10s", Ok(Duration::from_secs(10))),
        ("1.5s", Ok(Duration::from_millis(1500))),
        ("250ms", Ok(Duration::from_millis(250))),
        ("1m30s", Ok(Duration::from_secs(90))),
        ("2h", Ok(Duration::from_hours(2))),
        ("1ms", Ok(Duration::from_millis(1))),
        ("0.001s", Ok(Duration::from_millis(1))),
        (
            "500us",
            Err("duration must be greater than 1ms (it is 500us)"),
        ),
        ("0s", Err("duration must be greater than 1ms (it is 0s)")),
        (
            "1500us",
            Err("only durations to ms precision are supported (1500us)"),
        ),
        (
            "-1s",
            Err("duration must be greater than 1ms (it is -1s, negative)"),
        ),
        ("10", Err("invalid duration \"10\"")),
        ("10 s", Err("invalid duration \"10 s\"")),
        ("s", Err("invalid duration \"s\"")),
        ("1d", Err("invalid duration \"1d\"")),
        ("", Err("invalid duration \"\"")),
        ("99999999999h", Err("invalid duration \"99999999999h\"")),
    ];
    for (text, expected) in cases {
        match (duration(text).map_err(|error| error.to_string()), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{text:?}"),
            (Err(got), Err(want)) => {
                assert!(
                    got.starts_with(want),
                    "{text:?}: {got:?} should start with {want:?}"
                );
            }
            (got, want) => panic!("{text:?}: got {got:?}, expected {want:?}"),
        }
    }
    assert_eq!(
        duration_or_zero("0s"),
        Ok(Duration::ZERO),
        "0s turns idleTimeout off"
    );
}

#[test]
fn regexes_must_be_re2_and_bounded() {
    assert_eq!(
        regex("^/api/v[0-9]+/.*$", "uri"),
        Ok(()),
        "an ordinary regex"
    );
    let error = regex("(?<=a)b", "uri")
        .expect_err("look-behind is not RE2")
        .to_string();
    assert!(error.starts_with("\"uri\": "), "{error}");
    assert!(
        error.ends_with(
            "Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
        ),
        "{error}"
    );
    assert_eq!(
        regex(&"a".repeat(1025), "uri").map_err(|error| error.to_string()),
        Err("\"uri\": regex is too large, max length allowed is 1024".to_owned()),
        "over 1024 characters"
    );
}

#[test]
fn hostile_regexes_are_refused_quickly() {
    // Short patterns whose compiled program explodes: refused by the
    // size limit, not compiled for seconds or gigabytes.
    let started = std::time::Instant::now();
    for pattern in [
        "(a{1000}){1000}",
        "((((a{100}){100}){100}){100})",
        "[\\p{L}\\p{N}]{5000}",
        "(?:(?:(?:(?:(?:(?:x*)*)*)*)*)*)*y",
    ] {
        match regex(pattern, "uri").map_err(|error| error.to_string()) {
            Ok(()) => {}
            Err(error) => assert!(
                error.contains("larger than") || error.contains("exceeds"),
                "{pattern}: refused for its size, got {error}"
            ),
        }
    }
    let error = regex("(a{1000}){1000}", "uri")
        .expect_err("a million states")
        .to_string();
    assert!(
        error.contains("the compiled regex is larger than"),
        "{error}"
    );
    let deep = format!("{}a{}", "(".repeat(200), ")".repeat(200));
    assert!(
        regex(&deep, "uri").is_err(),
        "nesting deeper than 64 is refused"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "checking hostile regexes took {:?}",
        started.elapsed()
    );
}

#[test]
fn labels_follow_kubernetes() {
    for (key, value, ok) in [
        ("app", "tcp-echo", true),
        ("version", "", true),
        ("app.kubernetes.io/name", "x", true),
        ("Version", "V1", true),
        ("-app", "x", false),
        ("app", "v1 beta", false),
        ("a/b/c", "x", false),
        ("", "x", false),
    ] {
        assert_eq!(
            label(key, value).is_ok(),
            ok,
            "{key}={value}: {:?}",
            label(key, value)
        );
    }
    assert_eq!(
        label("app", "-x").map_err(|error| error.to_string()),
        Err("invalid tag value: \"-x\"".to_owned())
    );
    assert_eq!(
        label("a b", "x").map_err(|error| error.to_string()),
        Err("invalid tag key: \"a b\"".to_owned())
    );
}

#[test]
fn header_values_use_envoy_syntax() {
    for (value, ok) in [
        ("foo", true),
        ("%HOSTNAME%", true),
        ("100%%", true),
        ("prefix %HOSTNAME% suffix", true),
        ("%REQ(x-foo)%", true),
        ("abc%123", false),
        ("%START_TIME%%", false),
        ("a\nb", false),
    ] {
        assert_eq!(
            header_value(value).is_ok(),
            ok,
            "{value:?}: {:?}",
            header_value(value)
        );
    }
}

#[test]
fn export_to_entries() {
    let entries = |list: &[&str]| list.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>();
    assert!(export_to("default", &entries(&["."]), false).is_empty());
    assert!(export_to("default", &entries(&[".", "istio-system"]), false).is_empty());
    assert_eq!(
        export_to("default", &entries(&["default", "."]), false),
        [(
            1,
            "duplicate entries in exportTo: . and current namespace default".to_owned()
        )]
    );
    assert_eq!(
        export_to("default", &entries(&["*", "a"]), false),
        [(
            0,
            "cannot have both public (*) and non-public exportTo values for a resource".to_owned()
        )]
    );
    assert_eq!(
        export_to("default", &entries(&["~"]), false).len(),
        1,
        "~ is for ServiceEntries"
    );
    assert!(export_to("default", &entries(&["~"]), true).is_empty());
}

#[test]
fn retry_on_policies() {
    assert_eq!(retry_on("5xx"), Ok(()));
    assert_eq!(retry_on("503"), Ok(()));
    assert!(retry_on("599").is_err(), "no such status");
    assert!(retry_on("5XX").is_err(), "case matters");
}
