//! The committed artifacts stay true: the JSON Schema matches the types, and the shipped
//! manifests are valid.

use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn committed_schema_is_current() {
    let path = repo().join("manifests/schema/steward.schema.json");
    let committed = std::fs::read_to_string(&path).expect("manifests/schema/steward.schema.json exists");
    let current = serde_json::to_string_pretty(&steward_manifest::json_schema()).unwrap() + "\n";
    assert!(
        committed == current,
        "manifests/schema/steward.schema.json is stale: run `make schema` and commit it"
    );
}

#[test]
fn shipped_manifests_are_valid() {
    for dir in ["manifests/demo", "manifests/taxcollector"] {
        let state = steward_manifest::load_paths(&[repo().join(dir)]).unwrap_or_else(|e| panic!("{dir}:\n{e}"));
        assert!(!state.services.is_empty(), "{dir} has services");
    }
    let tc = steward_manifest::load_paths(&[repo().join("manifests/taxcollector")]).unwrap();
    let web = tc.services.iter().find(|s| s.name() == "taxcollector-web").unwrap();
    assert_eq!(web.spec.replicas.get(), 10);
    assert_eq!(web.spec.image.as_str(), "taxcollector:v2.1.0");
    assert_eq!(web.spec.update.parallelism, 2);
    assert_eq!(web.spec.update.delay.get().as_secs(), 30);
    assert_eq!(web.spec.update.failure_action, steward_spec::FailureAction::Rollback);
    assert_eq!(web.spec.networks[0].name(), "taxcollector-net");
    let celery = tc.services.iter().find(|s| s.name() == "taxcollector-celery").unwrap();
    assert_eq!(celery.spec.replicas.get(), 6);
    // Celery's warm shutdown needs minutes, not Swarm's 10 s.
    assert_eq!(celery.spec.stop_grace_period.unwrap().get().as_secs(), 600);
}

#[test]
fn manifests_reference_the_schema() {
    for dir in ["manifests/demo", "manifests/taxcollector"] {
        for f in std::fs::read_dir(repo().join(dir)).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&f).unwrap();
                assert!(
                    text.starts_with("# yaml-language-server: $schema=../schema/steward.schema.json"),
                    "{} lacks the schema comment",
                    f.display()
                );
            }
        }
    }
}
