use std::path::PathBuf;

use steward_manifest::parse_sources;
use steward_spec::SpecErrors;

fn parse(text: &str) -> Result<steward_manifest::DesiredState, SpecErrors> {
    parse_sources(&[(PathBuf::from("m/app.yaml"), text.to_string())])
}

fn errors(text: &str) -> Vec<String> {
    parse(text)
        .expect_err("must be invalid")
        .0
        .iter()
        .map(|e| e.to_string())
        .collect()
}

const GOOD: &str = "\
apiVersion: steward.io/v1alpha1
kind: Service
metadata:
  name: web
spec:
  image: taxcollector:v2.1.0
  replicas: 10
  update:
    parallelism: 2
    delay: 30s
    failureAction: rollback
";

#[test]
fn good_document_parses_with_defaults() {
    let s = parse(GOOD).unwrap();
    assert_eq!(s.stack, "default");
    assert!(!s.prune);
    let web = &s.services[0];
    assert_eq!(web.name(), "web");
    assert_eq!(web.spec.replicas.get(), 10);
    assert_eq!(web.spec.update.parallelism, 2);
    assert_eq!(web.spec.update.delay.get().as_secs(), 30);
    assert_eq!(web.spec.update.monitor.get().as_secs(), 5, "Swarm's default monitor");
    assert_eq!(web.spec.rollback.parallelism, 1);
    assert_eq!(web.source.line, 4);
}

#[test]
fn unknown_key_is_an_error_with_position_and_path() {
    let e = errors(&GOOD.replace("  replicas: 10", "  replcas: 10"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("m/app.yaml:7:"), "{e:?}");
    assert!(e[0].contains("replcas"), "{e:?}");
}

#[test]
fn every_document_reports_its_error() {
    let bad = format!(
        "{}---\n{}---\n{}",
        GOOD.replace("replicas: 10", "replicas: -1"),
        GOOD.replace("name: web", "name: api")
            .replace("delay: 30s", "delay: soon"),
        GOOD.replace("name: web", "name: worker")
            .replace("taxcollector:v2.1.0", "Tax Collector")
    );
    let e = errors(&bad);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(
        e[0].starts_with("m/app.yaml:7:") && e[0].contains("spec.replicas") && e[0].contains("between 0 and 1000"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("m/app.yaml:22:") && e[1].contains("spec.update.delay"),
        "{e:#?}"
    );
    assert!(
        e[2].starts_with("m/app.yaml:30:") && e[2].contains("spec.image"),
        "{e:#?}"
    );
}

#[test]
fn wrong_type_and_duplicate_key() {
    let e = errors(&GOOD.replace("replicas: 10", "replicas: ten"));
    assert!(e[0].contains("spec.replicas"), "{e:?}");
    let e = errors(&GOOD.replace("  replicas: 10", "  replicas: 10\n  replicas: 11"));
    assert!(
        e[0].starts_with("m/app.yaml:8:") && e[0].to_lowercase().contains("duplicate"),
        "{e:?}"
    );
}

#[test]
fn duplicate_names_across_documents() {
    let e = errors(&format!("{GOOD}---\n{GOOD}"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("m/app.yaml:16:") && e[0].contains("duplicate Service name \"web\""),
        "{e:?}"
    );
}

#[test]
fn absurd_replicas_and_bad_kind_and_api() {
    assert!(errors(&GOOD.replace("replicas: 10", "replicas: 100000"))[0].contains("between 0 and 1000"));
    assert!(errors(&GOOD.replace("kind: Service", "kind: Servce"))[0].contains("unknown kind \"Servce\""));
    assert!(errors(&GOOD.replace("steward.io/v1alpha1", "v1"))[0].contains("apiVersion"));
}

#[test]
fn inline_secret_is_refused_and_env_checked() {
    let doc = format!("{GOOD}  env:\n    - name: DB_PASSWORD\n      value: hunter2\n    - name: MODE\n");
    let e = errors(&doc);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].starts_with("m/app.yaml:13:") && e[0].contains("looks like a secret"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("m/app.yaml:15:") && e[1].contains("one of value or valueFrom"),
        "{e:#?}"
    );
}

#[test]
fn stack_document_sets_owner_and_prune() {
    let s = parse(&format!(
        "apiVersion: steward.io/v1alpha1\nkind: Stack\nmetadata:\n  name: tc\nspec:\n  prune: true\n---\n{GOOD}"
    ))
    .unwrap();
    assert_eq!(s.stack, "tc");
    assert!(s.prune);
}

#[test]
fn reserved_label_is_refused() {
    let e = errors(&GOOD.replace("  name: web", "  name: web\n  labels:\n    steward.io/stack: x"));
    assert!(e[0].starts_with("m/app.yaml:6:") && e[0].contains("reserved"), "{e:?}");
}

const NETWORK: &str = "\
apiVersion: steward.io/v1alpha1
kind: Network
metadata: {name: tax-net, labels: {team: tax}}
spec:
  attachable: true
";

const VOLUME: &str = "\
apiVersion: steward.io/v1alpha1
kind: Volume
metadata: {name: media}
spec:
  driverOpts: {type: nfs, o: \"addr=10.0.0.1,rw\", device: \":/media\"}
";

#[test]
fn networks_and_volumes_are_carried_sorted_with_defaults() {
    let other = NETWORK
        .replace("tax-net", "a-net")
        .replace("  attachable: true\n", "  internal: true\n");
    let s = parse(&format!("{GOOD}---\n{NETWORK}---\n{other}---\n{VOLUME}")).unwrap();
    let names: Vec<&str> = s.networks.iter().map(|n| n.name()).collect();
    assert_eq!(names, ["a-net", "tax-net"]);
    assert_eq!(s.networks[1].spec.driver, "overlay");
    assert!(s.networks[1].spec.attachable && !s.networks[1].spec.internal);
    assert_eq!(s.networks[1].source.line, 15);
    assert_eq!(s.volumes[0].name(), "media");
    assert_eq!(s.volumes[0].spec.driver, "local");
    assert_eq!(s.volumes[0].spec.driver_opts["type"], "nfs");
}

#[test]
fn duplicate_network_and_volume_names_are_errors_at_the_second() {
    let e = errors(&format!("{NETWORK}---\n{NETWORK}---\n{VOLUME}---\n{VOLUME}"));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("m/app.yaml:9:")
            && e[0].contains("duplicate Network name \"tax-net\" (first defined at m/app.yaml:3)"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("m/app.yaml:21:") && e[1].contains("duplicate Volume name \"media\""),
        "{e:?}"
    );
}

#[test]
fn a_service_may_name_networks_and_volumes_without_documents() {
    let svc = format!(
        "{GOOD}  networks: [existing-net]\n  mounts:\n    - {{type: volume, source: scratch, target: /scratch}}\n"
    );
    let s = parse(&svc).unwrap();
    assert!(s.networks.is_empty() && s.volumes.is_empty());
}

#[test]
fn an_invalid_network_document_is_reported_with_its_position() {
    let e = errors(&format!(
        "{GOOD}---\n{}",
        NETWORK.replace("  attachable: true", "  driver: host")
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("m/app.yaml:17:3: spec.driver:"), "{e:?}");
}
