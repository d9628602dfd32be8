use super::*;

const NOW: u64 = 1_795_000_000_000;

fn item(kind: &str, namespace: &str, name: &str, age_s: u64, spec: &Json) -> Item {
    Item {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        source: "apply".into(),
        created_ms: Some(NOW - age_s * 1000),
        document: serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }),
    }
}

fn kind(name: &str) -> KindNames {
    applied::parse_kind(name).expect("a kind")
}

#[test]
fn ages_as_kubectl_prints_them() {
    for (seconds, text) in [
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (200, "3m20s"),
        (599, "9m59s"),
        (600, "10m"),
        (179 * 60 + 59, "179m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 10 * 60, "5h10m"),
        (8 * 3600 + 59, "8h"),
        (47 * 3600, "47h"),
        (3 * 86_400 + 4 * 3600, "3d4h"),
        (5 * 86_400, "5d"),
        (400 * 86_400, "400d"),
        (3 * 365 * 86_400 + 30 * 86_400, "3y30d"),
        (9 * 365 * 86_400, "9y"),
    ] {
        assert_eq!(human_duration(seconds * 1000), text, "{seconds} s");
    }
    assert_eq!(human_duration(-1500), "0s", "a clock a second off is now");
    assert_eq!(human_duration(-5000), "<invalid>");
}

#[test]
fn tables_have_istios_columns_per_kind() {
    let vs = [
        item(
            "VirtualService",
            "default",
            "tcp-echo",
            200,
            &serde_json::json!({"hosts": ["tcp-echo.local"], "gateways": ["mesh", "tcp-echo-gateway"]}),
        ),
        item(
            "VirtualService",
            "default",
            "b",
            7200,
            &serde_json::json!({"hosts": ["b.local"]}),
        ),
    ];
    assert_eq!(
        table(kind("vs"), &vs, false, false, NOW),
        "\
NAME       GATEWAYS                      HOSTS                AGE
tcp-echo   [\"mesh\",\"tcp-echo-gateway\"]   [\"tcp-echo.local\"]   3m20s
b                                        [\"b.local\"]          120m
"
    );
    let mut from_file = vs[1].clone();
    from_file.source = "/srv/rules/b.yaml".into();
    from_file.namespace = "prod".into();
    assert_eq!(
        table(kind("vs"), &[vs[0].clone(), from_file], true, true, NOW),
        "\
NAMESPACE   NAME       GATEWAYS                      HOSTS                AGE     SOURCE
default     tcp-echo   [\"mesh\",\"tcp-echo-gateway\"]   [\"tcp-echo.local\"]   3m20s   apply
prod        b                                        [\"b.local\"]          120m    /srv/rules/b.yaml
"
    );
    let dr = item(
        "DestinationRule",
        "default",
        "tcp-echo-destination",
        5,
        &serde_json::json!({"host": "tcp-echo.local"}),
    );
    assert_eq!(
        table(kind("dr"), &[dr], false, false, NOW),
        "NAME                   HOST             AGE\ntcp-echo-destination   tcp-echo.local   5s\n"
    );
    let gw = item("Gateway", "default", "gw", 5, &serde_json::json!({}));
    assert_eq!(
        table(kind("gw"), &[gw], false, false, NOW),
        "NAME   AGE\ngw     5s\n"
    );
    let se = item(
        "ServiceEntry",
        "default",
        "tcp-echo",
        5,
        &serde_json::json!({"hosts": ["tcp-echo.local"], "location": "MESH_INTERNAL", "resolution": "STATIC"}),
    );
    assert_eq!(
        table(kind("se"), &[se], false, false, NOW),
        "NAME       HOSTS                LOCATION        RESOLUTION   AGE\n\
         tcp-echo   [\"tcp-echo.local\"]   MESH_INTERNAL   STATIC       5s\n"
    );
    let mut we = item(
        "WorkloadEntry",
        "default",
        "v1",
        5,
        &serde_json::json!({"address": "10.0.0.1"}),
    );
    we.created_ms = None;
    assert_eq!(
        table(kind("we"), &[we], false, false, NOW),
        "NAME   AGE         ADDRESS\nv1     <unknown>   10.0.0.1\n",
        "Istio puts AGE before ADDRESS"
    );
}

#[test]
fn yaml_and_json_output_apply_back() {
    let items = [
        item(
            "Gateway",
            "default",
            "a",
            5,
            &serde_json::json!({"selector": {"istio": "ingressgateway"}}),
        ),
        item("Gateway", "default", "b", 5, &serde_json::json!({})),
    ];
    assert_eq!(
        yaml(&items[..1], true),
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: a\n  namespace: \
         default\nspec:\n  selector:\n    istio: ingressgateway\n"
    );
    let several = yaml(&items, false);
    assert_eq!(several.matches("---\n").count(), 2, "{several}");
    assert_eq!(applied::documents(&several).len(), 2, "{several}");
    let one: Json = serde_json::from_str(&json(&items[..1], true)).expect("JSON");
    assert_eq!(one, items[0].document);
    let list: Json = serde_json::from_str(&json(&items, false)).expect("JSON");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][1], items[1].document);
}

#[test]
fn values_that_look_like_other_types_stay_strings_in_yaml() {
    // Label values are strings; YAML would read these unquoted as others.
    let item = item(
        "WorkloadEntry",
        "default",
        "w",
        1,
        &serde_json::json!({"address": "::1", "labels": {"a": "true", "b": "1.0", "c": "~", "d": "0x1f", "e": "null", "f": "2020-01-01"}}),
    );
    let text = yaml(std::slice::from_ref(&item), true);
    let back = applied::documents(&text)[0].clone().expect("a document");
    assert_eq!(
        applied::normalize(back, "default").expect("normalizes"),
        item.document,
        "{text}"
    );
}

/// A temporary directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ts-ctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn inputs_are_files_directories_and_stdin() {
    let dir = Dir::new("inputs");
    for name in ["b.yaml", "a.yml", "notes.txt", ".hidden.yaml"] {
        std::fs::write(dir.0.join(name), format!("# {name}\n")).expect("write");
    }
    std::fs::create_dir(dir.0.join("sub")).expect("mkdir");
    std::fs::write(dir.0.join("sub/c.yaml"), "# c\n").expect("write");
    let files = read_inputs(
        &[dir.0.clone(), PathBuf::from("-")],
        &mut &b"kind: Gateway\n"[..],
    )
    .expect("readable");
    let names: Vec<String> = files
        .iter()
        .map(|f| f.path.rsplit('/').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        names,
        ["a.yml", "b.yaml", "<stdin>"],
        "YAML files directly in the directory, sorted, then stdin"
    );
    assert_eq!(files[2].text, "kind: Gateway\n");

    let errors = read_inputs(
        &[
            dir.0.join("missing.yaml"),
            dir.0.join("sub/c.yaml"),
            dir.0.join("sub2"),
        ],
        &mut &b""[..],
    )
    .expect_err("unreadable");
    assert_eq!(
        errors.len(),
        2,
        "every file that cannot be read: {errors:?}"
    );
    assert!(
        errors[0].contains("missing.yaml: cannot read the file: No such file"),
        "{errors:?}"
    );
    std::fs::create_dir(dir.0.join("empty")).expect("mkdir");
    let errors = read_inputs(&[dir.0.join("empty")], &mut &b""[..]).expect_err("empty");
    assert!(
        errors[0].ends_with("empty: no *.yaml or *.yml files in this directory"),
        "{errors:?}"
    );
}

#[test]
fn without_an_agent_commands_say_so_and_exit_3() {
    let dir = Dir::new("no-agent");
    let socket = dir.0.join("admin.sock");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = version(&socket, false, &mut out, &mut err).expect("writes");
    assert_eq!(code, EXIT_NO_AGENT);
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!("client: traffic-shift {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        String::from_utf8_lossy(&err),
        format!(
            "error: the agent is not running: no admin socket at {} (start it with `traffic-shift run`, or pass the --admin-socket it was started with)\n",
            socket.display()
        )
    );
    let code = version(&socket, true, &mut Vec::new(), &mut Vec::new()).expect("writes");
    assert_eq!(code, EXIT_OK, "--client needs no agent");

    let selector = Selector {
        kind: "pods".into(),
        name: None,
        namespace: Some("default".into()),
    };
    let mut err = Vec::new();
    let code = get(
        &socket,
        &selector,
        Output::Table,
        NOW,
        &mut Vec::new(),
        &mut err,
    )
    .expect("writes");
    assert_eq!(
        code, EXIT_REFUSED,
        "an unknown kind is refused before asking the agent"
    );
    assert!(
        String::from_utf8_lossy(&err)
            .starts_with("error: unknown resource type \"pods\": use one of virtualservice (vs), "),
        "{}",
        String::from_utf8_lossy(&err)
    );

    let mut err = Vec::new();
    let code = change(
        &socket,
        |files| Request::Apply {
            files,
            dry_run: false,
        },
        &[dir.0.join("missing.yaml")],
        &mut &b""[..],
        &mut Vec::new(),
        &mut err,
    )
    .expect("writes");
    assert_eq!(
        code, EXIT_REFUSED,
        "a file that cannot be read: nothing is sent"
    );
    assert!(
        String::from_utf8_lossy(&err).contains("missing.yaml: cannot read the file"),
        "{}",
        String::from_utf8_lossy(&err)
    );
}
