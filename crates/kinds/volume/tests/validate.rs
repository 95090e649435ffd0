//! Checks of a Volume document: each error names `file:line:col` and the field.

use std::path::Path;

use steward_spec::{typed, DocCtx, SpecError};
use steward_volume::spec::VolumeDocument;
use steward_volume::validate::validate;

const FILE: &str = "volumes/media.yaml";

fn ctx() -> DocCtx<'static> {
    DocCtx {
        file: Path::new(FILE),
        line_offset: 0,
    }
}

fn errors(text: &str) -> Vec<String> {
    let d: VolumeDocument = match typed(&ctx(), text) {
        Ok(d) => d,
        Err(e) => return vec![e.to_string()],
    };
    let mut errors = Vec::new();
    validate(&ctx(), text, &d, &mut errors);
    errors.iter().map(SpecError::to_string).collect()
}

#[test]
fn defaults_are_the_local_driver_without_options() {
    let text = "apiVersion: steward.io/v1alpha1\nkind: Volume\nmetadata: {name: media}\n";
    let d: VolumeDocument = typed(&ctx(), text).unwrap();
    assert_eq!(d.spec.driver, "local");
    assert!(d.spec.driver_opts.is_empty());
    assert_eq!(errors(text), Vec::<String>::new());
}

#[test]
fn an_nfs_volume_is_valid() {
    let text = "apiVersion: steward.io/v1alpha1\nkind: Volume\nmetadata: {name: media, labels: {team: tax}}\nspec:\n  \
                driver: local\n  driverOpts: {type: nfs, o: \"addr=10.0.0.1,rw\", device: \":/media\"}\n";
    assert_eq!(errors(text), Vec::<String>::new());
}

#[test]
fn an_option_the_local_driver_does_not_take_is_an_error_at_its_line() {
    let text = "apiVersion: steward.io/v1alpha1\nkind: Volume\nmetadata: {name: media}\nspec:\n  driverOpts:\n    \
                type: nfs\n    addr: 10.0.0.1\n";
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("volumes/media.yaml:7:5: spec.driverOpts.addr: the local driver takes only"),
        "{e:?}"
    );
}

#[test]
fn other_drivers_take_any_option() {
    let text =
        "apiVersion: steward.io/v1alpha1\nkind: Volume\nmetadata: {name: media}\nspec:\n  driver: rexray/ebs\n  \
                driverOpts: {size: \"20\", volumetype: gp2}\n";
    assert_eq!(errors(text), Vec::<String>::new());
}

#[test]
fn a_one_character_name_and_an_unknown_key_are_refused() {
    let e = errors("apiVersion: steward.io/v1alpha1\nkind: Volume\nmetadata: {name: m}\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("volumes/media.yaml:3:18: metadata.name: invalid volume name \"m\""),
        "{e:?}"
    );
    let e = errors("apiVersion: steward.io/v1alpha1\nkind: Volume\nmetadata: {name: media}\nspec:\n  drvier: local\n");
    assert!(
        e[0].starts_with("volumes/media.yaml:5:3: spec.drvier: unknown field `drvier`"),
        "{e:?}"
    );
}
