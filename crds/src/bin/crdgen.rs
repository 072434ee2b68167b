//! Writes the CRD YAML of every resource into `crds/yaml/` and into the
//! Helm chart's `charts/ossature/crds/`, the same files in both.

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for place in ossature_crds::YAML_DIRS {
        let dir = root.join(place);
        std::fs::create_dir_all(&dir)?;
        for (name, text) in ossature_crds::rendered() {
            std::fs::write(dir.join(&name), text)?;
            println!("wrote {place}/{name}");
        }
    }
    Ok(())
}
