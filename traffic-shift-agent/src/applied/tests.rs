use std::{fmt::Write as _, io::Write as _, os::unix::fs::PermissionsExt as _};

use super::*;

fn rule(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rules/tcp-echo")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn file(path: &str, text: &str) -> FileText {
    FileText {
        path: path.into(),
        text: text.into(),
    }
}

/// The shipped tcp-echo rules, as `apply -f rules/tcp-echo` sends them.
fn tcp_echo() -> Vec<FileText> {
    [
        "destination-rule.yaml",
        "gateway.yaml",
        "service-entry.yaml",
        "virtual-service.yaml",
    ]
    .into_iter()
    .map(|name| file(name, &rule(name)))
    .collect()
}

fn nobody(_: &Key) -> Option<String> {
    None
}

const T0: u64 = 1_795_000_000_000;

fn actions(plan: &Plan) -> Vec<String> {
    plan.changes
        .iter()
        .map(|c| format!("{} {}", display_name(&c.kind, &c.name), c.action.as_str()))
        .collect()
}

fn applied(files: &[FileText]) -> Entries {
    plan_apply(&Entries::new(), files, nobody, T0)
        .expect("valid")
        .entries
}

#[test]
fn kinds_by_istio_name_kubectl_names_and_short_names() {
    for (text, kind) in [
        ("VirtualService", "VirtualService"),
        ("virtualservice", "VirtualService"),
        ("virtualservices", "VirtualService"),
        ("vs", "VirtualService"),
        ("VS", "VirtualService"),
        ("virtualservices.networking.istio.io", "VirtualService"),
        ("dr", "DestinationRule"),
        ("destinationrules", "DestinationRule"),
        ("gw", "Gateway"),
        ("gateway", "Gateway"),
        ("se", "ServiceEntry"),
        ("serviceentries", "ServiceEntry"),
        ("ServiceEntry", "ServiceEntry"),
        ("we", "WorkloadEntry"),
        ("workloadentries", "WorkloadEntry"),
        ("ro", "Rollout"),
        ("Rollouts", "Rollout"),
        ("rollouts.rollouts.traffic-shift.io", "Rollout"),
        ("httproute", "HTTPRoute"),
        ("HTTPRoutes", "HTTPRoute"),
        ("grpcroute", "GRPCRoute"),
        ("tcproute", "TCPRoute"),
        ("gtw", "Gateway.gateway.networking.k8s.io"),
        ("secrets", "Secret"),
        (
            "gateways.gateway.networking.k8s.io",
            "Gateway.gateway.networking.k8s.io",
        ),
    ] {
        assert_eq!(
            parse_kind(text).map(|k| k.kind),
            Ok(kind),
            "{text:?} names {kind}"
        );
    }
    let err = parse_kind("pods").expect_err("not an Istio kind");
    assert_eq!(
        err.to_string(),
        "unknown resource type \"pods\": use one of virtualservice (vs), destinationrule (dr), \
         gateway (gw), serviceentry (se), workloadentry (we), rollout (ro), httproute, grpcroute, tcproute, tlsroute, \
         gateway.gateway.networking.k8s.io (gtw), secret"
    );
    assert!(parse_kind("v").is_err(), "no prefixes");
    assert!(
        parse_kind("rollouts.networking.istio.io").is_err()
            && parse_kind("vs.rollouts.traffic-shift.io").is_err(),
        "each kind with its own group"
    );
    // Every kind config accepts has names.
    for kind in config::KINDS {
        assert!(names_of(kind).is_some(), "{kind} has CLI names");
    }
    assert_eq!(
        display_name("ServiceEntry", "tcp-echo"),
        "serviceentry/tcp-echo"
    );
}

#[test]
fn documents_are_stored_normalized() {
    let text = "\
base: &base
  hosts: [a.local]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: x
  uid: 1234
  resourceVersion: \"99\"
  creationTimestamp: \"2020-01-01T00:00:00Z\"
  labels: {app: x}
status: {conditions: []}
spec:
  <<: {hosts: [a.local]}
  resolution: NONE
";
    let document = documents(text)[1].clone().expect("document 2");
    let stored = normalize(document, "default").expect("normalizes");
    assert_eq!(
        stored,
        serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": "x", "namespace": "default", "labels": {"app": "x"}},
            "spec": {"hosts": ["a.local"], "resolution": "NONE"},
        }),
        "merge keys expanded, the namespace written out, what Kubernetes sets removed"
    );
    let numbered = documents("a: 1\n---\n---\nb: 2\n");
    assert_eq!(numbered.len(), 3, "empty documents count");
    assert!(numbered[1].is_none(), "{numbered:?}");
}

#[test]
fn a_new_document_is_stored_as_the_json_tree_would_store_it() {
    // Keys out of order at every depth, merge keys, what Kubernetes sets, a
    // tag, numbers of each kind, escapes; then the documents that take the
    // JSON tree's way (a key that is not a string, not a mapping).
    let text = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: x, uid: 1234, generation: 3, labels: {z: \"1\", a: \"q\\\"\\n\"}}
status: {conditions: []}
spec:
  <<: {hosts: [a.local]}
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  weights: [-1, 0.5, 1e3, .nan, 18446744073709551615]
  tagged: !Thing {b: 1, a: [2]}
  resolution: NONE
---
kind: VirtualService
metadata: {name: y}
spec: {1: one, true: yes}
---
kind: VirtualService
metadata: y
---
- not a mapping
";
    for (i, document) in documents(text).into_iter().enumerate() {
        let document = document.expect("a document");
        let tree =
            normalize(document.clone(), "ns").map(|json| Document::new(&with_timestamp(json, T0)));
        let direct = normalize_new(document, "ns", T0);
        match (tree, direct) {
            (Ok(tree), Ok(direct)) => assert_eq!(direct, tree, "document {}", i + 1),
            (tree, direct) => assert_eq!(
                format!("{direct:?}"),
                format!("{tree:?}"),
                "document {}",
                i + 1
            ),
        }
    }
}

#[test]
fn apply_creates_configures_and_leaves_unchanged() {
    let first = plan_apply(&Entries::new(), &tcp_echo(), nobody, T0).expect("valid");
    assert_eq!(
        actions(&first),
        [
            "destinationrule/tcp-echo-destination created",
            "gateway/tcp-echo-gateway created",
            "serviceentry/tcp-echo created",
            "virtualservice/tcp-echo created",
        ]
    );
    assert!(first.changes_anything());
    let vs_key = Key {
        kind: "VirtualService",
        namespace: "default".into(),
        name: "tcp-echo".into(),
    };
    assert_eq!(
        first.entries[&vs_key].document.to_json().expect("held")["metadata"]["creationTimestamp"],
        "2026-11-18T11:06:40Z"
    );

    let again = plan_apply(&first.entries, &tcp_echo(), nobody, T0 + 5000).expect("valid");
    assert_eq!(
        actions(&again)
            .iter()
            .filter(|a| a.ends_with(" unchanged"))
            .count(),
        4,
        "{:?}",
        actions(&again)
    );
    assert!(!again.changes_anything());

    let shifted = plan_apply(
        &first.entries,
        &[file("vs-20.yaml", &rule("examples/vs-20-v2.yaml"))],
        nobody,
        T0 + 9000,
    )
    .expect("valid");
    assert_eq!(actions(&shifted), ["virtualservice/tcp-echo configured"]);
    assert_eq!(shifted.entries.len(), 4, "the others stay");
    let vs = &shifted.entries[&vs_key];
    assert_eq!(vs.created_ms, T0, "configured keeps the creation time");
    assert_eq!(
        vs.document.to_json().expect("held")["spec"]["tcp"][0]["route"][1]["weight"],
        20,
        "the new document is stored"
    );
}

#[test]
fn what_get_prints_applies_back_as_unchanged() {
    let entries = applied(&tcp_echo());
    // `get -o yaml` of everything, and kubectl's output with what the API server adds.
    let items: Vec<String> = entries
        .values()
        .map(|e| serde_yaml_ng::to_string(&e.document.to_json().expect("held")).expect("YAML"))
        .collect();
    let mut kubectl = items[3].replace(
        "metadata:\n",
        "metadata:\n  uid: 6f1c\n  resourceVersion: '4711'\n  generation: 3\n",
    );
    kubectl.push_str("status: {}\n");
    let files = [
        file("<stdin>", &format!("---\n{}", items.join("---\n"))),
        file("kubectl.yaml", &kubectl),
    ];
    // The VirtualService twice: once is enough for this test.
    let plan = plan_apply(&entries, &files[..1], nobody, T0 + 1).expect("valid");
    assert!(
        plan.changes.iter().all(|c| c.action == Action::Unchanged),
        "{:?}",
        actions(&plan)
    );
    let plan = plan_apply(&entries, &files[1..], nobody, T0 + 1).expect("valid");
    assert_eq!(actions(&plan), ["virtualservice/tcp-echo unchanged"]);
}

#[test]
fn apply_refuses_with_every_error_of_every_file() {
    let vs = rule("examples/vs-20-v2.yaml");
    let files = vec![
        file("good.yaml", &rule("service-entry.yaml")),
        file(
            "vs.yaml",
            &vs.replace("weight: 20", "weight: -20")
                .replace("subset: v1", "subset: V_1"),
        ),
        file(
            "gw.yaml",
            &rule("gateway.yaml").replace("number: 31400", "number: 0"),
        ),
        file("syntax.yaml", "kind: [\n"),
    ];
    let errors = plan_apply(&Entries::new(), &files, nobody, T0).expect_err("refused");
    assert_eq!(errors.len(), 4, "{errors:#?}");
    for (error, start) in errors.iter().zip([
        "vs.yaml: document 1 (VirtualService default/tcp-echo): spec.tcp[0].route[0].destination.subset: subset name is invalid: V_1 (line ",
        "vs.yaml: document 1 (VirtualService default/tcp-echo): spec.tcp[0].route[1].weight: weight -20 < 0 (line ",
        "gw.yaml: document 1 (Gateway default/tcp-echo-gateway): spec.servers[0].port.number: port number 0 must be in the range 1..65535 (line ",
        "syntax.yaml: document 1: invalid YAML: ",
    ]) {
        assert!(error.starts_with(start), "want {start:?}..., got {error:?}");
    }
}

#[test]
fn apply_refuses_a_resource_given_twice_or_owned_by_the_rules_directory() {
    let vs = rule("virtual-service.yaml");
    let errors = plan_apply(
        &Entries::new(),
        &[file("a.yaml", &vs), file("b.yaml", &vs)],
        nobody,
        T0,
    )
    .expect_err("twice");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(
            "b.yaml: document 1 (VirtualService default/tcp-echo): metadata.name: VirtualService default/tcp-echo is given twice, also in a.yaml document 1: apply one of them (line "
        ),
        "{errors:?}"
    );

    let owner = |key: &Key| (key.kind == "VirtualService").then(|| "/srv/rules/vs.yaml".to_owned());
    let errors = plan_apply(&Entries::new(), &[file("vs.yaml", &vs)], owner, T0)
        .expect_err("owned by the directory");
    assert_eq!(
        errors,
        [
            "vs.yaml: document 1 (VirtualService default/tcp-echo): VirtualService default/tcp-echo \
          is defined in the rules directory (/srv/rules/vs.yaml): change it there, or remove it \
          from there to manage it with apply (line 2)"
        ]
    );

    let errors = plan_apply(
        &Entries::new(),
        &[file("empty.yaml", "# nothing\n")],
        nobody,
        T0,
    )
    .expect_err("nothing");
    assert_eq!(
        errors,
        ["no objects passed to apply: the files hold no Istio resource"]
    );
}

#[test]
fn delete_removes_applied_resources_and_refuses_others() {
    let entries = applied(&tcp_echo());
    let plan = plan_delete(
        &entries,
        &[file("vs.yaml", &rule("examples/vs-all-v2.yaml"))],
        nobody,
        false,
    )
    .expect("deleted");
    assert_eq!(actions(&plan), ["virtualservice/tcp-echo deleted"]);
    assert_eq!(plan.entries.len(), 3);

    // The spec is not read: a document with kind and name is enough.
    let other = "kind: VirtualService\nmetadata: {name: other, namespace: prod}\n";
    let errors =
        plan_delete(&entries, &[file("other.yaml", other)], nobody, false).expect_err("not found");
    assert_eq!(
        errors,
        [
            "other.yaml: document 1: (VirtualService prod/other): not found: it is not applied \
          (`traffic-shift get vs -n prod` lists what is)"
        ]
    );
    let plan = plan_delete(&entries, &[file("other.yaml", other)], nobody, true)
        .expect("--ignore-not-found");
    assert!(plan.changes.is_empty() && plan.entries.len() == 4);

    let owner = |key: &Key| (key.kind == "Gateway").then(|| "/srv/rules/gw.yaml".to_owned());
    let errors = plan_delete(
        &entries,
        &[
            file("gw.yaml", &rule("gateway.yaml")),
            file("bad.yaml", "metadata: {name: x}\n---\nkind: [\n"),
        ],
        owner,
        false,
    )
    .expect_err("refused");
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_eq!(
        errors[0],
        "gw.yaml: document 1: (Gateway default/tcp-echo-gateway): it is defined in the rules \
         directory (/srv/rules/gw.yaml), not applied: remove it there"
    );
    assert!(
        errors[1].starts_with("bad.yaml: document 1: kind (one of ServiceEntry, DestinationRule"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].starts_with("bad.yaml: document 2: invalid YAML: "),
        "{}",
        errors[2]
    );
}

/// A fresh state directory, removed on drop.
pub(crate) struct StateDir(pub(crate) PathBuf);

impl StateDir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ts-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_change_written_in_the_background_is_undone_by_rewrite() {
    let dir = StateDir::new("background");
    let mut store = Store::open(&dir.0).expect("a new state directory");
    let entries = applied(&tcp_echo());
    store.replace(entries.clone()).expect("persist");
    let path = dir.0.join("applied.yaml");
    let before = std::fs::read_to_string(&path).expect("state file");
    // A change written (as an apply does while it compiles), then refused.
    store
        .write_in_background(&Entries::new())
        .wait()
        .expect("written");
    assert_eq!(
        std::fs::read_to_string(&path).expect("state file"),
        render(&Entries::new()).expect("nothing to read"),
        "the change is on disk once waited for"
    );
    assert_eq!(store.entries().len(), entries.len(), "not adopted");
    store.rewrite().expect("put back");
    assert_eq!(std::fs::read_to_string(&path).expect("state file"), before);
    // A directory that is gone: the write says so.
    std::fs::remove_dir_all(&dir.0).expect("remove");
    let err = store
        .write_in_background(&entries)
        .wait()
        .expect_err("no directory");
    assert!(
        err.to_string().starts_with("cannot write the state file"),
        "{err}"
    );
}

/// Whether an entry's document is read from the state file, not held.
fn in_file(entry: &Entry) -> bool {
    matches!(entry.document.0, Text::InFile { .. })
}

#[test]
fn documents_in_the_state_file_are_read_from_it_not_kept() {
    let dir = StateDir::new("in-file");
    let mut store = Store::open(&dir.0).expect("a new state directory");
    let entries = applied(&tcp_echo());
    assert!(!entries.values().any(in_file), "planned: held");
    store.replace(entries.clone()).expect("persist");
    for (key, entry) in &entries {
        let stored = &store.entries()[key];
        assert!(in_file(stored), "{key}: in the file once written");
        assert_eq!(
            stored.document.to_json().expect("reads back"),
            entry.document.to_json().expect("held"),
            "{key}"
        );
    }
    // Applied again: compared with the file's documents, unchanged.
    let again = plan_apply(store.entries(), &tcp_echo(), nobody, T0 + 5000).expect("valid");
    assert!(!again.changes_anything(), "{:?}", actions(&again));
    // A change writes the next file from the documents of this one.
    let shifted = plan_apply(
        store.entries(),
        &[file("vs-20.yaml", &rule("examples/vs-20-v2.yaml"))],
        nobody,
        T0 + 9000,
    )
    .expect("valid");
    let before = std::fs::read_to_string(store.path()).expect("state file");
    let old = store.replace(shifted.entries.clone()).expect("persist");
    let text = std::fs::read_to_string(store.path()).expect("state file");
    let held: Entries = shifted
        .entries
        .iter()
        .map(|(k, e)| {
            let json = e.document.to_json().expect("reads");
            let mut e = e.clone();
            e.document = Document::new(&json);
            (k.clone(), e)
        })
        .collect();
    assert_eq!(text, render(&held).expect("held"), "the same text");
    assert!(text.contains("\"weight\":20"), "the new document: {text}");
    // The set before reads from the file it was in, replaced since (a set
    // put back after the kernel refused a change is written from it).
    assert_eq!(render(&old).expect("the replaced file"), before);
    // And at start: the documents of the file the agent wrote stay there.
    drop((store, old));
    let store = Store::open(&dir.0).expect("reopen");
    assert!(
        store.entries().values().all(in_file),
        "read at start: in the file"
    );
    assert_eq!(render(store.entries()).expect("reads"), text);
}

#[test]
fn a_state_file_changed_in_place_is_not_read_as_the_documents() {
    let dir = StateDir::new("in-place");
    let mut store = Store::open(&dir.0).expect("a new state directory");
    store.replace(applied(&tcp_echo())).expect("persist");
    // Edited in place while the agent runs (not replaced): its bytes moved.
    let path = dir.0.join("applied.yaml");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    file.write_all(b"# a comment\n").expect("append");
    drop(file);
    let vs = store.entries().values().last().expect("the VirtualService");
    let err = vs.document.to_json().expect_err("changed");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot read an applied resource back from the state file {}",
            path.display()
        )) && message.contains("changed in place")
            && message.contains("restart the agent"),
        "{message}"
    );
    // An apply that compares with it is refused with that reason, and the
    // next file cannot be written from it.
    let errors = plan_apply(store.entries(), &tcp_echo(), nobody, T0).expect_err("refused");
    assert!(
        errors.iter().all(|e| e.contains("changed in place")),
        "{errors:?}"
    );
    let err = store.rewrite().expect_err("not written");
    assert!(err.to_string().contains("changed in place"), "{err}");
}

#[test]
fn the_applied_set_persists_and_reads_back_the_same() {
    let dir = StateDir::new("persist");
    let mut store = Store::open(&dir.0).expect("a new state directory");
    assert!(store.entries().is_empty(), "no state file: nothing applied");
    let entries = applied(&tcp_echo());
    store.replace(entries.clone()).expect("persist");
    let path = dir.0.join("applied.yaml");
    assert_eq!(store.path(), path);
    let mode = std::fs::metadata(&path)
        .expect("state file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "root only: {mode:o}");
    let names: Vec<String> = std::fs::read_dir(&dir.0)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains(".tmp")),
        "no temporary file left: {names:?}"
    );
    // Messages about applied resources now name the state file.
    let vs = store.entries().values().last().expect("the VirtualService");
    assert_eq!(*vs.resource.source().file, *path);
    assert_eq!(
        vs.resource.source().document,
        4,
        "the header is a comment, not a document"
    );
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.starts_with("# Istio resources applied with `traffic-shift apply`"));
    assert!(
        config::parse_file_all(&path, &text).is_ok(),
        "the state file is a rules file"
    );
    drop(store);

    let store = Store::open(&dir.0).expect("reopen");
    assert_eq!(store.entries().len(), 4);
    for (key, entry) in &entries {
        let back = &store.entries()[key];
        assert_eq!(back.document, entry.document, "{key} reads back the same");
        assert_eq!(
            back.created_ms, T0,
            "{key} keeps its creation time (to the second)"
        );
    }
    // What `replace` read back resolves with nothing else, as the agent does at start.
    let (model, _) = config::resolve_all(&[store.rules_file()]);
    assert_eq!(
        model.expect("resolves").routes.len(),
        2,
        "mesh and gateway routes"
    );
}

#[test]
fn one_agent_per_state_directory() {
    let dir = StateDir::new("lock");
    let first = Store::open(&dir.0).expect("first");
    let err = Store::open(&dir.0).expect_err("locked");
    assert_eq!(
        err.to_string(),
        format!(
            "another agent uses the state directory {}; stop it, or give this one another --state-dir",
            dir.0.display()
        )
    );
    drop(first);
    Store::open(&dir.0).expect("free again");
}

#[test]
fn a_corrupt_state_file_stops_the_start_with_every_error() {
    let dir = StateDir::new("corrupt");
    std::fs::create_dir_all(&dir.0).expect("dir");
    let path = dir.0.join("applied.yaml");
    let mut text = render(&applied(&tcp_echo())).expect("held");
    // A half-written file (as a disk fault or a hand edit could leave it).
    text.truncate(text.len() - 40);
    text.push_str("\n  tcp: [\n");
    std::fs::write(&path, &text).expect("write");
    let err = Store::open(&dir.0).expect_err("corrupt");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "the state file {} cannot be used, so the agent does not start (it would drop the \
             resources applied with `traffic-shift apply`): {}: document 4",
            path.display(),
            path.display()
        )),
        "{message}"
    );
    assert!(
        message.ends_with("or move it away to start without those resources"),
        "{message}"
    );

    // Valid YAML, an invalid resource: every error listed.
    std::fs::write(
        &path,
        rule("examples/vs-20-v2.yaml")
            .replace("weight: 20", "weight: -20")
            .replace("subset: v1", "subset: V_1"),
    )
    .expect("write");
    let StateError::Corrupt { errors, .. } = Store::open(&dir.0).expect_err("invalid") else {
        panic!("an invalid resource is a corrupt state file");
    };
    assert_eq!(errors.len(), 2, "{errors:?}");

    std::fs::write(&path, [0xff, 0xfe]).expect("write");
    let err = Store::open(&dir.0).expect_err("not UTF-8");
    assert!(err.to_string().contains("not UTF-8"), "{err}");
}

#[test]
fn write_atomic_replaces_the_whole_file() {
    let dir = StateDir::new("atomic");
    std::fs::create_dir_all(&dir.0).expect("dir");
    let path = dir.0.join("f.yaml");
    write_atomic(&path, "old: 1\n").expect("write");
    // A temporary file left by a crash is overwritten, not appended to.
    std::fs::write(dir.0.join("f.yaml.tmp"), "garbage garbage garbage\n").expect("write");
    write_atomic(&path, "new: 2\n").expect("write");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "new: 2\n");
    assert!(!dir.0.join("f.yaml.tmp").exists());
}

#[test]
fn timestamps_as_kubernetes_writes_them() {
    for (ms, text) in [
        (0, "1970-01-01T00:00:00Z"),
        (T0, "2026-11-18T11:06:40Z"),
        (951_868_799_000, "2000-02-29T23:59:59Z"),
        (4_102_444_800_000, "2100-01-01T00:00:00Z"),
    ] {
        assert_eq!(format_timestamp(ms), text);
        assert_eq!(parse_timestamp(text), Some(ms), "{text}");
    }
    assert_eq!(
        format_timestamp(951_868_799_999),
        "2000-02-29T23:59:59Z",
        "to the second"
    );
    assert_eq!(
        parse_timestamp("2000-02-29T23:59:59.999Z"),
        Some(951_868_799_999)
    );
    for bad in [
        "",
        "2020-01-01",
        "2020-13-01T00:00:00Z",
        "2020-01-01T00:00:00+01:00",
    ] {
        assert_eq!(parse_timestamp(bad), None, "{bad:?}");
    }
}

/// 12 000 services applied (in files of 4 MiB at most, as `apply` takes them) make a
/// state file over 4 MiB (10 000 with their VirtualServices do too, as the bench
/// applies them): it reads back at the next start all the same.
#[test]
fn a_state_file_over_the_rules_file_limit_reads_back() {
    // Few documents, each made big by an annotation, so the case costs
    // little time in a debug build (12 000 plain services took minutes).
    let note = "x".repeat(4000);
    let services = |from: usize, to: usize| {
        let mut text = String::new();
        for i in from..to {
            let _ = write!(
                text,
                "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc-{i:05}, annotations: {{note: {note}}}}}\n\
                 spec: {{hosts: [svc-{i:05}.bench.local], addresses: [127.101.{}.{}], \
                 ports: [{{number: 9000, name: tcp, protocol: TCP}}], resolution: STATIC, \
                 endpoints: [{{address: 127.0.0.1, ports: {{tcp: 19001}}}}]}}\n",
                i / 250,
                i % 250 + 1
            );
        }
        text
    };
    let files: Vec<FileText> = (0..12)
        .map(|f| {
            file(
                &format!("services-{f}.yaml"),
                &services(f * 100, (f + 1) * 100),
            )
        })
        .collect();
    assert!(files.iter().all(|f| f.text.len() < config::MAX_FILE_BYTES));
    let entries = applied(&files);
    let dir = StateDir::new("big");
    let mut store = Store::open(&dir.0).expect("a new state directory");
    store.replace(entries).expect("persist");
    let size = std::fs::metadata(store.path()).expect("state file").len();
    assert!(
        size > config::MAX_FILE_BYTES as u64,
        "{size} bytes: the case this test is about"
    );
    drop(store);
    let store = Store::open(&dir.0).expect("the agent starts with it");
    assert_eq!(store.entries().len(), 1_200);
}

/// `apply` counts `metadata.generation` as the API server does: 1 when
/// created (not stored), one more at each change, none when unchanged; the
/// resource (status's `observedGeneration`) and the state file have it.
#[test]
fn a_change_bumps_the_generation_and_the_state_file_keeps_it() {
    let route = |backend: &str| {
        file(
            "route.yaml",
            &format!(
                "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{name: {backend}, port: 80}}]
"
            ),
        )
    };
    // The stored document's, and the resource's (what status observes; the
    // end-to-end HTTPRouteObservedGenerationBump reads it through `get`).
    let generation = |entries: &Entries| {
        let entry = entries.values().next().expect("the route");
        let resource = format!("{:?}", entry.resource);
        let stored = generation_of(&entry.document.to_json().expect("reads"));
        (stored, resource.contains(&format!("generation: {stored},")))
    };
    let mut entries = applied(&[route("web-v1")]);
    assert_eq!(generation(&entries), (1, true));
    for (backend, action, want) in [
        ("web-v2", "configured", 2),
        ("web-v2", "unchanged", 2),
        ("web-v1", "configured", 3),
    ] {
        let plan = plan_apply(&entries, &[route(backend)], nobody, T0).expect("valid");
        assert_eq!(actions(&plan), [format!("httproute/web {action}")]);
        if action == "configured" {
            entries = plan.entries;
        }
        assert_eq!(generation(&entries), (want, true), "{backend} {action}");
    }
    let dir = StateDir::new("generation");
    let mut store = Store::open(&dir.0).expect("a new state directory");
    store.replace(entries).expect("persist");
    drop(store);
    let store = Store::open(&dir.0).expect("reopen");
    assert_eq!(generation(store.entries()), (3, true), "read back");
}
