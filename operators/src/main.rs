use clap::Parser;
use ossature_operator::cli::{self, Args};

/// Stack of each runtime thread: a margin for unoptimized (debug) builds,
/// which keep every async level's locals on the stack. (Reconciles box
/// their large futures and fit the 2 MiB default, where tests embed them.)
const THREAD_STACK: usize = 8 * 1024 * 1024;

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    cli::init_logs(args.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK)
        .build()?
        .block_on(ossature_operator::start::run(args))
}
