#![allow(clippy::unwrap_used)]

use super::*;

const TWO: &str = "# comment\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
metadata: {name: a}\nspec: {hosts: [x]}\n---\n\n\
apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: b}\n\
spec:\n  host: x\n  bogus: 1\n";

#[test]
fn documents_are_split_with_their_first_line() {
    let docs = documents(TWO);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].0, 1);
    assert_eq!(docs[1].0, 7);
    assert_eq!(documents("---\n---\n").len(), 0);
}

#[test]
fn errors_name_file_absolute_line_and_field_path() {
    let mut input = Input::default();
    let mut errors = Vec::new();
    input.add_text(TWO, "f.yaml", &mut errors);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("f.yaml:13:3:"), "{}", errors[0]);
    assert!(
        errors[0].contains("spec.bogus") || errors[0].contains("spec: unknown field `bogus`"),
        "{}",
        errors[0]
    );
    assert_eq!(input.policy.virtual_services.len(), 1);
}

#[test]
fn other_kinds_are_skipped_unknown_istio_kinds_rejected() {
    let mut input = Input::default();
    let mut errors = Vec::new();
    input.add_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n",
        "k.yaml",
        &mut errors,
    );
    assert_eq!(input.skipped, ["k.yaml:1: Service"]);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("k.yaml:5: kind: Gateway"),
        "{}",
        errors[0]
    );
}

#[test]
fn the_example_config_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let input = load(&[dir]).unwrap();
    assert_eq!(input.files.len(), 3);
    let snapshot = input.to_snapshot().unwrap();
    assert!(snapshot.outbound("payment-service:8080").is_some());
    assert!(snapshot
        .cluster("outbound|8080|v2|payment-service.default.svc.cluster.local")
        .is_some());
}
