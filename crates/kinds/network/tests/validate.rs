//! Checks of a Network document: each error names `file:line:col` and the field.

use std::path::Path;

use steward_network::spec::NetworkDocument;
use steward_network::validate::validate;
use steward_spec::{typed, DocCtx, SpecError};

const FILE: &str = "networks/tax.yaml";

fn ctx() -> DocCtx<'static> {
    DocCtx {
        file: Path::new(FILE),
        line_offset: 0,
    }
}

fn doc(name: &str, spec: &str) -> String {
    format!("apiVersion: steward.io/v1alpha1\nkind: Network\nmetadata:\n  name: {name}\n  labels:\n    driver: x\nspec:\n{spec}")
}

fn errors(text: &str) -> Vec<String> {
    let d: NetworkDocument = match typed(&ctx(), text) {
        Ok(d) => d,
        Err(e) => return vec![e.to_string()],
    };
    let mut errors = Vec::new();
    validate(&ctx(), text, &d, &mut errors);
    errors.iter().map(SpecError::to_string).collect()
}

#[test]
fn defaults_are_an_overlay_not_attachable_not_internal_not_adopted() {
    let text = "apiVersion: steward.io/v1alpha1\nkind: Network\nmetadata: {name: tax-net}\n";
    let d: NetworkDocument = typed(&ctx(), text).unwrap();
    assert_eq!(d.spec.driver, "overlay");
    assert!(!d.spec.attachable && !d.spec.internal && !d.spec.adopt && d.spec.driver_opts.is_empty());
    assert_eq!(errors(text), Vec::<String>::new());
}

#[test]
fn a_full_document_is_valid() {
    let text = doc(
        "tax-net",
        "  driver: overlay\n  attachable: true\n  internal: false\n  driverOpts: {encrypted: \"\"}\n  adopt: false\n",
    );
    assert_eq!(errors(&text), Vec::<String>::new());
}

#[test]
fn an_unknown_key_is_an_error_at_its_line() {
    let text = doc("tax-net", "  attachabel: true\n");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("networks/tax.yaml:8:3: spec.attachabel: unknown field `attachabel`"),
        "{e:?}"
    );
}

#[test]
fn a_node_local_driver_is_refused_at_the_spec_key_not_the_label() {
    let e = errors(&doc("tax-net", "  driver: bridge\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("networks/tax.yaml:8:3: spec.driver: \"bridge\" makes node-local networks only"),
        "{e:?}"
    );
}

#[test]
fn a_predefined_name_is_refused() {
    let e = errors(&doc("ingress", "  driver: overlay\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("networks/tax.yaml:4:9: metadata.name: \"ingress\" is one of Docker's predefined networks"),
        "{e:?}"
    );
}

#[test]
fn reserved_labels_are_refused() {
    let text = "apiVersion: steward.io/v1alpha1\nkind: Network\nmetadata:\n  name: tax-net\n  labels:\n    steward.io/stack: x\n";
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("networks/tax.yaml:6:5: metadata.labels.steward.io/stack: "),
        "{e:?}"
    );
}
