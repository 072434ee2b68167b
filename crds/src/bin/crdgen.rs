//! Writes the CRD YAML of every resource into `crds/yaml/`.

fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("yaml");
    std::fs::create_dir_all(&dir)?;
    for (name, text) in ossature_crds::rendered() {
        std::fs::write(dir.join(&name), text)?;
        println!("wrote crds/yaml/{name}");
    }
    Ok(())
}
