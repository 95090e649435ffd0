//! CLI contract checks that need no Docker: validate, schema.

use steward_e2e::*;

fn world() -> World {
    World::new("cli")
}

#[test]
fn validate_reports_every_error_with_file_line_column_and_field() {
    let w = world();
    w.write(
        "a.yaml",
        "apiVersion: steward.io/v1alpha1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: Bad Image\n  replicas: 3\n---\napiVersion: steward.io/v1alpha1\nkind: Service\nmetadata:\n  name: worker\nspec:\n  image: app:v1\n  replicas: 3\n  update:\n    delay: soon\n",
    );
    w.write(
        "b.yaml",
        "apiVersion: steward.io/v1alpha1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: app:v1\n  replicas: 1\n  replicas: 2\n",
    );
    let o = w.steward(&["validate", w.manifests().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "one line per error: {out}");
    assert!(
        lines[0].contains("a.yaml:6:") && lines[0].contains("spec.image: invalid image reference"),
        "{out}"
    );
    assert!(
        lines[1].contains("a.yaml:17:") && lines[1].contains("spec.update.delay: invalid duration"),
        "{out}"
    );
    assert!(
        lines[2].contains("b.yaml:8:") && lines[2].to_lowercase().contains("duplicate"),
        "{out}"
    );
}

#[test]
fn validate_accepts_the_shipped_manifests() {
    for dir in ["manifests/demo", "manifests/taxcollector"] {
        let w = world();
        let o = w.steward(&["validate", repo_root().join(dir).to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{dir}: {}", stdout(&o));
    }
}

#[test]
fn missing_secret_reference_is_an_error_and_secret_never_printed() {
    let w = world();
    w.write("s.yaml", "apiVersion: steward.io/v1alpha1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: app:v1\n  env:\n    - name: DB_PASSWORD\n      valueFrom:\n        env: STEWARD_E2E_UNSET_VAR\n");
    let o = w.steward(&["validate", "--resolve", w.manifests().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("s.yaml:8:") && stdout(&o).contains("STEWARD_E2E_UNSET_VAR"),
        "{}",
        stdout(&o)
    );

    w.write("s.yaml", "apiVersion: steward.io/v1alpha1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: app:v1\n  env:\n    - name: DB_PASSWORD\n      value: hunter2-inline\n");
    let o = w.steward(&["validate", w.manifests().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("looks like a secret"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("hunter2-inline") && !stderr(&o).contains("hunter2-inline"));
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let w = world();
    let o = w.steward(&["schema"]);
    assert!(o.status.success());
    let committed = std::fs::read_to_string(repo_root().join("manifests/schema/steward.schema.json")).unwrap();
    assert_eq!(stdout(&o), committed);
}
