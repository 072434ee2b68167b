//! The committed CRD YAML must be exactly what the types generate.

#[test]
fn committed_yaml_matches_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("yaml");
    let rendered = ossature_crds::rendered();
    for (name, text) in &rendered {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            committed == *text,
            "crds/yaml/{name} is out of date; run `cargo run -p ossature-crds --bin ossature-crdgen`"
        );
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = rendered.into_iter().map(|(name, _)| name).collect();
    expected.sort();
    assert_eq!(
        on_disk, expected,
        "crds/yaml/ holds exactly the generated files"
    );
}
