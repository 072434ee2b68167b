use clap::Parser;
use ossature_control_plane::cli::{self, Args};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if let Some(cli::Command::Rbac(rbac)) = &args.command {
        print!("{}", rbac.yaml()?);
        return Ok(());
    }
    cli::init_logs(args.log_format);
    ossature_control_plane::start::run(args).await
}
