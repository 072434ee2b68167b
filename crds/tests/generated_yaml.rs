//! The committed CRD YAML, in `crds/yaml/` and in the Helm chart's
//! `crds/`, must be exactly what the types generate.

#[test]
fn committed_yaml_matches_the_types() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rendered = ossature_crds::rendered();
    for place in ossature_crds::YAML_DIRS {
        let dir = root.join(place);
        for (name, text) in &rendered {
            let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert!(
                committed == *text,
                "{place}/{name} is out of date; run `cargo run -p ossature-crds --bin ossature-crdgen`"
            );
        }
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{place}: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut expected: Vec<String> = rendered.iter().map(|(name, _)| name.clone()).collect();
        expected.sort();
        assert_eq!(
            on_disk, expected,
            "{place}/ holds exactly the generated files"
        );
    }
}
